//! End-to-end test harness: starts the real `hearth` binary on a free loopback port with real
//! weights, waits until it serves, and runs real clients against it.
//!
//! Every server process is spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so a test
//! binary that exits or crashes never leaves a server behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to load its model (debug builds on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(600);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The SmolLM2 GGUF that `scripts/fetch-models` installs.
pub fn smollm2() -> PathBuf {
    let p = repo_root().join("user_data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models (scripts/test does)", p.display());
    p
}

pub fn model_dir() -> PathBuf {
    repo_root().join("user_data/models")
}

/// A running `hearth` process.
pub struct Server {
    child: Mutex<Option<Child>>,
    /// e.g. `http://127.0.0.1:41234` (no `/v1`).
    pub base: String,
    pub port: u16,
    /// Everything the server wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

type SpawnRequest = (Vec<String>, Vec<(String, String)>, mpsc::Sender<std::io::Result<Child>>);

/// The thread that spawns every server and lives as long as the test process.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (args, envs, reply) in rx {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
                // The caller's OPENEDAI_* variables would override the test's flags.
                cmd.env_remove("OPENEDAI_PORT")
                    .env_remove("OPENEDAI_DEBUG")
                    .env_remove("OPENEDAI_CERT_PATH")
                    .env_remove("OPENEDAI_KEY_PATH")
                    .env_remove("OPENEDAI_EMBEDDING_MODEL")
                    .env_remove("OPENEDAI_EMBEDDING_DEVICE")
                    .args(&args)
                    .envs(envs)
                    .current_dir(repo_root())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
            // Keep this thread (the children's parent thread) alive until the process exits.
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    })
}

impl Server {
    /// Starts `hearth` with `args` (plus `--api-port 0`) and waits until `/health` is 200.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let server = Self::spawn(args, envs);
        server.wait_ready();
        server
    }

    /// Starts `hearth` and returns once it has announced its address (maybe still loading).
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut all: Vec<String> = vec!["--api-port".into(), "0".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner().lock().unwrap().send((all, envs, reply_tx)).expect("spawner thread is alive");
        let mut child = reply_rx.recv().unwrap().expect("hearth starts");

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if std::env::var_os("HEARTH_TEST_ECHO").is_some() {
                    eprint!("[hearth] {line}");
                }
                log_writer.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (url_tx, url_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.split(" at ").nth(1) {
                    let _ = url_tx.send(url.trim().trim_end_matches("/v1").to_owned());
                    sent = true;
                }
            }
        });
        let base = match url_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => base,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                std::thread::sleep(Duration::from_millis(200));
                panic!("hearth did not announce its address (exit: {status:?}); stderr:\n{}", log.lock().unwrap());
            }
        };
        let port = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in the announced URL");
        Server { child: Mutex::new(Some(child)), base, port, log }
    }

    /// The one SmolLM2 server shared by the tests of this test binary.
    pub fn shared() -> &'static Server {
        static SHARED: OnceLock<Server> = OnceLock::new();
        SHARED.get_or_init(|| Server::smollm2(&[]))
    }

    /// A SmolLM2 server on flex with a 2048-token context, plus `extra` arguments.
    pub fn smollm2(extra: &[&str]) -> Server {
        let model = smollm2();
        let mut args = vec!["--model", model.to_str().unwrap(), "--device", "flex", "--ctx-size", "2048"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process has exited, and how.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn wait_ready(&self) {
        let started = Instant::now();
        // Readiness only: a test's own self-signed certificate need not be trusted here.
        let tls = ureq::tls::TlsConfig::builder().disable_verification(true).build();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
        loop {
            if let Some(status) = self.exit_status() {
                std::thread::sleep(Duration::from_millis(300));
                panic!("hearth exited ({status}) before it was ready; stderr:\n{}", self.log());
            }
            if let Ok(resp) = agent.get(&self.url("/health")).call()
                && resp.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "hearth was not ready after {READY_TIMEOUT:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the server writes `needle` to its log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Sends `signal` (`libc::SIGTERM`, …) to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            // SAFETY: kill(2) on our own child's pid touches no memory of ours.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that reports 4xx/5xx as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// `(status, body as JSON)` of a POST.
pub fn post_json(server: &Server, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut resp = agent().post(&server.url(path)).send_json(body).expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body read");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text));
    (status, json)
}

/// `(status, body as JSON)` of a GET.
pub fn get_json(server: &Server, path: &str) -> (u16, serde_json::Value) {
    let mut resp = agent().get(&server.url(path)).call().expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body read");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text));
    (status, json)
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// POSTs and returns the raw SSE body.
pub fn post_stream(server: &Server, path: &str, body: &serde_json::Value) -> (u16, String) {
    let mut resp = agent().post(&server.url(path)).send_json(body).expect("request sent");
    let status = resp.status().as_u16();
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text).expect("stream read");
    (status, text)
}

/// The Python of the test clients' virtual environment.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/setup-test-clients (scripts/test does)", p.display());
    p
}

/// Runs a client script against `server`; panics with its output when it fails.
pub fn run_client(program: &Path, args: &[&str], server: &Server, envs: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env("HEARTH_BASE_URL", &server.base)
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log tail\n{}",
        program.display(),
        out.status,
        tail(&server.log(), 4000)
    );
    stdout
}

/// Runs `tests/clients/<script>` with the venv's Python.
pub fn run_python(script: &str, server: &Server) -> String {
    let path = repo_root().join("tests/clients").join(script);
    run_client(&python(), &[path.to_str().unwrap()], server, &[])
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}
