//! Speech no one here recorded for it, transcribed back: sentences spoken by espeak-ng
//! (Debian's package; `scripts/setup-system` installs it), Whisper tiny.en on flex through the
//! library, and (with the server) through openai-python. Word error rate ≤ 15 %.

mod common;

use std::path::PathBuf;
use std::process::Command;

use hearth::audio::decode::decode;
use hearth::audio::transcribe::{Temperature, Transcriber};

/// Harvard sentences (phonetically balanced, public domain) and two of everyday speech.
pub const SENTENCES: &[&str] = &[
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "The box was thrown beside the parked truck.",
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
];

/// espeak-ng's WAV of `text`.
pub fn spoken(text: &str, dir: &std::path::Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wav"));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "120", "-g", "4", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng runs (apt-get install espeak-ng; scripts/setup-system installs it)");
    assert!(status.success());
    path
}

/// Word error rate: word-level edit distance over the reference's length, case and
/// punctuation ignored.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut prev = row[0];
        row[0] = i;
        for j in 1..=h.len() {
            let cur = row[j];
            row[j] = (row[j] + 1).min(row[j - 1] + 1).min(prev + usize::from(r[i - 1] != h[j - 1]));
            prev = cur;
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

/// Whisper tiny.en (`scripts/fetch-models`) on flex.
fn tiny_en() -> Transcriber {
    let device = hearth::model::device::select(hearth_settings::DeviceChoice::Flex).unwrap();
    Transcriber::load(&common::model_dir().join("whisper-tiny.en"), &device.device).unwrap()
}

/// A transcript and the pieces streamed on the way to it.
fn streamed(
    transcriber: &Transcriber,
    audio: &hearth::audio::decode::Audio,
    timestamps: bool,
) -> (hearth::audio::transcribe::Transcript, Vec<String>) {
    let mut pieces = Vec::new();
    let transcript = transcriber
        .transcribe_streaming(audio, None, None, timestamps, Temperature::Fallback, &mut |p| {
            pieces.push(p.to_owned());
            true
        })
        .unwrap();
    (transcript, pieces)
}

#[test]
fn espeak_sentences_transcribe_back() {
    let dir = tempfile::tempdir().unwrap();
    let transcriber = tiny_en();
    let (mut errors, mut words) = (0.0, 0.0);
    for (i, sentence) in SENTENCES.iter().enumerate() {
        let bytes = std::fs::read(spoken(sentence, dir.path(), &format!("s{i}"))).unwrap();
        let audio = decode(&bytes, Some("wav"), 600).unwrap();
        let transcript = transcriber.transcribe(&audio, None, None).unwrap();
        let wer = word_error_rate(sentence, &transcript.text);
        eprintln!("{sentence:?} → {:?} (WER {wer:.2})", transcript.text);
        let n = sentence.split_whitespace().count() as f64;
        errors += wer * n;
        words += n;
        assert_eq!(transcript.segments.len(), 1);
        assert!((transcript.duration - audio.seconds()).abs() < 1e-9);
    }
    let wer = errors / words;
    eprintln!("word error rate over {} sentences: {wer:.3}", SENTENCES.len());
    assert!(wer <= 0.15, "WER {wer}");
}

#[test]
fn word_error_rate_counts_edits() {
    assert_eq!(word_error_rate("the cat sat", "The cat sat."), 0.0);
    assert!((word_error_rate("the cat sat on the mat", "the cat sat on mat") - 1.0 / 6.0).abs() < 1e-9);
    assert_eq!(word_error_rate("a b", "c d e"), 1.5);
}

#[test]
fn openai_python_transcriptions() {
    common::run_python("openai_transcriptions.py", common::Server::shared());
}

/// POSTs `audio` as a multipart upload (`file`, `model`; ureq has no multipart builder):
/// the status and the JSON body.
fn post_audio(server: &common::Server, audio: &[u8]) -> (u16, serde_json::Value) {
    let boundary = "hearth-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut resp = common::agent()
        .post(&server.url("/v1/audio/transcriptions"))
        .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
        .send(&body[..])
        .expect("request sent");
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap())
}

