//! What is fuzzed: each target takes arbitrary bytes the way a request or a model file would
//! reach Hearth, and must answer with an error or a result, never a panic, a hang or an
//! allocation past the bound. Seeds are the corpus files under `tests/fuzz/<target>/` plus, for
//! GGUF, small files written here.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hearth::constraint::{Constraint, GrammarCompiler};
use hearth::gguf::GgufFile;
use hearth::http::{AppState, ModelState};
use hearth::model::LlamaConfig;
use hearth::plugins::PluginRegistry;
use hearth::prompt::{ChatTemplate, TemplateContext, template_sandbox};
use hearth::serving::ServedModel;
use hearth::tokenizer::TextTokenizer;
use hearth_settings::Settings;
use serde_json::{Value, json};

#[path = "../common/gguf_writer.rs"]
mod gguf_writer;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Tokens of the input format, for the mutator.
    pub dict: &'static [&'static [u8]],
    /// Seeds written in code, beside the corpus files.
    pub builtin_seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target { name: "gguf", dict: GGUF_DICT, builtin_seeds: gguf_seeds, run: run_gguf },
    Target { name: "gbnf", dict: GBNF_DICT, builtin_seeds: no_seeds, run: run_gbnf },
    Target { name: "json_schema", dict: JSON_DICT, builtin_seeds: no_seeds, run: run_json_schema },
    Target { name: "template", dict: JINJA_DICT, builtin_seeds: no_seeds, run: run_template },
    Target { name: "request", dict: JSON_DICT, builtin_seeds: no_seeds, run: run_request },
];

pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

fn no_seeds() -> Vec<Vec<u8>> {
    Vec::new()
}

// --------------------------------------------------------------------------------------- GGUF

const GGUF_DICT: &[&[u8]] = &[
    b"GGUF",
    b"general.architecture",
    b"general.alignment",
    b"llama.block_count",
    b"tokenizer.ggml.tokens",
    b"tokenizer.ggml.merges",
    b"tokenizer.ggml.model",
    b"gpt2",
    b"llama",
    b"\x08\x00\x00\x00",
    b"\x09\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
];

fn gguf_seeds() -> Vec<Vec<u8>> {
    use gguf_writer::{GgufWriter, Meta};
    let mut small = GgufWriter::default();
    small
        .meta("general.architecture", Meta::Str("llama".into()))
        .meta("llama.embedding_length", Meta::U32(32))
        .meta("llama.block_count", Meta::U32(1))
        .meta("llama.feed_forward_length", Meta::U32(32))
        .meta("llama.attention.head_count", Meta::U32(2))
        .meta("llama.attention.head_count_kv", Meta::U32(1))
        .meta("llama.context_length", Meta::U32(64))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .meta("tokenizer.ggml.model", Meta::Str("gpt2".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Meta::Strs(["H", "e", "l", "o", "He", "ll", "Hell", "Hello", "Ġ", "<|end|>"].map(String::from).into()),
        )
        .meta("tokenizer.ggml.token_type", Meta::I32s(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 3]))
        .meta("tokenizer.ggml.merges", Meta::Strs(["H e", "l l", "He ll", "Hell o"].map(String::from).into()))
        .meta("tokenizer.ggml.eos_token_id", Meta::U32(9));
    small.f32_matrix("token_embd.weight", 10, 32).f32_matrix("output_norm.weight", 1, 32);
    // One block of each quantized layout: (type id, bytes per block, values per block).
    for (ty, bytes, values) in [(2u32, 18usize, 32u64), (3, 20, 32), (8, 34, 32), (12, 144, 256), (14, 210, 256)] {
        small.raw(&format!("q{ty}.weight"), vec![values], ty, vec![0x11; bytes]);
    }
    let mut spm = GgufWriter::default();
    spm.meta("general.architecture", Meta::Str("llama".into()))
        .meta("tokenizer.ggml.model", Meta::Str("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Meta::Strs(["<unk>", "<s>", "</s>", "▁Hello", "▁", "H"].map(String::from).into()),
        )
        .meta("tokenizer.ggml.token_type", Meta::I32s(vec![2, 3, 3, 1, 1, 1]))
        .meta("tokenizer.ggml.bos_token_id", Meta::U32(1))
        .meta("tokenizer.ggml.add_bos_token", Meta::Bool(true));
    let mut seeds = vec![small.bytes(), spm.bytes()];
    if let Ok(quants) = std::fs::read(repo_root().join("tests/fixtures/gguf/quants.gguf")) {
        seeds.push(quants);
    }
    seeds
}

fn run_gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    let names: Vec<(String, u64)> = file.tensors().iter().map(|t| (t.name.clone(), t.num_values())).collect();
    for (name, values) in names {
        // Real tensors are large; a fuzzed one that is large only costs time.
        if values <= 1 << 16 {
            let _ = file.tensor_f32(&name);
        }
    }
    let _ = LlamaConfig::from_gguf(&file.metadata, None);
    if let Ok(tokenizer) = TextTokenizer::from_gguf(&file.metadata)
        && let Ok(ids) = tokenizer.encode("Hello, wörld 123 <|end|>", true)
    {
        let _ = tokenizer.decode(&ids, false);
    }
}

