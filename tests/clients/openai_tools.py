#!/usr/bin/env python3
"""openai-python tool calling against Hearth (SPEC §5, §6), on a server that loads the tool-call
parser plugins (plugins/default.yaml):

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_tools.py

Checks:
- `tool_choice: "required"`: finish_reason "tool_calls", `content` null, each call names a
  declared tool, has a `call_…` id, and its arguments validate against the tool's JSON schema;
  the same request streamed reassembles (with openai-python's own stream helper) to the same
  call, and its raw chunks follow the delta protocol: the first delta of a call carries index,
  id, type and function.name; later ones only index and function.arguments.
- a named `tool_choice` with `parallel_tool_calls: false`: exactly one call, to that tool.
- `tool_choice: "none"`: no tool_calls at all, finish_reason stop or length.
- `tool_choice: "auto"`: whatever the model writes, a 200 whose calls (if any) are declared
  and carry JSON-object arguments.
Every body and chunk is validated against OpenAI's OpenAPI schemas on the wire bytes.
"""
import json

import jsonschema

import hearth_common as H
from hearth_common import expect, ok

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a timezone",
                                      "parameters": TIME}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "user", "content": "What is the weather like in Paris today?"}]
MAX_TOKENS = 96


def check_call(call, what, allowed=None):
    """A call from the final message (dict form); returns (name, parsed arguments)."""
    name = call["function"]["name"]
    expect(name in (allowed or SCHEMAS), f"{what} function.name", f"one of {list(allowed or SCHEMAS)}", name)
    expect(call["type"] == "function", f"{what} type", "'function'", call["type"])
    expect(call["id"].startswith("call_"), f"{what} id", "'call_…'", call["id"])
    try:
        args = json.loads(call["function"]["arguments"])
    except ValueError:
        H.fail(f"{what} arguments are not JSON: {call['function']['arguments']!r}")
    try:
        jsonschema.validate(args, SCHEMAS[name])
    except jsonschema.ValidationError as e:
        H.fail(f"{what} arguments {args} do not follow the schema of {name}: {e.message}")
    return name, args


def forced(client, model, **extra):
    return client.chat.completions.create(
        model=model, messages=MESSAGES, tools=TOOLS, max_tokens=MAX_TOKENS, temperature=0, **extra)


def main():
    client = H.openai_client()
    model = H.model_id(client)

    # ---- required, non-streamed (sent twice: the second, warm one is the reference).
    forced(client, model, tool_choice="required")
    H.check_last(client, "/v1/chat/completions")
    resp = forced(client, model, tool_choice="required")
    body = H.check_last(client, "/v1/chat/completions")
    choice = body["choices"][0]
    expect(choice["finish_reason"] == "tool_calls", "finish_reason", "'tool_calls'", choice["finish_reason"])
    expect(choice["message"]["content"] is None, "message.content beside calls", "null", choice["message"]["content"])
    calls = choice["message"].get("tool_calls") or []
    expect(len(calls) >= 1, "number of tool_calls", ">= 1", calls)
    whole = [check_call(c, f"tool_calls[{i}]") for i, c in enumerate(calls)]
    expect(resp.choices[0].message.tool_calls[0].function.name == whole[0][0], "openai-python's parsed name",
           whole[0][0], resp.choices[0].message.tool_calls[0].function.name)
    ok(f"required: {len(whole)} call(s), first {whole[0][0]}({json.dumps(whole[0][1])}), schema-valid")

    # ---- required, streamed through openai-python's stream helper.
    with client.chat.completions.stream(
        model=model, messages=MESSAGES, tools=TOOLS, tool_choice="required",
        max_tokens=MAX_TOKENS, temperature=0,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    chunks = H.check_last(client, "/v1/chat/completions")
    streamed = [check_call(c.model_dump(), f"streamed tool_calls[{i}]")
                for i, c in enumerate(final.choices[0].message.tool_calls or [])]
    expect(streamed == whole, "streamed calls reassembled by openai-python", whole, streamed)
    expect(final.choices[0].finish_reason == "tool_calls", "streamed finish_reason", "'tool_calls'",
           final.choices[0].finish_reason)
    seen = set()
    fragments = {}
    for chunk in chunks:
        for c in chunk["choices"]:
            for d in c["delta"].get("tool_calls") or []:
                i = d["index"]
                if i not in seen:
                    seen.add(i)
                    expect(d.get("id", "").startswith("call_") and d.get("type") == "function"
                           and d.get("function", {}).get("name") in SCHEMAS,
                           f"first delta of call {i}", "index, id 'call_…', type and function.name", d)
                else:
                    expect("id" not in d and "name" not in d.get("function", {}),
                           f"later delta of call {i}", "only index and function.arguments", d)
                fragments[i] = fragments.get(i, "") + d.get("function", {}).get("arguments", "")
    argument_chunks = sum(1 for ch in chunks for c in ch["choices"] for _ in (c["delta"].get("tool_calls") or []))
    expect(argument_chunks > len(seen), "tool-call deltas", "arguments streamed in several fragments", argument_chunks)
    expect([json.loads(fragments[i]) for i in sorted(fragments)] == [a for _, a in whole],
           "concatenated argument fragments", [a for _, a in whole], fragments)
    ok(f"required, streamed: {argument_chunks} tool-call deltas reassemble to the same call(s)")

    # ---- a named function, one call at most.
    named = {"type": "function", "function": {"name": "get_time"}}
    forced(client, model, tool_choice=named, parallel_tool_calls=False)
    body = H.check_last(client, "/v1/chat/completions")
    calls = body["choices"][0]["message"].get("tool_calls") or []
    expect(len(calls) == 1, "calls with a named tool_choice and parallel_tool_calls false", 1, calls)
    name, args = check_call(calls[0], "named call", allowed={"get_time": TIME})
    ok(f"named: {name}({json.dumps(args)})")

    # ---- none: the tools are not offered and nothing is parsed.
    forced(client, model, tool_choice="none")
    body = H.check_last(client, "/v1/chat/completions")
    choice = body["choices"][0]
    expect("tool_calls" not in choice["message"], "tool_calls with tool_choice none", "absent", choice["message"])
    expect(choice["finish_reason"] in ("stop", "length"), "finish_reason", "stop or length", choice["finish_reason"])
    expect(isinstance(choice["message"]["content"], str), "content", "a string", choice["message"]["content"])
    ok("none: plain content")

    # ---- auto: the model decides; the answer is well-formed either way.
    forced(client, model, tool_choice="auto")
    body = H.check_last(client, "/v1/chat/completions")
    message = body["choices"][0]["message"]
    for i, c in enumerate(message.get("tool_calls") or []):
        name = c["function"]["name"]
        expect(name in SCHEMAS, f"auto call {i} name", "a declared tool", name)
        expect(isinstance(json.loads(c["function"]["arguments"]), dict), f"auto call {i} arguments",
               "a JSON object", c["function"]["arguments"])
    ok(f"auto: {len(message.get('tool_calls') or [])} call(s), content {message['content']!r:.60}")


if __name__ == "__main__":
    H.run(main)
