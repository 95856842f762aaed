#!/usr/bin/env python3
"""openai-python legacy completions against Hearth (/v1/completions, SPEC §4, §6).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_completions.py

1. greedy completion of "The capital of France is" (max_tokens 16, temperature 0);
2. the same streamed (include_usage): deltas concatenate to the same text, one finish chunk,
   one `choices: []` usage chunk last, `usage: null` elsewhere, [DONE];
3. echo=True: text == prompt + the greedy text;
4. n=2: two choices, index 0 and 1;
5. stop strings: a 2–3 character substring from the middle of the greedy text is used as
   `stop` (as a string, then inside a list), streamed and not: the text must be the greedy text
   up to the stop string's first occurrence, finish_reason "stop", and the stop string (or a
   prefix of it) must never reach the client.
Every body and chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
import hearth_common as H
from hearth_common import expect, fail, ok

PROMPT = "The capital of France is"
MAX_TOKENS = 16


def check_body(body, what, n=1):
    expect(body["object"] == "text_completion", f"{what} object", "'text_completion'",
           body["object"])
    expect(body["id"].startswith("cmpl-"), f"{what} id", "'cmpl-…' (SPEC §4)", body["id"])
    idx = sorted(c["index"] for c in body["choices"])
    expect(idx == list(range(n)), f"{what} choice indexes", list(range(n)), idx)
    for c in body["choices"]:
        expect(isinstance(c["text"], str), f"{what} choices[{c['index']}].text", "a string",
               c["text"])
        expect("\ufffd" not in c["text"], f"{what} text", "no U+FFFD (broken UTF-8)", c["text"])
        expect(c["finish_reason"] in ("stop", "length"), f"{what} finish_reason",
               "'stop' or 'length'", c["finish_reason"])
    check_usage(body.get("usage"), what)


def check_usage(usage, what, finish=None):
    expect(isinstance(usage, dict), f"{what} usage", "an object", usage)
    p, c, t = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
    expect(isinstance(p, int) and p > 0, f"{what} usage.prompt_tokens", "an integer > 0", p)
    expect(isinstance(c, int) and c >= 0, f"{what} usage.completion_tokens", "an integer >= 0", c)
    expect(t == p + c, f"{what} usage.total_tokens", f"prompt + completion = {p} + {c}", t)
    if finish == "length":
        expect(c == MAX_TOKENS, f"{what} usage.completion_tokens with finish_reason length",
               MAX_TOKENS, c)
    elif finish is not None:
        expect(c <= MAX_TOKENS, f"{what} usage.completion_tokens", f"<= {MAX_TOKENS}", c)


def streamed(client, what, include_usage=True, **kw):
    """Run a streamed completion; check the stream's structure; return (text, finish, usage)."""
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    parsed = list(client.completions.create(stream=True, **extra, **kw))
    chunks = H.check_last(client, "/v1/completions")
    expect(len(parsed) == len(chunks), f"{what}: chunks seen by openai-python", len(chunks),
           len(parsed))
    expect(len(chunks) >= 2, f"{what}: number of chunks", ">= 2", len(chunks))
    for i, c in enumerate(chunks):
        expect(c["object"] == "text_completion", f"{what}: chunk #{i} object",
               "'text_completion'", c["object"])
        expect(c["id"] == chunks[0]["id"], f"{what}: chunk #{i} id", chunks[0]["id"], c["id"])
    body_chunks = chunks
    usage = None
    if include_usage:
        usage_idx = [i for i, c in enumerate(chunks) if c["choices"] == []]
        expect(usage_idx == [len(chunks) - 1], f"{what}: chunks with choices == []",
               f"exactly one, the last (#{len(chunks) - 1})", usage_idx)
        for i, c in enumerate(chunks[:-1]):
            expect("usage" in c and c["usage"] is None, f"{what}: chunk #{i} usage",
                   "present and null when include_usage is set (SPEC §6)",
                   c.get("usage", "<absent>"))
        usage = chunks[-1]["usage"]
        body_chunks = chunks[:-1]
    else:
        for i, c in enumerate(chunks):
            expect(c["choices"] != [] and c.get("usage") is None, f"{what}: chunk #{i}",
                   "no usage without include_usage", c)
    for i, c in enumerate(body_chunks):
        expect(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0,
               f"{what}: chunk #{i} choices", "one choice, index 0", c["choices"])
    finish_idx = [i for i, c in enumerate(body_chunks)
                  if c["choices"][0].get("finish_reason") is not None]
    expect(finish_idx == [len(body_chunks) - 1], f"{what}: chunks with a finish_reason",
           f"exactly one, the last text chunk (#{len(body_chunks) - 1})", finish_idx)
    finish = body_chunks[-1]["choices"][0]["finish_reason"]
    expect(finish in ("stop", "length"), f"{what}: finish_reason", "'stop' or 'length'", finish)
    text = "".join(c["choices"][0]["text"] for c in body_chunks)
    py_text = "".join(c.choices[0].text for c in parsed if c.choices)
    expect(py_text == text, f"{what}: openai-python's concatenated text", repr(text), py_text)
    expect("\ufffd" not in text, f"{what}: text", "no U+FFFD (broken UTF-8)", text)
    if usage is not None:
        check_usage(usage, what, finish)
    return text, finish, usage