// ------------------------------------------------------------------------- grammars, schemas

/// SmolLM2's tokenizer: the grammars compile against a real vocabulary.
fn tokenizer() -> &'static Arc<TextTokenizer> {
    static TOKENIZER: OnceLock<Arc<TextTokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = repo_root().join("user_data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let file = GgufFile::open(&path).expect("SmolLM2 is installed (scripts/fetch-models)");
        Arc::new(TextTokenizer::from_gguf(&file.metadata).expect("SmolLM2's tokenizer"))
    })
}

fn compiler() -> &'static GrammarCompiler {
    static COMPILER: OnceLock<GrammarCompiler> = OnceLock::new();
    COMPILER.get_or_init(|| GrammarCompiler::new(tokenizer().clone()).expect("a grammar compiler"))
}

/// Walks a few tokens through the grammar, each the allowed token a hash of the step picks.
fn walk(mut constraint: Constraint) {
    let end = tokenizer().end_ids.clone();
    let mut logits = vec![0.0f32; tokenizer().vocab_size()];
    for step in 0..6usize {
        logits.fill(0.0);
        if constraint.mask(&mut logits, &end).is_err() {
            return;
        }
        let allowed: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        let Some(&id) = allowed.get(step.wrapping_mul(2_654_435_761) % allowed.len().max(1)) else {
            return;
        };
        if end.contains(&id) || constraint.accept(id).is_err() || constraint.is_finished() {
            return;
        }
    }
}

const GBNF_DICT: &[&[u8]] = &[
    b"root", b" ::= ", b"\n", b"\"", b"[", b"]", b"[^", b"-", b"(", b")", b"*", b"+", b"?", b"{", b"}", b",", b"|",
    b"{0,", b"{2000}", b"\\\"", b"\\n", b"\\x41", b"\\u00e9", b".", b"# c\n", b"ws", b"value",
];

fn run_gbnf(data: &[u8]) {
    if let Ok(constraint) = compiler().compile_gbnf(&String::from_utf8_lossy(data)) {
        walk(constraint);
    }
}

const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"false",
    b"\"type\"",
    b"\"object\"",
    b"\"string\"",
    b"\"integer\"",
    b"\"number\"",
    b"\"array\"",
    b"\"properties\"",
    b"\"items\"",
    b"\"$ref\"",
    b"\"#/$defs/a\"",
    b"\"$defs\"",
    b"\"anyOf\"",
    b"\"allOf\"",
    b"\"oneOf\"",
    b"\"enum\"",
    b"\"pattern\"",
    b"\"minLength\"",
    b"\"maxLength\"",
    b"\"minItems\"",
    b"\"maxItems\"",
    b"\"required\"",
    b"\"messages\"",
    b"\"role\"",
    b"\"content\"",
    b"\"tools\"",
    b"\"grammar_string\"",
    b"\"response_format\"",
    b"\"max_tokens\"",
    b"\"logit_bias\"",
    b"\"sampler_priority\"",
    b"\"stop\"",
    b"\"n\"",
    b"\"seed\"",
    b"\"instruction_template_str\"",
    b"\"mode\"",
    b"\"prompt\"",
    b"\"logprobs\"",
    b"\"top_logprobs\"",
];

