//! Keys, the Host guard, HTTPS and the `OPENEDAI_*` environment, end to end. These servers load
//! no model: what is tested sits in front of it.

mod common;

use std::sync::Arc;

use common::{Server, agent, get_json, model_dir};
use serde_json::Value;

fn status_with(server: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = agent().get(&server.url(path));
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let body = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn api_key_and_admin_key_are_enforced() {
    let dir = model_dir();
    let server =
        Server::start(&["--model-dir", dir.to_str().unwrap(), "--api-key", "user-key", "--admin-key", "admin-key"]);
    let (status, body) = status_with(&server, "/v1/models", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(status_with(&server, "/v1/models", Some("wrong")).0, 401);
    assert_eq!(status_with(&server, "/v1/models", Some("user-key")).0, 200);
    // The admin key opens what the API key opens.
    assert_eq!(status_with(&server, "/v1/models", Some("admin-key")).0, 200);
    // /health needs no key.
    assert_eq!(status_with(&server, "/health", None).0, 200);
    // Admin routes: the user key is not enough.
    let (status, body) = status_with(&server, "/v1/internal/model/list", Some("user-key"));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().is_some());
    assert_eq!(status_with(&server, "/v1/internal/model/list", None).0, 403);
    let (status, body) = status_with(&server, "/v1/internal/model/list", Some("admin-key"));
    assert_eq!(status, 200);
    assert!(body["model_names"].as_array().unwrap().iter().any(|m| m == "SmolLM2-135M-Instruct.Q4_1"), "{body}");
}

#[test]
fn a_foreign_host_header_is_refused_without_listen() {
    let server = Server::start(&["--model-dir", model_dir().to_str().unwrap()]);
    let mut resp = agent().get(&server.url("/v1/models")).header("Host", "evil.example:5000").call().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("evil.example"), "{body}");
    let resp = agent().get(&server.url("/v1/models")).header("Host", "localhost:5000").call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn with_listen_any_host_header_is_served() {
    let server = Server::start(&["--model-dir", model_dir().to_str().unwrap(), "--listen"]);
    // --listen binds every interface; the announced address is 0.0.0.0.
    let url = format!("http://127.0.0.1:{}/v1/models", server.port);
    let resp = agent().get(&url).header("Host", "my-server.lan:5000").call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn https_works_with_a_generated_certificate() {
    let dir = std::env::temp_dir().join(format!("hearth-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    // The certificate paths come from OPENEDAI_* variables, which win over everything.
    let server = Server::start_with_env(
        &["--model-dir", model_dir().to_str().unwrap()],
        &[("OPENEDAI_CERT_PATH", cert_path.to_str().unwrap()), ("OPENEDAI_KEY_PATH", key_path.to_str().unwrap())],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![
            ureq::tls::Certificate::from_der(cert.cert.der()).to_owned(),
        ])))
        .build();
    let https: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
    let url = format!("https://localhost:{}/v1/models", server.port);
    let mut resp = https.get(&url).call().expect("HTTPS request");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["object"], "list");
    // Plain HTTP on the TLS port does not get an answer.
    assert!(agent().get(&format!("http://127.0.0.1:{}/health", server.port)).call().is_err());
}

#[test]
fn openedai_port_wins_over_the_command_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server =
        Server::spawn(&["--model-dir", model_dir().to_str().unwrap()], &[("OPENEDAI_PORT", &port.to_string())]);
    assert_eq!(server.port, port, "announced {}", server.base);
    server.wait_ready();
    assert_eq!(get_json(&server, "/health").0, 200);
}

/// Privacy: prompts and answers never reach the log, unless OPENEDAI_DEBUG=1 asks for them.
#[test]
fn request_content_is_logged_only_with_openedai_debug() {
    let model = common::smollm2();
    let marker = "zebra-marmalade-7731";
    let body =
        serde_json::json!({"messages": [{"role": "user", "content": format!("Repeat: {marker}")}], "max_tokens": 4});
    for (debug, expect_logged) in [("0", false), ("1", true)] {
        let server = Server::start_with_env(
            &["--model", model.to_str().unwrap(), "--device", "flex", "--ctx-size", "512"],
            &[("OPENEDAI_DEBUG", debug), ("HEARTH_LOG", "debug")],
        );
        let (status, _) = common::post_json(&server, "/v1/chat/completions", &body);
        assert_eq!(status, 200);
        server.kill();
        assert_eq!(server.log().contains(marker), expect_logged, "OPENEDAI_DEBUG={debug}; log:\n{}", server.log());
    }
}
