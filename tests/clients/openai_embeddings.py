#!/usr/bin/env python3
"""openai-python's client.embeddings.create against Hearth serving all-MiniLM-L6-v2.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_embeddings.py

- a string, with openai-python's default encoding (it asks for base64 and decodes it), and a
  list of strings as floats: the vectors match sentence-transformers' (cosine >= 0.999 against
  tests/fixtures/embeddings/minilm.json: short, long, unicode and empty texts), `usage` counts
  the tokens sentence-transformers reads (the long text cut at 256);
- base64 and float give the same vectors, bit for bit;
- token ids (without special tokens) embed as the text they spell, one list or many;
- every body validates against OpenAI's CreateEmbeddingResponse schema (on the wire bytes).
"""
import json
import math
from pathlib import Path

import hearth_common as H
from hearth_common import expect, ok

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "embeddings" / "minilm.json"
# "hello world" in all-MiniLM-L6-v2's WordPiece vocabulary (bert-base-uncased's).
HELLO_WORLD_IDS = [7592, 2088]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    reference = json.loads(FIXTURE.read_text())
    texts, want = reference["texts"], reference["embeddings"]
    client = H.openai_client()

    r = client.embeddings.create(model="text-embedding-3-small", input=texts[0])
    body = H.check_last(client, "/v1/embeddings")
    expect(isinstance(body["data"][0]["embedding"], str), "openai-python's default encoding", "base64", body["data"][0])
    expect(len(r.data) == 1 and len(r.data[0].embedding) == 384, "one 384-d vector", 384, len(r.data[0].embedding))
    c = cosine(r.data[0].embedding, want[0])
    expect(c >= 0.999, "cosine against sentence-transformers", ">= 0.999", c)
    expect(r.model == "all-MiniLM-L6-v2", "the model that answered", "all-MiniLM-L6-v2", r.model)
    expect(r.usage.prompt_tokens == reference["token_counts"][0], "usage.prompt_tokens",
           reference["token_counts"][0], r.usage)
    ok(f"one string (base64 on the wire): cosine {c:.6f}")

    r = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    body = H.check_last(client, "/v1/embeddings")
    expect(isinstance(body["data"][0]["embedding"], list), "float encoding", "a list", body["data"][0])
    expect([d.index for d in r.data] == list(range(len(texts))), "indices in order", list(range(len(texts))),
           [d.index for d in r.data])
    worst = min(cosine(d.embedding, w) for d, w in zip(r.data, want))
    expect(worst >= 0.999, "worst cosine over short, long, unicode and empty texts", ">= 0.999", worst)
    expect(r.usage.prompt_tokens == sum(reference["token_counts"]), "usage of the list",
           sum(reference["token_counts"]), r.usage)
    expect(r.usage.total_tokens == r.usage.prompt_tokens, "total_tokens", r.usage.prompt_tokens, r.usage)
    floats = [d.embedding for d in r.data]
    ok(f"{len(texts)} strings as floats: worst cosine {worst:.6f}, {r.usage.prompt_tokens} tokens")

    r = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="base64")
    H.check_last(client, "/v1/embeddings")
    # openai-python decodes base64 for us when it asked for it itself; asked explicitly, the
    # strings come back as they are.
    import base64
    import struct
    decoded = []
    for d in r.data:
        raw = base64.b64decode(d.embedding) if isinstance(d.embedding, str) else None
        decoded.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)) if raw is not None else d.embedding)
    # JSON carries each float in its shortest f32 form: read back as f32, it is the same value.
    floats32 = [list(struct.unpack(f"<{len(v)}f", struct.pack(f"<{len(v)}f", *v))) for v in floats]
    same = all(len(a) == len(b) and all(x == y for x, y in zip(a, b)) for a, b in zip(decoded, floats32))
    expect(same, "base64 and float vectors", "equal bit for bit", "they differ")
    ok("base64 decodes to the float vectors exactly")

    hello = client.embeddings.create(model="m", input="hello world", encoding_format="float").data[0].embedding
    one = client.embeddings.create(model="m", input=HELLO_WORLD_IDS, encoding_format="float")
    H.check_last(client, "/v1/embeddings")
    many = client.embeddings.create(model="m", input=[HELLO_WORLD_IDS, HELLO_WORLD_IDS[:1]], encoding_format="float")
    H.check_last(client, "/v1/embeddings")
    c = cosine(one.data[0].embedding, hello)
    expect(c > 0.99999, "token ids embed as their text", "> 0.99999", c)
    expect(len(many.data) == 2 and cosine(many.data[0].embedding, hello) > 0.99999, "lists of token ids",
           "two vectors, the first the text's", many.data)
    expect(one.usage.prompt_tokens == 4, "tokens of [CLS] hello world [SEP]", 4, one.usage)
    ok("token ids: one list and a list of lists")


if __name__ == "__main__":
    H.run(main)
