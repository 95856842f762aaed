//! Templates a request brings (`instruction_template_str`, `chat_template_str`) compile and
//! render in a child process with a memory limit. minijinja bounds a render's steps (fuel) and Hearth bounds
//! its output and padding filters, but not the size of the strings a template builds in between:
//! `{% set ns.s = ns.s ~ ns.s %}` thirty times asks for gigabytes, and an allocation that fails
//! aborts the process that makes it. In a child, that abort is one failed render (a 400), and
//! the server keeps serving.
//!
//! The child is `hearth render-templates` (the same binary): it reads one JSON line per render
//! (`{"source", "context"}`) and answers one (`{"ok": text}` or `{"error": message}`). Idle
//! children are kept for the next render; one that dies or overruns is replaced.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::{ChatTemplate, TemplateError};

/// Address space a child may use: room for the binary and a render, and far below the machine.
const CHILD_MEMORY: u64 = 1 << 30;
/// Wall time one render may take before its child is killed (fuel stops a busy one sooner).
const RENDER_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle children kept for later renders.
const IDLE_CHILDREN: usize = 2;
/// How a child reports a panic of the template engine (a bug to fix, found by fuzzing).
pub const PANICKED: &str = "the template renderer panicked";
/// The subcommand that runs a child.
pub const WORKER_COMMAND: &str = "render-templates";

/// A child's job: render `source` with `context`, or with none, only compile it and say
/// whether it reads `tools`.
#[derive(Serialize, Deserialize)]
struct RenderJob {
    source: String,
    context: Option<serde_json::Value>,
}

/// What an inspection answers for a template that reads `tools`.
const READS_TOOLS: &str = "reads tools";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RenderAnswer {
    Ok(String),
    Error(String),
}

/// The executable children run (`hearth`); tests that are not `hearth` point it at the binary.
static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the `hearth` binary children run (default: this process's own executable).
pub fn use_executable(path: PathBuf) {
    let _ = EXECUTABLE.set(path);
}

fn executable() -> Result<PathBuf, TemplateError> {
    match EXECUTABLE.get() {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe()
            .map_err(|e| TemplateError(format!("cannot find Hearth's own executable to render in: {e}"))),
    }
}

/// A running child.
struct Renderer {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<std::io::Result<String>>,
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn idle() -> &'static Mutex<Vec<Renderer>> {
    static IDLE: OnceLock<Mutex<Vec<Renderer>>> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

fn start() -> Result<Renderer, TemplateError> {
    let mut cmd = Command::new(executable()?);
    cmd.arg(WORKER_COMMAND).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setrlimit, prctl) run between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: CHILD_MEMORY, rlim_max: CHILD_MEMORY };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The child never outlives the server.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| TemplateError(format!("cannot start the template renderer: {e}")))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(TemplateError("the template renderer has no pipes".into()));
    };
    // A reader thread per child turns its answers into a channel, so a wait can time out.
    let (tx, answers) = mpsc::channel();
    std::thread::Builder::new()
        .name("hearth-template-reader".into())
        .spawn(move || read_answers(stdout, tx))
        .map_err(|e| TemplateError(format!("cannot start the template renderer's reader: {e}")))?;
    Ok(Renderer { child, stdin, answers })
}

fn read_answers(stdout: ChildStdout, tx: mpsc::Sender<std::io::Result<String>>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if tx.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Compiles `source` in a child: an error if it does not compile, else whether it reads `tools`.
pub fn inspect(source: &str) -> Result<bool, TemplateError> {
    Ok(run(RenderJob { source: source.to_owned(), context: None })? == READS_TOOLS)
}

/// Renders `source` with `context` in a child.
pub fn render(source: &str, context: serde_json::Value) -> Result<String, TemplateError> {
    run(RenderJob { source: source.to_owned(), context: Some(context) })
}

fn run(job: RenderJob) -> Result<String, TemplateError> {
    let job = serde_json::to_string(&job)
        .map_err(|e| TemplateError(format!("cannot send the template to its renderer: {e}")))?;
    let taken = idle().lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut renderer = match taken {
        Some(r) => r,
        None => start()?,
    };
    let sent = writeln!(renderer.stdin, "{job}").and_then(|()| renderer.stdin.flush());
    let answer = match sent {
        Ok(()) => renderer.answers.recv_timeout(RENDER_TIMEOUT),
        // The child died while idle: start another once.
        Err(_) => {
            renderer = start()?;
            writeln!(renderer.stdin, "{job}")
                .and_then(|()| renderer.stdin.flush())
                .map_err(|e| TemplateError(format!("the template renderer is gone: {e}")))?;
            renderer.answers.recv_timeout(RENDER_TIMEOUT)
        }
    };
    let line = match answer {
        Ok(Ok(line)) => line,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TemplateError(format!("the template did not finish rendering within {RENDER_TIMEOUT:?}")));
        }
        // The child died mid-render: a refused allocation is the only way a render ends it.
        Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(TemplateError(format!(
                "the template needed more than {} MiB of memory to compile or render",
                CHILD_MEMORY >> 20
            )));
        }
    };
    let answer: RenderAnswer = serde_json::from_str(&line)
        .map_err(|e| TemplateError(format!("the template renderer answered nonsense: {e}")))?;
    let mut idle = idle().lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < IDLE_CHILDREN {
        idle.push(renderer);
    }
    match answer {
        RenderAnswer::Ok(text) => Ok(text),
        RenderAnswer::Error(message) => Err(TemplateError(message)),
    }
}

/// The child's loop (`hearth render-templates`): one render per input line until stdin closes.
pub fn serve_children_requests() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let answer = match serde_json::from_str::<RenderJob>(&line?) {
            Ok(job) => {
                let rendered = std::panic::catch_unwind(|| {
                    let template = ChatTemplate::new(&job.source)?;
                    match &job.context {
                        Some(context) => template.render_value(context),
                        None => Ok(if template.reads_tools() { READS_TOOLS.into() } else { String::new() }),
                    }
                });
                match rendered {
                    Ok(Ok(text)) => RenderAnswer::Ok(text),
                    Ok(Err(e)) => RenderAnswer::Error(e.0),
                    Err(panic) => RenderAnswer::Error(format!("{PANICKED}: {}", crate::panics::panic_message(&*panic))),
                }
            }
            Err(e) => RenderAnswer::Error(format!("a malformed render job: {e}")),
        };
        let text = serde_json::to_string(&answer).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
    }
    Ok(())
}
