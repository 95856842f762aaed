"""Make the GGUF reader / dequantization fixtures.

Writes, relative to the repository root:

  tests/fixtures/gguf/quants.gguf   a small GGUF v3 file written with the `gguf` Python package
                                    (llama.cpp's own gguf-py): one tensor per GGML type F32, F16,
                                    BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, each
                                    named after its type in lower case (`q4_k`, ...), 2 rows x 256
                                    values (GGUF dims [256, 2]: innermost first), filled with
                                    random raw block bytes whose f16 scale/min fields are finite
                                    values with |x| in [1e-3, 2]; plus metadata keys of every
                                    GGUF value type under `test.` and general.architecture="test".
  tests/fixtures/gguf/quants.json   the expected values: {"versions", "tensors": {name: {"type",
                                    "ggml_type_id", "shape" [rows, cols], "gguf_dims" (innermost
                                    first), "nbytes", "values" [512 floats, row-major]}},
                                    "metadata": {key: value}, "metadata_types": {key: type}}.

Expected values come from gguf.quants.dequantize (numpy ports of ggml's dequantize_row_*), all
arithmetic in float32. Every float is an exact float32 written as a Python float (json repr is
exact), so a test can compare bit for bit (ggml's C code may fuse multiply-add for the `d*q + m`
types; a tolerance of 1 ulp there is the honest bound).

The script reads the file back with gguf.GGUFReader and checks the tensor types, dims, bytes and
dequantized values, and every metadata value.

Run (deterministic, fixed seed):

    /opt/refenv/bin/python scripts/reference/make_gguf_fixtures.py
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "gguf"
GGUF_PATH = OUT_DIR / "quants.gguf"
JSON_PATH = OUT_DIR / "quants.json"

SEED = 20240611
ROWS, COLS = 2, 256

TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]

# Byte offsets of the f16 fields (scale d, and min m / dmin where present) inside one block.
F16_FIELDS = {
    T.Q4_0: [0],        # d, qs[16]
    T.Q4_1: [0, 2],     # d, m, qs[16]
    T.Q5_0: [0],        # d, qh[4], qs[16]
    T.Q5_1: [0, 2],     # d, m, qh[4], qs[16]
    T.Q8_0: [0],        # d, qs[32] (i8)
    T.Q4_K: [0, 2],     # d, dmin, scales[12], qs[128]
    T.Q5_K: [0, 2],     # d, dmin, scales[12], qh[32], qs[128]
    T.Q6_K: [208],      # ql[128], qh[64], scales[16] (i8), d
}


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gguf": package_version("gguf"),
    }


def random_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values, |x| log-uniform in [1e-3, 2], random sign."""
    mag = np.exp(rng.uniform(np.log(1e-3), np.log(2.0), size=n))
    sign = np.where(rng.integers(0, 2, size=n) == 0, -1.0, 1.0)
    return (mag * sign).astype(np.float16)


