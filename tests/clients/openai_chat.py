#!/usr/bin/env python3
"""openai-python chat completions against Hearth: a plain one, then the same streamed.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_chat.py

Checks (SPEC §5, §6): non-empty answer, finish_reason stop|length, usage consistent; the stream
starts with delta.role "assistant", its content deltas concatenate to the same greedy text, it
ends with exactly one finish_reason chunk followed by exactly one `choices: []` usage chunk
(with stream_options.include_usage), every other chunk carrying `usage: null`, then [DONE].
Every body and every chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
import hearth_common as H
from hearth_common import expect, ok

QUESTION = "What is the capital of France?"
MAX_TOKENS = 32


def check_usage(usage, what, max_completion=None, finish_reason=None):
    expect(isinstance(usage, dict), f"{what} usage", "an object", usage)
    p, c, t = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
    expect(isinstance(p, int) and p > 0, f"{what} usage.prompt_tokens", "an integer > 0", p)
    expect(isinstance(c, int) and c > 0, f"{what} usage.completion_tokens", "an integer > 0", c)
    expect(t == p + c, f"{what} usage.total_tokens", f"prompt + completion = {p} + {c}", t)
    if max_completion is not None:
        expect(c <= max_completion, f"{what} usage.completion_tokens",
               f"<= max_tokens {max_completion}", c)
        if finish_reason == "length":
            expect(c == max_completion, f"{what} usage.completion_tokens with finish_reason length",
                   f"== max_tokens {max_completion}", c)


def main():
    client = H.openai_client()
    model = H.model_id(client)
    messages = [{"role": "user", "content": QUESTION}]

    # ---- non-streamed. The same greedy request is sent twice and the second one is the
    # reference: every later request then finds the prompt in the same (cached) state.
    client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    cold = H.check_last(client, "/v1/chat/completions")["choices"][0]["message"]["content"]
    resp = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    body = H.check_last(client, "/v1/chat/completions")
    expect(body["object"] == "chat.completion", "object", "'chat.completion'", body["object"])
    expect(body["id"].startswith("chatcmpl-"), "id", "'chatcmpl-…' (SPEC §5)", body["id"])
    expect(len(body["choices"]) == 1, "number of choices", 1, len(body["choices"]))
    choice = body["choices"][0]
    expect(choice["index"] == 0, "choices[0].index", 0, choice["index"])
    msg = choice["message"]
    expect(msg["role"] == "assistant", "message.role", "'assistant'", msg["role"])
    content = msg["content"]
    expect(isinstance(content, str) and content.strip() != "", "message.content",
           "non-empty text", content)
    expect("\ufffd" not in content, "message.content", "no U+FFFD (broken UTF-8)", content)
    finish = choice["finish_reason"]
    expect(finish in ("stop", "length"), "finish_reason", "'stop' or 'length'", finish)
    check_usage(body.get("usage"), "chat", MAX_TOKENS, finish)
    expect(resp.choices[0].message.content == content, "openai-python's parsed content",
           repr(content), resp.choices[0].message.content)
    expect(resp.usage is not None and resp.usage.total_tokens == body["usage"]["total_tokens"],
           "openai-python's parsed usage.total_tokens", body["usage"]["total_tokens"], resp.usage)
    if cold != content:
        H.note(H.WARMUP_NOTE.format(cold=cold, warm=content))
    ok(f"chat completion: {content!r} (finish_reason={finish}, usage={body['usage']})")

    # ---- streamed, with include_usage
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    parsed = list(stream)
    chunks = H.check_last(client, "/v1/chat/completions")
    expect(len(parsed) == len(chunks), "chunks seen by openai-python", len(chunks), len(parsed))
    expect(len(chunks) >= 3, "number of stream chunks",
           ">= 3 (role, content…, finish, usage)", len(chunks))
    for i, c in enumerate(chunks):
        expect(c["object"] == "chat.completion.chunk", f"chunk #{i} object",
               "'chat.completion.chunk'", c["object"])
        expect(c["id"] == chunks[0]["id"], f"chunk #{i} id", f"the same id as chunk #0 "
               f"({chunks[0]['id']!r})", c["id"])
        expect(c["created"] == chunks[0]["created"], f"chunk #{i} created",
               chunks[0]["created"], c["created"])
    expect(chunks[0]["id"].startswith("chatcmpl-"), "stream id", "'chatcmpl-…'", chunks[0]["id"])

    first = chunks[0]
    expect(len(first["choices"]) == 1 and first["choices"][0]["delta"].get("role") == "assistant",
           "first chunk", "choices[0].delta.role == 'assistant' (SPEC §6)", first)
    expect(parsed[0].choices[0].delta.role == "assistant", "openai-python first delta.role",
           "'assistant'", parsed[0].choices[0].delta.role)

    usage_idx = [i for i, c in enumerate(chunks) if c["choices"] == []]
    expect(usage_idx == [len(chunks) - 1], "chunks with choices == []",
           f"exactly one, the last one (#{len(chunks) - 1})", usage_idx)
    finish_idx = [i for i, c in enumerate(chunks)
                  if c["choices"] and c["choices"][0].get("finish_reason") is not None]
    expect(finish_idx == [len(chunks) - 2], "chunks with a finish_reason",
           f"exactly one, right before the usage chunk (#{len(chunks) - 2})", finish_idx)
    s_finish = chunks[finish_idx[0]]["choices"][0]["finish_reason"]
    expect(s_finish in ("stop", "length"), "stream finish_reason", "'stop' or 'length'", s_finish)

    usage = chunks[-1].get("usage")
    check_usage(usage, "stream", MAX_TOKENS, s_finish)
    for i, c in enumerate(chunks[:-1]):
        expect("usage" in c and c["usage"] is None, f"chunk #{i} usage",
               "present and null when include_usage is set (SPEC §6)", c.get("usage", "<absent>"))
    for i, c in enumerate(parsed[:-1]):
        expect(c.usage is None, f"openai-python chunk #{i} .usage", None, c.usage)
    expect(parsed[-1].usage is not None and parsed[-1].usage.total_tokens == usage["total_tokens"],
           "openai-python last chunk .usage.total_tokens", usage["total_tokens"], parsed[-1].usage)

    for i, c in enumerate(chunks[:-1]):
        expect(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0, f"chunk #{i} choices",
               "one choice with index 0", c["choices"])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    py_text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    expect(py_text == text, "openai-python's concatenated deltas", repr(text), py_text)
    expect(text.strip() != "", "concatenated stream content", "non-empty text", text)
    expect("\ufffd" not in text, "stream content", "no U+FFFD (broken UTF-8)", text)
    expect(text == content, "streamed text at temperature 0",
           f"the same greedy text as the non-streamed request ({content!r})", text)
    expect(s_finish == finish, "stream finish_reason", f"as non-streamed ({finish})", s_finish)
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        expect(usage[k] == body["usage"][k], f"stream usage.{k}",
               f"as non-streamed ({body['usage'][k]})", usage[k])
    ok(f"stream with include_usage: {len(chunks)} chunks, text {text!r}, usage {usage}")

    # ---- streamed, without stream_options: no usage anywhere, no usage-only chunk
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    parsed = list(stream)
    chunks = H.check_last(client, "/v1/chat/completions")
    for i, c in enumerate(chunks):
        expect(c["choices"] != [], f"chunk #{i} without include_usage",
               "no usage-only (choices == []) chunk", c)
        expect(c.get("usage") is None, f"chunk #{i} usage without include_usage",
               "absent or null", c.get("usage"))
    text2 = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    expect(text2 == content, "streamed text without include_usage", repr(content), text2)
    expect(chunks[-1]["choices"][0]["finish_reason"] == finish, "last chunk finish_reason",
           finish, chunks[-1]["choices"][0]["finish_reason"])
    ok(f"stream without include_usage: {len(chunks)} chunks")


if __name__ == "__main__":
    H.run(main)
