//! text-generation-webui's sampler fields: taken out of a request (and out of the `preset` it
//! names, a file under `user_data/presets/`), range-checked, and turned into the engine's
//! [`SamplingParams`]. A preset is the base; fields the request sets itself win over it.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::validate;
use crate::error::ApiError;
use crate::prompt::user_files;
use crate::sampling::{
    AdaptiveP, Dry, DynamicTemperature, Mirostat, MirostatVersion, SamplingParams, Smoothing, Stage, Xtc, stage_order,
};
use crate::tokenizer::TextTokenizer;

/// Every sampler field a request (or a preset) may set; `None` where it does not.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SamplerFields {
    pub temperature: Option<f32>,
    pub dynamic_temperature: Option<bool>,
    pub dynatemp_low: Option<f32>,
    pub dynatemp_high: Option<f32>,
    pub dynatemp_exponent: Option<f32>,
    pub smoothing_factor: Option<f32>,
    pub smoothing_curve: Option<f32>,
    /// textgen: 0 (or -1) disables.
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub typical_p: Option<f32>,
    pub tfs: Option<f32>,
    pub top_a: Option<f32>,
    pub top_n_sigma: Option<f32>,
    /// In units of 1e-4, as textgen.
    pub epsilon_cutoff: Option<f32>,
    /// In units of 1e-4, as textgen.
    pub eta_cutoff: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub repetition_penalty_range: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub encoder_repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<i64>,
    pub dry_multiplier: Option<f32>,
    pub dry_base: Option<f32>,
    pub dry_allowed_length: Option<i64>,
    /// textgen's `"\n", ":", "\"", "*"` (a JSON list without brackets), or a JSON list.
    pub dry_sequence_breakers: Option<Value>,
    pub xtc_threshold: Option<f32>,
    pub xtc_probability: Option<f32>,
    /// 0 off, 1 mirostat 1.0, 2 mirostat 2.0.
    pub mirostat_mode: Option<i64>,
    pub mirostat_tau: Option<f32>,
    pub mirostat_eta: Option<f32>,
    pub adaptive_target: Option<f32>,
    pub adaptive_decay: Option<f32>,
    /// textgen: `false` samples greedily.
    pub do_sample: Option<bool>,
    pub temperature_last: Option<bool>,
    /// A list of stage names, or one string of them separated by commas or new lines.
    pub sampler_priority: Option<Value>,
    /// textgen: -1 means random.
    pub seed: Option<i64>,
    /// textgen: comma-separated token ids that may never be generated.
    pub custom_token_bans: Option<String>,
    /// A preset name under `user_data/presets/` (without `.yaml`).
    pub preset: Option<String>,
}

/// The names of [`SamplerFields`]' fields, as they appear in a request.
pub const FIELDS: &[&str] = &[
    "temperature",
    "dynamic_temperature",
    "dynatemp_low",
    "dynatemp_high",
    "dynatemp_exponent",
    "smoothing_factor",
    "smoothing_curve",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "tfs",
    "top_a",
    "top_n_sigma",
    "epsilon_cutoff",
    "eta_cutoff",
    "repetition_penalty",
    "repetition_penalty_range",
    "presence_penalty",
    "frequency_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_sequence_breakers",
    "xtc_threshold",
    "xtc_probability",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
    "adaptive_target",
    "adaptive_decay",
    "do_sample",
    "temperature_last",
    "sampler_priority",
    "seed",
    "custom_token_bans",
    "preset",
];

/// textgen's default DRY sequence breakers.
const DEFAULT_BREAKERS: &[&str] = &["\n", ":", "\"", "*"];

/// Moves the sampler fields out of a request's extra fields, parsed (a type error names the
/// field), with the named preset (under `user_data_dir/presets/`) filled in below them: a
/// field the request leaves out or sets to null takes the preset's value.
pub fn take(extra: &mut Map<String, Value>, user_data_dir: &Path) -> Result<SamplerFields, ApiError> {
    let mut own = take_fields(extra);
    let fields = parse(own.clone(), "")?;
    let Some(name) = fields.preset.as_deref().map(str::trim).filter(|p| !p.is_empty() && *p != "None") else {
        return Ok(fields);
    };
    for (field, value) in load_preset(&user_data_dir.join("presets"), name)? {
        if own.get(&field).is_none_or(Value::is_null) {
            own.insert(field, value);
        }
    }
    parse(own, "")
}

/// The sampler fields of `map`, moved out of it.
fn take_fields(map: &mut Map<String, Value>) -> Map<String, Value> {
    FIELDS.iter().filter_map(|&name| map.remove(name).map(|v| (name.to_string(), v))).collect()
}

fn parse(map: Map<String, Value>, context: &str) -> Result<SamplerFields, ApiError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid_param(path.clone(), format!("{context}invalid value for `{path}`: {}", e.into_inner()))
    })
}

