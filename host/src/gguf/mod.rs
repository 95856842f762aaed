//! GGUF files (versions 2 and 3): the header, metadata and tensor directory parsed with bounds
//! checks, tensor data memory-mapped and read on demand. A truncated or corrupt file is an error
//! that names the problem, never a panic.

mod dequant;
mod dtype;
mod metadata;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use dequant::{DequantError, dequantize, is_supported, kernel_type};
pub use dtype::GgmlType;
pub use metadata::{MetaValue, Metadata};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Caps on counts read from the header, so a corrupt count cannot make us allocate terabytes.
const MAX_COUNT: u64 = 1 << 24;
const MAX_STRING: u64 = 1 << 26;
const MAX_DIMS: u32 = 8;

/// What is wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (it starts with \"{}\", not \"GGUF\")", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("the file is truncated: {what} needs bytes up to offset {needed}, but the file has {len}")]
    Truncated { what: String, needed: u64, len: u64 },
    #[error("corrupt header: {0}")]
    Corrupt(String),
    #[error("metadata key `{0}` is missing")]
    MissingMetadata(String),
    #[error("metadata key `{key}` should be {expected} but is {found}")]
    MetadataType { key: String, expected: &'static str, found: &'static str },
    #[error("tensor `{0}` is not in the file")]
    MissingTensor(String),
    #[error("tensor `{name}` has type {ty}, which Hearth cannot read")]
    UnsupportedTensorType { name: String, ty: GgmlType },
    #[error("tensor `{name}`: {source}")]
    Dequant { name: String, source: DequantError },
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn num_values(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in row-major order (outermost first), as burn and PyTorch write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    pub metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

impl GgufFile {
    /// Opens and parses `path`, checking that every tensor's data lies inside the file.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only; like every mmap-based loader (llama.cpp, safetensors) we
        // assume the file is not truncated by another process while the model is loaded.
        let mmap = unsafe { Mmap::map(&file)? };
        Self::parse(path.to_path_buf(), mmap)
    }

    /// Parses a GGUF file held in memory (tests and fuzzing), as [`Self::open`] parses one on
    /// disk.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GgufError> {
        // An anonymous map of at least one page: mapping zero bytes is an error of its own.
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1))?;
        map[..bytes.len()].copy_from_slice(bytes);
        let map = map.make_read_only()?;
        // The map may be a page longer than the bytes; parse exactly the bytes given.
        if map.len() != bytes.len() {
            return Self::parse_prefix(PathBuf::from("<memory>"), map, bytes.len());
        }
        Self::parse(PathBuf::from("<memory>"), map)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self, GgufError> {
        let len = mmap.len();
        Self::parse_prefix(path, mmap, len)
    }

    fn parse_prefix(path: PathBuf, mmap: Mmap, len: usize) -> Result<Self, GgufError> {
        let mut r = Reader { buf: &mmap[..len], pos: 0 };
        let magic: [u8; 4] = r.bytes(4, "magic")?.try_into().unwrap_or_default();
        if &magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.count("tensor count")?;
        let kv_count = r.count("metadata count")?;

        let mut metadata = Metadata::default();
        for i in 0..kv_count {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("type of metadata `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        // Room only for as many entries as the bytes left could describe (24 bytes each at
        // least): a count read from a corrupt header must not reserve a gigabyte up front.
        let room = (tensor_count as usize).min(r.remaining() / 24);
        let mut tensors = Vec::with_capacity(room);
        let mut by_name = HashMap::with_capacity(room);
        for i in 0..tensor_count {
            let name = r.string(&format!("name of tensor #{i}"))?;
            let n_dims = r.u32(&format!("rank of tensor `{name}`"))?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::Corrupt(format!("tensor `{name}` claims {n_dims} dimensions")));
            }
            let dims =
                (0..n_dims).map(|_| r.u64(&format!("dimensions of tensor `{name}`"))).collect::<Result<Vec<_>, _>>()?;
            let ty = GgmlType::from_id(r.u32(&format!("type of tensor `{name}`"))?);
            let offset = r.u64(&format!("offset of tensor `{name}`"))?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Corrupt(format!("tensor `{name}` appears twice")));
            }
            tensors.push(TensorInfo { name, dims, ty, offset });
        }

        let alignment = match metadata.opt_u64("general.alignment")? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a > 0 && a.is_power_of_two() => a,
            Some(a) => {
                return Err(GgufError::Corrupt(format!("general.alignment {a} is not a power of two")));
            }
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let len = len as u64;
        for t in &tensors {
            let values =
                t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
                    GgufError::Corrupt(format!("tensor `{}` has an absurd shape {:?}", t.name, t.dims))
                })?;
            // Unknown types cannot be sized; they are reported when the tensor is used.
            let Some(bytes) = t.ty.block_layout().map(|_| t.ty.bytes_for(values)) else {
                continue;
            };
            let bytes = bytes.ok_or_else(|| {
                GgufError::Corrupt(format!(
                    "tensor `{}` of {values} values is not a whole number of {} blocks that fits in the file",
                    t.name, t.ty
                ))
            })?;
            if t.offset % alignment != 0 {
                return Err(GgufError::Corrupt(format!("tensor `{}` data is not aligned to {alignment}", t.name)));
            }
            let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(bytes));
            match end {
                Some(end) if end <= len => {}
                _ => {
                    return Err(GgufError::Truncated {
                        what: format!("tensor `{}`", t.name),
                        needed: data_start.saturating_add(t.offset).saturating_add(bytes),
                        len,
                    });
                }
            }
        }

        Ok(Self { path, mmap, version, metadata, tensors, by_name, data_start })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The raw (still quantized) bytes of a tensor, borrowed from the memory map.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self.tensor_info(name).ok_or_else(|| GgufError::MissingTensor(name.to_owned()))?;
        let bytes = info
            .ty
            .bytes_for(info.num_values())
            .ok_or_else(|| GgufError::UnsupportedTensorType { name: name.to_owned(), ty: info.ty })?;
        // Bounds were checked at parse time.
        let start = (self.data_start + info.offset) as usize;
        Ok((info, &self.mmap[start..start + bytes as usize]))
    }

    /// A tensor dequantized to f32, in row-major order (see [`TensorInfo::shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let (info, bytes) = self.tensor_bytes(name)?;
        if !is_supported(info.ty) {
            return Err(GgufError::UnsupportedTensorType { name: name.to_owned(), ty: info.ty });
        }
        let mut out = vec![0f32; info.num_values() as usize];
        dequantize(info.ty, bytes, &mut out).map_err(|source| GgufError::Dequant { name: name.to_owned(), source })?;
        Ok((info.shape(), out))
    }
}

/// A bounds-checked little-endian cursor over the header.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| GgufError::Truncated {
            what: what.to_owned(),
            needed: self.pos as u64 + n as u64,
            len: self.buf.len() as u64,
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Bytes not read yet.
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(GgufError::Corrupt(format!("{what} {n} is implausibly large")));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(GgufError::Corrupt(format!("{what}: string length {n} is implausibly large")));
        }
        let b = self.bytes(n as usize, what)?;
        // Token lists of some converters hold invalid UTF-8; keep going with replacement chars.
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let what = format!("value of metadata `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(&what)?[0]),
            1 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(self.u32(&what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => MetaValue::Bool(self.array::<1>(&what)?[0] != 0),
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Corrupt(format!("metadata `{key}` nests arrays too deeply")));
                }
                let item_ty = self.u32(&what)?;
                let n = self.count(&what)?;
                // Each item takes at least a byte of the file.
                let mut items = Vec::with_capacity((n as usize).min(self.remaining()).min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(&what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(GgufError::Corrupt(format!("metadata `{key}` has unknown value type {other}")));
            }
        })
    }
}

#[cfg(test)]
mod tests;
