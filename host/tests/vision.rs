//! Images through the real server with the tiny LLaVA-style model (`tests/fixtures/vision/`):
//! openai-python sends the seed's two multimodal requests (chat with an `image_url`, completions
//! with `messages` and two `<__media__>`), by URL from a loopback server and as `data:` URLs,
//! streamed and not (`tests/clients/openai_vision.py`); bad images, refused URLs and a text-only
//! model are 400s naming the field, and the server keeps serving.

mod common;

use std::io::Cursor;

use base64::Engine as _;
use common::{Server, post_json};
use serde_json::{Value, json};

fn tiny_llava(extra: &[&str]) -> Server {
    let model = common::repo_root().join("tests/fixtures/vision/tiny-llava");
    let mut args = vec!["--model", model.to_str().unwrap(), "--device", "flex"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn openai_python_sends_images_by_url_and_as_data() {
    let server = tiny_llava(&["--image-urls", "any"]);
    common::run_python("openai_vision.py", &server);
}

fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let picture = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    picture.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn chat_with(url: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Please describe what you see in this image."},
            {"type": "image_url", "image_url": {"url": url}}
        ]}],
        "max_tokens": 2,
        "temperature": 0
    })
}

fn assert_refused(server: &Server, body: &Value, param: &str, says: &str) {
    let (status, err) = post_json(server, "/v1/chat/completions", body);
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], param, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "`{says}` not in {err}");
    let (status, _) = common::get_json(server, "/health");
    assert_eq!(status, 200, "the server goes on");
}

#[test]
fn images_of_every_format_and_size_are_read_and_bad_ones_are_400s() {
    let server = tiny_llava(&["--image-urls", "public"]);
    let field = "messages[0].content[1].image_url.url";
    // Every format a user sends, a 1×1 image and a 16-megapixel photo are answered.
    for (what, mime, bytes) in [
        ("PNG", "image/png", encoded(40, 30, image::ImageFormat::Png)),
        ("JPEG", "image/jpeg", encoded(40, 30, image::ImageFormat::Jpeg)),
        ("GIF", "image/gif", encoded(40, 30, image::ImageFormat::Gif)),
        ("WebP", "image/webp", encoded(40, 30, image::ImageFormat::WebP)),
        ("1×1", "image/png", encoded(1, 1, image::ImageFormat::Png)),
        ("16 megapixels", "image/png", encoded(4096, 4096, image::ImageFormat::Png)),
    ] {
        let (status, body) = post_json(&server, "/v1/chat/completions", &chat_with(&data_url(mime, &bytes)));
        assert_eq!(status, 200, "{what}: {body}");
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 16, "{what}: the image's 16 tokens count: {body}");
    }
    let png = encoded(40, 30, image::ImageFormat::Png);
    assert_refused(&server, &chat_with(&data_url("image/png", &png[..png.len() / 2])), field, "cannot be decoded");
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>"#;
    assert_refused(&server, &chat_with(&data_url("image/svg+xml", svg)), field, "PNG, JPEG, GIF or WebP");
    assert_refused(&server, &chat_with("data:image/png;base64,@@@"), field, "base64");
    assert_refused(&server, &chat_with("file:///etc/hostname"), field, "`file:`");
    let own = server.url("/health");
    assert_refused(&server, &chat_with(&own), field, "loopback");
    assert_refused(&server, &chat_with("http://169.254.169.254/latest/meta-data"), field, "link-local");
    let no_url = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]});
    assert_refused(&server, &no_url, "messages[0].content[0].image_url", "image_url.url");

    // Completions: one `<__media__>` per image.
    let image = json!({"type": "image_url", "image_url": {"url": data_url("image/png", &png)}});
    let two_for_one = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "A <__media__> and a <__media__>"}, image]}],
        "max_tokens": 1
    });
    let (status, err) = post_json(&server, "/v1/completions", &two_for_one);
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("prompt")), "{err}");
    let many: Vec<Value> = (0..33).map(|_| image.clone()).collect();
    let (status, err) =
        post_json(&server, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": many}]}));
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[0].content[32].image_url.url")), "{err}");
    let tokens_prompt =
        json!({"prompt": [1, 2, 3], "messages": [{"role": "user", "content": [image]}], "max_tokens": 1});
    let (status, err) = post_json(&server, "/v1/completions", &tokens_prompt);
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("prompt")), "{err}");
}

#[test]
fn image_urls_are_not_fetched_unless_the_setting_says_so() {
    let server = tiny_llava(&[]);
    assert_refused(
        &server,
        &chat_with("http://example.invalid/cat.png"),
        "messages[0].content[1].image_url.url",
        "--image-urls",
    );
}

