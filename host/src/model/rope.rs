//! Rotary position embeddings in Hugging Face's rotate-half form, with the inverse frequencies
//! computed the way transformers computes them (f32), optional linear / Llama 3 frequency scaling,
//! and cos/sin built per position so sequences at different offsets can share a batch.

use burn::tensor::{Device, Tensor};

use super::config::RopeScaling;
use super::layers::upload;

/// Rotary embedding for one head size.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// `freq_factors` are Llama 3 GGUFs' `rope_freqs.weight`: each inverse frequency is divided
    /// by its factor.
    pub fn new(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>, freq_factors: Option<&[f32]>) -> Self {
        let half = head_dim / 2;
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent)
            })
            .collect();
        match scaling {
            Some(RopeScaling::Linear { factor }) => inv_freq.iter_mut().for_each(|f| *f /= factor),
            Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position }) => {
                let old_ctx = *original_max_position as f32;
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    *f = if wavelen < high_wavelen {
                        *f
                    } else if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * *f / factor + smooth * *f
                    };
                }
            }
            None => {}
        }
        if let Some(factors) = freq_factors {
            for (f, k) in inv_freq.iter_mut().zip(factors) {
                *f /= k;
            }
        }
        Self { inv_freq, head_dim }
    }

    /// `(cos, sin)`, each `[positions.len(), head_dim]`, halves duplicated as rotate-half wants.
    pub fn tables(&self, positions: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let n = positions.len();
        let (cos, sin) = self.host_tables(positions);
        (upload(cos, [n, self.head_dim], device), upload(sin, [n, self.head_dim], device))
    }

    /// [`Self::tables`] as host values, row-major.
    pub fn host_tables(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let n = positions.len();
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(n * self.head_dim);
        let mut sin = Vec::with_capacity(n * self.head_dim);
        for &p in positions {
            let start = cos.len();
            for &f in &self.inv_freq {
                // transformers multiplies in f32 before taking cos/sin.
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        (cos, sin)
    }
}

/// Applies the rotation to `x`: `[heads, tokens, head_dim]`, with `cos`/`sin`: `[tokens, head_dim]`.
pub fn apply(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
    let [heads, tokens, dim] = x.dims();
    let half = dim / 2;
    let x1 = x.clone().slice([0..heads, 0..tokens, 0..half]);
    let x2 = x.clone().slice([0..heads, 0..tokens, half..dim]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
    x * cos.clone().unsqueeze::<3>() + rotated * sin.clone().unsqueeze::<3>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_the_identity() {
        let device = Device::flex();
        let rope = Rope::new(4, 10_000.0, None, None);
        let (cos, sin) = rope.tables(&[0], &device);
        let x = upload(vec![1., 2., 3., 4.], [1, 1, 4], &device);
        let y: Vec<f32> = apply(x, &cos, &sin).into_data().try_to_vec().unwrap();
        assert_eq!(y, vec![1., 2., 3., 4.]);
    }

    #[test]
    fn rotate_half_pairs_i_with_i_plus_half() {
        let device = Device::flex();
        let rope = Rope::new(4, 10_000.0, None, None);
        let (cos, sin) = rope.tables(&[1], &device);
        let x = upload(vec![1., 0., 0., 0.], [1, 1, 4], &device);
        let y: Vec<f32> = apply(x, &cos, &sin).into_data().try_to_vec().unwrap();
        // Element 0 rotates into element 2 by angle 1 * inv_freq[0] = 1 rad.
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[2] - 1f32.sin()).abs() < 1e-6, "{y:?}");
        assert!(y[1].abs() < 1e-6 && y[3].abs() < 1e-6);
    }

    #[test]
    fn linear_scaling_divides_frequencies() {
        let plain = Rope::new(8, 10_000.0, None, None);
        let scaled = Rope::new(8, 10_000.0, Some(&RopeScaling::Linear { factor: 4.0 }), None);
        for (p, s) in plain.inv_freq.iter().zip(&scaled.inv_freq) {
            assert!((p / 4.0 - s).abs() < 1e-9);
        }
    }
}
