//! The Responses API end to end: openai-python (`tests/clients/openai_responses.py`), the
//! OpenAI Agents SDK running an agent with a function tool (`openai_agents_run.py`), and the
//! store across server processes: responses survive a restart, `store: false` ones are never
//! kept, and a server killed mid-stream leaves a readable database whose unfinished response the
//! next server reports as failed.

mod common;

use std::io::{BufRead, BufReader};

use common::{Server, get_json, post_json, run_python, smollm2};
use serde_json::json;

/// A SmolLM2 server (flex) whose user data folder, and so its response store, is `dir`.
fn server_in(dir: &std::path::Path) -> Server {
    let model = smollm2();
    Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--device",
        "flex",
        "--ctx-size",
        "2048",
        "--user-data-dir",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn openai_python_responses_api() {
    let dir = tempfile::tempdir().unwrap();
    run_python("openai_responses.py", &server_in(dir.path()));
}

#[test]
fn openai_agents_sdk_runs_an_agent_with_a_function_tool() {
    let dir = tempfile::tempdir().unwrap();
    run_python("openai_agents_run.py", &server_in(dir.path()));
}

#[test]
fn stored_responses_outlive_the_server_and_a_kill_leaves_the_store_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("responses.sqlite3");
    let first = server_in(dir.path());
    let (status, kept) = post_json(&first, "/v1/responses", &json!({"input": "Hello!", "max_output_tokens": 16}));
    assert_eq!(status, 200, "{kept}");
    let (status, unkept) =
        post_json(&first, "/v1/responses", &json!({"input": "Hello!", "max_output_tokens": 16, "store": false}));
    assert_eq!(status, 200, "{unkept}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&db).unwrap().permissions().mode() & 0o777, 0o600, "owner-only");
    first.kill();

    let second = server_in(dir.path());
    let (status, again) = get_json(&second, &format!("/v1/responses/{}", kept["id"].as_str().unwrap()));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, kept, "the stored response, as it was returned");
    let (status, body) = get_json(&second, &format!("/v1/responses/{}", unkept["id"].as_str().unwrap()));
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("invalid_request_error")), "{body}");

    // A long stream, killed once it has started writing.
    let request = json!({"input": "Write a long story about a lighthouse keeper.", "max_output_tokens": 1500,
        "stream": true, "temperature": 1.0, "seed": 7});
    let mut resp = common::agent().post(&second.url("/v1/responses")).send_json(&request).expect("request sent");
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = BufReader::new(resp.body_mut().as_reader());
    let mut id = None;
    let mut line = String::new();
    while reader.read_line(&mut line).expect("stream read") > 0 {
        if let Some(data) = line.strip_prefix("data: ") {
            let event: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            if event["type"] == "response.created" {
                id = event["response"]["id"].as_str().map(str::to_owned);
            }
            if event["type"] == "response.output_text.delta" {
                break;
            }
        }
        line.clear();
    }
    let id = id.expect("a response.created event");
    second.kill();

    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let status: String = conn.query_row("SELECT status FROM responses WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(status, "in_progress", "the row as the killed server left it");
    drop(conn);

    let third = server_in(dir.path());
    let (code, left) = get_json(&third, &format!("/v1/responses/{id}"));
    assert_eq!(code, 200, "{left}");
    assert_eq!(left["status"], "failed", "{left}");
    assert_eq!(left["error"]["code"], "server_error", "{left}");
    let (code, kept_still) = get_json(&third, &format!("/v1/responses/{}", kept["id"].as_str().unwrap()));
    assert_eq!((code, &kept_still), (200, &kept));
    // The killed response's conversation cannot be continued while it runs, but can now.
    let (code, next) = post_json(
        &third,
        "/v1/responses",
        &json!({"previous_response_id": id, "input": "Go on.", "max_output_tokens": 16}),
    );
    assert_eq!(code, 200, "{next}");
}
