#!/usr/bin/env python3
"""openai-python structured outputs against Hearth (SPEC §5 `response_format`; #8 must-show 5).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_structured.py

1. `response_format: json_schema` at temperature 1 for 20 different seeds: every answer parses as
   JSON and validates against the schema (jsonschema's Draft 2020-12 validator), finish_reason
   "stop"; the answers are not all the same (the seeds count);
2. the same streamed: the concatenated deltas validate too;
3. `json_object`: every answer starts an object and every finished one is a JSON object;
4. a schema the grammar engine rejects, and a malformed response_format, are 400s naming
   `response_format`.
Every body and chunk is validated against OpenAI's OpenAPI schemas (on the wire bytes).
"""
import json

import jsonschema

import hearth_common as H
from hearth_common import expect, ok

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colours": {"type": "array", "items": {"enum": ["red", "green", "blue", "yellow"]},
                    "minItems": 1, "maxItems": 3},
        "pet": {"type": ["string", "null"], "maxLength": 16},
    },
    "required": ["name", "age", "colours"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Describe a person as JSON: name, age, favourite colours."}]


def check_answer(text, what):
    try:
        value = json.loads(text)
    except ValueError as e:
        H.fail(f"{what}: the answer is not JSON ({e}): {text!r}")
    try:
        jsonschema.Draft202012Validator(SCHEMA).validate(value)
    except jsonschema.ValidationError as e:
        H.fail(f"{what}: the answer does not follow the schema ({e.message}): {text!r}")
    return value


def main():
    client = H.openai_client()
    model = H.model_id(client)
    common = dict(model=model, messages=MESSAGES, max_tokens=160, temperature=1.0,
                  response_format=FORMAT)

    answers = []
    for seed in range(20):
        resp = client.chat.completions.create(**common, seed=seed)
        body = H.check_last(client, "/v1/chat/completions")
        choice = body["choices"][0]
        expect(choice["finish_reason"] == "stop", f"seed {seed}: finish_reason",
               "'stop' (the JSON is complete)", choice["finish_reason"])
        check_answer(choice["message"]["content"], f"seed {seed}")
        expect(resp.choices[0].message.content == choice["message"]["content"],
               f"seed {seed}: openai-python's content", "the wire's", resp.choices[0].message.content)
        answers.append(choice["message"]["content"])
    expect(len(set(answers)) > 1, "20 seeds at temperature 1", "more than one answer", answers[0])
    ok(f"json_schema: 20 seeds, 20 valid answers ({len(set(answers))} distinct), e.g. {answers[0]}")

    list(client.chat.completions.create(**common, seed=99, stream=True))
    chunks = H.check_last(client, "/v1/chat/completions")
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    check_answer(text, "streamed")
    ok(f"streamed json_schema answer validates: {text}")

    # The grammar makes every answer a JSON object's beginning and every finished answer a whole
    # one; a 135M model sometimes runs past max_tokens inside a string, so a few seeds are
    # asked and the finished ones checked (at least one must finish).
    finished = []
    for seed in range(5, 9):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=160, seed=seed,
                                       response_format={"type": "json_object"})
        choice = H.check_last(client, "/v1/chat/completions")["choices"][0]
        content = choice["message"]["content"]
        expect(content.lstrip().startswith("{"), f"json_object answer (seed {seed})", "an object's start", content)
        if choice["finish_reason"] != "stop":
            continue
        try:
            obj = json.loads(content)
        except ValueError:
            obj = None
        expect(isinstance(obj, dict), f"finished json_object answer (seed {seed})", "a JSON object", content)
        finished.append(content)
    expect(finished, "json_object answers", "at least one of four finished", finished)
    ok(f"json_object: {len(finished)} of 4 finished, each a JSON object: {finished[0]}")

    import requests

    for bad in ({"type": "json_schema"}, {"type": "xml"},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}):
        r = requests.post(f"{H.base_url()}/v1/chat/completions",
                          json={"messages": MESSAGES, "max_tokens": 4, "response_format": bad},
                          headers={"Authorization": f"Bearer {H.api_key()}"}, timeout=H.timeout())
        err = r.json().get("error", {})
        expect(r.status_code == 400 and err.get("param") == "response_format",
               f"response_format {bad}", "400 naming `response_format`", (r.status_code, r.text))
    ok("bad response_format values are 400s naming it")


if __name__ == "__main__":
    H.run(main)