/// Preset `name`'s sampler fields, each of the right type. A missing preset, an unreadable
/// one, or one that sets something Hearth does not do is a 400 naming `preset`.
pub fn load_preset(dir: &Path, name: &str) -> Result<Map<String, Value>, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("preset", msg);
    let path = user_files::find(dir, name, &["yaml", "yml"])
        .map_err(bad)?
        .ok_or_else(|| bad(format!("no preset `{name}` in {}", dir.display())))?;
    let mut map = match user_files::read_data(&path).map_err(|e| bad(format!("preset `{name}` cannot be read: {e}")))? {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => return Err(bad(format!("preset `{name}` must be a mapping of sampler fields"))),
    };
    if map.contains_key("preset") {
        return Err(bad(format!("preset `{name}` names another preset; presets do not nest")));
    }
    let own = take_fields(&mut map);
    // What is left must be a known setting at a value that changes nothing.
    validate::check_extra(&map).map_err(|e| bad(format!("preset `{name}`: {}", e.message)))?;
    parse(own.clone(), &format!("preset `{name}`: ")).map_err(|e| bad(e.message))?;
    Ok(own)
}

impl SamplerFields {
    /// The engine's settings, every range checked (a bad value is a 400 naming it). Token
    /// strings (DRY's breakers, XTC's newline) are encoded with `tokenizer`.
    pub fn resolve(self, tokenizer: &TextTokenizer) -> Result<SamplingParams, ApiError> {
        let f = self;
        let d = SamplingParams::default();
        let greedy = f.do_sample == Some(false);
        let temperature = float("temperature", f.temperature, 0.0, 5.0, d.temperature)?;
        let dynamic_temperature = match f.dynamic_temperature {
            Some(true) => Some(DynamicTemperature {
                low: float("dynatemp_low", f.dynatemp_low, 0.01, 5.0, 1.0)?,
                high: float("dynatemp_high", f.dynatemp_high, 0.01, 5.0, 1.0)?,
                exponent: float("dynatemp_exponent", f.dynatemp_exponent, 0.01, 5.0, 1.0)?,
            }),
            _ => None,
        };
        let smoothing_factor = float("smoothing_factor", f.smoothing_factor, 0.0, 10.0, 0.0)?;
        let smoothing = (smoothing_factor > 0.0)
            .then(|| {
                let curve = float("smoothing_curve", f.smoothing_curve, 1.0, 10.0, 1.0)?;
                Ok::<_, ApiError>(Smoothing { factor: smoothing_factor, curve })
            })
            .transpose()?;
        let top_k = match f.top_k {
            None | Some(0) | Some(-1) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => return Err(invalid("top_k", format!("`top_k` must be 0 (off) or positive, got {k}"))),
        };
        let typical_p = float("typical_p", f.typical_p, 0.0, 1.0, d.typical_p)?;
        if typical_p <= 0.0 {
            return Err(invalid("typical_p", "`typical_p` must be above 0 (1 switches it off)".into()));
        }
        let dry_multiplier = float("dry_multiplier", f.dry_multiplier, 0.0, 10.0, 0.0)?;
        let dry = (dry_multiplier > 0.0)
            .then(|| {
                Ok::<_, ApiError>(Dry {
                    multiplier: dry_multiplier,
                    base: float("dry_base", f.dry_base, 1.0, 10.0, 1.75)?,
                    allowed_length: integer("dry_allowed_length", f.dry_allowed_length, 1, 1000, 2)?,
                    sequence_breakers: sequence_breakers(f.dry_sequence_breakers.as_ref(), tokenizer)?,
                })
            })
            .transpose()?;
        let xtc_probability = float("xtc_probability", f.xtc_probability, 0.0, 1.0, 0.0)?;
        let xtc = (xtc_probability > 0.0)
            .then(|| {
                let mut protected = tokenizer.encode("\n", false)?.last().copied().into_iter().collect::<Vec<_>>();
                protected.extend(tokenizer.end_ids.iter().copied());
                Ok::<_, ApiError>(Xtc {
                    threshold: float("xtc_threshold", f.xtc_threshold, 0.0, 1.0, 0.1)?,
                    probability: xtc_probability,
                    protected,
                })
            })
            .transpose()?;
        let mirostat = match f.mirostat_mode.unwrap_or(0) {
            0 => None,
            mode @ (1 | 2) => Some(Mirostat {
                version: if mode == 1 { MirostatVersion::V1 } else { MirostatVersion::V2 },
                tau: float("mirostat_tau", f.mirostat_tau, 0.0, 20.0, 5.0)?,
                eta: float("mirostat_eta", f.mirostat_eta, 0.0, 1.0, 0.1)?,
            }),
            m => return Err(invalid("mirostat_mode", format!("`mirostat_mode` must be 0, 1 or 2, got {m}"))),
        };
        let adaptive_target = float("adaptive_target", f.adaptive_target, 0.0, 1.0, 0.0)?;
        let adaptive_p = (adaptive_target > 0.0)
            .then(|| {
                Ok::<_, ApiError>(AdaptiveP {
                    target: adaptive_target,
                    decay: float("adaptive_decay", f.adaptive_decay, 0.0, 0.99, 0.9)?,
                })
            })
            .transpose()?;
        let priority = priority(f.sampler_priority.as_ref())?;
        // textgen's seed -1 means "random".
        let seed = match f.seed {
            None | Some(-1) => None,
            Some(s) => Some(s as u64),
        };
        Ok(SamplingParams {
            temperature: if greedy { 0.0 } else { temperature },
            dynamic_temperature,
            smoothing,
            top_k,
            top_p: float("top_p", f.top_p, 0.0, 1.0, d.top_p)?,
            min_p: float("min_p", f.min_p, 0.0, 1.0, d.min_p)?,
            typical_p,
            tfs: float("tfs", f.tfs, 0.0, 1.0, d.tfs)?,
            top_a: float("top_a", f.top_a, 0.0, 1.0, d.top_a)?,
            top_n_sigma: float("top_n_sigma", f.top_n_sigma, 0.0, 100.0, d.top_n_sigma)?,
            epsilon_cutoff: float("epsilon_cutoff", f.epsilon_cutoff, 0.0, 9999.0, 0.0)? * 1e-4,
            eta_cutoff: float("eta_cutoff", f.eta_cutoff, 0.0, 9999.0, 0.0)? * 1e-4,
            repetition_penalty: float("repetition_penalty", f.repetition_penalty, 0.01, 10.0, d.repetition_penalty)?,
            repetition_penalty_range: integer(
                "repetition_penalty_range",
                f.repetition_penalty_range,
                0,
                i64::MAX,
                d.repetition_penalty_range,
            )?,
            presence_penalty: float("presence_penalty", f.presence_penalty, -2.0, 2.0, d.presence_penalty)?,
            frequency_penalty: float("frequency_penalty", f.frequency_penalty, -2.0, 2.0, d.frequency_penalty)?,
            encoder_repetition_penalty: float(
                "encoder_repetition_penalty",
                f.encoder_repetition_penalty,
                0.01,
                10.0,
                d.encoder_repetition_penalty,
            )?,
            no_repeat_ngram_size: integer("no_repeat_ngram_size", f.no_repeat_ngram_size, 0, 1000, 0)?,
            dry,
            xtc,
            mirostat,
            adaptive_p,
            order: stage_order(&priority, f.temperature_last.unwrap_or(false)),
            seed,
            banned_tokens: token_bans(f.custom_token_bans.as_deref(), tokenizer.vocab_size())?,
            logit_bias: Vec::new(),
        })
    }
}

