//! The inverse of the monotonic rational-quadratic spline VITS's duration flows use
//! (Durkan et al., "Neural Spline Flows", with linear tails): per value, so on the host — the
//! duration predictor transforms two numbers per phoneme. The steps follow VITS's
//! `transforms.py` in the same order and precision, so the durations round as theirs do.

/// Smallest bin width, height and knot derivative VITS allows.
const MIN_BIN: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;

/// `y` mapped back through the spline whose `n` bins are given unnormalised — `widths[n]`,
/// `heights[n]` and `derivatives[n − 1]` at the inner knots — over `[-bound, bound]`; outside
/// it the map is the identity.
pub fn inverse(y: f32, widths: &[f32], heights: &[f32], derivatives: &[f32], bound: f32) -> f32 {
    let n = widths.len();
    if !(y >= -bound && y <= bound) || n == 0 || heights.len() != n || derivatives.len() + 1 != n {
        return y;
    }
    // The outer knots' derivative is fixed so the spline meets the linear tails with slope 1.
    let edge = ((1.0f64 - MIN_DERIVATIVE as f64).exp() - 1.0).ln() as f32;
    let mut knot_derivatives = Vec::with_capacity(n + 1);
    knot_derivatives.push(edge);
    knot_derivatives.extend_from_slice(derivatives);
    knot_derivatives.push(edge);
    let knot_derivatives: Vec<f32> = knot_derivatives.iter().map(|&d| MIN_DERIVATIVE + softplus(d)).collect();

    let cum_widths = knots(widths, bound);
    let cum_heights = knots(heights, bound);
    // searchsorted: the last knot is nudged up so `bound` itself falls in the last bin.
    let mut bin = 0;
    for (k, &c) in cum_heights.iter().enumerate() {
        let c = if k == n { c + 1e-6 } else { c };
        if y >= c {
            bin = k;
        }
    }
    let bin = bin.min(n - 1);
    let x0 = cum_widths[bin];
    let width = cum_widths[bin + 1] - cum_widths[bin];
    let y0 = cum_heights[bin];
    let height = cum_heights[bin + 1] - cum_heights[bin];
    let delta = height / width;
    let d0 = knot_derivatives[bin];
    let d1 = knot_derivatives[bin + 1];

    let offset = y - y0;
    let a = offset * (d0 + d1 - 2.0 * delta) + height * (delta - d0);
    let b = height * d0 - offset * (d0 + d1 - 2.0 * delta);
    let c = -delta * offset;
    let discriminant = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - discriminant.sqrt());
    root * width + x0
}

/// The knots' positions over `[-bound, bound]` from unnormalised bin sizes (softmax, a floor
/// per bin, cumulative, end knots exact).
fn knots(unnormalised: &[f32], bound: f32) -> Vec<f32> {
    let n = unnormalised.len();
    let max = unnormalised.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f32> = unnormalised.iter().map(|&v| (v - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    let mut out = Vec::with_capacity(n + 1);
    out.push(0.0f32);
    let mut acc = 0.0f32;
    for e in exps {
        acc += MIN_BIN + (1.0 - MIN_BIN * n as f32) * (e / total);
        out.push(acc);
    }
    for v in &mut out {
        *v = 2.0 * bound * *v - bound;
    }
    out[0] = -bound;
    out[n] = bound;
    out
}

/// PyTorch's softplus (linear above 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward spline, written from the paper's formula, to check the inverse against.
    fn forward(x: f32, w: &[f32], h: &[f32], d: &[f32], bound: f32) -> f32 {
        if !(-bound..=bound).contains(&x) {
            return x;
        }
        let n = w.len();
        let edge = ((1.0f64 - 1e-3).exp() - 1.0).ln() as f32;
        let mut dd = vec![edge];
        dd.extend_from_slice(d);
        dd.push(edge);
        let dd: Vec<f32> = dd.iter().map(|&v| MIN_DERIVATIVE + softplus(v)).collect();
        let cw = knots(w, bound);
        let ch = knots(h, bound);
        let bin = (0..n).rfind(|&k| x >= cw[k]).unwrap_or(0);
        let width = cw[bin + 1] - cw[bin];
        let height = ch[bin + 1] - ch[bin];
        let delta = height / width;
        let theta = (x - cw[bin]) / width;
        let t1 = theta * (1.0 - theta);
        ch[bin] + height * (delta * theta * theta + dd[bin] * t1) / (delta + (dd[bin] + dd[bin + 1] - 2.0 * delta) * t1)
    }

    #[test]
    fn the_inverse_undoes_the_spline_and_tails_are_identity() {
        let w = [0.3, -1.2, 0.8, 0.0, 2.0, -0.5, 0.1, 0.4, -0.9, 1.1];
        let h = [-0.2, 0.5, 1.5, -1.0, 0.3, 0.0, 0.9, -0.4, 0.2, 0.6];
        let d = [0.1, -0.3, 0.7, 1.2, -0.8, 0.0, 0.5, -1.5, 0.9];
        for i in -49..=49 {
            let x = i as f32 / 10.0;
            let y = forward(x, &w, &h, &d, 5.0);
            let back = inverse(y, &w, &h, &d, 5.0);
            assert!((back - x).abs() < 1e-4, "{x} → {y} → {back}");
        }
        assert_eq!(inverse(7.5, &w, &h, &d, 5.0), 7.5);
        assert_eq!(inverse(-5.5, &w, &h, &d, 5.0), -5.5);
        assert!(inverse(f32::NAN, &w, &h, &d, 5.0).is_nan());
    }
}
