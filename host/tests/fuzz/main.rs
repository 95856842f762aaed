//! Fuzzing Hearth's request- and file-facing parsers: the GGUF reader, GBNF and JSON-schema
//! grammars, request templates and request bodies (see `targets.rs`).
//!
//! Two ways to run it:
//! - `cargo test --test fuzz`: every corpus file of every target, plus a few hundred mutants
//!   from a fixed seed — a regression test of what fuzzing has found (each crash it found is
//!   a corpus file).
//! - `scripts/fuzz [--seconds N] [TARGET…]`: a campaign per target (the ignored
//!   `campaign` test with `HEARTH_FUZZ_TARGET` and `HEARTH_FUZZ_SECONDS`): mutants of the
//!   corpus until the time is up. An input that panics, runs past 10 s, or allocates past
//!   1 GiB is written to `fuzz-crashes/<target>/` under the target dir, and the campaign fails.

mod alloc;
mod mutate;
mod targets;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use targets::{TARGETS, Target};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// An input running longer than this is a hang.
const HANG: Duration = Duration::from_secs(10);
/// Mutants per target in a normal test run.
const REGRESSION_MUTANTS: u64 = 300;

fn corpus_dir(target: &Target) -> PathBuf {
    targets::repo_root().join("tests/fuzz").join(target.name)
}

fn crash_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes").join(target.name)
}

/// The corpus files and the built-in seeds of a target.
fn seeds(target: &Target) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(corpus_dir(target)) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                seeds.push((p.file_name().unwrap_or_default().to_string_lossy().into_owned(), bytes));
            }
        }
    }
    for (i, bytes) in (target.builtin_seeds)().into_iter().enumerate() {
        seeds.push((format!("builtin-{i}"), bytes));
    }
    assert!(!seeds.is_empty(), "target {} has no seeds in {}", target.name, corpus_dir(target).display());
    seeds
}

/// What went wrong with one input.
enum Finding {
    Panic(String),
    Allocated(usize),
}

impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Panic(message) => write!(f, "panicked: {message}"),
            Self::Allocated(bytes) => write!(f, "allocated {} MiB", bytes >> 20),
        }
    }
}

/// The input under test, where the hang watchdog can save it.
struct Current {
    input: Mutex<Vec<u8>>,
    started_ms: AtomicU64,
    running: AtomicBool,
}

/// Runs one input; a panic or a peak past the bound is a finding.
fn run_one(target: &Target, input: &[u8]) -> Option<Finding> {
    alloc::reset_peak();
    let before = alloc::live();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let grew = alloc::peak().saturating_sub(before);
    match outcome {
        Err(panic) => Some(Finding::Panic(hearth::panics::panic_message(&*panic))),
        Ok(()) if grew > alloc::MAX_ALLOCATION => Some(Finding::Allocated(grew)),
        Ok(()) => None,
    }
}