def pick_stop(greedy):
    """A 2–3 character substring starting around the middle of the greedy text, with at least
    one non-space character, whose first occurrence is not at position 0 and which occurs
    neither in the prompt nor across the prompt/completion boundary (so the expected text does
    not depend on whether a server also scans the prompt)."""
    mid = len(greedy) // 2
    order = sorted(range(1, len(greedy) - 1), key=lambda i: (abs(i - mid), i))
    for start in order:
        for length in (3, 2):
            s = greedy[start:start + length]
            if len(s) < length or not s.strip() or "\ufffd" in s:
                continue
            pos = greedy.find(s)
            if pos >= 1 and (PROMPT + greedy).find(s) == len(PROMPT) + pos:
                return s, greedy[:pos]
    fail(f"greedy text too short or too repetitive to derive a stop string from: {greedy!r}")


def main():
    client = H.openai_client()
    model = H.model_id(client)
    common = dict(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)

    # 1. plain greedy, twice: the second is the reference (later requests find the prompt in
    # the same, cached, state)
    client.completions.create(**common)
    cold = H.check_last(client, "/v1/completions")["choices"][0]["text"]
    resp = client.completions.create(**common)
    body = H.check_last(client, "/v1/completions")
    check_body(body, "completion")
    greedy, finish = body["choices"][0]["text"], body["choices"][0]["finish_reason"]
    check_usage(body["usage"], "completion", finish)
    expect(greedy.strip() != "", "completion text", "non-empty", greedy)
    expect(resp.choices[0].text == greedy, "openai-python's parsed text", repr(greedy),
           resp.choices[0].text)
    if cold != greedy:
        H.note(H.WARMUP_NOTE.format(cold=cold, warm=greedy))
    ok(f"completion: {greedy!r} (finish_reason={finish}, usage={body['usage']})")

    # 2. streamed
    text, s_finish, usage = streamed(client, "stream", **common)
    expect(text == greedy, "streamed text at temperature 0",
           f"the non-streamed greedy text {greedy!r}", text)
    expect(s_finish == finish, "stream finish_reason", finish, s_finish)
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        expect(usage[k] == body["usage"][k], f"stream usage.{k}", body["usage"][k], usage[k])
    text, _, _ = streamed(client, "stream without include_usage", include_usage=False, **common)
    expect(text == greedy, "streamed text without include_usage", repr(greedy), text)
    ok("streamed completion (with and without include_usage) matches")

    # 3. echo
    client.completions.create(**common, echo=True)
    body = H.check_last(client, "/v1/completions")
    check_body(body, "echo")
    etext = body["choices"][0]["text"]
    expect(etext.startswith(PROMPT), "echo=True text", f"starting with the prompt {PROMPT!r}",
           etext)
    expect(etext == PROMPT + greedy, "echo=True text", f"prompt + greedy text "
           f"{PROMPT + greedy!r}", etext)
    ok(f"echo: {etext!r}")

    # 4. n=2
    client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0.7, n=2)
    body = H.check_last(client, "/v1/completions")
    check_body(body, "n=2", n=2)
    ok(f"n=2: {[c['text'] for c in body['choices']]!r}")

    # 5. stop strings
    stop, expected = pick_stop(greedy)
    for label, stop_arg in (("stop string", stop), ("stop list", ["\u0001never-seen\u0001", stop])):
        client.completions.create(**common, stop=stop_arg)
        body = H.check_last(client, "/v1/completions")
        check_body(body, label)
        got, fin = body["choices"][0]["text"], body["choices"][0]["finish_reason"]
        expect(stop not in got, f"{label} {stop!r}: text", "without the stop string", got)
        expect(got == expected, f"{label} {stop!r}: text",
               f"the greedy text up to the stop string {expected!r} (greedy: {greedy!r})", got)
        expect(fin == "stop", f"{label} {stop!r}: finish_reason", "'stop'", fin)
        check_usage(body["usage"], label, fin)

        text, fin, _ = streamed(client, f"streamed {label} {stop!r}", **common, stop=stop_arg)
        expect(stop not in text, f"streamed {label} {stop!r}: text", "without the stop string",
               text)
        expect(text == expected, f"streamed {label} {stop!r}: text",
               f"the greedy text up to the stop string {expected!r} (no partial stop string "
               f"either, SPEC §6)", text)
        expect(fin == "stop", f"streamed {label} {stop!r}: finish_reason", "'stop'", fin)
    ok(f"stop {stop!r}: text {expected!r}, finish_reason stop (string and list, streamed too)")


if __name__ == "__main__":
    H.run(main)
