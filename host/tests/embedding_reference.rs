//! The embedding models against their references, on flex and on wgpu:
//! - all-MiniLM-L6-v2 (the PyPI wheel's sentence-transformers folder, installed by
//!   `scripts/fetch-models`) against sentence-transformers' `encode` on short, long (cut at
//!   256 tokens), unicode and empty texts: cosine ≥ 0.999 and the same token counts;
//! - a tiny random-weight MPNet (2 layers, hidden 32, 514 positions, so the relative-position
//!   buckets up to the longest distance are used) against transformers' last hidden states
//!   and sentence-transformers' mean pooling: within 1e-4.
//!
//! The fixtures are made by `tests/fixtures/embeddings/make_fixtures.py`.

mod common;

use std::path::PathBuf;

use hearth::model::encoder::EmbeddingModel;
use hearth::model::{self, DeviceChoice};
use hearth_settings::EmbeddingPrecision;
use serde_json::Value;

const MIN_COSINE: f64 = 0.999;
const MPNET_TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    common::repo_root().join("tests/fixtures/embeddings")
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn load(dir: PathBuf, device: DeviceChoice, precision: EmbeddingPrecision) -> EmbeddingModel {
    let device = model::device::select(device).expect("device opens");
    EmbeddingModel::load(&dir, &device, precision).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn minilm_matches_sentence_transformers(device: DeviceChoice, precision: EmbeddingPrecision) {
    let reference = fixture("minilm.json");
    let m = load(common::model_dir().join("all-MiniLM-L6-v2"), device, precision);
    assert_eq!(m.dimensions(), 384);
    let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| m.tokenize(t).unwrap()).collect();
    let counts: Vec<usize> = seqs.iter().map(Vec::len).collect();
    let want_counts: Vec<usize> =
        reference["token_counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    assert_eq!(counts, want_counts, "token counts (the long text cut at 256)");
    let vectors = m.embed(&seqs).unwrap();
    let mut worst = 1f64;
    for ((text, ours), theirs) in texts.iter().zip(&vectors).zip(reference["embeddings"].as_array().unwrap()) {
        let c = cosine(ours, &floats(theirs));
        worst = worst.min(c);
        assert!(c >= MIN_COSINE, "cosine {c} for {:?}", &text[..text.len().min(40)]);
        let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    eprintln!("all-MiniLM-L6-v2 on {device:?} ({} products): worst cosine 1 - {:.1e}", m.precision(), 1.0 - worst);
    // Alone or batched with longer texts (padded), a text gets the same vector.
    let alone = m.embed(&seqs[..1]).unwrap();
    assert!(cosine(&alone[0], &vectors[0].iter().map(|&x| x as f64).collect::<Vec<_>>()) > 0.99999);
}

fn tiny_mpnet_matches_transformers(device: DeviceChoice) {
    let reference = fixture("tiny-mpnet.json");
    // f32: the bound is rounding's; 8-bit products are held to the cosine of the MiniLM test.
    let m = load(fixtures().join("tiny-mpnet"), device, EmbeddingPrecision::F32);
    let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| m.tokenize(t).unwrap()).collect();
    let want_ids: Vec<Vec<u32>> = reference["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect())
        .collect();
    assert_eq!(seqs, want_ids, "token ids");
    let worst = |a: &[f32], b: &[f64]| a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max);
    let mut hidden_worst = 0f64;
    for (seq, want) in seqs.iter().zip(reference["hidden_states"].as_array().unwrap()) {
        let hidden = m.hidden_states(seq).unwrap();
        let want = floats(want);
        assert_eq!(hidden.len(), want.len());
        let w = worst(&hidden, &want);
        hidden_worst = hidden_worst.max(w);
        assert!(w <= MPNET_TOLERANCE, "hidden states of a {}-token input differ by {w}", seq.len());
    }
    let vectors = m.embed(&seqs).unwrap();
    let mut pooled = 0f64;
    for (ours, theirs) in vectors.iter().zip(reference["embeddings"].as_array().unwrap()) {
        let w = worst(ours, &floats(theirs));
        pooled = pooled.max(w);
        assert!(w <= MPNET_TOLERANCE, "pooled vectors differ by {w}");
    }
    eprintln!("tiny MPNet on {device:?}: hidden states within {hidden_worst:.2e}, pooled within {pooled:.2e}");
}

/// The default: 8-bit products on a CPU with AVX-512 VNNI, f32 on others.
#[test]
fn minilm_on_flex_matches_sentence_transformers() {
    minilm_matches_sentence_transformers(DeviceChoice::Flex, EmbeddingPrecision::Auto);
}

#[test]
fn minilm_on_flex_in_f32_matches_sentence_transformers() {
    minilm_matches_sentence_transformers(DeviceChoice::Flex, EmbeddingPrecision::F32);
}

#[test]
fn minilm_on_wgpu_matches_sentence_transformers() {
    minilm_matches_sentence_transformers(DeviceChoice::Wgpu, EmbeddingPrecision::Auto);
}

#[test]
fn tiny_mpnet_on_flex_matches_transformers() {
    tiny_mpnet_matches_transformers(DeviceChoice::Flex);
}

#[test]
fn tiny_mpnet_on_wgpu_matches_transformers() {
    tiny_mpnet_matches_transformers(DeviceChoice::Wgpu);
}