fn save(dir: &Path, input: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let hash = input.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let path = dir.join(format!("crash-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Every corpus file and a fixed set of mutants of every target: none may fail.
#[test]
fn corpus_and_mutants_run_clean() {
    for target in TARGETS {
        let seeds = seeds(target);
        let mut failures = Vec::new();
        for (name, input) in &seeds {
            if let Some(f) = run_one(target, input) {
                failures.push(format!("{name}: {f:?}"));
            }
        }
        let mut rng = mutate::rng_for(0x4845_4152_5448);
        for i in 0..REGRESSION_MUTANTS {
            let seed = &seeds[i as usize % seeds.len()].1;
            let other = &seeds[(i as usize * 7 + 3) % seeds.len()].1;
            let input = mutate::mutate(&mut rng, seed, other, target.dict);
            if let Some(f) = run_one(target, &input) {
                failures.push(format!("mutant {i} (saved to {}): {f:?}", save(&crash_dir(target), &input).display()));
            }
        }
        assert!(failures.is_empty(), "target {}:\n{}", target.name, failures.join("\n"));
    }
}

/// One target for `HEARTH_FUZZ_SECONDS` (run by `scripts/fuzz`).
#[test]
#[ignore = "a fuzzing campaign: run it with scripts/fuzz"]
fn campaign() {
    let name = std::env::var("HEARTH_FUZZ_TARGET").expect("HEARTH_FUZZ_TARGET names a target");
    let target = TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| {
        panic!("no target `{name}`; the targets are {:?}", TARGETS.iter().map(|t| t.name).collect::<Vec<_>>())
    });
    let seconds: u64 = std::env::var("HEARTH_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seeds = seeds(target);
    let crashes = crash_dir(target);
    let _ = std::fs::create_dir_all(&crashes);
    let pending = crashes.join("pending-input");
    let current = Arc::new(Current {
        input: Mutex::new(Vec::new()),
        started_ms: AtomicU64::new(0),
        running: AtomicBool::new(false),
    });
    let epoch = Instant::now();
    spawn_hang_watchdog(current.clone(), crashes.clone(), epoch);

    let deadline = epoch + Duration::from_secs(seconds);
    let mut rng = mutate::rng_for(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    );
    let (mut execs, mut slowest, mut peak) = (0u64, Duration::ZERO, 0usize);
    let mut findings = Vec::new();
    let mut last_report = Instant::now();
    // A campaign also grows its corpus in memory: mutants that parsed far enough to take long
    // are kept as seeds (a cheap stand-in for coverage feedback).
    let mut pool: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    while Instant::now() < deadline {
        let seed = &pool[rand::Rng::random_range(&mut rng, 0..pool.len())];
        let other = &pool[rand::Rng::random_range(&mut rng, 0..pool.len())];
        let input = mutate::mutate(&mut rng, seed, other, target.dict);
        // On disk before it runs: an allocation the allocator refuses aborts the process, and
        // scripts/fuzz then keeps this file as the crash.
        let _ = std::fs::write(&pending, &input);
        *current.input.lock().unwrap_or_else(|p| p.into_inner()) = input.clone();
        current.started_ms.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        current.running.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let before = alloc::live();
        let finding = run_one(target, &input);
        let took = started.elapsed();
        current.running.store(false, Ordering::SeqCst);
        peak = peak.max(alloc::peak().saturating_sub(before));
        slowest = slowest.max(took);
        execs += 1;
        if let Some(f) = finding {
            let path = save(&crashes, &input);
            eprintln!("fuzz {name}: {f:?}; input saved to {}", path.display());
            findings.push(path);
        } else if took > Duration::from_millis(20) && pool.len() < 4096 {
            pool.push(input);
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!("fuzz {name}: {execs} execs, slowest {slowest:?}, peak {} MiB", peak >> 20);
            last_report = Instant::now();
        }
    }
    let secs = epoch.elapsed().as_secs_f64();
    let line = format!(
        "fuzz {name}: {execs} executions in {secs:.0} s ({:.0}/s), slowest input {:.2} s, largest allocation growth {} MiB, {} findings",
        execs as f64 / secs,
        slowest.as_secs_f64(),
        peak >> 20,
        findings.len()
    );
    let _ = std::fs::remove_file(&pending);
    println!("{line}");
    let _ = std::io::stdout().flush();
    assert!(findings.is_empty(), "{line}: {findings:?}");
}

/// Runs one saved input (`HEARTH_FUZZ_TARGET`, `HEARTH_FUZZ_REPLAY=FILE`) and reports what it
/// does, to debug a finding.
#[test]
#[ignore = "replays one input: HEARTH_FUZZ_TARGET and HEARTH_FUZZ_REPLAY"]
fn replay() {
    let name = std::env::var("HEARTH_FUZZ_TARGET").expect("HEARTH_FUZZ_TARGET names a target");
    let target = TARGETS.iter().find(|t| t.name == name).expect("a known target");
    let path = std::env::var("HEARTH_FUZZ_REPLAY").expect("HEARTH_FUZZ_REPLAY names an input file");
    let input = std::fs::read(&path).expect("the input file");
    let started = Instant::now();
    let finding = run_one(target, &input);
    println!("{path}: {:?} in {:?}, allocation growth {} MiB", finding, started.elapsed(), alloc::peak() >> 20);
    assert!(finding.is_none(), "{finding:?}");
}

/// Aborts the campaign (with the input saved) when one input runs past [`HANG`].
fn spawn_hang_watchdog(current: Arc<Current>, crashes: PathBuf, epoch: Instant) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let started = Duration::from_millis(current.started_ms.load(Ordering::SeqCst));
            if current.running.load(Ordering::SeqCst) && epoch.elapsed().saturating_sub(started) > HANG {
                let input = current.input.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let path = save(&crashes, &input);
                eprintln!("fuzz: an input ran past {HANG:?} (a hang); saved to {}", path.display());
                std::process::exit(3);
            }
        }
    });
}