#[test]
fn audio_past_the_cap_is_a_413_and_the_server_goes_on() {
    let model = common::smollm2();
    let server =
        common::Server::start(&["--model", model.to_str().unwrap(), "--device", "flex", "--max-audio-seconds", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let (status, err) = post_audio(&server, &std::fs::read(spoken(SENTENCES[6], dir.path(), "long")).unwrap());
    assert_eq!((status, &err["error"]["param"]), (413, &serde_json::json!("file")), "{err}");
    let (status, out) = post_audio(&server, &std::fs::read(spoken("Hello.", dir.path(), "short")).unwrap());
    assert_eq!(status, 200);
    assert!(out["text"].as_str().unwrap().to_lowercase().contains("hello"), "{out}");
}

/// Speech longer than one 30 s window: two windows, two segments back to back, and the streamed
/// pieces join to the transcript's text.
#[test]
fn long_speech_runs_window_by_window_and_streams_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    let transcriber = tiny_en();
    let mut samples = Vec::new();
    for (i, sentence) in SENTENCES.iter().enumerate() {
        let bytes = std::fs::read(spoken(sentence, dir.path(), &format!("l{i}"))).unwrap();
        samples.extend(decode(&bytes, Some("wav"), 600).unwrap().samples);
        samples.extend(std::iter::repeat_n(0.0, 8_000));
    }
    let audio = hearth::audio::decode::Audio { samples };
    assert!((30.0..60.0).contains(&audio.seconds()), "{} s", audio.seconds());
    let (transcript, pieces) = streamed(&transcriber, &audio, false);
    assert_eq!(transcript.segments.len(), 2);
    assert_eq!((transcript.segments[0].start, transcript.segments[0].end), (0.0, 30.0));
    assert_eq!(transcript.segments[1].start, 30.0);
    assert!((transcript.segments[1].end - audio.seconds()).abs() < 1e-9);
    assert_eq!(pieces.concat(), transcript.text);
    let heard = ["planks", "sheet", "truck", "chicken", "weather", "store"];
    let text = transcript.text.to_lowercase();
    assert!(heard.iter().filter(|w| text.contains(*w)).count() >= 5, "{text}");
    // A listener that goes away stops the transcription at once.
    let mut calls = 0;
    let partial = transcriber
        .transcribe_streaming(&audio, None, None, false, Temperature::Fixed(0.0), &mut |_| {
            calls += 1;
            false
        })
        .unwrap();
    assert_eq!((calls, partial.segments.len()), (1, 1));

    // With Whisper's timestamps: timed segments in order, windows starting where the last
    // complete segment ended, the same words.
    let (timed, pieces) = streamed(&transcriber, &audio, true);
    assert_eq!(pieces.concat(), timed.text);
    assert!(timed.segments.len() >= 4, "{:?}", timed.segments);
    for pair in timed.segments.windows(2) {
        assert!(pair[0].start < pair[0].end && pair[0].end <= pair[1].start + 1e-9, "{pair:?}");
    }
    let last = timed.segments.last().unwrap();
    assert!(last.end <= audio.seconds() + 1e-9, "{last:?}");
    let text = timed.text.to_lowercase();
    assert!(heard.iter().filter(|w| text.contains(*w)).count() >= 5, "{text}");
}

/// Five seconds of faint noise: the window's no-speech probability is high and its tokens
/// unlikely, so it is silence, with no text (where tiny.en alone would say "You").
#[test]
fn faint_noise_is_silence() {
    use rand::{Rng, SeedableRng};
    let transcriber = tiny_en();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let samples = (0..5 * 16_000).map(|_| (0..4).map(|_| rng.random_range(-0.008f32..0.008)).sum::<f32>()).collect();
    let audio = hearth::audio::decode::Audio { samples };
    for timestamps in [false, true] {
        let (t, pieces) = streamed(&transcriber, &audio, timestamps);
        assert_eq!((t.text.as_str(), t.segments.len(), pieces.len()), ("", 0, 0), "timestamps: {timestamps}");
    }
}

/// Sampling at a temperature: seeded per window, so the same audio gives the same text; the
/// segments say the temperature; the fallback schedule starts greedy and, on clear speech, stays
/// there (the same transcript as greedy alone).
#[test]
fn sampled_decoding_repeats_and_says_its_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let transcriber = tiny_en();
    let bytes = std::fs::read(spoken(SENTENCES[0], dir.path(), "t")).unwrap();
    let audio = decode(&bytes, Some("wav"), 600).unwrap();
    let run = |t| transcriber.transcribe_streaming(&audio, None, None, true, t, &mut |_| true).unwrap();
    let hot = run(Temperature::Fixed(1.0));
    assert_eq!(hot, run(Temperature::Fixed(1.0)));
    assert!(hot.segments.iter().all(|s| s.temperature == 1.0), "{:?}", hot.segments);
    let greedy = run(Temperature::Fallback);
    assert!(greedy.segments.iter().all(|s| s.temperature == 0.0), "{:?}", greedy.segments);
    assert_eq!(greedy, run(Temperature::Fixed(0.0)));
}
