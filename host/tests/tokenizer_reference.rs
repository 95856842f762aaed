//! Token ids for a set of strings (ASCII, digits, whitespace runs, unicode, emoji, ChatML markup)
//! equal the reference tokenizers' (`tests/fixtures/tokenizer/*.json`, made by
//! `scripts/reference/make_tokenizer_reference.py`): SmolLM2's tokenizer built from GGUF metadata,
//! and all-MiniLM-L6-v2's `tokenizer.json`.

mod common;

use hearth::gguf::GgufFile;
use hearth::tokenizer::TextTokenizer;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = common::repo_root().join("tests/fixtures/tokenizer").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_gguf_tokenizer_matches_the_reference() {
    let file = GgufFile::open(&common::smollm2()).unwrap();
    let tok = TextTokenizer::from_gguf(&file.metadata).unwrap();
    let fx = fixture("smollm2.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "ids with special tokens of {text:?}"
        );
        assert_eq!(
            tok.decode(&ids(&case["ids"]), false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
    }
}

#[test]
fn minilm_tokenizer_json_matches_the_reference() {
    let dir = common::model_dir().join("all-MiniLM-L6-v2");
    let mut inner = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // The file fixes padding and truncation at 128; the reference turns both off.
    inner.with_padding(None);
    inner.with_truncation(None).unwrap();
    let tok = TextTokenizer::from_tokenizer(inner);
    let fx = fixture("minilm.json");
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(tok.encode(text, true).unwrap(), ids(&case["ids_with_special"]), "ids with special of {text:?}");
    }
}
