//! Ogg/Opus (RFC 7845) both ways, with ropus (a pure-Rust port of xiph's libopus, bit-exact
//! against it) for the codec and the ogg crate for the pages: an upload decoded for
//! transcription (straight at 16 kHz mono, the encoder's pre-skip dropped, the end trimmed to
//! the last page's granule position) and speech written for `response_format: opus` (24 kHz
//! mono, 20 ms packets, as OpenAI sends it).

use std::io::Cursor;

use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};
use ropus::{Application, Channels, DecodeMode, Decoder, Encoder};

/// Opus counts time (granule positions, pre-skip) in 48 kHz samples.
const GRANULE_RATE: u64 = 48_000;
/// The rate speech is encoded at, and one 20 ms frame of it.
pub const ENCODE_RATE: u32 = 24_000;
const FRAME: usize = 480;
/// The stream serial number of the speech Hearth writes (one stream per file).
const SERIAL: u32 = 0x4845_4152;
/// Largest Opus frame: 120 ms.
const MAX_FRAME_MS: usize = 120;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpusError {
    #[error("{0}")]
    Unreadable(String),
    #[error("longer than {0} s")]
    TooLong(u64),
    #[error("encoding Opus failed: {0}")]
    Encode(String),
}

/// Whether `bytes` start an Ogg stream whose first packet is an `OpusHead`.
pub fn is_ogg_opus(bytes: &[u8]) -> bool {
    // The first page: "OggS", its 27-byte header and segment table, then the packet.
    if bytes.len() < 28 || &bytes[..4] != b"OggS" {
        return false;
    }
    let segments = bytes[26] as usize;
    bytes.get(27 + segments..27 + segments + 8) == Some(b"OpusHead")
}

/// An Ogg/Opus file's audio at `rate` Hz (8, 12, 16, 24 or 48 kHz), mixed to mono; more than
/// `max_seconds` is an error before it is all decoded.
pub fn decode(bytes: &[u8], rate: u32, max_seconds: u64) -> Result<Vec<f32>, OpusError> {
    let unreadable = |what: String| OpusError::Unreadable(what);
    let mut reader = PacketReader::new(Cursor::new(bytes));
    let head = reader
        .read_packet()
        .map_err(|e| unreadable(format!("Ogg: {e}")))?
        .ok_or_else(|| unreadable("no OpusHead".into()))?;
    let head = head.data;
    // Version 1 (any minor version, RFC 7845 §5.1), mono or stereo (mapping family 0).
    if head.len() < 19 || &head[..8] != b"OpusHead" || head[8] >> 4 != 0 {
        return Err(unreadable("a malformed OpusHead".into()));
    }
    if !(1..=2).contains(&head[9]) || head[18] != 0 {
        return Err(unreadable(format!("{} channels (mono and stereo are read)", head[9])));
    }
    let pre_skip = u16::from_le_bytes([head[10], head[11]]) as u64;
    let tags = reader.read_packet().map_err(|e| unreadable(format!("Ogg: {e}")))?;
    if !tags.is_some_and(|p| p.data.starts_with(b"OpusTags")) {
        return Err(unreadable("no OpusTags after the OpusHead".into()));
    }
    let mut decoder = Decoder::new(rate, Channels::Mono).map_err(|e| unreadable(format!("{e:?}")))?;
    let mut frame = vec![0f32; MAX_FRAME_MS * rate as usize / 1000];
    let mut samples = Vec::new();
    let mut last_granule = None;
    let cap = max_seconds.saturating_mul(rate as u64) + pre_skip * rate as u64 / GRANULE_RATE;
    while let Some(packet) = reader.read_packet().map_err(|e| unreadable(format!("Ogg: {e}")))? {
        let n = decoder
            .decode_float(&packet.data, &mut frame, DecodeMode::Normal)
            .map_err(|e| unreadable(format!("a damaged Opus packet: {e:?}")))?;
        samples.extend_from_slice(&frame[..n]);
        if samples.len() as u64 > cap {
            return Err(OpusError::TooLong(max_seconds));
        }
        if packet.last_in_page() {
            last_granule = Some(packet.absgp_page());
        }
    }
    let to_rate = |g: u64| (g * rate as u64 / GRANULE_RATE) as usize;
    // The last page's granule position marks the end of the audio (the encoder padded the
    // last frame); everything is counted from before the pre-skip.
    if let Some(end) = last_granule.filter(|&g| g >= pre_skip) {
        samples.truncate(to_rate(end).min(samples.len()));
    }
    let skip = to_rate(pre_skip).min(samples.len());
    Ok(samples.split_off(skip))
}

