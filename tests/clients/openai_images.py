#!/usr/bin/env python3
"""openai-python generates images with Hearth (SPEC §9): `client.images.generate(...)` against the
tiny Stable Diffusion test model.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_images.py

1. `n=2` at 64×64 with text-generation-webui's `steps`, `cfg_scale` and `image_seed` (as
   `extra_body`): two PNGs of the asked size, different from each other; the body validates
   against OpenAI's `ImagesResponse`.
2. The same request again gives the very same bytes; another seed, other bytes.
3. `response_format="url"` is a 400 naming `response_format`.
"""
import base64
import struct

import openai

import hearth_common as H
from hearth_common import expect, ok


def png_size(data: bytes) -> tuple[int, int]:
    expect(data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature", "a PNG", data[:8])
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_text(data: bytes) -> dict[str, str]:
    """The PNG's tEXt chunks."""
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            chunks[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return chunks


def generate(client, seed: int, n: int = 2):
    result = client.images.generate(
        model="tiny-sd",
        prompt="a red square on a blue field",
        n=n,
        size="64x64",
        response_format="b64_json",
        extra_body={"steps": 3, "cfg_scale": 5.0, "image_seed": seed},
    )
    H.check_last(client, "/v1/images/generations")
    return [base64.b64decode(d.b64_json) for d in result.data], result


def main() -> None:
    client = H.openai_client()
    first, result = generate(client, 11)
    expect(len(first) == 2, "images", 2, len(first))
    for png in first:
        expect(png_size(png) == (64, 64), "image size", (64, 64), png_size(png))
    expect(first[0] != first[1], "two images of a batch differ", True, False)
    seeds = [png_text(p).get("seed") for p in first]
    expect(seeds == ["11", "12"], "the seeds in the PNGs", ["11", "12"], seeds)
    expect(result.data[0].revised_prompt == "a red square on a blue field", "revised_prompt", "the prompt", result.data[0].revised_prompt)
    ok("images.generate: two 64x64 PNGs with their seeds")

    again, _ = generate(client, 11)
    expect(again == first, "the same seed gives the same bytes", True, False)
    other, _ = generate(client, 12, n=1)
    expect(other[0] == first[1], "seed 12 alone is the batch's second image", True, False)
    ok("the same seed, the same bytes")

    try:
        client.images.generate(model="tiny-sd", prompt="a tree", response_format="url")
        expect(False, "response_format url", "a 400", "an answer")
    except openai.BadRequestError as e:
        expect(e.body.get("param") == "response_format", "the error's param", "response_format", e.body)
    client.recorder.take()
    ok("response_format url is a 400")


if __name__ == "__main__":
    H.run(main)
