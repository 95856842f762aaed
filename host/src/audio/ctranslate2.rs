//! CTranslate2's `model.bin` (the format faster-whisper's models come in), read in place from a
//! memory map: a header (format version, the spec's name such as `WhisperSpec`, its revision),
//! named variables (shape, element type, bytes) and aliases (`decoder/projection/weight` →
//! `decoder/embeddings/weight`). Every length is checked against the file before it is used, so
//! a truncated or corrupt file is an error, never a panic or a huge allocation.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

/// Format versions this reader knows (CTranslate2 3.x and 4.x write 6).
const VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;
/// More dimensions than any CTranslate2 variable has.
const MAX_RANK: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a CTranslate2 model.bin: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: no variable `{name}`")]
    Missing { path: PathBuf, name: String },
    #[error("{path}: `{name}` is {dtype:?}, which cannot be read as floats here")]
    Unsupported { path: PathBuf, name: String, dtype: DType },
}

/// A variable's element type, as CTranslate2 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// Where one variable's bytes are.
#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: DType,
    bytes: Range<usize>,
}

/// An open `model.bin`.
pub struct Ct2Model {
    path: PathBuf,
    map: Mmap,
    /// The spec's name (`WhisperSpec`).
    pub spec: String,
    pub revision: u32,
    variables: HashMap<String, Variable>,
    aliases: HashMap<String, String>,
}

/// Reads the file front to back, every length checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("it ends at byte {} inside a field of {n} bytes", self.bytes.len()))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let r = self.take(1)?;
        Ok(self.bytes[r.start])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let r = self.take(2)?;
        Ok(u16::from_le_bytes([self.bytes[r.start], self.bytes[r.start + 1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let r = self.take(4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[r]);
        Ok(u32::from_le_bytes(b))
    }

    /// A length-prefixed, NUL-terminated UTF-8 string.
    fn string(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let r = self.take(n)?;
        let raw = &self.bytes[r];
        let text = raw.strip_suffix(&[0]).ok_or("a string without its terminating NUL")?;
        String::from_utf8(text.to_vec()).map_err(|_| "a name that is not UTF-8".to_owned())
    }
}

impl Ct2Model {
    pub fn open(path: &Path) -> Result<Self, Ct2Error> {
        let file = std::fs::File::open(path).map_err(|source| Ct2Error::Io { path: path.into(), source })?;
        // SAFETY: the map is read-only and private to this process; a file changed underneath it
        // could only give wrong numbers, which every read below bounds-checks.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Ct2Error::Io { path: path.into(), source })?;
        let malformed = |reason: String| Ct2Error::Malformed { path: path.into(), reason };
        let mut c = Cursor { bytes: &map, at: 0 };
        let version = c.u32().map_err(malformed)?;
        if !VERSIONS.contains(&version) {
            return Err(malformed(format!("format version {version} (this reader knows {VERSIONS:?})")));
        }
        let spec = c.string().map_err(malformed)?;
        let revision = c.u32().map_err(malformed)?;
        let count = c.u32().map_err(malformed)? as usize;
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = c.string().map_err(malformed)?;
            let rank = c.u8().map_err(malformed)? as usize;
            if rank > MAX_RANK {
                return Err(malformed(format!("`{name}` has {rank} dimensions")));
            }
            let shape =
                (0..rank).map(|_| c.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>().map_err(malformed)?;
            let id = c.u8().map_err(malformed)?;
            let dtype = DType::from_id(id).ok_or_else(|| malformed(format!("`{name}` has element type {id}")))?;
            let size = c.u32().map_err(malformed)? as usize;
            let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements.and_then(|n| n.checked_mul(dtype.size())) != Some(size) {
                return Err(malformed(format!("`{name}`: {size} bytes for shape {shape:?} of {dtype:?}")));
            }
            let bytes = c.take(size).map_err(malformed)?;
            variables.insert(name, Variable { shape, dtype, bytes });
        }
        let mut aliases = HashMap::new();
        // Version 5 files may end before the alias table.
        if c.at < map.len() {
            let n = c.u32().map_err(malformed)? as usize;
            for _ in 0..n {
                let alias = c.string().map_err(malformed)?;
                let target = c.string().map_err(malformed)?;
                if !variables.contains_key(&target) {
                    return Err(malformed(format!("alias `{alias}` names `{target}`, which is not a variable")));
                }
                aliases.insert(alias, target);
            }
        }
        Ok(Self { path: path.into(), map, spec, revision, variables, aliases })
    }

    /// A variable by name (or alias).
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.variables.get(name)
    }

    /// Every variable name (aliases not included), sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.variables.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// A float variable as f32s with its shape: f32, f16 and bf16 as stored, int8 and int16
    /// multiplied back by their per-row `…_scale` variable (CTranslate2's quantization), so
    /// `weight` reads the same whatever the model was converted with.
    pub fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), Ct2Error> {
        let var =
            self.variable(name).ok_or_else(|| Ct2Error::Missing { path: self.path.clone(), name: name.into() })?;
        let raw = &self.map[var.bytes.clone()];
        let values: Vec<f32> = match var.dtype {
            DType::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::BF16 => raw.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::I8 | DType::I16 => self.dequantize(name, var, raw)?,
            DType::I32 => {
                return Err(Ct2Error::Unsupported { path: self.path.clone(), name: name.into(), dtype: var.dtype });
            }
        };
        Ok((var.shape.clone(), values))
    }

    /// Integer weights over their per-row scales: `value / scale[row]`.
    fn dequantize(&self, name: &str, var: &Variable, raw: &[u8]) -> Result<Vec<f32>, Ct2Error> {
        let unsupported = || Ct2Error::Unsupported { path: self.path.clone(), name: name.into(), dtype: var.dtype };
        let scale_name = format!("{name}_scale");
        let (scale_shape, scales) = self.floats(&scale_name).map_err(|_| unsupported())?;
        let rows = var.shape.first().copied().unwrap_or(1).max(1);
        if scales.len() != rows || scale_shape.len() > 1 {
            return Err(unsupported());
        }
        let ints: Vec<f32> = match var.dtype {
            DType::I8 => raw.iter().map(|&b| b as i8 as f32).collect(),
            _ => raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32).collect(),
        };
        let per_row = ints.len() / rows;
        Ok(ints.chunks(per_row.max(1)).zip(&scales).flat_map(|(row, &s)| row.iter().map(move |&v| v / s)).collect())
    }

    /// A scalar integer variable (`decoder/alignment_layer`), if it is one.
    pub fn int_scalar(&self, name: &str) -> Option<i64> {
        let var = self.variable(name)?;
        let raw = &self.map[var.bytes.clone()];
        match (var.dtype, raw.len()) {
            (DType::I8, 1) => Some(raw[0] as i8 as i64),
            (DType::I16, 2) => Some(i16::from_le_bytes([raw[0], raw[1]]) as i64),
            (DType::I32, 4) => Some(i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64),
            _ => None,
        }
    }
}

