#!/usr/bin/env python3
"""openai-python log-probabilities against Hearth (SPEC §4, §5; issue #8 must-show 4).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_logprobs.py

1. completions `logprobs: 5, echo: true` (greedy): one entry per prompt and completion token
   (usage's counts), the first prompt token unscored (null), every other log-probability <= 0,
   each `top_logprobs` dict holding at most 6 tokens and always the chosen one; greedy tokens are
   their position's most likely; the completion's token texts concatenate to its text;
2. the scores agree with each other and with /v1/internal/logits: the first generated token's
   log-probability is ln of its probability in the logits endpoint's softmax, and scoring the
   prompt + that token as a new echoed prompt gives that token the same log-probability;
3. the same streamed: per-chunk logprobs concatenate to the non-streamed ones (text offsets
   continuing), and openai-python parses every chunk;
4. chat `logprobs: true, top_logprobs: 3`, streamed and not: one entry per completion token with
   `bytes` the token's UTF-8 and three alternatives, the greedy token first among them; the
   stream's entries equal the non-streamed ones;
5. bad values are 400s naming the field.
Every body and chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
import math

import hearth_common as H
from hearth_common import expect, ok

PROMPT = "The capital of France is"
TOL = 2e-3


def check_legacy(lp, what, n_tokens, top):
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        expect(len(lp[key]) == n_tokens, f"{what}: len({key})", n_tokens, len(lp[key]))
    for i, (tok, l, alts) in enumerate(zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])):
        if l is None:
            continue
        expect(l <= 1e-6, f"{what}: token_logprobs[{i}]", "<= 0", l)
        expect(tok in alts and abs(alts[tok] - l) < 1e-6, f"{what}: top_logprobs[{i}]",
               f"holding the chosen token {tok!r} with {l}", alts)
        expect(len(alts) <= top + 1, f"{what}: top_logprobs[{i}] size", f"<= {top + 1}", len(alts))
    offsets = lp["text_offset"]
    expect(offsets == sorted(offsets), f"{what}: text_offset", "non-decreasing", offsets)


def main():
    client = H.openai_client()
    model = H.model_id(client)
    common = dict(model=model, prompt=PROMPT, max_tokens=8, temperature=0)

    # 1. echo + logprobs
    resp = client.completions.create(**common, logprobs=5, echo=True)
    body = H.check_last(client, "/v1/completions")
    choice, usage = body["choices"][0], body["usage"]
    lp = choice["logprobs"]
    n_prompt, n_done = usage["prompt_tokens"], usage["completion_tokens"]
    check_legacy(lp, "echo", n_prompt + n_done, 5)
    expect(lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None,
           "echo: the first prompt token", "unscored (null, as OpenAI)", lp["token_logprobs"][0])
    expect(all(x is not None for x in lp["token_logprobs"][1:]), "echo: every later token",
           "scored", lp["token_logprobs"])
    completion = choice["text"][len(PROMPT):]
    expect(choice["text"].startswith(PROMPT), "echo text", "the prompt first", choice["text"])
    expect("".join(lp["tokens"][n_prompt:]) == completion, "completion token texts",
           repr(completion), "".join(lp["tokens"][n_prompt:]))
    expect("".join(lp["tokens"][:n_prompt]).endswith(PROMPT), "prompt token texts",
           f"ending with {PROMPT!r}", lp["tokens"][:n_prompt])
    for i in range(n_prompt, n_prompt + n_done):
        best = max(lp["top_logprobs"][i].values())
        expect(abs(lp["token_logprobs"][i] - best) < 1e-6, f"greedy token #{i}",
               "its position's most likely", (lp["tokens"][i], lp["top_logprobs"][i]))
    parsed = resp.choices[0].logprobs
    expect(parsed is not None and parsed.tokens == lp["tokens"]
           and parsed.token_logprobs == lp["token_logprobs"], "openai-python's Logprobs",
           "the wire's tokens and token_logprobs", parsed)
    ok(f"echo + logprobs=5: {n_prompt} prompt + {n_done} completion tokens scored")

    # 2. consistency with /v1/internal/logits and with prompt scoring
    first, first_lp = lp["tokens"][n_prompt], lp["token_logprobs"][n_prompt]
    import requests

    r = requests.post(f"{H.base_url()}/v1/internal/logits",
                      json={"prompt": PROMPT, "top_logits": 5},
                      headers={"Authorization": f"Bearer {H.api_key()}"}, timeout=H.timeout())
    expect(r.status_code == 200, "/v1/internal/logits status", 200, r.text)
    probs = r.json()
    expect(first in probs, "/v1/internal/logits", f"holding the greedy token {first!r}", probs)
    expect(abs(math.log(probs[first]) - first_lp) < TOL, "first token's log-probability",
           f"ln p from /v1/internal/logits = {math.log(probs[first]):.4f}", first_lp)
    client.completions.create(model=model, prompt=PROMPT + first, max_tokens=1, temperature=0,
                              logprobs=0, echo=True)
    rescored = H.check_last(client, "/v1/completions")["choices"][0]["logprobs"]
    expect(rescored["tokens"][n_prompt] == first, "the prompt + first token re-tokenized",
           f"{first!r} at #{n_prompt}", rescored["tokens"])
    expect(abs(rescored["token_logprobs"][n_prompt] - first_lp) < TOL, "the token scored as prompt",
           f"{first_lp} (its log-probability when generated)", rescored["token_logprobs"][n_prompt])
    ok(f"{first!r}: generated {first_lp:.4f}, as prompt {rescored['token_logprobs'][n_prompt]:.4f}, "
       f"logits endpoint {math.log(probs[first]):.4f}")

    # 3. streamed
    stream = list(client.completions.create(**common, logprobs=5, echo=True, stream=True))
    chunks = H.check_last(client, "/v1/completions")
    expect(len(stream) == len(chunks), "chunks seen by openai-python", len(chunks), len(stream))
    joined = {k: [] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    for c in chunks:
        for k in joined:
            joined[k] += c["choices"][0]["logprobs"][k]
    expect(joined["tokens"] == lp["tokens"], "streamed tokens", lp["tokens"], joined["tokens"])
    expect(joined["text_offset"] == lp["text_offset"], "streamed text offsets", lp["text_offset"],
           joined["text_offset"])
    diffs = [abs(a - b) for a, b in zip(joined["token_logprobs"][1:], lp["token_logprobs"][1:])]
    expect(max(diffs) < TOL, "streamed token_logprobs", lp["token_logprobs"], joined["token_logprobs"])
    ok(f"streamed completion logprobs over {len(chunks)} chunks match")

    # 4. chat
    chat = dict(model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8,
                temperature=0, logprobs=True, top_logprobs=3)
    resp = client.chat.completions.create(**chat)
    body = H.check_last(client, "/v1/chat/completions")
    content = body["choices"][0]["logprobs"]["content"]
    n_done = body["usage"]["completion_tokens"]
    expect(len(content) == n_done, "chat logprobs.content", f"{n_done} entries", len(content))
    for i, e in enumerate(content):
        expect(e["bytes"] == list(e["token"].encode()), f"chat entry #{i} bytes", "the token's UTF-8", e)
        expect(len(e["top_logprobs"]) == 3, f"chat entry #{i} top_logprobs", 3, e["top_logprobs"])
        best = e["top_logprobs"][0]
        expect(best["token"] == e["token"] and abs(best["logprob"] - e["logprob"]) < 1e-6,
               f"chat entry #{i}", "the greedy token first among its alternatives", e)
    text = body["choices"][0]["message"]["content"]
    expect("".join(e["token"] for e in content).startswith(text), "chat token texts",
           f"starting with the content {text!r}", [e["token"] for e in content])
    parsed = resp.choices[0].logprobs
    expect(parsed is not None and [t.token for t in parsed.content] == [e["token"] for e in content],
           "openai-python's ChoiceLogprobs", "the wire's tokens", parsed)

    list(client.chat.completions.create(**chat, stream=True))
    chunks = H.check_last(client, "/v1/chat/completions")
    streamed = [e for c in chunks for e in ((c["choices"][0].get("logprobs") or {}).get("content") or [])]
    expect([e["token"] for e in streamed] == [e["token"] for e in content], "streamed chat tokens",
           [e["token"] for e in content], [e["token"] for e in streamed])
    diffs = [abs(a["logprob"] - b["logprob"]) for a, b in zip(streamed, content)]
    expect(max(diffs) < TOL, "streamed chat logprobs", "the non-streamed ones", diffs)
    ok(f"chat top_logprobs=3: {[(e['token'], round(e['logprob'], 3)) for e in content]} (streamed too)")

    # 5. errors
    for path, payload, param in (
        ("/v1/chat/completions", dict(chat, top_logprobs=21), "top_logprobs"),
        ("/v1/chat/completions", dict(chat, logprobs=False), "top_logprobs"),
        ("/v1/completions", dict(common, logprobs=21), "logprobs"),
    ):
        r = requests.post(f"{H.base_url()}{path}", json=payload,
                          headers={"Authorization": f"Bearer {H.api_key()}"}, timeout=H.timeout())
        err = r.json().get("error", {})
        expect(r.status_code == 400 and err.get("param") == param, f"{path} with bad {param}",
               f"400 naming `{param}`", (r.status_code, r.text))
    ok("bad logprobs values are 400s naming the field")


if __name__ == "__main__":
    H.run(main)
