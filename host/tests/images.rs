//! `/v1/images/generations` through the real server with the tiny Stable Diffusion model
//! (`tests/fixtures/diffusion/tiny-sd`): the seed's curl example and openai-python's
//! `images.generate` (`tests/clients/openai_images.py`) get PNGs of the asked size and count,
//! the same seed the same bytes; bad requests are 400s naming the field, no image model a 503;
//! and a chat completion is answered while an image is being made. Single-file checkpoints are
//! served too: the SD 1.x file with the folder as its config makes the folder's very bytes. A
//! client that hangs up stops its image at the next step.

mod common;

use std::io::Cursor;

use base64::Engine as _;
use common::{Server, post_json};
use serde_json::{Value, json};

fn tiny_sd() -> String {
    common::repo_root().join("tests/fixtures/diffusion/tiny-sd").to_str().expect("utf-8 path").to_owned()
}

fn pngs(answer: &Value) -> Vec<image::RgbImage> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().expect("b64_json"))
                .expect("base64");
            let decoded =
                image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Png).decode().expect("a PNG");
            decoded.to_rgb8()
        })
        .collect()
}

#[test]
fn the_seed_example_and_openai_python_get_pngs() {
    let server = Server::start(&["--image-model", &tiny_sd(), "--device", "flex"]);
    // The seed's curl example, unchanged (tests/clients/seed/curl_examples.sh).
    let body = json!({"prompt": "an orange tree", "steps": 9, "cfg_scale": 0, "batch_size": 1, "batch_count": 1});
    let (status, answer) = post_json(&server, "/v1/images/generations", &body);
    assert_eq!(status, 200, "{answer}");
    let images = pngs(&answer);
    assert_eq!(images.len(), 1);
    // The model's native size: its UNet's sample_size (8) times the VAE's 8.
    assert_eq!(images[0].dimensions(), (64, 64));
    assert!(answer["created"].as_u64().is_some_and(|c| c > 0), "{answer}");

    // batch_size × batch_count images, of the asked (non-square) size; the same seed, the same bytes.
    let body = json!({"prompt": "an orange tree", "size": "72x40", "steps": 2, "batch_size": 2, "batch_count": 2,
                      "image_seed": 3});
    let (status, first) = post_json(&server, "/v1/images/generations", &body);
    assert_eq!(status, 200, "{first}");
    let images = pngs(&first);
    assert_eq!(images.len(), 4);
    assert!(images.iter().all(|i| i.dimensions() == (72, 40)));
    let (_, again) = post_json(&server, "/v1/images/generations", &body);
    assert_eq!(first["data"], again["data"], "the same seed gives the same bytes");

    common::run_python("openai_images.py", &server);
}

#[test]
fn bad_requests_are_400s_naming_the_field() {
    let server = Server::start(&["--image-model", &tiny_sd(), "--device", "flex"]);
    let cases = [
        (json!({"prompt": "a", "size": "60x64"}), "size"),
        (json!({"prompt": "a", "size": "4096x4096"}), "size"),
        (json!({"prompt": "a", "size": "big"}), "size"),
        (json!({"prompt": "a", "steps": 0}), "steps"),
        (json!({"prompt": "a", "steps": 1000}), "steps"),
        (json!({"prompt": "a", "response_format": "url"}), "response_format"),
        (json!({"prompt": "a", "n": 0}), "n"),
        (json!({"prompt": "a", "n": 10, "batch_count": 2}), "n"),
        (json!({"prompt": "a", "cfg_scale": -1}), "cfg_scale"),
        (json!({"prompt": "a", "sampler_name": "dpm++"}), "sampler_name"),
        (json!({"prompt": " "}), "prompt"),
        // LCM takes at most its original_inference_steps (50).
        (json!({"prompt": "a", "sampler_name": "lcm", "steps": 60}), "steps"),
    ];
    for (body, param) in cases {
        let (status, err) = post_json(&server, "/v1/images/generations", &body);
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body}: {err}");
    }
    let (status, _) = post_json(&server, "/v1/images/edits", &json!({}));
    assert_eq!(status, 501);
    // And it keeps serving.
    let (status, answer) = post_json(&server, "/v1/images/generations", &json!({"prompt": "a", "steps": 1}));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn single_file_checkpoints_are_served() {
    let fixture = |name: &str| common::repo_root().join("tests/fixtures/diffusion").join(name);
    let single = fixture("tiny-sd.safetensors");
    let folder = Server::start(&["--image-model", &tiny_sd(), "--device", "flex"]);
    let file = Server::start(&[
        "--image-model",
        single.to_str().expect("utf-8 path"),
        "--image-config",
        &tiny_sd(),
        "--device",
        "flex",
    ]);
    let body = json!({"prompt": "an orange tree", "steps": 2, "cfg_scale": 3, "image_seed": 5});
    let (status, from_folder) = post_json(&folder, "/v1/images/generations", &body);
    assert_eq!(status, 200, "{from_folder}");
    let (status, from_file) = post_json(&file, "/v1/images/generations", &body);
    assert_eq!(status, 200, "{from_file}");
    assert_eq!(from_folder["data"], from_file["data"], "the single file makes the folder's bytes");

    // SD 2.x-shaped, read with the yaml and tokenizer beside it: its native size is the yaml's.
    let sd2 = fixture("tiny-sd2/tiny-sd2.safetensors");
    let server = Server::start(&["--image-model", sd2.to_str().expect("utf-8 path"), "--device", "flex"]);
    let (status, answer) =
        post_json(&server, "/v1/images/generations", &json!({"prompt": "an orange tree", "steps": 3, "n": 2}));
    assert_eq!(status, 200, "{answer}");
    let images = pngs(&answer);
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|i| i.dimensions() == (64, 64)));
    assert_ne!(images[0], images[1], "seed and seed + 1 differ");
}