/// Writes a `model.bin` (tests make their own files with it).
#[cfg(test)]
pub(crate) fn write(spec: &str, variables: &[(&str, &[usize], DType, Vec<u8>)], aliases: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, spec);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, shape, dtype, bytes) in variables {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for d in *shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        let id = [DType::F32, DType::I8, DType::I16, DType::I32, DType::F16, DType::BF16]
            .iter()
            .position(|t| t == dtype)
            .unwrap_or(0) as u8;
        out.push(id);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (alias, target) in aliases {
        string(&mut out, alias);
        string(&mut out, target);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
    }

    fn sample() -> Vec<u8> {
        write(
            "WhisperSpec",
            &[
                ("decoder/embeddings/weight", &[2, 3], DType::F16, f16_bytes(&[1.0, -2.0, 0.5, 0.25, 3.0, -1.5])),
                ("encoder/conv1/bias", &[2], DType::F32, [1.5f32, -0.5].iter().flat_map(|v| v.to_le_bytes()).collect()),
                ("q/weight", &[2, 2], DType::I8, vec![10, 20, (-30i8) as u8, 40]),
                ("q/weight_scale", &[2], DType::F32, [10.0f32, 20.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
                ("decoder/alignment_layer", &[], DType::I16, (-1i16).to_le_bytes().to_vec()),
            ],
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        )
    }

    fn open(bytes: &[u8]) -> Result<Ct2Model, Ct2Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        std::fs::write(&path, bytes).unwrap();
        Ct2Model::open(&path)
    }

    #[test]
    fn variables_read_as_floats_through_aliases_and_scales() {
        let m = open(&sample()).unwrap();
        assert_eq!((m.spec.as_str(), m.revision), ("WhisperSpec", 3));
        let (shape, values) = m.floats("decoder/projection/weight").unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(values, [1.0, -2.0, 0.5, 0.25, 3.0, -1.5]);
        assert_eq!(m.floats("encoder/conv1/bias").unwrap().1, [1.5, -0.5]);
        assert_eq!(m.floats("q/weight").unwrap().1, [1.0, 2.0, -1.5, 2.0]);
        assert_eq!(m.int_scalar("decoder/alignment_layer"), Some(-1));
        assert!(matches!(m.floats("nothing"), Err(Ct2Error::Missing { .. })));
    }

    #[test]
    fn damaged_files_are_errors() {
        let good = sample();
        for cut in [0, 3, 10, 40, good.len() - 5] {
            assert!(matches!(open(&good[..cut]), Err(Ct2Error::Malformed { .. })), "cut at {cut}");
        }
        let mut wrong_size = good.clone();
        // The first variable's byte count (after version, spec name, revision, count, name,
        // rank, two dims and the type id).
        let at = 4 + 2 + 12 + 4 + 4 + 2 + 26 + 1 + 8 + 1;
        wrong_size[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(open(&wrong_size), Err(Ct2Error::Malformed { .. })));
        let mut version = good;
        version[..4].copy_from_slice(&99u32.to_le_bytes());
        assert!(matches!(open(&version), Err(Ct2Error::Malformed { .. })));
    }
}
