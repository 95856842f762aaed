//! `/v1/audio/speech` through the real server: openai-python speaks with the Piper voice
//! `scripts/fetch-models` installs (en_US-joe-medium) and Hearth's Whisper hears it back
//! (`tests/clients/openai_speech.py`); a server without a voice, or with a broken one, answers
//! with an error and goes on serving.

mod common;

use serde_json::json;

#[test]
fn openai_python_speech_round_trip() {
    common::run_python("openai_speech.py", common::Server::shared());
}

/// A model dir holding SmolLM2 and whatever `voice_files` adds.
fn server_with_voices(voice_files: &[(&str, &[u8])]) -> (tempfile::TempDir, common::Server) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in voice_files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let model = common::smollm2();
    let server = common::Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--model-dir",
        dir.path().to_str().unwrap(),
        "--device",
        "flex",
    ]);
    (dir, server)
}

#[test]
fn no_voice_or_a_broken_one_is_an_error_and_the_server_goes_on() {
    let speak = json!({"model": "tts-1", "voice": "alloy", "input": "Hello."});
    let (_dir, server) = server_with_voices(&[]);
    let (status, err) = common::post_json(&server, "/v1/audio/speech", &speak);
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no Piper voice"), "{err}");

    // A truncated .onnx beside a real config: the load fails, the request is an error.
    let voice = common::model_dir().join("en_US-joe-medium");
    let onnx = std::fs::read(voice.join("en_US-joe-medium.onnx")).unwrap();
    let config = std::fs::read(voice.join("en_US-joe-medium.onnx.json")).unwrap();
    let (_dir, server) = server_with_voices(&[("broken.onnx", &onnx[..onnx.len() / 3]), ("broken.onnx.json", &config)]);
    let (status, err) = common::post_json(&server, "/v1/audio/speech", &speak);
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("`broken` cannot be loaded"), "{err}");
    let (status, err) =
        common::post_json(&server, "/v1/audio/speech", &json!({"model": "tts-1", "voice": "other", "input": "Hi."}));
    assert_eq!((status, &err["error"]["param"]), (400, &json!("voice")), "{err}");
    let (status, _) = common::get_json(&server, "/v1/models");
    assert_eq!(status, 200);
}