def make_tensor(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Returns the array handed to GGUFWriter.add_tensor (typed for F32/F16, raw bytes otherwise)."""
    n = ROWS * COLS
    if qtype == T.F32:
        v = rng.standard_normal(n).astype(np.float32) * np.float32(3.0)
        # a few special finite values: zeros of both signs, a subnormal, large magnitudes
        v[:6] = np.array([0.0, -0.0, 1e-40, -3.4e38, 3.4e38, 1.0], dtype=np.float32)
        return v.reshape(ROWS, COLS)
    if qtype == T.F16:
        v = rng.standard_normal(n).astype(np.float16)
        # zeros, smallest subnormal, largest subnormal, smallest normal, +-max
        specials = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00],
                            dtype=np.uint16).view(np.float16)
        v[: len(specials)] = specials
        return v.reshape(ROWS, COLS)
    if qtype == T.BF16:
        f = (rng.standard_normal(n) * 5.0).astype(np.float32)
        bits = (f.view(np.uint32) >> 16).astype(np.uint16)  # truncate to bf16
        specials = np.array([0x0000, 0x8000, 0x0001, 0x7F7F, 0xFF7F, 0x3F80, 0x0080],
                            dtype=np.uint16)  # zeros, subnormal, +-max, 1.0, min normal
        bits[: len(specials)] = specials
        return bits.view(np.uint8).reshape(ROWS, COLS * 2)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = n // block_size
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = random_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(ROWS, n_blocks // ROWS * type_size)


def dequant(arr: np.ndarray, qtype: T) -> np.ndarray:
    out = gguf.quants.dequantize(arr, qtype)
    return np.asarray(out, dtype=np.float32).reshape(ROWS, COLS)


# (key, value, GGUF value type, array element type)
METADATA = [
    ("test.u8", 200, V.UINT8, None),
    ("test.i8", -100, V.INT8, None),
    ("test.u16", 60000, V.UINT16, None),
    ("test.i16", -30000, V.INT16, None),
    ("test.u32", 4000000000, V.UINT32, None),
    ("test.i32", -2000000000, V.INT32, None),
    ("test.u64", 18364758544493064720, V.UINT64, None),  # 0xFEDCBA9876543210, > 2^63
    ("test.i64", -1234567890123456789, V.INT64, None),
    ("test.f32", float(np.float32(3.14159)), V.FLOAT32, None),
    ("test.f64", 2.718281828459045, V.FLOAT64, None),
    ("test.bool_true", True, V.BOOL, None),
    ("test.bool_false", False, V.BOOL, None),
    ("test.string", "héllo, wörld ✓ 日本", V.STRING, None),
    ("test.array_str", ["alpha", "", "γάμμα", "<|im_end|>", "with space"], V.ARRAY, V.STRING),
    ("test.array_i32", [0, 1, -1, 2147483647, -2147483648, 42], V.ARRAY, V.INT32),
]

TYPE_NAMES = {
    V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
    V.INT32: "i32", V.UINT64: "u64", V.INT64: "i64", V.FLOAT32: "f32", V.FLOAT64: "f64",
    V.BOOL: "bool", V.STRING: "string",
}


def type_name(vtype: V, sub: V | None) -> str:
    if vtype == V.ARRAY:
        return f"array<{TYPE_NAMES[sub]}>"
    return TYPE_NAMES[vtype]


def main() -> None:
    rng = np.random.default_rng(SEED)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    tensors = {}
    for qtype in TYPES:
        tensors[qtype.name.lower()] = (qtype, make_tensor(rng, qtype))

    writer = gguf.GGUFWriter(str(GGUF_PATH), arch="test")  # sets general.architecture = "test"
    for key, value, vtype, sub in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for name, (qtype, arr) in tensors.items():
        if qtype in (T.F32, T.F16):
            writer.add_tensor(name, arr)
        else:
            writer.add_tensor(name, arr, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    expected = {}
    for name, (qtype, arr) in tensors.items():
        values = dequant(arr, qtype)
        assert np.all(np.isfinite(values)), name
        expected[name] = {
            "type": qtype.name,
            "ggml_type_id": int(qtype),
            "shape": [ROWS, COLS],
            "gguf_dims": [COLS, ROWS],
            "nbytes": int(arr.nbytes),
            "values": [float(np.float32(x)) for x in values.ravel()],
        }

    # ---- read back and verify ----
    reader = gguf.GGUFReader(str(GGUF_PATH))
    seen = set()
    for t in reader.tensors:
        qtype, arr = tensors[t.name]
        seen.add(t.name)
        assert t.tensor_type == qtype, (t.name, t.tensor_type)
        assert [int(d) for d in t.shape] == [COLS, ROWS], (t.name, t.shape)
        assert t.n_elements == ROWS * COLS
        assert int(t.n_bytes) == arr.nbytes, (t.name, t.n_bytes, arr.nbytes)
        assert np.array_equal(np.asarray(t.data).view(np.uint8).ravel(), arr.view(np.uint8).ravel()), t.name
        back = dequant(np.asarray(t.data), qtype)
        want = np.array(expected[t.name]["values"], dtype=np.float32).reshape(ROWS, COLS)
        assert np.array_equal(back.view(np.uint32), want.view(np.uint32)), t.name
    assert seen == set(tensors), seen

    meta_values: dict = {"general.architecture": "test"}
    meta_types: dict = {"general.architecture": "string"}
    for key, value, vtype, sub in METADATA:
        meta_values[key] = value
        meta_types[key] = type_name(vtype, sub)
    for key, want in meta_values.items():
        field = reader.fields[key]
        got = field.contents()
        if isinstance(want, float):
            assert float(got) == want, (key, got, want)
        else:
            assert got == want, (key, got, want)
        tname = type_name(field.types[0], field.types[1] if len(field.types) > 1 else None)
        assert tname == meta_types[key], (key, tname, meta_types[key])
    # the writer adds nothing else but the three GGUF header pseudo-fields
    extra = [k for k in reader.fields if k not in meta_values and not k.startswith("GGUF.")]
    assert not extra, extra

    out = {
        "versions": versions(),
        "source": "scripts/reference/make_gguf_fixtures.py (gguf-py GGUFWriter + gguf.quants.dequantize)",
        "seed": SEED,
        "gguf_version": 3,
        "alignment": 32,
        "tensor_order": list(tensors),
        "tensors": expected,
        "metadata": meta_values,
        "metadata_types": meta_types,
    }
    JSON_PATH.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {GGUF_PATH.relative_to(ROOT)} ({GGUF_PATH.stat().st_size} bytes)")
    print(f"wrote {JSON_PATH.relative_to(ROOT)} ({JSON_PATH.stat().st_size} bytes)")
    for name, t in expected.items():
        v = np.array(t["values"], dtype=np.float32)
        print(f"  {name:5s} {t['type']:5s} nbytes={t['nbytes']:5d} min={v.min():.6g} max={v.max():.6g}")


if __name__ == "__main__":
    sys.exit(main())
