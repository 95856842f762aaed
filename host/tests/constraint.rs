//! Constrained decoding on SmolLM2's real vocabulary (built from its GGUF): whatever tokens a
//! model picks among those the grammar allows, the text is a call in the format with arguments
//! that follow the tool's JSON schema, and the grammar then ends.

mod common;

use std::sync::Arc;

use hearth::constraint::GrammarCompiler;
use hearth::gguf::GgufFile;
use hearth::tokenizer::TextTokenizer;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn tokenizer() -> Arc<TextTokenizer> {
    let file = GgufFile::open(&common::smollm2()).unwrap();
    Arc::new(TextTokenizer::from_gguf(&file.metadata).unwrap())
}

/// Walks the grammar picking a random allowed token each step (a stand-in for any model);
/// returns the text, and whether the grammar reached its end within `limit` tokens.
fn walk(compiler: &GrammarCompiler, tok: &TextTokenizer, grammar: &str, seed: u64, limit: usize) -> (String, bool) {
    let mut constraint = compiler.compile(grammar).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vocab = tok.vocab_size();
    let end_ids = tok.end_ids.clone();
    let mut ids = Vec::new();
    for _ in 0..limit {
        let mut logits = vec![0.0f32; vocab];
        constraint.mask(&mut logits, &end_ids).unwrap();
        let allowed: Vec<u32> = (0..vocab as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        assert!(!allowed.is_empty(), "the grammar allows no token after {:?}", tok.decode(&ids, false));
        let id = allowed[rng.random_range(0..allowed.len())];
        if end_ids.contains(&id) {
            return (tok.decode(&ids, false).unwrap(), true);
        }
        constraint.accept(id).unwrap();
        ids.push(id);
        if constraint.is_finished() {
            return (tok.decode(&ids, false).unwrap(), true);
        }
    }
    (tok.decode(&ids, false).unwrap(), false)
}

#[test]
fn every_path_through_a_call_grammar_is_a_schema_valid_call() {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(tok.clone()).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "city": {"type": "string", "maxLength": 6},
        },
        "required": ["unit", "days", "city"],
        "additionalProperties": false,
    });
    let call = json!({
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": schema},
        "required": ["name", "arguments"],
        "additionalProperties": false,
    });
    // As the SDK's `grammar::json_rule` writes it: compact JSON with Python's separators.
    let mut call = call;
    call["x-guidance"] = json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
    let grammar = format!("start: \"<tool_call>\\n\" %json {call} \"\\n</tool_call>\"\n");
    let mut finished = 0;
    for seed in 0..12 {
        let (text, done) = walk(&compiler, &tok, &grammar, seed, 200);
        if !done {
            eprintln!("walk {seed} did not end: {text:?}");
            continue;
        }
        finished += 1;
        let body = text.strip_prefix("<tool_call>\n").and_then(|t| t.strip_suffix("\n</tool_call>"));
        let body = body.unwrap_or_else(|| panic!("not in the format: {text:?}"));
        let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(value["name"], "get_weather", "{text}");
        let args = &value["arguments"];
        assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()), "{text}");
        assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{text}");
        assert!(args["city"].as_str().unwrap().chars().count() <= 6, "{text}");
    }
    assert!(finished >= 6, "only {finished} of 12 random walks reached the end of the call");
}

#[test]
fn a_broken_grammar_is_an_error_not_a_panic() {
    let compiler = GrammarCompiler::new(tokenizer()).unwrap();
    for bad in ["start: %json {not json}", "start: undefined_rule", "start: /[/", "start: \"unterminated"] {
        assert!(compiler.compile(bad).is_err(), "{bad:?} compiled");
    }
}

/// GBNF through the Lark conversion: random walks only ever spell what the grammar allows —
/// also for a left-recursive grammar, which llama.cpp refuses and llguidance's Earley parser
/// takes — and reach its end.
#[test]
fn gbnf_grammars_hold_on_random_walks() {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(tok.clone()).unwrap();
    let left_recursive = hearth::constraint::gbnf::to_lark(r#"root ::= root "a" | "b""#).unwrap();
    let list = hearth::constraint::gbnf::to_lark(
        r#"root ::= "[" item ("," item){0,3} "]"
item ::= [0-9]+ | "\"" [a-z]{1,5} "\"""#,
    )
    .unwrap();
    for seed in 0..10 {
        // "ba…a" may run on to the limit: every such prefix is in the language.
        let (text, _) = walk(&compiler, &tok, &left_recursive, seed, 40);
        assert!(text.starts_with('b') && text[1..].chars().all(|c| c == 'a'), "{text:?}");
        let (text, ended) = walk(&compiler, &tok, &list, seed, 200);
        let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or_else(|| panic!("{text:?}"));
        let items: Vec<&str> = inner.split(',').collect();
        assert!(ended && (1..=4).contains(&items.len()), "{text:?}");
        for item in items {
            let word = item.strip_prefix('"').and_then(|i| i.strip_suffix('"'));
            let ok = match word {
                Some(w) => (1..=5).contains(&w.len()) && w.chars().all(|c| c.is_ascii_lowercase()),
                None => !item.is_empty() && item.chars().all(|c| c.is_ascii_digit()),
            };
            assert!(ok, "{item:?} in {text:?}");
        }
    }
}
