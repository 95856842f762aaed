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
use crate::tokenizer::{TextTokenizer, in_vocabulary};

/// Declares [`SamplerFields`] (each field an `Option`) and [`FIELDS`], its names as a request
/// spells them, from one list: a field cannot be added to one and forgotten in the other.
macro_rules! sampler_fields {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        /// text-generation-webui's sampler fields, accepted on chat, completions and
        /// `/v1/internal/logits` (and in presets); each may be left out or `null`.
        #[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
        #[serde(default)]
        pub struct SamplerFields {
            $($(#[$doc])* pub $name: Option<$ty>,)*
        }

        /// The names of [`SamplerFields`]' fields, as they appear in a request.
        pub const FIELDS: &[&str] = &[$(stringify!($name)),*];
    };
}

sampler_fields! {
    #[schema(minimum = 0.0, maximum = 5.0)]
    temperature: f32,
    dynamic_temperature: bool,
    #[schema(minimum = 0.01, maximum = 5.0)]
    dynatemp_low: f32,
    #[schema(minimum = 0.01, maximum = 5.0)]
    dynatemp_high: f32,
    #[schema(minimum = 0.01, maximum = 5.0)]
    dynatemp_exponent: f32,
    #[schema(minimum = 0.0, maximum = 10.0)]
    smoothing_factor: f32,
    #[schema(minimum = 1.0, maximum = 10.0)]
    smoothing_curve: f32,
    /// textgen: 0 (or -1) disables.
    #[schema(minimum = -1)]
    top_k: i64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    top_p: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    min_p: f32,
    /// Above 0; 1 switches it off.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    typical_p: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    tfs: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    top_a: f32,
    #[schema(minimum = 0.0, maximum = 100.0)]
    top_n_sigma: f32,
    /// In units of 1e-4, as textgen.
    #[schema(minimum = 0.0, maximum = 9999.0)]
    epsilon_cutoff: f32,
    /// In units of 1e-4, as textgen.
    #[schema(minimum = 0.0, maximum = 9999.0)]
    eta_cutoff: f32,
    #[schema(minimum = 0.01, maximum = 10.0)]
    repetition_penalty: f32,
    #[schema(minimum = 0)]
    repetition_penalty_range: i64,
    #[schema(minimum = -2.0, maximum = 2.0)]
    presence_penalty: f32,
    #[schema(minimum = -2.0, maximum = 2.0)]
    frequency_penalty: f32,
    #[schema(minimum = 0.01, maximum = 10.0)]
    encoder_repetition_penalty: f32,
    #[schema(minimum = 0, maximum = 1000)]
    no_repeat_ngram_size: i64,
    #[schema(minimum = 0.0, maximum = 10.0)]
    dry_multiplier: f32,
    #[schema(minimum = 1.0, maximum = 10.0)]
    dry_base: f32,
    #[schema(minimum = 1, maximum = 1000)]
    dry_allowed_length: i64,
    /// textgen's `"\n", ":", "\"", "*"` (a JSON list without brackets), or a JSON list.
    dry_sequence_breakers: Value,
    #[schema(minimum = 0.0, maximum = 1.0)]
    xtc_threshold: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    xtc_probability: f32,
    /// 0 off, 1 mirostat 1.0, 2 mirostat 2.0.
    #[schema(minimum = 0, maximum = 2)]
    mirostat_mode: i64,
    #[schema(minimum = 0.0, maximum = 20.0)]
    mirostat_tau: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    mirostat_eta: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    adaptive_target: f32,
    #[schema(minimum = 0.0, maximum = 0.99)]
    adaptive_decay: f32,
    /// textgen: `false` samples greedily.
    do_sample: bool,
    temperature_last: bool,
    /// A list of stage names, or one string of them separated by commas or new lines.
    sampler_priority: Value,
    /// textgen: -1 means random.
    seed: i64,
    /// textgen: comma-separated token ids that may never be generated.
    custom_token_bans: String,
    /// A preset name under `user_data/presets/` (without `.yaml`).
    preset: String,
}

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

/// [`float`] on a field, named by the field itself.
macro_rules! float_field {
    ($f:ident.$field:ident, $lo:expr, $hi:expr, $default:expr $(,)?) => {
        float(stringify!($field), $f.$field, $lo, $hi, $default)
    };
}

/// [`integer`] on a field, named by the field itself.
macro_rules! integer_field {
    ($f:ident.$field:ident, $lo:expr, $hi:expr, $default:expr $(,)?) => {
        integer(stringify!($field), $f.$field, $lo, $hi, $default)
    };
}

impl SamplerFields {
    /// The engine's settings, every range checked (a bad value is a 400 naming it). Token
    /// strings (DRY's breakers, XTC's newline) are encoded with `tokenizer`.
    pub fn resolve(self, tokenizer: &TextTokenizer) -> Result<SamplingParams, ApiError> {
        let f = self;
        let d = SamplingParams::default();
        let greedy = f.do_sample == Some(false);
        let temperature = float_field!(f.temperature, 0.0, 5.0, d.temperature)?;
        let dynamic_temperature = match f.dynamic_temperature {
            Some(true) => Some(DynamicTemperature {
                low: float_field!(f.dynatemp_low, 0.01, 5.0, 1.0)?,
                high: float_field!(f.dynatemp_high, 0.01, 5.0, 1.0)?,
                exponent: float_field!(f.dynatemp_exponent, 0.01, 5.0, 1.0)?,
            }),
            _ => None,
        };
        let smoothing_factor = float_field!(f.smoothing_factor, 0.0, 10.0, 0.0)?;
        let smoothing = (smoothing_factor > 0.0)
            .then(|| {
                let curve = float_field!(f.smoothing_curve, 1.0, 10.0, 1.0)?;
                Ok::<_, ApiError>(Smoothing { factor: smoothing_factor, curve })
            })
            .transpose()?;
        let top_k = match f.top_k {
            None | Some(0) | Some(-1) => 0,
            Some(k) if k > 0 => k as usize,
            Some(k) => return Err(invalid("top_k", format!("`top_k` must be 0 (off) or positive, got {k}"))),
        };
        let typical_p = float_field!(f.typical_p, 0.0, 1.0, d.typical_p)?;
        if typical_p <= 0.0 {
            return Err(invalid("typical_p", "`typical_p` must be above 0 (1 switches it off)".into()));
        }
        let dry_multiplier = float_field!(f.dry_multiplier, 0.0, 10.0, 0.0)?;
        let dry = (dry_multiplier > 0.0)
            .then(|| {
                Ok::<_, ApiError>(Dry {
                    multiplier: dry_multiplier,
                    base: float_field!(f.dry_base, 1.0, 10.0, 1.75)?,
                    allowed_length: integer_field!(f.dry_allowed_length, 1, 1000, 2)?,
                    sequence_breakers: sequence_breakers(f.dry_sequence_breakers.as_ref(), tokenizer)?,
                })
            })
            .transpose()?;
        let xtc_probability = float_field!(f.xtc_probability, 0.0, 1.0, 0.0)?;
        let xtc = (xtc_probability > 0.0)
            .then(|| {
                let mut protected = tokenizer.encode("\n", false)?.last().copied().into_iter().collect::<Vec<_>>();
                protected.extend(tokenizer.end_ids.iter().copied());
                Ok::<_, ApiError>(Xtc {
                    threshold: float_field!(f.xtc_threshold, 0.0, 1.0, 0.1)?,
                    probability: xtc_probability,
                    protected,
                })
            })
            .transpose()?;
        let mirostat = match f.mirostat_mode.unwrap_or(0) {
            0 => None,
            mode @ (1 | 2) => Some(Mirostat {
                version: if mode == 1 { MirostatVersion::V1 } else { MirostatVersion::V2 },
                tau: float_field!(f.mirostat_tau, 0.0, 20.0, 5.0)?,
                eta: float_field!(f.mirostat_eta, 0.0, 1.0, 0.1)?,
            }),
            m => return Err(invalid("mirostat_mode", format!("`mirostat_mode` must be 0, 1 or 2, got {m}"))),
        };
        let adaptive_target = float_field!(f.adaptive_target, 0.0, 1.0, 0.0)?;
        let adaptive_p = (adaptive_target > 0.0)
            .then(|| {
                Ok::<_, ApiError>(AdaptiveP {
                    target: adaptive_target,
                    decay: float_field!(f.adaptive_decay, 0.0, 0.99, 0.9)?,
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
            top_p: float_field!(f.top_p, 0.0, 1.0, d.top_p)?,
            min_p: float_field!(f.min_p, 0.0, 1.0, d.min_p)?,
            typical_p,
            tfs: float_field!(f.tfs, 0.0, 1.0, d.tfs)?,
            top_a: float_field!(f.top_a, 0.0, 1.0, d.top_a)?,
            top_n_sigma: float_field!(f.top_n_sigma, 0.0, 100.0, d.top_n_sigma)?,
            epsilon_cutoff: float_field!(f.epsilon_cutoff, 0.0, 9999.0, 0.0)? * 1e-4,
            eta_cutoff: float_field!(f.eta_cutoff, 0.0, 9999.0, 0.0)? * 1e-4,
            repetition_penalty: float_field!(f.repetition_penalty, 0.01, 10.0, d.repetition_penalty)?,
            repetition_penalty_range: integer_field!(
                f.repetition_penalty_range,
                0,
                i64::MAX,
                d.repetition_penalty_range,
            )?,
            presence_penalty: float_field!(f.presence_penalty, -2.0, 2.0, d.presence_penalty)?,
            frequency_penalty: float_field!(f.frequency_penalty, -2.0, 2.0, d.frequency_penalty)?,
            encoder_repetition_penalty: float_field!(
                f.encoder_repetition_penalty,
                0.01,
                10.0,
                d.encoder_repetition_penalty,
            )?,
            no_repeat_ngram_size: integer_field!(f.no_repeat_ngram_size, 0, 1000, 0)?,
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
                t.trim().parse::<i64>().ok().and_then(|id| in_vocabulary(id, vocab)).ok_or_else(|| {
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
