"""Record llama.cpp's own results on the Q4_1 SmolLM2 for the prompts of reference.json.

Writes tests/fixtures/smollm2/llama_cpp.json: for every prompt of
tests/fixtures/smollm2/reference.json, llama.cpp's log-probabilities (float64 log-softmax of
its float32 logits) of the transformers reference's top-10 next tokens, and for every greedy
case, teacher-forced with the reference's ids, each step's log-probability of the reference
token.

Why: Hearth's CPU path computes on the Q4_1 blocks with 8-bit activations, as llama.cpp does,
so its logits differ from transformers' (which dequantizes every weight to f32 and keeps f32
activations) by that rounding. How far llama.cpp itself lands from transformers on the same
file is the measured size of that rounding; host/tests/model_reference.rs sets the CPU
tolerance from it.

llama.cpp is llama-cpp-python (the one scripts/bench-decode installs into .bench-venv/, built
for this CPU), run with its defaults (f16 KV cache), 1 thread, the whole prompt as one batch.

    .bench-venv/bin/python scripts/reference/make_smollm2_llama_cpp_reference.py

With `--quantize Q4_K_M` (or Q5_K_M, Q6_K, any of llama.cpp's file types) it first has
llama.cpp's own quantizer requantize the Q4_1 file into user_data/models/SmolLM2-135M-Instruct.
<TYPE>.gguf (Q4_K_M of this model's shapes is Q4_K, Q6_K, Q5_0 and Q8_0 blocks; Q5_K_M is Q5_K,
Q6_K, Q5_1 and Q8_0) and records llama.cpp's results on that file in llama_cpp.<TYPE>.json:
what host/tests/model_reference.rs's ignored `k_quant_files_match_llama_cpp` compares Hearth
with (no such file can be made where llama.cpp is not installed, so CI cannot run it).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
from importlib.metadata import version
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "user_data" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
REFERENCE = ROOT / "tests" / "fixtures" / "smollm2" / "reference.json"
OUT = ROOT / "tests" / "fixtures" / "smollm2" / "llama_cpp.json"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def log_softmax(logits) -> list[float]:
    m = max(logits)
    lse = m + math.log(sum(math.exp(x - m) for x in logits))
    return [x - lse for x in logits]


def quantize(ftype: str) -> Path:
    """Requantizes the Q4_1 file with llama.cpp's quantizer into file type `ftype`."""
    out = MODEL.with_name(f"SmolLM2-135M-Instruct.{ftype}.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(MODEL).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not quantize {MODEL.name} to {ftype}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quantize", metavar="FTYPE", help="requantize to this llama.cpp file type first")
    args = parser.parse_args()
    model, out_path = MODEL, OUT
    if args.quantize:
        model = quantize(args.quantize)
        out_path = OUT.with_name(f"llama_cpp.{args.quantize}.json")
    ref = json.loads(REFERENCE.read_text())
    llm = Llama(model_path=str(model), n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1,
                logits_all=True, verbose=False)

    def last_logprobs(ids: list[int]) -> list[float]:
        llm.eval(ids)
        return log_softmax([float(x) for x in llm.scores[llm.n_tokens - 1]])

    prompts = []
    for p in ref["prompts"]:
        llm.reset()
        lp = last_logprobs(p["ids"])
        prompts.append({"name": p["name"], "top_logprobs": [[i, lp[i]] for i, _ in p["top_logprobs"][:10]]})
    greedy = []
    for g in ref["greedy"]:
        llm.reset()
        steps = []
        lp = last_logprobs(g["prompt_ids"])
        for s in g["steps"]:
            steps.append({"step": s["step"], "id": s["id"], "logprob": lp[s["id"]]})
            lp = last_logprobs([s["id"]])
        greedy.append({"name": g["name"], "steps": steps})
    out = {
        "source": f"llama-cpp-python {version('llama-cpp-python')}, defaults (f16 KV cache), 1 thread",
        "model_file": model.name,
        "requantized_from": ref["model_sha256"] if args.quantize else None,
        "model_sha256": ref["model_sha256"] if not args.quantize else sha256(model),
        "prompts": prompts,
        "greedy": greedy,
    }
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    worst = max(
        [abs(a[1] - b[1]) for p, rp in zip(prompts, ref["prompts"]) for a, b in zip(p["top_logprobs"], rp["top_logprobs"])]
        + [abs(s["logprob"] - rs["logprob"]) for g, rg in zip(greedy, ref["greedy"]) for s, rs in zip(g["steps"], rg["steps"])]
    )
    print(f"wrote {out_path.relative_to(ROOT)}: llama.cpp vs transformers, worst logprob difference {worst:.3e}")


if __name__ == "__main__":
    main()
