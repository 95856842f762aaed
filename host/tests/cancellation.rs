//! Cancellation end to end, on a server of its own (stop-generation stops everything running):
//! a client that goes away frees its generation at once, and `/v1/internal/stop-generation` ends
//! running generations.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{Server, agent, post_json, post_stream, smollm2, sse_payloads};
use serde_json::{Value, json};

#[test]
fn disconnect_and_stop_generation_cancel_generations() {
    let model = smollm2();
    let server = Server::start(&["--model", model.to_str().unwrap(), "--device", "flex", "--ctx-size", "2048"]);

    // A client that reads a little and hangs up.
    {
        let mut resp = agent()
            .post(&server.url("/v1/completions"))
            .send_json(json!({"prompt": "Count from one to a thousand:", "max_tokens": 1500, "stream": true}))
            .unwrap();
        let mut reader = resp.body_mut().as_reader();
        let mut buf = [0u8; 256];
        assert!(reader.read(&mut buf).unwrap() > 0);
    }
    assert!(
        server.wait_for_log("generation cancelled", Duration::from_secs(60)),
        "the server noticed the client going away; log:\n{}",
        server.log()
    );

    // stop-generation ends a running stream early, with finish_reason "stop".
    let s: &'static Server = Box::leak(Box::new(server));
    let handle = std::thread::spawn(move || {
        post_stream(
            s,
            "/v1/completions",
            &json!({"prompt": "List every number from one to a thousand:", "max_tokens": 1500, "temperature": 0,
                    "stream": true, "stream_options": {"include_usage": true}}),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = post_json(s, "/v1/internal/stop-generation", &json!({}));
    assert_eq!((status, body), (200, json!("OK")));
    let (status, raw) = handle.join().unwrap();
    assert_eq!(status, 200);
    let payloads = sse_payloads(&raw);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&payloads[payloads.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{finish}");
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() < 1500, "{usage}");
    s.kill();
}
