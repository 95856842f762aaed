#!/usr/bin/env python3
"""langchain-openai's ChatOpenAI against Hearth: invoke and stream.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/langchain_chat.py

langchain-openai sends `max_completion_tokens` (never `max_tokens`), so this checks that
Hearth honours it (SPEC §5): the wire request carries max_completion_tokens=24, the answer is
non-empty text within 24 tokens, and the streamed answer is the same greedy text.
Every body and chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
from langchain_openai import ChatOpenAI

import hearth_common as H
from hearth_common import expect, ok

MAX = 24
QUESTION = "What is the capital of France?"


def main():
    model = H.model_id()
    http_client, rec = H.recording_http_client()
    llm = ChatOpenAI(
        base_url=H.api_base(), api_key=H.api_key(), model=model,
        max_completion_tokens=MAX, temperature=0,
        http_client=http_client, max_retries=0, timeout=H.timeout(),
    )

    # ---- invoke (twice: the second is the reference, the prompt then being in the same,
    # cached, state for the streamed request)
    cold = llm.invoke(QUESTION).content
    H.check_last(rec, "/v1/chat/completions")
    msg = llm.invoke(QUESTION)
    exchanges = list(rec.exchanges)
    body = H.check_last(rec, "/v1/chat/completions")
    req = exchanges[-1].request_json
    expect(req.get("max_completion_tokens") == MAX, "request max_completion_tokens", MAX,
           req.get("max_completion_tokens"))
    expect("max_tokens" not in req, "request", "no max_tokens (langchain sends "
           "max_completion_tokens)", req)
    expect(req.get("model") == model and req.get("temperature") == 0, "request model/temperature",
           f"{model!r} / 0", req)
    content = msg.content
    expect(isinstance(content, str) and content.strip() != "", "AIMessage.content",
           "non-empty text", content)
    expect(content == body["choices"][0]["message"]["content"], "AIMessage.content",
           "the server's message.content", content)
    finish = msg.response_metadata.get("finish_reason")
    expect(finish in ("stop", "length"), "response_metadata.finish_reason", "'stop' or 'length'",
           finish)
    um = msg.usage_metadata or {}
    u = body.get("usage") or {}
    expect(isinstance(u.get("completion_tokens"), int) and 0 < u["completion_tokens"] <= MAX,
           "usage.completion_tokens", f"1..{MAX} (max_completion_tokens honoured)", u)
    if finish == "length":
        expect(u["completion_tokens"] == MAX, "usage.completion_tokens with finish_reason length",
               MAX, u)
    expect(um.get("input_tokens") == u.get("prompt_tokens") and
           um.get("output_tokens") == u.get("completion_tokens") and
           um.get("total_tokens") == u.get("prompt_tokens", 0) + u.get("completion_tokens", 0),
           "AIMessage.usage_metadata", f"matching the server's usage {u}", um)
    if cold != content:
        H.note(H.WARMUP_NOTE.format(cold=cold, warm=content))
    ok(f"invoke: {content!r} (finish_reason={finish}, usage={u})")

    # ---- stream
    pieces = list(llm.stream(QUESTION))
    exchanges = list(rec.exchanges)
    chunks = H.check_last(rec, "/v1/chat/completions")
    req = exchanges[-1].request_json
    expect(req.get("stream") is True, "streamed request stream", True, req.get("stream"))
    expect(req.get("max_completion_tokens") == MAX, "streamed request max_completion_tokens", MAX,
           req.get("max_completion_tokens"))
    text = "".join(p.content for p in pieces if isinstance(p.content, str))
    expect(text.strip() != "", "streamed text", "non-empty", text)
    wire = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    expect(text == wire, "langchain's streamed text", "the concatenated wire deltas", text)
    expect(text == content, "streamed text at temperature 0",
           f"the same greedy text as invoke ({content!r})", text)
    ok(f"stream: {len(pieces)} message chunks, {text!r}")


if __name__ == "__main__":
    H.run(main)
