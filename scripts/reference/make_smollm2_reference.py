"""Make the SmolLM2-135M-Instruct logits / greedy-decoding reference fixture.

Writes, relative to the repository root:

  tests/fixtures/smollm2/reference.json

The reference is transformers loading user_data/models/SmolLM2-135M-Instruct.Q4_1.gguf
(AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=float32): every Q4_1/Q8_0
tensor is dequantized to f32, Q/K rows are un-permuted from llama.cpp's layout to HF's), run on
the CPU in eval mode under torch.no_grad(), eager attention, no KV cache (each step recomputes
the whole sequence).

(a) "prompts": for 6 prompts (4 plain completions, 2 ChatML chats rendered with the GGUF's chat
    template, add_generation_prompt=True): the prompt text, its token ids (add_special_tokens=False;
    special tokens in the text are matched whole), and for the next token after the LAST position:
    the top 20 of log_softmax(logits) as [id, logprob] pairs (and the raw logits of those ids),
    logits_max and logsumexp of the full 49152 logits. log-softmax is computed in float64 from
    the float32 logits.
(b) "greedy": for 3 of the prompts (incl. the chat asking "What is the capital of France?"), the
    greedy continuation of 32 tokens: argmax every step, no sampling, no repetition penalty, not
    stopped at EOS. Each step records the chosen id, its logprob, the runner-up id and the
    top1 - top2 logit margin; a test should compare generated ids only up to the first step whose
    margin is small (say < 0.1) — a 135M model has near-ties (the France chat's very first step has
    a margin of ~0.08: "The" vs "L"); teacher-forced, every step's logprob can be compared. `first_eos_step` is the index of
    the first <|im_end|> (id 2), `first_endoftext_step` of <|endoftext|> (id 0), null if none.

Also recorded: model file sha256, dtype, config values, versions. A short summary goes to stdout.

Run (deterministic; ~1-3 minutes on 2 CPU cores, mostly loading):

    /opt/refenv/bin/python scripts/reference/make_smollm2_reference.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib
import json
import platform
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "user_data" / "models"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_PATH = ROOT / "tests" / "fixtures" / "smollm2" / "reference.json"

TOP_K = 20
GREEDY_STEPS = 32
EOS_ID = 2  # <|im_end|>
ENDOFTEXT_ID = 0  # <|endoftext|>

# name, kind, payload (text for "completion", messages for "chat")
PROMPTS = [
    ("france_completion", "completion", "The capital of France is"),
    ("fibonacci", "completion", "def fibonacci(n):"),
    ("once_upon", "completion", "Once upon a time"),
    ("multilingual", "completion", "Bonjour, je m'appelle Marie et j'habite à"),
    ("chat_france", "chat", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "chat_system",
        "chat",
        [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
    ),
]
GREEDY = ["chat_france", "fibonacci", "once_upon"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import numpy
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": version("gguf"),
    }


def main() -> None:
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)

    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(
        str(MODEL_DIR), gguf_file=GGUF_NAME, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "expected tied embeddings"

    # SmolLM2's own pre-tokenizer splits digits individually; transformers' GGUF tokenizer does not.
    # The prompts avoid the cases where that matters; check it.
    faithful = tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str())
    faithful.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )

    def logits_last(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
        return out.logits[0, -1].to(torch.float32)

    def stats(logits: torch.Tensor) -> dict:
        l64 = logits.to(torch.float64)
        lse = torch.logsumexp(l64, dim=0)
        logp = l64 - lse
        top = torch.topk(logits, TOP_K)  # sorted descending; ties are not expected at the top
        return {
            "top_logprobs": [[int(i), float(logp[i])] for i in top.indices],
            "top_logits": [float(v) for v in top.values],
            "logits_max": float(logits.max()),
            "logsumexp": float(lse),
        }

    prompts_out = []
    by_name = {}
    for name, kind, payload in PROMPTS:
        if kind == "chat":
            text = tok.apply_chat_template(payload, tokenize=False, add_generation_prompt=True)
        else:
            text = payload
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == faithful.encode(text, add_special_tokens=False).ids, f"tokenizers disagree on {name}"
        entry = {"name": name, "kind": kind}
        if kind == "chat":
            entry["messages"] = payload
        entry.update({"text": text, "ids": ids, "n_tokens": len(ids)})
        entry.update(stats(logits_last(ids)))
        entry["top_tokens"] = [tok.decode([i]) for i, _ in entry["top_logprobs"][:5]]
        prompts_out.append(entry)
        by_name[name] = entry

    greedy_out = []
    for name in GREEDY:
        prompt = by_name[name]
        ids = list(prompt["ids"])
        steps = []
        for step in range(GREEDY_STEPS):
            logits = logits_last(ids)
            l64 = logits.to(torch.float64)
            logp = l64 - torch.logsumexp(l64, dim=0)
            top2 = torch.topk(logits, 2)
            chosen = int(torch.argmax(logits))  # first index of the max
            assert chosen == int(top2.indices[0])
            steps.append(
                {
                    "step": step,
                    "id": chosen,
                    "logprob": float(logp[chosen]),
                    "logit": float(logits[chosen]),
                    "second_id": int(top2.indices[1]),
                    "margin": float(top2.values[0] - top2.values[1]),
                }
            )
            ids.append(chosen)
        gen = [s["id"] for s in steps]
        first_eos = next((i for i, t in enumerate(gen) if t == EOS_ID), None)
        first_eot = next((i for i, t in enumerate(gen) if t == ENDOFTEXT_ID), None)
        greedy_out.append(
            {
                "name": name,
                "prompt_ids": prompt["ids"],
                "generated_ids": gen,
                "text": tok.decode(gen, skip_special_tokens=False),
                "text_until_eos": tok.decode(gen[:first_eos] if first_eos is not None else gen, skip_special_tokens=False),
                "first_eos_step": first_eos,
                "first_endoftext_step": first_eot,
                "min_margin": min(s["margin"] for s in steps),
                "steps": steps,
            }
        )

    out = {
        "versions": versions(),
        "source": (
            "transformers AutoModelForCausalLM.from_pretrained(user_data/models, gguf_file=" + GGUF_NAME + ", "
            "dtype=float32, attn_implementation='eager'), CPU, eval, no_grad, use_cache=False"
        ),
        "model_file": f"user_data/models/{GGUF_NAME}",
        "model_sha256": sha256(MODEL_DIR / GGUF_NAME),
        "dtype": "float32",
        "config": {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim,
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", None)),
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "eos_token_id": cfg.eos_token_id,
        },
        "notes": [
            "ids: add_special_tokens=False (this model adds no BOS); ChatML special tokens in the text are single tokens",
            "chat prompts: tokenizer.apply_chat_template(messages, add_generation_prompt=True) with the GGUF's template; "
            "it inserts a default system message when the first message is not a system one",
            "logprobs: log_softmax computed in float64 from float32 logits; top_logprobs sorted by logit, descending",
            "greedy: argmax each step over the full sequence (no KV cache), never stopped at EOS; compare free-running ids "
            "only while margin (top1 - top2 logit) is clear; teacher-forced (feed prompt_ids + generated_ids) every step's "
            "logprob/logit can be compared with a tolerance regardless of margin",
        ],
        "top_k": TOP_K,
        "prompts": prompts_out,
        "greedy": greedy_out,
    }
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    print(f"wrote {OUT_PATH.relative_to(ROOT)} ({OUT_PATH.stat().st_size} bytes)")
    for p in prompts_out:
        top = ", ".join(f"{t!r}:{lp:.3f}" for t, (_, lp) in zip(p["top_tokens"], p["top_logprobs"]))
        print(f"  {p['name']:18s} {p['n_tokens']:3d} tok  max={p['logits_max']:.4f} lse={p['logsumexp']:.4f}  {top}")
    for g in greedy_out:
        low = [s["step"] for s in g["steps"] if s["margin"] < 0.1]
        print(f"  greedy {g['name']}: eos@{g['first_eos_step']} min_margin={g['min_margin']:.4f} "
              f"near-ties at {low}: {g['text']!r}")


if __name__ == "__main__":
    main()
