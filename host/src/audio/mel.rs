//! Whisper's front end: 16 kHz samples → a log-mel spectrogram, as Whisper computes it (and
//! transformers' `WhisperFeatureExtractor`): 25 ms Hann windows every 10 ms (400 / 160
//! samples, centred, reflect-padded), the power spectrum through Slaney-normalised mel filters
//! (80 bands up to 8 kHz; 128 for large-v3), log10, floored 8 below the maximum, scaled by
//! `(x + 4) / 4`. A 30 s window is 480,000 samples and 3,000 frames.

use std::f64::consts::PI;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
/// Frames in one 30 s window.
pub const WINDOW_FRAMES: usize = WINDOW_SAMPLES / HOP;

/// A log-mel spectrogram, band-major: `values[band * frames + frame]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    pub bands: usize,
    pub frames: usize,
    pub values: Vec<f32>,
}

/// The filters and FFT plan for one band count, made once.
pub struct MelFrontEnd {
    bands: usize,
    /// `filters[band * bins + bin]`, bins = N_FFT / 2 + 1.
    filters: Vec<f64>,
    window: Vec<f64>,
    fft: Arc<dyn Fft<f64>>,
}

const BINS: usize = N_FFT / 2 + 1;

/// Slaney's mel scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel, log_step) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if hz >= min_log_hz { min_log_mel + (hz / min_log_hz).ln() / log_step } else { hz / f_sp }
}

fn mel_to_hz(mel: f64) -> f64 {
    let (f_sp, min_log_hz, min_log_mel, log_step) = (200.0 / 3.0, 1000.0, 15.0, (6.4f64).ln() / 27.0);
    if mel >= min_log_mel { min_log_hz * ((mel - min_log_mel) * log_step).exp() } else { mel * f_sp }
}

impl MelFrontEnd {
    pub fn new(bands: usize) -> Self {
        let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(8000.0));
        let edges: Vec<f64> =
            (0..bands + 2).map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (bands + 1) as f64)).collect();
        let nyquist = SAMPLE_RATE as f64 / 2.0;
        let mut filters = vec![0.0; bands * BINS];
        for band in 0..bands {
            let (lo, mid, hi) = (edges[band], edges[band + 1], edges[band + 2]);
            // Slaney normalisation: each triangle has the same area.
            let norm = 2.0 / (hi - lo);
            for bin in 0..BINS {
                let f = nyquist * bin as f64 / (BINS - 1) as f64;
                let rising = (f - lo) / (mid - lo);
                let falling = (hi - f) / (hi - mid);
                filters[band * BINS + bin] = rising.min(falling).max(0.0) * norm;
            }
        }
        // Periodic Hann, as torch.hann_window and transformers' window_function give it.
        let window = (0..N_FFT).map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos()).collect();
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        Self { bands, filters, window, fft }
    }

    /// The spectrogram of `samples` (16 kHz mono) padded with silence, or cut, to `total`
    /// samples: `WINDOW_SAMPLES` for one window as the feature extractor makes it.
    pub fn log_mel(&self, samples: &[f32], total: usize) -> LogMel {
        let mut audio: Vec<f64> = samples.iter().take(total).map(|&s| s as f64).collect();
        audio.resize(total, 0.0);
        // Centred frames: reflect-pad half a window on each side.
        let half = N_FFT / 2;
        let reflect = |i: isize| -> f64 {
            let n = audio.len() as isize;
            if n == 1 {
                return audio[0];
            }
            let period = 2 * (n - 1);
            let mut j = i.rem_euclid(period);
            if j >= n {
                j = period - j;
            }
            audio[j as usize]
        };
        // The last frame (past the end) is dropped, as Whisper drops it.
        let frames = total / HOP;
        let mut power = vec![0.0f64; frames * BINS];
        let mut buf = vec![Complex::new(0.0, 0.0); N_FFT];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        for frame in 0..frames {
            let start = (frame * HOP) as isize - half as isize;
            for (k, slot) in buf.iter_mut().enumerate() {
                let i = start + k as isize;
                let s = if i >= 0 && (i as usize) < audio.len() { audio[i as usize] } else { reflect(i) };
                *slot = Complex::new(s * self.window[k], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for bin in 0..BINS {
                power[frame * BINS + bin] = buf[bin].norm_sqr();
            }
        }
        let mut values = vec![0.0f64; self.bands * frames];
        for band in 0..self.bands {
            let filter = &self.filters[band * BINS..(band + 1) * BINS];
            for frame in 0..frames {
                let spectrum = &power[frame * BINS..(frame + 1) * BINS];
                let energy: f64 = filter.iter().zip(spectrum).map(|(f, p)| f * p).sum();
                values[band * frames + frame] = energy.max(1e-10).log10();
            }
        }
        let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let values = values.into_iter().map(|v| ((v.max(top - 8.0) + 4.0) / 4.0) as f32).collect();
        LogMel { bands: self.bands, frames, values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mel_scale_round_trips_and_filters_cover_the_band() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        let front = MelFrontEnd::new(80);
        for band in 0..80 {
            assert!(front.filters[band * BINS..(band + 1) * BINS].iter().any(|&f| f > 0.0), "band {band} is empty");
        }
    }

    #[test]
    fn a_tone_lights_its_band_and_silence_sits_at_the_floor() {
        let tone: Vec<f32> =
            (0..SAMPLE_RATE).map(|i| (2.0 * PI * 440.0 * i as f64 / SAMPLE_RATE as f64).sin() as f32).collect();
        let mel = MelFrontEnd::new(80).log_mel(&tone, WINDOW_SAMPLES);
        assert_eq!((mel.bands, mel.frames, mel.values.len()), (80, WINDOW_FRAMES, 80 * WINDOW_FRAMES));
        let frame = 50;
        let loudest = (0..80)
            .max_by(|&a, &b| mel.values[a * mel.frames + frame].total_cmp(&mel.values[b * mel.frames + frame]))
            .unwrap();
        let centre = mel_to_hz(hz_to_mel(0.0) + (hz_to_mel(8000.0) - hz_to_mel(0.0)) * (loudest + 1) as f64 / 81.0);
        assert!((centre - 440.0).abs() < 60.0, "440 Hz lands in band {loudest} ({centre:.0} Hz)");
        // Past the tone: silence, floored 8 below the maximum.
        let max = mel.values.iter().copied().fold(f32::MIN, f32::max);
        assert!((mel.values[2 * mel.frames + 2000] - (max - 2.0)).abs() < 1e-6);
    }
}
