//! Speech as `/v1/audio/speech` answers it: WAV (16-bit, the voice's rate), FLAC (the same
//! samples, losslessly packed), Ogg/Opus (24 kHz, [`super::opus`]) or OpenAI's raw `pcm`
//! (16-bit little-endian mono at 24 kHz, whatever the voice's rate, as OpenAI's clients
//! assume). MP3 and AAC need encoders that exist only as C libraries (LAME is LGPL); they are
//! refused by name rather than mislabelled.

use std::io::Cursor;

use flacenc::component::BitRepr;
use flacenc::error::Verify;

use super::decode::resample;

/// The rate OpenAI's `pcm` is at.
pub const PCM_RATE: u32 = 24_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechFormat {
    Wav,
    Flac,
    Opus,
    Pcm,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("`{0}` audio needs an encoder Hearth does not have; ask for `wav`, `flac`, `opus` or `pcm`")]
    Unsupported(String),
    #[error("`response_format` must be one of `wav`, `flac`, `opus`, `pcm` (or OpenAI's `mp3`, `aac`), got `{0}`")]
    Unknown(String),
    #[error("encoding the audio failed: {0}")]
    Encode(String),
}

impl SpeechFormat {
    /// The format a request names; `None` is Hearth's default, WAV (OpenAI's is MP3).
    pub fn parse(name: Option<&str>) -> Result<Self, FormatError> {
        match name.unwrap_or("wav") {
            "wav" => Ok(Self::Wav),
            "flac" => Ok(Self::Flac),
            "opus" => Ok(Self::Opus),
            "pcm" => Ok(Self::Pcm),
            other @ ("mp3" | "aac") => Err(FormatError::Unsupported(other.to_owned())),
            other => Err(FormatError::Unknown(other.chars().take(40).collect())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Flac => "audio/flac",
            Self::Opus => "audio/ogg",
            Self::Pcm => "audio/pcm",
        }
    }
}

/// A sample in `[-1, 1]` as 16 bits (NaN as silence).
fn to_i16(s: f32) -> i16 {
    if s.is_nan() { 0 } else { (s.clamp(-1.0, 1.0) * 32767.0).round() as i16 }
}

/// `samples` (mono, `[-1, 1]`, at `rate`) in `format`.
pub fn encode(samples: &[f32], rate: u32, format: SpeechFormat) -> Result<Vec<u8>, FormatError> {
    let failed = |e: String| FormatError::Encode(e);
    match format {
        SpeechFormat::Wav => {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
            let mut writer = hound::WavWriter::new(&mut out, spec).map_err(|e| failed(e.to_string()))?;
            for &s in samples {
                writer.write_sample(to_i16(s)).map_err(|e| failed(e.to_string()))?;
            }
            writer.finalize().map_err(|e| failed(e.to_string()))?;
            Ok(out.into_inner())
        }
        SpeechFormat::Flac => {
            let config = flacenc::config::Encoder::default()
                .into_verified()
                .map_err(|(_, e)| failed(format!("the FLAC settings: {e:?}")))?;
            let ints: Vec<i32> = samples.iter().map(|&s| i32::from(to_i16(s))).collect();
            let source = flacenc::source::MemSource::from_samples(&ints, 1, 16, rate as usize);
            let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
                .map_err(|e| failed(format!("{e:?}")))?;
            let mut sink = flacenc::bitsink::ByteSink::new();
            stream.write(&mut sink).map_err(|e| failed(format!("{e:?}")))?;
            let mut bytes = sink.as_slice().to_vec();
            conform_min_block_size(&mut bytes);
            Ok(bytes)
        }
        SpeechFormat::Opus => {
            let resampled =
                resample(samples.to_vec(), rate as usize, super::opus::ENCODE_RATE as usize).map_err(failed)?;
            super::opus::encode(&resampled, rate).map_err(|e| failed(e.to_string()))
        }
        SpeechFormat::Pcm => {
            let resampled = resample(samples.to_vec(), rate as usize, PCM_RATE as usize).map_err(failed)?;
            Ok(resampled.iter().flat_map(|&s| to_i16(s).to_le_bytes()).collect())
        }
    }
}

/// flacenc 0.5 writes the last (short) block's size as STREAMINFO's minimum block size, which
/// the FLAC format defines without the last block; decoders that check it (symphonia, so
/// Hearth's own transcription) then take the fixed-block stream for a variable one and find no
/// frames. The minimum is set to the maximum, as the reference encoder writes it.
fn conform_min_block_size(flac: &mut [u8]) {
    // "fLaC", then STREAMINFO's 4-byte block header, then min (2 bytes) and max (2 bytes).
    if flac.len() >= 12 && &flac[..4] == b"fLaC" && flac[4] & 0x7f == 0 {
        let (min, max) = flac.split_at_mut(10);
        min[8..10].copy_from_slice(&max[..2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode::decode;
    use crate::audio::tone;

    #[test]
    fn wav_flac_and_opus_decode_back_to_the_same_sound() {
        let samples = tone(22_050, 440.0, 0.5);
        for (format, ext) in [(SpeechFormat::Wav, "wav"), (SpeechFormat::Flac, "flac"), (SpeechFormat::Opus, "opus")] {
            let bytes = encode(&samples, 22_050, format).unwrap();
            // The transcription decoder reads it back (at 16 kHz): same duration, same tone.
            let back = decode(&bytes, Some(ext), 60).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert!((back.seconds() - 0.5).abs() < 0.01, "{format:?}: {} s", back.seconds());
            let rms = (back.samples.iter().map(|s| s * s).sum::<f32>() / back.samples.len() as f32).sqrt();
            assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.01, "{format:?}: rms {rms}");
        }
    }

    #[test]
    fn pcm_is_24_khz_sixteen_bit() {
        let bytes = encode(&tone(22_050, 440.0, 1.0), 22_050, SpeechFormat::Pcm).unwrap();
        assert_eq!(bytes.len(), 2 * PCM_RATE as usize);
    }

    #[test]
    fn formats_are_named_or_refused_by_name() {
        assert_eq!(SpeechFormat::parse(None).unwrap(), SpeechFormat::Wav);
        assert!(matches!(SpeechFormat::parse(Some("mp3")), Err(FormatError::Unsupported(_))));
        assert_eq!(SpeechFormat::parse(Some("opus")).unwrap(), SpeechFormat::Opus);
        assert!(matches!(SpeechFormat::parse(Some("ogg")), Err(FormatError::Unknown(_))));
        assert_eq!(to_i16(f32::NAN), 0);
        assert_eq!(to_i16(3.0), 32767);
    }
}
