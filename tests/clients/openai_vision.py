#!/usr/bin/env python3
"""openai-python sends images to Hearth (SPEC §4–§6): the seed's two multimodal examples,
unchanged in shape, against a vision model (the tiny LLaVA-style test model).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_vision.py

The server must be started with `--image-urls any` (the images are served from loopback here).

1. Chat with an `image_url` part: once by URL (an HTTP server this script runs on 127.0.0.1)
   and once as a `data:image/png;base64,…` URL; each streamed and not. All four give the same
   greedy text and `usage.prompt_tokens`, which counts the image's tokens; the URL was fetched.
2. The image matters: another picture moves the first token's log-probability.
3. Completions with `messages` whose text holds two `<__media__>` placeholders and two
   `image_url` parts (no `prompt`), by URL and as data, streamed and not: the same text each way;
   two images count twice one image's tokens.
Every body and chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
import base64
import http.server
import struct
import threading
import zlib

import hearth_common as H
from hearth_common import expect, ok

# One image's rows in the tiny model: (32 / 8)² patches, the class token dropped.
IMAGE_TOKENS = 16


def png(width, height, pixel):
    """A PNG of `pixel(x, y) -> (r, g, b)`, written with the standard library."""
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


CAT = png(48, 40, lambda x, y: (x * 5 % 256, y * 6 % 256, 200 if (x // 8 + y // 8) % 2 else 30))
STRAWBERRY = png(36, 52, lambda x, y: (220, (x * y) % 256, 40 + y * 3))
IMAGES = {"/cat.png": CAT, "/strawberry.png": STRAWBERRY}


class Images(http.server.BaseHTTPRequestHandler):
    served = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = IMAGES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        Images.served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def data_url(body):
    return "data:image/png;base64," + base64.b64encode(body).decode()


def chat(client, url, stream):
    messages = [{
        "role": "user",
        "content": [
            {"type": "text", "text": "Please describe what you see in this image."},
            {"type": "image_url", "image_url": {"url": url}},
        ],
    }]
    kw = dict(model=H.model_id(client), messages=messages, max_tokens=8, temperature=0)
    if not stream:
        reply = client.chat.completions.create(**kw)
        body = H.check_last(client, "/v1/chat/completions")
        return reply.choices[0].message.content, body["usage"]["prompt_tokens"]
    parts = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    chunks = H.check_last(client, "/v1/chat/completions")
    expect(len(parts) == len(chunks), "chunks openai-python saw", len(chunks), len(parts))
    text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    usage = [c.usage for c in parts if c.usage]
    expect(len(usage) == 1, "usage chunks", 1, len(usage))
    return text, usage[0].prompt_tokens


def first_logprob(client, url):
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    reply = client.chat.completions.create(
        model=H.model_id(client), messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=2
    )
    H.check_last(client, "/v1/chat/completions")
    return reply.choices[0].logprobs.content[0].logprob


def completion(client, urls, stream):
    """The seed's `/v1/completions` example: `messages` only, the text with its placeholders."""
    content = [{"type": "text", "text": "About image <__media__> and image <__media__>, what I can say is that the first one"}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    kw = dict(model=H.model_id(client), prompt=None, max_tokens=8, temperature=0,
              extra_body={"messages": [{"role": "user", "content": content}]})
    if not stream:
        reply = client.completions.create(**kw)
        body = H.check_last(client, "/v1/completions")
        return reply.choices[0].text, body["usage"]["prompt_tokens"]
    parts = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    H.check_last(client, "/v1/completions")
    text = "".join(c.choices[0].text for c in parts if c.choices)
    usage = [c.usage for c in parts if c.usage]
    expect(len(usage) == 1, "usage chunks", 1, len(usage))
    return text, usage[0].prompt_tokens


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    client = H.openai_client()

    # 1. Chat, by URL and as data, streamed and not.
    answers = {}
    for how, url in [("URL", base + "/cat.png"), ("data", data_url(CAT))]:
        for stream in (False, True):
            answers[(how, stream)] = chat(client, url, stream)
    first = answers[("URL", False)]
    for key, got in answers.items():
        expect(got == first, f"chat {key}", first, got)
    expect(first[1] > IMAGE_TOKENS, "chat usage.prompt_tokens", f"the text and {IMAGE_TOKENS} image tokens", first[1])
    expect(Images.served.count("/cat.png") == 2, "fetches of /cat.png", 2, Images.served)
    ok(f"chat with an image by URL and as data, streamed and not: {first[0]!r}, {first[1]} prompt tokens")

    # 2. Another image, another distribution.
    cat, strawberry = first_logprob(client, data_url(CAT)), first_logprob(client, data_url(STRAWBERRY))
    expect(abs(cat - strawberry) > 1e-4, "first-token log-probability for two images", "different", (cat, strawberry))
    ok(f"the image changes the answer's distribution ({cat:.4f} vs {strawberry:.4f})")

    # 3. Completions with two placeholders.
    results = {}
    for how, urls in [("URL", [base + "/cat.png", base + "/strawberry.png"]), ("data", [data_url(CAT), data_url(STRAWBERRY)])]:
        for stream in (False, True):
            results[(how, stream)] = completion(client, urls, stream)
    first = results[("URL", False)]
    for key, got in results.items():
        expect(got == first, f"completion {key}", first, got)
    expect(first[1] > 2 * IMAGE_TOKENS, "completion usage.prompt_tokens", f"> {2 * IMAGE_TOKENS}", first[1])
    ok(f"completions with two <__media__> placeholders, by URL and as data, streamed and not: {first[0]!r}")


if __name__ == "__main__":
    H.run(main)