#[test]
fn a_checkpoint_that_cannot_be_read_is_a_503_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pickled = dir.path().join("model.ckpt");
    std::fs::write(&pickled, b"not a checkpoint").expect("writes");
    let server = Server::start(&["--image-model", pickled.to_str().expect("utf-8 path"), "--device", "flex"]);
    let (status, err) = post_json(&server, "/v1/images/generations", &json!({"prompt": "an orange tree"}));
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("pickled")), "{err}");
    // The text side is unaffected.
    let (status, _) = common::get_json(&server, "/v1/models");
    assert_eq!(status, 200);
}

#[test]
fn without_an_image_model_generation_is_a_503_saying_how_to_load_one() {
    let (status, err) = post_json(Server::shared(), "/v1/images/generations", &json!({"prompt": "an orange tree"}));
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("--image-model")), "{err}");
}

#[test]
fn a_chat_is_answered_while_an_image_is_made() {
    let model = common::smollm2();
    let server = Server::start(&["--model", model.to_str().unwrap(), "--image-model", &tiny_sd(), "--device", "flex"]);
    let url = server.url("/v1/images/generations");
    // Large enough that its steps take far longer than a short chat.
    let image = std::thread::spawn(move || {
        let body = json!({"prompt": "an orange tree", "size": "256x256", "steps": 24});
        ureq::post(&url).send_json(&body).map(|r| r.status().as_u16())
    });
    // Until the image model is at work (the gauge is set at its first step).
    loop {
        let (_, metrics) = common::get_json(&server, "/metrics");
        if metrics.as_str().is_some_and(|m| m.lines().any(|l| l.starts_with("hearth_images_generating 1"))) {
            break;
        }
        assert!(!image.is_finished(), "the image was made before the chat could be sent");
        // A poll for a state, not a wait for time to pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let chat = json!({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0});
    let (status, answer) = post_json(&server, "/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{answer}");
    assert!(!image.is_finished(), "the chat waited for the image");
    assert_eq!(image.join().expect("image thread").expect("image request"), 200);
}

/// The value of `gauge` on the server's `/metrics`, if it is there.
fn gauge(server: &Server, gauge: &str) -> Option<f64> {
    let (_, metrics) = common::get_json(server, "/metrics");
    let text = metrics.as_str()?.to_owned();
    text.lines().find_map(|l| l.strip_prefix(gauge)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_client_that_goes_away_stops_its_image() {
    use std::io::Write as _;
    let server = Server::start(&["--image-model", &tiny_sd(), "--device", "flex"]);
    let steps = 150;
    let body = json!({"prompt": "an orange tree", "size": "256x256", "steps": steps, "cfg_scale": 0}).to_string();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connects");
    write!(
        client,
        "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("sends");
    // Until the image is at work, then hang up.
    while gauge(&server, "hearth_images_generating") != Some(1.0) || gauge(&server, "hearth_image_step") < Some(1.0) {
        // A poll for a state, not a wait for time to pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while gauge(&server, "hearth_images_generating") != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "the image went on after its client left");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stopped_at = gauge(&server, "hearth_image_step").expect("the step gauge");
    assert!(stopped_at < steps as f64, "the image ran all {steps} steps (stopped at {stopped_at})");
    // The log is read on a thread of its own: the line may land just after the gauge.
    assert!(server.wait_for_log("image cancelled", std::time::Duration::from_secs(30)), "the log says so");
    // The model is free for the next request.
    let (status, answer) = post_json(&server, "/v1/images/generations", &json!({"prompt": "a", "steps": 1}));
    assert_eq!(status, 200, "{answer}");
}
