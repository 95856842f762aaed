//! Vision pinned to transformers: the tiny LLaVA-1.5-style model (`tests/fixtures/vision/`,
//! made by `make_tiny_llava.py` with random weights, every norm and bias random) gets the
//! Hugging Face processor's pixel values for `pattern.png` (≤ 1e-5), the processor's token ids
//! for the chat prompt, the next-token logits (≤ 1e-3) and the same greedy continuation — on
//! flex and on wgpu, read from the Hugging Face folder and from the GGUF + `mmproj` pair
//! llama.cpp's converters made of it. The tiny SmolVLM (`make_tiny_smolvlm.py`) likewise, its
//! GGUF pair in f32 and so pinned to the same numbers as its folder.

mod common;

use std::sync::Arc;

use hearth::model::{self, BatchItem, DeviceChoice, LoadedModel, LogitsFor, MediaSpan};
use hearth::vision::{VisionModel, image_input, prompt};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/vision").join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("llava_reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// Where a model is read from, and the reference numbers that go with it.
#[derive(Clone, Copy)]
enum Format {
    HfFolder,
    /// The GGUF pair: its converter rounds the patch convolution and the projector to f16, and
    /// the reference is transformers' on those rounded weights.
    GgufPair,
}

impl Format {
    fn folder(self) -> &'static str {
        match self {
            Format::HfFolder => "tiny-llava",
            Format::GgufPair => "tiny-llava-gguf",
        }
    }

    fn key(self, name: &str) -> String {
        match self {
            Format::HfFolder => name.to_owned(),
            Format::GgufPair => format!("gguf_{name}"),
        }
    }
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

