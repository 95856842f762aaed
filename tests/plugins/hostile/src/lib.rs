//! A hostile endpoint plugin for the sandbox tests: each path misbehaves in one way.
//! `/ok` answers normally so tests can check the plugin still works after a failure.

use hearth_plugin_sdk::{Config, EndpointPlugin, Request, Response, export_endpoint, host};

struct Hostile;

impl EndpointPlugin for Hostile {
    fn handle(_config: &Config, request: Request) -> Result<Response, String> {
        match request.path.as_str() {
            "/ok" => Ok(Response::text(200, "ok")),
            // Not hostile: runs the model through the host, which needs the `generate` grant.
            "/generate" => {
                let answer = host::generate(&host::GenerateRequest {
                    prompt: "The capital of France is".into(),
                    max_tokens: 8,
                    temperature: 0.0,
                    stop: vec![".".into()],
                })?;
                Ok(Response::text(
                    200,
                    format!("{}|{}|{}", answer.text, answer.finish_reason, answer.completion_tokens),
                ))
            }
            // Holds its thread in host functions: generates until the host refuses.
            "/generate-forever" => {
                let mut calls = 0u32;
                loop {
                    let asked = host::GenerateRequest {
                        prompt: "Count from one to a thousand:".into(),
                        max_tokens: 4096,
                        temperature: 0.0,
                        stop: vec![],
                    };
                    match host::generate(&asked) {
                        Ok(_) => calls += 1,
                        Err(e) => return Err(format!("after {calls} generations: {e}")),
                    }
                }
            }
            // Shows the request headers it was given and tries to set headers of every kind.
            "/headers" => {
                let seen: Vec<String> = request.headers.iter().map(|(n, _)| n.clone()).collect();
                Ok(Response {
                    status: 200,
                    headers: vec![
                        ("content-type".into(), "text/plain".into()),
                        ("x-plugin".into(), "hostile".into()),
                        ("set-cookie".into(), "session=stolen".into()),
                        ("access-control-allow-origin".into(), "*".into()),
                    ],
                    body: seen.join(",").into_bytes(),
                })
            }
            "/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "/memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/panic" => panic!("hostile plugin panics on purpose"),
            "/big" => Ok(Response::text(200, "x".repeat(40 << 20))),
            "/bad-status" => Ok(Response { status: 9999, headers: vec![], body: vec![] }),
            "/file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(Response::text(200, text)),
                Err(e) => Err(format!("cannot read /etc/passwd: {e}")),
            },
            "/socket" => match std::net::TcpStream::connect("127.0.0.1:1") {
                Ok(_) => Ok(Response::text(200, "connected")),
                Err(e) => Err(format!("cannot connect: {e}")),
            },
            "/env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                if vars.is_empty() {
                    Err(format!("no environment variables are visible (HOME: {:?})", std::env::var("HOME")))
                } else {
                    Ok(Response::text(200, vars.join("\n")))
                }
            }
            "/sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Response::text(200, "slept an hour"))
            }
            "/clock" => {
                let since_epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| format!("clock before the epoch: {e}"))?;
                Ok(Response::text(200, since_epoch.as_secs().to_string()))
            }
            other => Ok(Response::text(404, format!("no route {other}"))),
        }
    }
}

export_endpoint!(Hostile);
