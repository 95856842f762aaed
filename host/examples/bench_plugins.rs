//! What plugins cost (issue: the sampler hook must stay under 5 µs per token on a 2-core CPU).
//!
//! Run by `scripts/bench-plugins`. Loads real components built by `scripts/build-plugins` and
//! times, on this thread:
//! - the sampler hook per generated token: `process` (the guest reads the candidates' ids and
//!   edits one) and `accept`, with 32 candidates (the greedy case) and 256 (the most a sampling
//!   step hands over), against the built-in sampler alone over SmolLM2's 49152-token vocabulary;
//! - a whole endpoint call: a fresh instance, the request in, the response out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hearth::plugins::{EndpointRequest, PluginKind, PluginRegistry};
use hearth::sampling::{Candidates, Sampler, SamplingParams};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

fn component(dir: &str, file: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join(dir).join("wasm").join(file);
    anyhow::ensure!(path.exists(), "{} is missing: run scripts/build-plugins", path.display());
    Ok(path)
}

/// Median of `runs` timings of `iters` calls of `f`, per call.
fn time_per_call(runs: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iters {
                f();
            }
            started.elapsed() / iters as u32
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}

fn micros(d: Duration) -> String {
    format!("{:8.2} µs", d.as_secs_f64() * 1e6)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join("hearth-bench-plugins");
    std::fs::create_dir_all(&dir)?;
    let settings_path = dir.join("settings.yaml");
    std::fs::write(
        &settings_path,
        format!(
            "plugin_cache_dir: {}\nplugins:\n  - {{name: ban-token, path: {}, config: {{token: 7}}}}\n  - {{name: banned-strings, path: {}, config: {{banned: [Paris, as an AI language model]}}}}\n  - {{name: hostile, path: {}}}\n",
            dir.join("cache").display(),
            component("tests/plugins", "ban_token.wasm")?.display(),
            component("plugins", "banned_strings.wasm")?.display(),
            component("tests/plugins", "hostile.wasm")?.display(),
        ),
    )?;
    let settings = hearth_settings::load(Some(&settings_path), &Default::default(), std::iter::empty())?;
    let registry = PluginRegistry::load(&settings)?;
    // A vocabulary of SmolLM2's size, so plugins that read candidate texts have texts to read.
    let vocab: Vec<String> = (0..49_152).map(|i| format!(" tok{i}")).collect();
    registry.set_services(None, Some(std::sync::Arc::new(vocab)));

    for (index, what) in
        [(0, "ban-token: reads the ids, bans one"), (1, "banned-strings: reads every candidate's text")]
    {
        println!("sampler hook ({what}), per generated token:");
        for n in [32usize, 256] {
            let mut sessions = registry.start_samplers()?;
            let session = sessions.get_mut(index).ok_or_else(|| anyhow::anyhow!("sampler {index} not loaded"))?;
            let ids: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
            let logits: Vec<f32> = (0..n).map(|i| -(i as f32) * 0.1).collect();
            let mut failures = 0usize;
            let per_token = time_per_call(7, 20_000, || {
                let mut c = Candidates { ids: ids.clone(), logits: logits.clone() };
                if session.process(&mut c).is_err() || session.accept(c.ids[0]).is_err() {
                    failures += 1;
                }
            });
            anyhow::ensure!(failures == 0, "{failures} hook calls failed");
            println!("  {n:3} candidates: {}  (process + accept)", micros(per_token));
        }
    }

    let vocab = 49_152;
    let logits: Vec<f32> = (0..vocab).map(|i| ((i * 7919) % 1000) as f32 * 0.01).collect();
    let context: Vec<u32> = (0..256).collect();
    let mut sampler =
        Sampler::new(SamplingParams { temperature: 0.7, top_k: 40, seed: Some(1), ..SamplingParams::default() });
    let builtin = time_per_call(7, 500, || {
        std::hint::black_box(sampler.sample(&logits, &context));
    });
    println!("  for scale, the built-in sampler alone (top-k 40, {vocab} logits): {}", micros(builtin));

    let endpoint =
        registry.of_kind(PluginKind::Endpoint).next().cloned().ok_or_else(|| anyhow::anyhow!("no endpoint loaded"))?;
    let request = EndpointRequest {
        method: "GET".into(),
        path: "/ok".into(),
        query: String::new(),
        headers: vec![("accept".into(), "*/*".into())],
        body: Vec::new(),
    };
    let per_call = time_per_call(5, 300, || {
        let answer = registry.call_endpoint(&endpoint, request.clone());
        assert!(answer.is_ok_and(|a| a.status == 200));
    });
    println!("endpoint call (fresh instance, GET /ok, in-process, without HTTP): {}", micros(per_call));
    Ok(())
}