/// The next-token logits after `ids` (with `media`'s rows) and `n` greedily generated tokens.
fn greedy(m: &LoadedModel, ids: &[u32], media: &[MediaSpan], n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut cache = m.llama.new_cache(256);
    let mut context = ids.to_vec();
    let mut first = Vec::new();
    for step in 0..n {
        let (tokens, prompt_rows) =
            if step == 0 { (&context[..], context.len()) } else { (&context[context.len() - 1..], 0) };
        let item =
            BatchItem { tokens, cache: &mut cache, logits: LogitsFor::Last, prompt_rows, candidates: None, media };
        let logits = m.llama.forward_batch(&mut [item]).expect("forward").pop().expect("logits");
        let next =
            logits.iter().enumerate().fold((0, f32::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0;
        if step == 0 {
            first = logits;
        }
        context.push(next as u32);
    }
    (first, context[ids.len()..].to_vec())
}

fn assert_close(logits: &[f32], want: &[f32]) {
    assert_eq!(logits.len(), want.len());
    let worst = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-3, "next-token logits differ by up to {worst}");
}

fn vision_of(m: &LoadedModel) -> VisionModel {
    VisionModel::for_model(m, None).expect("the vision side loads").expect("a vision side")
}

fn load(device: DeviceChoice, format: Format) -> LoadedModel {
    let dev = model::device::select(device).expect("device opens");
    model::load(&fixture(format.folder()), &dev).expect("tiny LLaVA loads")
}

/// The prompt's ids and image spans, as a request's would be made.
fn prompt_for(m: &LoadedModel, reference: &Value) -> (Vec<u32>, Vec<MediaSpan>) {
    let vision = &vision_of(m);
    let image = image_input::decode(&std::fs::read(fixture("pattern.png")).expect("png")).expect("decodes");
    let embedding = vision.embed(&image).expect("embeds");
    assert_eq!(vision.rows_for(&image), embedding.len, "the rows known before encoding");
    let text = reference["prompt"].as_str().expect("prompt");
    assert_eq!(prompt::count_markers(text, vision.marker()), 1);
    let made =
        prompt::assemble(text, vision.marker(), &m.tokenizer, true, vision.image_token(), vec![(embedding, image.key)])
            .expect("assembles");
    (made.ids, made.media)
}

fn matches_transformers(device: DeviceChoice, format: Format) {
    let reference = reference();
    let m = load(device, format);
    let vision = &vision_of(&m);

    let image = image_input::decode(&std::fs::read(fixture("pattern.png")).expect("png")).expect("decodes");
    let mut tiles = vision.pixels(&image);
    assert_eq!(tiles.len(), 1, "LLaVA takes the image whole");
    let pixels = tiles.remove(0);
    let shape: Vec<usize> =
        reference["pixel_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(vec![3, pixels.height, pixels.width], shape);
    let expected = floats(&reference["pixel_values"]);
    let worst = pixels.data.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5, "pixel values differ by up to {worst}");

    let (ids, media) = prompt_for(&m, &reference);
    let want_ids = ids_of(&reference["input_ids"]);
    assert_eq!(ids, want_ids, "the processor's token ids");
    assert_eq!(media.len(), 1);
    assert_eq!(media[0].len, want_ids.iter().filter(|&&t| t == vision.image_token()).count());

    let want_greedy = ids_of(&reference[format.key("greedy")]);
    let (logits, generated) = greedy(&m, &ids, &media, want_greedy.len());
    assert_close(&logits, &floats(&reference[format.key("last_logits")]));
    assert_eq!(generated, want_greedy, "greedy continuation");
}

#[test]
fn tiny_llava_matches_transformers_on_flex() {
    matches_transformers(DeviceChoice::Flex, Format::HfFolder);
}

#[test]
fn tiny_llava_matches_transformers_on_wgpu() {
    matches_transformers(DeviceChoice::Wgpu, Format::HfFolder);
}

#[test]
fn tiny_llava_gguf_and_mmproj_match_transformers_on_flex() {
    matches_transformers(DeviceChoice::Flex, Format::GgufPair);
}

#[test]
fn tiny_llava_gguf_and_mmproj_match_transformers_on_wgpu() {
    matches_transformers(DeviceChoice::Wgpu, Format::GgufPair);
}

#[test]
fn an_image_is_its_own_prefix_cache_key() {
    let reference = reference();
    let m = load(DeviceChoice::Flex, Format::HfFolder);
    let (ids, media) = prompt_for(&m, &reference);
    let keys = model::media::cache_keys(&ids, 0, &media);
    let other: Vec<MediaSpan> =
        media.iter().map(|s| MediaSpan { key: s.key ^ 1, rows: Arc::clone(&s.rows), ..s.clone() }).collect();
    let other_keys = model::media::cache_keys(&ids, 0, &other);
    let span = media[0].start..media[0].start + media[0].len;
    assert_eq!(keys[..span.start], ids[..span.start], "text keys are its tokens");
    assert!(span.clone().all(|i| keys[i] != other_keys[i]), "another picture, other keys");
}

/// The tiny SmolVLM (Idefics3) model from `folder`: tiles, pixel shuffle and Idefics3's
/// prompt layout.
fn smolvlm_matches_transformers(device: DeviceChoice, folder: &str) {
    let text = std::fs::read_to_string(fixture("smolvlm_reference.json")).expect("reference");
    let reference: Value = serde_json::from_str(&text).expect("reference json");
    let dev = model::device::select(device).expect("device opens");
    let m = model::load(&fixture(folder), &dev).expect("tiny SmolVLM loads");
    let vision = &vision_of(&m);
    let image = image_input::decode(&std::fs::read(fixture("pattern.png")).expect("png")).expect("decodes");

    let tiles = vision.pixels(&image);
    let shape: Vec<usize> =
        reference["pixel_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(vec![tiles.len(), 3, tiles[0].height, tiles[0].width], shape);
    let ours: Vec<f32> = tiles.iter().flat_map(|t| t.data.iter().copied()).collect();
    let expected = floats(&reference["pixel_values"]);
    let worst = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5, "pixel values differ by up to {worst}");

    let embedding = vision.embed(&image).expect("embeds");
    assert_eq!(vision.rows_for(&image), embedding.len, "the rows known before encoding");
    let prompt_text = reference["prompt"].as_str().expect("prompt");
    // The template writes `<|im_start|>` itself: the tokenizer (`tokenizer.json`'s post-processor,
    // the GGUF's `add_bos_token`) adds no BOS.
    let made = prompt::assemble(
        prompt_text,
        vision.marker(),
        &m.tokenizer,
        true,
        vision.image_token(),
        vec![(embedding, image.key)],
    )
    .expect("assembles");
    let want_ids = ids_of(&reference["input_ids"]);
    assert_eq!(made.ids, want_ids, "the processor's token ids");
    assert_eq!(made.media.len(), 5, "four tiles and the whole image, each its own run");

    let want_greedy = ids_of(&reference["greedy"]);
    let (logits, generated) = greedy(&m, &made.ids, &made.media, want_greedy.len());
    assert_close(&logits, &floats(&reference["last_logits"]));
    assert_eq!(generated, want_greedy, "greedy continuation");
}

#[test]
fn tiny_smolvlm_matches_transformers_on_flex() {
    smolvlm_matches_transformers(DeviceChoice::Flex, "tiny-smolvlm");
}

#[test]
fn tiny_smolvlm_matches_transformers_on_wgpu() {
    smolvlm_matches_transformers(DeviceChoice::Wgpu, "tiny-smolvlm");
}

#[test]
fn tiny_smolvlm_gguf_and_mmproj_match_transformers_on_flex() {
    smolvlm_matches_transformers(DeviceChoice::Flex, "tiny-smolvlm-gguf");
}

#[test]
fn tiny_smolvlm_gguf_and_mmproj_match_transformers_on_wgpu() {
    smolvlm_matches_transformers(DeviceChoice::Wgpu, "tiny-smolvlm-gguf");
}
