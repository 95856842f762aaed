//! GGUF reader tests: dequantization against values from the `gguf` Python package
//! (`scripts/reference/make_gguf_fixtures.py`) and crafted broken files.

use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf").join(name)
}

#[test]
fn every_quant_type_dequantizes_like_the_gguf_python_package() {
    let file = GgufFile::open(&fixture("quants.gguf")).expect("fixture opens");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quants.json")).expect("fixture json")).expect("json");
    let tensors = expected["tensors"].as_object().expect("tensors object");
    assert!(tensors.len() >= 11, "fixture covers every type");
    for (name, want) in tensors {
        let (shape, values) = file.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_shape: Vec<usize> =
            want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, want_shape, "{name} shape");
        let want_values: Vec<f32> =
            want["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(values.len(), want_values.len(), "{name} length");
        for (i, (got, want)) in values.iter().zip(&want_values).enumerate() {
            assert!(got.to_bits() == want.to_bits() || got == want, "{name}[{i}]: got {got}, want {want}");
        }
        assert_eq!(file.tensor_info(name).unwrap().ty.to_string(), want["type"].as_str().unwrap(), "{name} type");
    }
}

#[test]
fn metadata_of_every_value_type_reads_back() {
    let file = GgufFile::open(&fixture("quants.gguf")).expect("fixture opens");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quants.json")).unwrap()).unwrap();
    for (key, want) in expected["metadata"].as_object().unwrap() {
        let got = file.metadata.get(key).unwrap_or_else(|| panic!("metadata {key} missing"));
        match want {
            serde_json::Value::Bool(b) => assert_eq!(got.as_bool(), Some(*b), "{key}"),
            serde_json::Value::String(s) => assert_eq!(got.as_str(), Some(s.as_str()), "{key}"),
            serde_json::Value::Number(n) if n.is_f64() => {
                let g = got.as_f64().unwrap();
                assert!((g - n.as_f64().unwrap()).abs() < 1e-6, "{key}: {g} vs {n}");
            }
            serde_json::Value::Number(n) => assert_eq!(got.as_i64(), n.as_i64(), "{key}"),
            serde_json::Value::Array(items) => {
                assert_eq!(got.as_array().unwrap().len(), items.len(), "{key}")
            }
            other => panic!("unexpected fixture value {other}"),
        }
    }
    assert_eq!(file.metadata.str("general.architecture").unwrap(), "test");
}

/// A minimal GGUF writer for crafting broken files.
struct Craft {
    buf: Vec<u8>,
}

impl Craft {
    fn new(version: u32, tensors: u64, kvs: u64) -> Self {
        let mut buf = b"GGUF".to_vec();
        buf.extend(version.to_le_bytes());
        buf.extend(tensors.to_le_bytes());
        buf.extend(kvs.to_le_bytes());
        Craft { buf }
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.buf.extend((s.len() as u64).to_le_bytes());
        self.buf.extend(s.as_bytes());
        self
    }
    fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.string(k);
        self.buf.extend(8u32.to_le_bytes());
        self.string(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.string(name);
        self.buf.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.buf.extend(d.to_le_bytes());
        }
        self.buf.extend(ty.to_le_bytes());
        self.buf.extend(offset.to_le_bytes());
        self
    }
    fn data(&mut self, bytes: &[u8]) -> &mut Self {
        while !self.buf.len().is_multiple_of(32) {
            self.buf.push(0);
        }
        self.buf.extend(bytes);
        self
    }
    fn write(&self, name: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join(name);
        std::fs::write(&path, &self.buf).unwrap();
        (dir, path)
    }
}

/// A scratch directory removed on drop (tests only; no crate needed for this).
mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "hearth-gguf-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn wrong_magic_is_reported() {
    let (_d, path) = Craft { buf: b"GGML\x03\0\0\0".to_vec() }.write("bad.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic(_)), "{err}");
    assert!(err.to_string().contains("not a GGUF file"));
}

#[test]
fn unsupported_version_is_reported() {
    let (_d, path) = Craft::new(1, 0, 0).write("v1.gguf");
    assert!(matches!(GgufFile::open(&path).unwrap_err(), GgufError::UnsupportedVersion(1)));
}

#[test]
fn truncated_header_is_reported() {
    let mut c = Craft::new(3, 0, 2);
    c.kv_str("general.architecture", "llama");
    c.buf.truncate(c.buf.len() - 3);
    let (_d, path) = c.write("trunc.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn truncated_tensor_data_is_reported_with_the_tensor_name() {
    let mut c = Craft::new(3, 1, 1);
    c.kv_str("general.architecture", "llama");
    c.tensor("blk.0.attn_q.weight", &[32, 4], 8, 0); // 4 Q8_0 blocks = 136 bytes
    c.data(&[0u8; 100]);
    let (_d, path) = c.write("short.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("truncated") && msg.contains("blk.0.attn_q.weight"), "{msg}");
}

#[test]
fn unsupported_tensor_type_is_reported_when_read() {
    let mut c = Craft::new(3, 1, 0);
    c.tensor("t", &[256], 11, 0); // Q3_K: readable layout, no dequantizer
    c.data(&[0u8; 110]);
    let (_d, path) = c.write("q3k.gguf");
    let file = GgufFile::open(&path).unwrap();
    let err = file.tensor_f32("t").unwrap_err();
    assert!(err.to_string().contains("Q3_K"), "{err}");

    let mut c = Craft::new(3, 1, 0);
    c.tensor("iq", &[256], 99, 0);
    c.data(&[0u8; 64]);
    let (_d, path) = c.write("iq.gguf");
    let file = GgufFile::open(&path).unwrap();
    assert!(file.tensor_f32("iq").unwrap_err().to_string().contains("type id 99"));
}

#[test]
fn absurd_counts_do_not_allocate() {
    let (_d, path) = Craft::new(3, u64::MAX, 0).write("huge.gguf");
    assert!(matches!(GgufFile::open(&path).unwrap_err(), GgufError::Corrupt(_)));
    let mut c = Craft::new(3, 0, 1);
    c.string("k");
    c.buf.extend(8u32.to_le_bytes());
    c.buf.extend(u64::MAX.to_le_bytes());
    let (_d2, path) = c.write("str.gguf");
    assert!(matches!(GgufFile::open(&path).unwrap_err(), GgufError::Corrupt(_)));
}

#[test]
fn metadata_type_mismatch_names_the_key() {
    let mut c = Craft::new(3, 0, 1);
    c.kv_str("llama.block_count", "thirty");
    let (_d, path) = c.write("meta.gguf");
    let file = GgufFile::open(&path).unwrap();
    let err = file.metadata.u64("llama.block_count").unwrap_err();
    assert!(err.to_string().contains("llama.block_count"), "{err}");
}
