//! Cancellation end to end, on a server of its own (stop-generation stops everything running):
//! a client that goes away frees its generation at once, and `/v1/internal/stop-generation` ends
//! running generations.

mod common;

use std::io::{BufRead, Read};
use std::time::Duration;

use common::{Server, agent, post_json, smollm2, sse_payloads};
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

    // stop-generation ends a running stream early, with finish_reason "stop": asked once the
    // stream's first chunk has arrived, so the generation is running when it is stopped.
    let mut resp = agent()
        .post(&server.url("/v1/completions"))
        .send_json(json!({"prompt": "List every number from one to a thousand:", "max_tokens": 1500,
                          "temperature": 0, "ban_eos_token": true, "stream": true,
                          "stream_options": {"include_usage": true}}))
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reader = std::io::BufReader::new(resp.body_mut().as_reader());
    let mut raw = String::new();
    while !raw.contains("data: {") {
        assert!(reader.read_line(&mut raw).unwrap() > 0, "the stream ended before its first chunk: {raw}");
    }
    let (status, body) = post_json(&server, "/v1/internal/stop-generation", &json!({}));
    assert_eq!((status, body), (200, json!("OK")));
    reader.read_to_string(&mut raw).unwrap();
    let payloads = sse_payloads(&raw);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&payloads[payloads.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{finish}");
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() < 1500, "{usage}");
}