fn invalid(name: &str, message: String) -> ApiError {
    ApiError::invalid_param(name, message)
}

fn float(name: &str, v: Option<f32>, lo: f32, hi: f32, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(x),
        Some(x) => Err(invalid(name, format!("`{name}` must be between {lo} and {hi}, got {x}"))),
    }
}

fn integer(name: &str, v: Option<i64>, lo: i64, hi: i64, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x >= lo && x <= hi => Ok(x as usize),
        Some(x) if hi == i64::MAX => Err(invalid(name, format!("`{name}` must be at least {lo}, got {x}"))),
        Some(x) => Err(invalid(name, format!("`{name}` must be between {lo} and {hi}, got {x}"))),
    }
}

/// `sampler_priority`: a list of stage names, or one string of them separated by commas or
/// new lines. An unknown name is a 400 listing the known ones.
fn priority(value: Option<&Value>) -> Result<Vec<Stage>, ApiError> {
    let names: Vec<String> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s.replace('\n', ",").split(',').map(|n| n.trim().to_string()).collect(),
        Some(Value::Array(items)) => strings(items)
            .ok_or_else(|| invalid("sampler_priority", "`sampler_priority` must list sampler names".into()))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect(),
        Some(_) => return Err(invalid("sampler_priority", "`sampler_priority` must be a list or a string".into())),
    };
    names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| {
            Stage::from_name(n).ok_or_else(|| {
                let known = Stage::DEFAULT_ORDER.map(Stage::name).join(", ");
                invalid("sampler_priority", format!("unknown sampler `{n}` in `sampler_priority`; known: {known}"))
            })
        })
        .collect()
}

/// A JSON list's strings (`None` if anything in it is not a string).
fn strings(items: &[Value]) -> Option<Vec<String>> {
    items.iter().map(|v| v.as_str().map(str::to_string)).collect()
}