#[test]
fn a_text_only_model_refuses_images_by_name() {
    let png = encoded(8, 8, image::ImageFormat::Png);
    assert_refused(
        Server::shared(),
        &chat_with(&data_url("image/png", &png)),
        "messages[0].content[1].image_url.url",
        "text-only model",
    );
    let body = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "<__media__>"},
            {"type": "image_url", "image_url": {"url": data_url("image/png", &png)}}]}],
        "max_tokens": 1
    });
    let (status, err) = post_json(Server::shared(), "/v1/completions", &body);
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("messages[0].content[1].image_url.url")), "{err}");
}

/// `body`'s chat answer from a server of each fixture model in `folders`.
fn chat_from_each(folders: &[&str], body: &Value) -> Vec<Value> {
    folders
        .iter()
        .map(|folder| {
            let model = common::repo_root().join("tests/fixtures/vision").join(folder);
            let server = Server::start(&["--model", model.to_str().unwrap(), "--device", "flex"]);
            let (status, answer) = post_json(&server, "/v1/chat/completions", body);
            assert_eq!(status, 200, "{folder}: {answer}");
            answer
        })
        .collect()
}

#[test]
fn the_gguf_pair_answers_as_the_hugging_face_folder_does() {
    let png = std::fs::read(common::repo_root().join("tests/fixtures/vision/pattern.png")).expect("fixture image");
    let mut body = chat_with(&data_url("image/png", &png));
    body["messages"][0]["content"][0]["text"] = json!("What is in this image?");
    body["messages"][0]["content"] = json!([body["messages"][0]["content"][1], body["messages"][0]["content"][0]]);
    body["max_tokens"] = json!(8);
    let answers = chat_from_each(&["tiny-llava", "tiny-llava-gguf"], &body);
    // transformers' processor makes 43 ids of this chat (tests/fixtures/vision/llava_reference.json).
    for answer in &answers {
        assert_eq!(answer["usage"]["prompt_tokens"], 43, "{answer}");
    }
    assert_eq!(answers[0]["choices"][0]["message"], answers[1]["choices"][0]["message"]);
}

#[test]
fn smolvlm_tiles_an_image_in_a_chat_from_its_folder_and_its_gguf_pair() {
    let png = std::fs::read(common::repo_root().join("tests/fixtures/vision/pattern.png")).expect("fixture image");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("tests/fixtures/vision/smolvlm_reference.json"))
            .expect("reference"),
    )
    .expect("reference json");
    let body = json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url("image/png", &png)}},
            {"type": "text", "text": "What is in this image?"}
        ]}],
        "max_tokens": 8,
        "temperature": 0
    });
    let answers = chat_from_each(&["tiny-smolvlm", "tiny-smolvlm-gguf"], &body);
    // transformers' processor makes these ids of this chat: 2×2 tiles and the whole image, 4 rows
    // each, in Idefics3's layout.
    let ids = reference["input_ids"].as_array().expect("ids").len();
    for answer in &answers {
        assert_eq!(answer["usage"]["prompt_tokens"], ids, "{answer}");
    }
    assert_eq!(answers[0]["choices"][0]["message"], answers[1]["choices"][0]["message"]);
}

#[test]
fn images_past_the_context_are_refused_before_they_are_encoded() {
    let server = tiny_llava(&["--ctx-size", "16"]);
    let png = encoded(40, 30, image::ImageFormat::Png);
    let (status, err) = post_json(&server, "/v1/chat/completions", &chat_with(&data_url("image/png", &png)));
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "context_length_exceeded", "{err}");
}

#[test]
fn the_responses_api_takes_input_images() {
    let server = tiny_llava(&[]);
    let png = encoded(40, 30, image::ImageFormat::Png);
    let body = json!({
        "model": "tiny-llava",
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is in this image?"},
            {"type": "input_image", "image_url": data_url("image/png", &png)}
        ]}],
        "max_output_tokens": 4
    });
    let (status, response) = post_json(&server, "/v1/responses", &body);
    assert_eq!(status, 200, "{response}");
    assert!(response["usage"]["input_tokens"].as_u64().unwrap() > 16, "the image's tokens count: {response}");
    // The stored conversation keeps the image: a follow-up sees it again (its prefix cached).
    let follow = json!({"model": "tiny-llava", "previous_response_id": response["id"], "input": "And now?", "max_output_tokens": 2});
    let (status, next) = post_json(&server, "/v1/responses", &follow);
    assert_eq!(status, 200, "{next}");
    assert!(next["usage"]["input_tokens"].as_u64() > response["usage"]["input_tokens"].as_u64(), "{next}");
    let (status, err) = post_json(Server::shared(), "/v1/responses", &body);
    assert_eq!(status, 400, "a text-only model: {err}");
}