/// `samples` (mono, `[-1, 1]`, at [`ENCODE_RATE`]) as an Ogg/Opus file; `input_rate` is the
/// rate the audio was made at, recorded in the header.
pub fn encode(samples: &[f32], input_rate: u32) -> Result<Vec<u8>, OpusError> {
    let failed = |e: String| OpusError::Encode(e);
    let mut encoder = Encoder::builder(ENCODE_RATE, Channels::Mono, Application::Voip)
        .build()
        .map_err(|e| failed(format!("{e:?}")))?;
    let per_granule = GRANULE_RATE / ENCODE_RATE as u64;
    let lookahead = encoder.lookahead() as usize;
    let pre_skip = lookahead as u64 * per_granule;
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1);
    head.push(1);
    head.extend_from_slice(&u16::try_from(pre_skip).unwrap_or(u16::MAX).to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    let vendor = b"Hearth";
    let mut tags = Vec::with_capacity(16 + vendor.len());
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());

    let mut out = Vec::new();
    {
        let mut writer = PacketWriter::new(&mut out);
        let mut write = |data: Vec<u8>, end: PacketWriteEndInfo, granule: u64| {
            writer.write_packet(data, SERIAL, end, granule).map_err(|e| failed(e.to_string()))
        };
        write(head, PacketWriteEndInfo::EndPage, 0)?;
        write(tags, PacketWriteEndInfo::EndPage, 0)?;
        // The encoder's delay is flushed with silence; the last frame is padded.
        let mut padded = samples.to_vec();
        padded.resize(samples.len() + lookahead, 0.0);
        let frames = padded.len().div_ceil(FRAME).max(1);
        padded.resize(frames * FRAME, 0.0);
        let end = pre_skip + samples.len() as u64 * per_granule;
        let mut packet = vec![0u8; 4000];
        for (i, frame) in padded.chunks(FRAME).enumerate() {
            let n = encoder.encode_float(frame, &mut packet).map_err(|e| failed(format!("{e:?}")))?;
            let last = i + 1 == frames;
            let granule = ((i as u64 + 1) * FRAME as u64 * per_granule).min(end);
            let info = if last { PacketWriteEndInfo::EndStream } else { PacketWriteEndInfo::NormalPacket };
            write(packet[..n].to_vec(), info, granule)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::tone;

    #[test]
    fn speech_written_as_opus_reads_back_with_its_length_and_sound() {
        let samples = tone(ENCODE_RATE, 440.0, 1.0);
        let bytes = encode(&samples, 22_050).unwrap();
        assert!(is_ogg_opus(&bytes));
        let back = decode(&bytes, ENCODE_RATE, 60).unwrap();
        assert_eq!(back.len(), samples.len());
        // Lossy, but the same tone, in place: the middle correlates best within a few samples
        // (SILK's resampler leaves a fraction of a millisecond the pre-skip does not cover).
        let correlation = |lag: usize| {
            let (a, b) = (&samples[2400..21600], &back[2400 + lag - 8..21600 + lag - 8]);
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|y| y * y).sum::<f32>()).sqrt()
        };
        let best = (0..=16).max_by(|&x, &y| correlation(x).total_cmp(&correlation(y))).unwrap();
        assert!((4..=12).contains(&best) && correlation(best) > 0.99, "lag {} {}", best as i32 - 8, correlation(best));
        let at_16k = decode(&bytes, 16_000, 60).unwrap();
        assert_eq!(at_16k.len(), 16_000);
        assert_eq!(decode(&bytes, 16_000, 0), Err(OpusError::TooLong(0)));
    }

    #[test]
    fn other_files_are_not_taken_for_opus() {
        assert!(!is_ogg_opus(b"RIFF....WAVEfmt "));
        assert!(!is_ogg_opus(b"OggS"));
        let mut bytes = encode(&tone(ENCODE_RATE, 440.0, 0.2), 24_000).unwrap();
        bytes.truncate(60);
        assert!(decode(&bytes, 16_000, 60).is_err());
    }
}
