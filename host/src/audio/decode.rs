//! Audio files to Whisper's input: any container and codec symphonia reads (WAV, FLAC, MP3,
//! Ogg/Vorbis), mixed down to mono and resampled to 16 kHz (rubato's sinc resampler). The
//! duration is capped before anything is decoded past it, so a long file costs no more than the
//! cap.

use std::io::Cursor;

use rubato::{Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::mel::SAMPLE_RATE;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is not audio in a format this server reads (WAV, FLAC, MP3, Ogg/Vorbis, Ogg/Opus): {0}")]
    Unreadable(String),
    #[error("the audio is longer than the {0} s this server transcribes")]
    TooLong(u64),
    #[error("the file holds no audio samples")]
    Silent,
}

/// 16 kHz mono samples.
#[derive(Debug, Clone)]
pub struct Audio {
    pub samples: Vec<f32>,
}

impl Audio {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }
}

/// Decodes `bytes` (`extension`, e.g. from the upload's file name, helps the format probe),
/// refusing audio longer than `max_seconds`.
pub fn decode(bytes: &[u8], extension: Option<&str>, max_seconds: u64) -> Result<Audio, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    // symphonia has no Opus; Ogg/Opus decodes straight at Whisper's rate.
    if super::opus::is_ogg_opus(bytes) {
        return match super::opus::decode(bytes, SAMPLE_RATE as u32, max_seconds) {
            Ok(samples) if samples.is_empty() => Err(DecodeError::Silent),
            Ok(samples) => Ok(Audio { samples }),
            Err(super::opus::OpusError::TooLong(s)) => Err(DecodeError::TooLong(s)),
            Err(e) => Err(DecodeError::Unreadable(format!("Ogg/Opus: {e}"))),
        };
    }
    let unreadable = |e: SymphoniaError| DecodeError::Unreadable(e.to_string());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&hint, source, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(unreadable)?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| DecodeError::Unreadable("no audio track".into()))?;
    let track_id = track.id;
    let mut decoder =
        symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default()).map_err(unreadable)?;
    let mut rate = track.codec_params.sample_rate.unwrap_or(0) as usize;
    let mut mono: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(unreadable(e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            // A last packet cut short ends the audio, as players end it.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(unreadable(e)),
        };
        let spec = *decoded.spec();
        rate = spec.rate as usize;
        let channels = spec.channels.count().max(1);
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        mono.extend(buf.samples().chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
        if rate > 0 && mono.len() as u64 > max_seconds * rate as u64 {
            return Err(DecodeError::TooLong(max_seconds));
        }
    }
    if mono.is_empty() || rate == 0 {
        return Err(DecodeError::Silent);
    }
    let samples = resample(mono, rate, SAMPLE_RATE)
        .map_err(|e| DecodeError::Unreadable(format!("resampling from {rate} Hz: {e}")))?;
    Ok(Audio { samples })
}

/// `samples` at `rate` → `target` Hz (rubato's windowed-sinc resampler), the timing kept.
pub fn resample(samples: Vec<f32>, rate: usize, target: usize) -> Result<Vec<f32>, String> {
    if rate == target {
        return Ok(samples);
    }
    let ratio = target as f64 / rate as f64;
    let params = SincInterpolationParameters {
        sinc_len: 256,
        f_cutoff: 0.95,
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 256,
        window: WindowFunction::BlackmanHarris2,
    };
    let chunk = 1024;
    let mut resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, chunk, 1).map_err(|e| e.to_string())?;
    let delay = resampler.output_delay();
    let expected = (samples.len() as f64 * ratio).round() as usize;
    let mut out = Vec::with_capacity(expected + delay + chunk);
    let mut input = samples.chunks(chunk).peekable();
    while let Some(block) = input.next() {
        let produced = if block.len() == chunk && input.peek().is_some() {
            resampler.process(&[block], None)
        } else {
            resampler.process_partial(Some(&[block]), None)
        };
        out.extend_from_slice(&produced.map_err(|e| e.to_string())?[0]);
    }
    // Flush what the filter still holds, then drop its delay so the timing is the input's.
    while out.len() < expected + delay {
        let tail = resampler.process_partial::<&[f32]>(None, None).map_err(|e| e.to_string())?;
        if tail[0].is_empty() {
            break;
        }
        out.extend_from_slice(&tail[0]);
    }
    Ok(out.into_iter().skip(delay).take(expected).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tone;

    /// A 16-bit PCM WAV of `samples` (one channel per inner vector, interleaved).
    fn wav(rate: u32, channels: &[Vec<f32>]) -> Vec<u8> {
        let frames = channels[0].len();
        let n = channels.len() as u16;
        let data_len = (frames * channels.len() * 2) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(n) * 2).to_le_bytes());
        out.extend_from_slice(&(n * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for i in 0..frames {
            for c in channels {
                out.extend_from_slice(&((c[i] * 32767.0) as i16).to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn stereo_44k_becomes_16k_mono_with_its_timing_and_pitch() {
        let left = tone(44_100, 440.0, 1.0);
        let audio = decode(&wav(44_100, &[left.clone(), left]), Some("wav"), 60).unwrap();
        assert!((audio.seconds() - 1.0).abs() < 0.01, "{} s", audio.seconds());
        // The 440 Hz tone keeps its period: upward zero crossings in the middle half second.
        let middle = &audio.samples[4_000..12_000];
        let ups = middle.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((218..=222).contains(&ups), "{ups} cycles in 0.5 s");
        let peak = middle.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.48..0.52).contains(&peak), "amplitude {peak}");
        let same_rate = decode(&wav(16_000, &[tone(16_000, 440.0, 0.5)]), None, 60).unwrap();
        assert_eq!(same_rate.samples.len(), 8_000);
    }

    #[test]
    fn bad_files_are_errors() {
        assert_eq!(decode(b"", None, 60).unwrap_err(), DecodeError::Empty);
        assert!(matches!(
            decode(b"<svg xmlns='http://www.w3.org/2000/svg'/>", Some("svg"), 60),
            Err(DecodeError::Unreadable(_))
        ));
        let long = wav(16_000, &[vec![0.1; 16_000 * 3]]);
        assert_eq!(decode(&long, Some("wav"), 2).unwrap_err(), DecodeError::TooLong(2));
        let truncated = &wav(16_000, &[tone(16_000, 440.0, 1.0)])[..30];
        assert!(decode(truncated, Some("wav"), 60).is_err());
    }
}
