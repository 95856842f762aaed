//! Image resizing that gives Pillow's bytes: its separable convolution (`Resample.c`) with the
//! same filters, the same kernel bounds and the same 8-bit fixed-point rounding. Hugging Face's
//! image processors resize with Pillow, and a model sees what its processor made during training;
//! a filter that is merely "also bicubic" moves pixels by a level here and there.

use super::VisionError;

/// Bits of a fixed-point coefficient for 8-bit images (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters, by the numbers its `Image.Resampling` and the processors'
/// `resample` fields use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Filter {
    /// `resample` as a processor config gives it (0 nearest is not a convolution and is refused).
    pub fn from_pil(code: u64) -> Result<Self, VisionError> {
        Ok(match code {
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            other => return Err(VisionError::Config(format!("resample filter {other} is not supported"))),
        })
    }

    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// One output pixel's taps: the first input pixel and the fixed-point weights from it.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `input` pixels to `output`.
fn taps(input: usize, output: usize, filter: Filter) -> Vec<Taps> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let mut all = Vec::with_capacity(output);
    for xx in 0..output {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64).max(xmin as i64) as usize;
        let raw: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
        let total: f64 = raw.iter().sum();
        let scale_fixed = f64::from(1u32 << PRECISION_BITS);
        let weights = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                if w < 0.0 { (-0.5 + w * scale_fixed) as i32 } else { (0.5 + w * scale_fixed) as i32 }
            })
            .collect();
        all.push(Taps { first: xmin, weights });
    }
    all
}

/// Pillow's `clip8`: the fixed-point sum to a byte.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// An RGB image, row-major, three bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb {
    /// `width`×`height` as Pillow's `Image.resize` makes it: a horizontal pass, then a vertical
    /// one, each skipped when that side keeps its size.
    pub fn resize(&self, width: usize, height: usize, filter: Filter) -> Rgb {
        let mut image = self.clone();
        if width != image.width {
            image = image.horizontal(width, filter);
        }
        if height != image.height {
            image = image.vertical(height, filter);
        }
        image
    }

    fn horizontal(&self, width: usize, filter: Filter) -> Rgb {
        let taps = taps(self.width, width, filter);
        let mut data = vec![0u8; width * self.height * 3];
        for y in 0..self.height {
            let row = &self.data[y * self.width * 3..(y + 1) * self.width * 3];
            for (x, t) in taps.iter().enumerate() {
                for c in 0..3 {
                    let mut sum: i64 = 1 << (PRECISION_BITS - 1);
                    for (k, &w) in t.weights.iter().enumerate() {
                        sum += i64::from(row[(t.first + k) * 3 + c]) * i64::from(w);
                    }
                    data[(y * width + x) * 3 + c] = clip8(sum);
                }
            }
        }
        Rgb { width, height: self.height, data }
    }

    fn vertical(&self, height: usize, filter: Filter) -> Rgb {
        let taps = taps(self.height, height, filter);
        let stride = self.width * 3;
        let mut data = vec![0u8; stride * height];
        for (y, t) in taps.iter().enumerate() {
            for i in 0..stride {
                let mut sum: i64 = 1 << (PRECISION_BITS - 1);
                for (k, &w) in t.weights.iter().enumerate() {
                    sum += i64::from(self.data[(t.first + k) * stride + i]) * i64::from(w);
                }
                data[y * stride + i] = clip8(sum);
            }
        }
        Rgb { width: self.width, height, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: usize, height: usize) -> Rgb {
        let data = (0..width * height * 3).map(|i| (i * 37 % 256) as u8).collect();
        Rgb { width, height, data }
    }

    #[test]
    fn the_same_size_is_the_same_image_and_weights_sum_to_one() {
        let image = ramp(7, 5);
        assert_eq!(image.resize(7, 5, Filter::Bicubic), image);
        for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear, Filter::Box, Filter::Hamming] {
            for (input, output) in [(45, 38), (37, 32), (10, 31), (1000, 3)] {
                for t in taps(input, output, filter) {
                    let sum: i64 = t.weights.iter().map(|&w| i64::from(w)).sum();
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64, "{filter:?} {sum}");
                    assert!(t.first + t.weights.len() <= input);
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let flat = Rgb { width: 9, height: 4, data: vec![200; 9 * 4 * 3] };
        let out = flat.resize(20, 3, Filter::Lanczos);
        assert!(out.data.iter().all(|&v| v == 200), "{:?}", out.data);
        assert_eq!((out.width, out.height), (20, 3));
    }
}
