//! The `hearth` command line: `hearth [FLAGS]` serves the OpenAI API; `hearth generate` runs one
//! prompt. Only this file uses `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hearth::generate::{self, GenerateArgs};
use hearth::model::DeviceChoice;
use hearth::sampling::SamplingParams;
use hearth_settings::CliSettings;

#[derive(Parser, Debug)]
#[command(name = "hearth", version, about = "A local, private, OpenAI-compatible inference server")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeCli,
}

/// text-generation-webui's API flags.
#[derive(Args, Debug)]
struct ServeCli {
    /// Accepted for compatibility: the API is always on.
    #[arg(long)]
    api: bool,
    /// Port of the API (default 5000; `OPENEDAI_PORT` wins).
    #[arg(long)]
    api_port: Option<u16>,
    /// Listen on every interface, not only on loopback.
    #[arg(long)]
    listen: bool,
    /// The address to listen on.
    #[arg(long)]
    listen_host: Option<String>,
    /// Require `Authorization: Bearer KEY` on every request.
    #[arg(long)]
    api_key: Option<String>,
    /// Key for model management routes (defaults to --api-key).
    #[arg(long)]
    admin_key: Option<String>,
    /// A web origin whose pages may call the API from a browser (repeatable; `*` for any).
    /// Without it, browsers may call the API only from Hearth's own origin.
    #[arg(long = "cors-allow-origin", value_name = "ORIGIN")]
    cors_allow_origins: Vec<String>,
    /// Serve /metrics without the API key (for a Prometheus scraping without credentials).
    #[arg(long)]
    metrics_public: bool,
    /// Serve neither /openapi.json nor /docs.
    #[arg(long)]
    no_docs: bool,
    /// TLS private key (PEM); `OPENEDAI_KEY_PATH` wins.
    #[arg(long)]
    ssl_keyfile: Option<PathBuf>,
    /// TLS certificate (PEM); `OPENEDAI_CERT_PATH` wins.
    #[arg(long)]
    ssl_certfile: Option<PathBuf>,
    /// Model to load: a file or folder name in the model dir, or a path.
    #[arg(long)]
    model: Option<String>,
    /// Where models live (default user_data/models).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// text-generation-webui's user data folder: characters/, instruction-templates/ (default
    /// user_data).
    #[arg(long)]
    user_data_dir: Option<PathBuf>,
    /// settings.yaml (default user_data/settings.yaml when present).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// auto (a GPU if there is one, else the CPU), wgpu (gpu, vulkan) or flex (cpu).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Most positions (prompt + answer) per sequence.
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Threads the CPU path computes on (default: RAYON_NUM_THREADS, else the physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Sequences batched together, one forward pass a step for all of them (default 16).
    #[arg(long, value_name = "N")]
    parallel: Option<usize>,
    /// Requests that may wait for a batch slot before new ones get 429 (default 64).
    #[arg(long, value_name = "M")]
    max_queue: Option<usize>,
    /// Most prompt tokens one step prefills (default 512).
    #[arg(long, value_name = "TOKENS")]
    prefill_chunk: Option<usize>,
    /// Positions the KV cache holds across all sequences, reused between requests that share a
    /// prefix (default: every batched sequence at full context, up to a quarter of the memory).
    #[arg(long, value_name = "TOKENS")]
    cache_size: Option<usize>,
    /// Load none of the first-party plugins built into the binary (tool-call parsers,
    /// moderation, token tools); only those the settings list.
    #[arg(long)]
    no_default_plugins: bool,
    /// Days a stored /v1/responses response is kept (default 30; 0 keeps it until deleted).
    #[arg(long, value_name = "DAYS")]
    responses_retention_days: Option<u32>,
    /// The Whisper model for /v1/audio/transcriptions: a folder in the model dir or a path
    /// (default: the first Whisper folder there).
    #[arg(long, value_name = "NAME")]
    whisper_model: Option<String>,
    /// Longest audio a transcription takes (default 3600 s).
    #[arg(long, value_name = "SECONDS")]
    max_audio_seconds: Option<u64>,
    /// The Piper voice for /v1/audio/speech: a voice name in the model dir (the .onnx file's
    /// stem) or a path to its .onnx (default: the first voice there).
    #[arg(long, value_name = "NAME")]
    piper_voice: Option<String>,
    /// Which image URLs in requests are fetched: off (only data: URLs), public (http(s), not
    /// to loopback/private/link-local addresses) or any (default: off).
    #[arg(long, value_name = "WHICH")]
    image_urls: Option<hearth_settings::ImageUrls>,
    /// llama.cpp's vision file (mmproj GGUF) for a GGUF model (default: the one mmproj*.gguf
    /// beside a model alone in its folder).
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,
    /// The image model for /v1/images/generations (Stable Diffusion 1.x/2.x): a diffusers
    /// folder or a single-file .safetensors checkpoint, in the model dir or a path. Loaded at start.
    #[arg(long, value_name = "NAME")]
    image_model: Option<String>,
    /// For a single-file image model: a diffusers folder of the same model to read its configs,
    /// tokenizer and scheduler from (default: inferred, with the .yaml and tokenizer/ beside it).
    #[arg(long, value_name = "DIR")]
    image_config: Option<PathBuf>,
    /// Where the image model runs: auto, wgpu or flex (default: --device).
    #[arg(long, value_name = "DEVICE")]
    image_device: Option<DeviceChoice>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one prompt and stream the answer to stdout.
    Generate(GenerateCli),
    /// The server's sandboxed template renderer (started by the server itself, not by hand).
    #[command(name = "render-templates", hide = true)]
    RenderTemplates,
}

#[derive(Args, Debug)]
struct GenerateCli {
    /// A .gguf file or a Hugging Face model folder.
    #[arg(long)]
    model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Send the prompt as a user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// auto (a GPU if there is one, else the CPU), wgpu or flex (CPU).
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Most positions (prompt + answer).
    #[arg(long, default_value_t = 8192)]
    ctx_size: usize,
    /// Threads the CPU path computes on (default: RAYON_NUM_THREADS, else the physical cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Some(Command::Generate(g)) => run_generate(g),
        Some(Command::RenderTemplates) => {
            hearth::prompt::template_sandbox::serve_children_requests().map_err(Into::into)
        }
        None => run_serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Hearth's errors carry their causes in their message; `{e}` prints each once.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    // GPU libraries log every kernel autotune and adapter detail at info; keep them to warnings.
    const DEFAULT_FILTER: &str =
        "info,cubecl=warn,cubecl_runtime=warn,cubecl_wgpu=warn,wgpu_core=warn,wgpu_hal=warn,naga=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run_serve(cli: ServeCli) -> anyhow::Result<()> {
    let _ = cli.api;
    let threads = hearth::threads::configure(cli.threads)?;
    tracing::info!("compute threads: {threads}");
    let overrides = CliSettings {
        api_port: cli.api_port,
        listen: cli.listen.then_some(true),
        listen_host: cli.listen_host,
        api_key: cli.api_key,
        admin_key: cli.admin_key,
        cors_allow_origins: (!cli.cors_allow_origins.is_empty()).then_some(cli.cors_allow_origins),
        metrics_public: cli.metrics_public.then_some(true),
        docs: cli.no_docs.then_some(false),
        ssl_keyfile: cli.ssl_keyfile,
        ssl_certfile: cli.ssl_certfile,
        model: cli.model,
        model_dir: cli.model_dir,
        user_data_dir: cli.user_data_dir,
        device: cli.device,
        ctx_size: cli.ctx_size,
        max_running: cli.parallel,
        max_queue: cli.max_queue,
        prefill_chunk: cli.prefill_chunk,
        cache_size: cli.cache_size,
        default_plugins: cli.no_default_plugins.then_some(false),
        responses_retention_days: cli.responses_retention_days,
        whisper_model: cli.whisper_model,
        max_audio_seconds: cli.max_audio_seconds,
        piper_voice: cli.piper_voice,
        image_urls: cli.image_urls,
        mmproj: cli.mmproj,
        image_model: cli.image_model,
        image_config: cli.image_config,
        image_device: cli.image_device,
    };
    let default_file = PathBuf::from("user_data/settings.yaml");
    let file = cli.settings.or_else(|| default_file.exists().then_some(default_file));
    let settings = hearth_settings::load(file.as_deref(), &overrides, std::env::vars())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(hearth::server::run(settings))?;
    Ok(())
}

fn run_generate(g: GenerateCli) -> anyhow::Result<()> {
    hearth::threads::configure(g.threads)?;
    let args = GenerateArgs {
        model: g.model,
        prompt: g.prompt,
        chat: g.chat,
        system: g.system,
        max_tokens: g.max_tokens,
        device: g.device,
        sampling: SamplingParams {
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p,
            seed: g.seed,
            ..SamplingParams::default()
        },
        context_length: g.ctx_size,
    };
    let stdout = std::io::stdout();
    // A panic in a device library becomes an error message and exit code 1, like any failure.
    let stats = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| generate::run(&args, &mut stdout.lock())))
        .map_err(|_| anyhow::anyhow!("internal error: the model runtime panicked (see the message above)"))??;
    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.1} tok/s); generated: {} tokens in {:.3} s ({:.1} tok/s); finish: {}",
        stats.prompt_tokens,
        stats.prefill_secs,
        stats.prompt_tokens as f64 / stats.prefill_secs.max(1e-9),
        stats.generated_tokens,
        stats.decode_secs,
        stats.generated_tokens.saturating_sub(1) as f64 / stats.decode_secs.max(1e-9),
        stats.finish.as_openai(),
    );
    Ok(())
}