fn run_json_schema(data: &[u8]) {
    let Ok(schema) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(constraint) = compiler().compile_json_schema(&schema) {
        walk(constraint);
    }
}

// ---------------------------------------------------------------------------------- templates

const JINJA_DICT: &[&[u8]] = &[
    b"{{",
    b"}}",
    b"{%",
    b"%}",
    b"{#",
    b"#}",
    b"for ",
    b" in ",
    b"endfor",
    b"if ",
    b"endif",
    b"else",
    b"set ",
    b"namespace(",
    b"messages",
    b"message['content']",
    b"message['role']",
    b"tools",
    b"|tojson",
    b"|tojson(indent=",
    b"|indent(",
    b"|format(",
    b"|length",
    b"|join(",
    b"|replace(",
    b"range(",
    b"loop.index",
    b"raise_exception(",
    b"strftime_now(",
    b".split(",
    b".strip()",
    b".format(",
    b" * ",
    b" ~ ",
    b" + ",
    b"'",
    b"\"",
    b"(",
    b")",
    b"[",
    b"]",
    b"add_generation_prompt",
    b"bos_token",
    b"macro ",
    b"endmacro",
    b"call",
    b"recursive",
    b"loop(",
];

fn run_template(data: &[u8]) {
    // As the server renders a request's template: compiled here, rendered in a child.
    static SANDBOX: OnceLock<()> = OnceLock::new();
    SANDBOX.get_or_init(|| template_sandbox::use_executable(PathBuf::from(env!("CARGO_BIN_EXE_hearth"))));
    let Ok(template) = ChatTemplate::from_request(&String::from_utf8_lossy(data)) else {
        return;
    };
    let messages = [
        json!({"role": "system", "content": "You are terse."}),
        json!({"role": "user", "content": "Hi {{ not a template }}"}),
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": {"x": [1, 2, {"y": null}]}}}]}),
        json!({"role": "tool", "content": "42", "tool_call_id": "c1"}),
    ];
    let tools = [json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}})];
    let ctx = TemplateContext {
        messages: &messages,
        tools: Some(&tools),
        add_generation_prompt: true,
        bos_token: "<s>",
        eos_token: "</s>",
        extra: Default::default(),
    };
    if let Err(e) = template.render(&ctx) {
        assert!(!e.0.contains(template_sandbox::PANICKED), "{e}");
    }
}

// ----------------------------------------------------------------------------------- requests

/// A served SmolLM2 (flex, no plugins): requests are checked and rendered as the server does.
fn served() -> &'static (Arc<AppState>, Arc<ServedModel>) {
    static SERVED: OnceLock<(Arc<AppState>, Arc<ServedModel>)> = OnceLock::new();
    SERVED.get_or_init(|| {
        let settings = Settings {
            device: hearth::model::device::DeviceChoice::Flex,
            ctx_size: Some(2048),
            model_dir: repo_root().join("user_data/models"),
            user_data_dir: repo_root().join("user_data"),
            ..Settings::default()
        };
        let plugins = Arc::new(PluginRegistry::load(&settings).expect("an empty plugin registry"));
        let state = Arc::new(AppState::new(settings.clone(), plugins.clone(), ModelState::None));
        let path = repo_root().join("user_data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let served = hearth::serving::load_model(&path, &settings, &plugins, &state.embeddings, &Default::default())
            .expect("SmolLM2 loads");
        let served = Arc::new(served);
        state.set_model(ModelState::Ready(served.clone()));
        (state, served)
    })
}

fn run_request(data: &[u8]) {
    use hearth::http::types::{ChatCompletionRequest, CompletionRequest};
    use hearth::http::validate;
    let (state, served) = served();
    if let Ok(req) = validate::parse_body::<ChatCompletionRequest>(data)
        && let Ok(rendered) = hearth::http::chat::render_request(state, served, req)
    {
        let _ = served.engine.tokenizer().encode(&rendered.prompt, false);
    }
    if let Ok(mut req) = validate::parse_body::<CompletionRequest>(data) {
        let common = req.take_common();
        if let Ok(sampling) = state.sampling(&mut req.extra, served) {
            let _ = validate::check_extra(&req.extra).and_then(|()| validate::plan(common, sampling, None));
        }
    }
}