/// DRY's sequence breakers as tokens: each string's last token after an `a` (so it is encoded
/// as it would be mid-text), as textgen does.
fn sequence_breakers(value: Option<&Value>, tokenizer: &TextTokenizer) -> Result<Vec<u32>, ApiError> {
    let bad = |msg: String| invalid("dry_sequence_breakers", msg);
    let strings: Vec<String> = match value {
        None | Some(Value::Null) => DEFAULT_BREAKERS.iter().map(|s| s.to_string()).collect(),
        Some(Value::String(s)) => {
            let list = if s.trim_start().starts_with('[') { s.clone() } else { format!("[{s}]") };
            serde_json::from_str(&list).map_err(|e| {
                bad(format!(
                    "`dry_sequence_breakers` must be quoted strings separated by commas, as \"\\n\", \":\": {e}"
                ))
            })?
        }
        Some(Value::Array(items)) => {
            strings(items).ok_or_else(|| bad("`dry_sequence_breakers` must list strings".into()))?
        }
        Some(_) => return Err(bad("`dry_sequence_breakers` must be a string or a list of strings".into())),
    };
    let mut ids = Vec::new();
    for s in strings.iter().filter(|s| !s.is_empty()) {
        if let Some(&id) = tokenizer.encode(&format!("a{s}"), false)?.last() {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// `custom_token_bans`: comma-separated token ids inside the vocabulary.
fn token_bans(list: Option<&str>, vocab: usize) -> Result<Vec<u32>, ApiError> {
    match list.map(str::trim) {
        None | Some("") => Ok(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|t| {
                t.trim().parse::<u32>().ok().filter(|&id| (id as usize) < vocab).ok_or_else(|| {
                    invalid("custom_token_bans", format!("`{}` is not a token id of this model", t.trim()))
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Result<SamplerFields, ApiError> {
        let mut extra: Map<String, Value> = serde_json::from_str(json).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fields = take(&mut extra, dir.path())?;
        assert!(extra.keys().all(|k| !FIELDS.contains(&k.as_str())), "taken: {extra:?}");
        Ok(fields)
    }

    #[test]
    fn every_listed_field_is_read() {
        // A value of the right type for each field: parsing it must set the field.
        let mut map = Map::new();
        for &name in FIELDS {
            let v = match name {
                "dynamic_temperature" | "do_sample" | "temperature_last" => Value::Bool(true),
                "custom_token_bans" | "preset" | "dry_sequence_breakers" | "sampler_priority" => {
                    Value::String("x".into())
                }
                _ => serde_json::json!(1),
            };
            map.insert(name.into(), v);
        }
        let f = parse(map, "").unwrap();
        let debug = format!("{f:?}");
        assert!(!debug.contains("None"), "a listed field is not in the struct: {debug}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = fields(r#"{"temperature":"hot"}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn priorities_parse_from_lists_and_strings() {
        let p = priority(Some(&serde_json::json!(["top_k", "temperature"]))).unwrap();
        assert_eq!(p, vec![Stage::TopK, Stage::Temperature]);
        let p = priority(Some(&Value::String("min_p\ntemperature, top_k".into()))).unwrap();
        assert_eq!(p, vec![Stage::MinP, Stage::Temperature, Stage::TopK]);
        let err = priority(Some(&serde_json::json!(["beam"]))).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("sampler_priority"));
    }

    #[test]
    fn a_preset_is_the_base_and_the_request_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("presets")).unwrap();
        std::fs::write(dir.path().join("presets/Warm.yaml"), "temperature: 1.5\nmin_p: 0.05\npenalty_alpha: 0\n")
            .unwrap();
        let mut extra: Map<String, Value> = serde_json::from_str(r#"{"preset":"Warm","temperature":0.3}"#).unwrap();
        let f = take(&mut extra, dir.path()).unwrap();
        assert_eq!(f.temperature, Some(0.3));
        assert_eq!(f.min_p, Some(0.05));
        let mut extra: Map<String, Value> = serde_json::from_str(r#"{"preset":"Cold"}"#).unwrap();
        let err = take(&mut extra, dir.path()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("preset"));
        assert!(err.message.contains("no preset `Cold`"), "{}", err.message);
        std::fs::write(dir.path().join("presets/Odd.yaml"), "penalty_alpha: 0.6\n").unwrap();
        let mut extra: Map<String, Value> = serde_json::from_str(r#"{"preset":"Odd"}"#).unwrap();
        let err = take(&mut extra, dir.path()).unwrap_err();
        assert!(err.message.contains("penalty_alpha"), "{}", err.message);
        let mut extra: Map<String, Value> = serde_json::from_str(r#"{"preset":"../secrets"}"#).unwrap();
        assert_eq!(take(&mut extra, dir.path()).unwrap_err().param.as_deref(), Some("preset"));
    }
}
