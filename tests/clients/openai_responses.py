#!/usr/bin/env python3
"""openai-python's Responses API against Hearth (`/v1/responses`):

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_responses.py

Checks, every body and stream event validated against OpenAI's OpenAPI schemas on the wire bytes
(hearth_common.check_response_events: each event against its type's schema, `event:` names,
sequence numbers, one terminal event):
- three turns chained with `previous_response_id`, each prompt holding the ones before (input
  tokens grow, and the prefix cache serves the earlier turns); `.retrieve`, `.input_items.list`
  (order, pagination), `.delete` (then 404, while the later turns still continue);
- `.stream` (openai-python's helper) and raw `stream=True`: deltas add up to the final text,
  and the stored response equals the streamed one;
- function calling: a forced call whose arguments follow the tool's JSON schema, streamed and
  not, answered with a `function_call_output` item (chained, and stateless with the whole
  conversation as input items and `store: false`);
- `text.format` json_schema: the answer validates with jsonschema, streamed and not;
- `include: ["message.output_text.logprobs"]` with `top_logprobs`: one score per answer token,
  spelling its text, greedy choices on top, the same streamed;
- a conversation longer than the context: a 400 (`context_length_exceeded`, `input`), and with
  `truncation: auto` an answer from its newest items;
- a thinking answer: a `reasoning` item before the message, `reasoning_text` deltas, counted
  `reasoning_tokens`, and a next turn continuing from it;
- `store: false` is not retrievable; `background: true` streams to completion and is stored,
  another is cancelled;
- errors: an unknown previous id, a foreign/unknown id (404), a chat-only field, an unsupported
  tool type, cancelling a foreground response — each OpenAI-shaped with the right status.
"""
import json

import jsonschema
import openai

import hearth_common as H
from hearth_common import expect, ok
# The weather tool's parameters, as the chat tool test declares them.
from openai_tools import WEATHER

TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": WEATHER, "strict": True}]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
INSTRUCTIONS = "You are a helpful assistant. Answer briefly."


def texts_of(response) -> str:
    return "".join(c.text for item in response.output if item.type == "message"
                   for c in item.content if c.type == "output_text")


def status_ok(r, what):
    expect(r.status in ("completed", "incomplete"), f"{what} status", "completed or incomplete", r.status)
    expect(r.usage is not None and r.usage.output_tokens > 0, f"{what} usage.output_tokens", "> 0", r.usage)


def turns(client, model):
    r1 = client.responses.create(model=model, instructions=INSTRUCTIONS, input="My name is Ada. Remember it.",
                                 max_output_tokens=24, temperature=0, metadata={"case": "turns"})
    H.check_last(client, "/v1/responses")
    status_ok(r1, "turn 1")
    expect(r1.metadata == {"case": "turns"}, "metadata", {"case": "turns"}, r1.metadata)
    expect(r1.store is True and r1.object == "response", "store/object", "true/response", (r1.store, r1.object))
    r2 = client.responses.create(model=model, instructions=INSTRUCTIONS, previous_response_id=r1.id,
                                 input="What is my name?", max_output_tokens=24, temperature=0)
    H.check_last(client, "/v1/responses")
    r3 = client.responses.create(model=model, instructions=INSTRUCTIONS, previous_response_id=r2.id,
                                 input="Say it once more.", max_output_tokens=24, temperature=0)
    H.check_last(client, "/v1/responses")
    for r in (r2, r3):
        status_ok(r, "chained turn")
    expect(r3.previous_response_id == r2.id, "previous_response_id echoed", r2.id, r3.previous_response_id)
    u1, u2, u3 = r1.usage.input_tokens, r2.usage.input_tokens, r3.usage.input_tokens
    # Each prompt holds every earlier question and answer.
    expect(u1 + r1.usage.output_tokens < u2 and u2 + r2.usage.output_tokens < u3, "input tokens per turn",
           "each turn's prompt holding the ones before", (u1, u2, u3))
    cached = (r2.usage.input_tokens_details.cached_tokens, r3.usage.input_tokens_details.cached_tokens)
    expect(cached[0] >= u1 // 2 and cached[1] >= u2 // 2, "cached tokens of turns 2 and 3",
           "the earlier turns from the prefix cache", (cached, u1, u2))
    ok(f"three chained turns: input tokens {u1} → {u2} → {u3}, cached {cached}")

    got = client.responses.retrieve(r3.id)
    H.check_last(client)
    expect(got.id == r3.id and texts_of(got) == texts_of(r3) and got.status == r3.status, "retrieve",
           "the stored response", got)
    items = client.responses.input_items.list(r3.id)
    listing = H.check_last(client)
    expect(len(items.data) == 1 and items.data[0].type == "message" and items.data[0].role == "user",
           "input_items of turn 3", "its one user message", listing)
    expect(items.data[0].content[0].text == "Say it once more.", "input item text", "Say it once more.",
           items.data[0].content[0])
    multi = client.responses.create(model=model, input=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}], max_output_tokens=16)
    H.check_last(client)
    page = client.responses.input_items.list(multi.id, order="asc", limit=2)
    body = H.check_last(client)
    expect([i.content[0].text for i in page.data] == ["one", "two"] and body["has_more"] is True,
           "input_items asc, limit 2", "one, two and more", body)
    rest = client.responses.input_items.list(multi.id, order="asc", after=page.data[-1].id)
    body = H.check_last(client)
    expect([i.content[0].text for i in rest.data] == ["three"] and body["has_more"] is False,
           "input_items after the page", "three", body)
    desc = client.responses.input_items.list(multi.id)
    H.check_last(client)
    expect(desc.data[0].content[0].text == "three", "input_items default order", "desc (newest first)", desc.data)
    ok("retrieve and input_items (order, limit, after)")

    deleted = client.responses.delete(r1.id)
    H.check_last(client)
    raw = client.recorder  # noqa: F841  (validated above)
    try:
        client.responses.retrieve(r1.id)
        H.fail("a deleted response was retrieved")
    except openai.NotFoundError as e:
        H.check_last(client)
        expect(e.status_code == 404, "retrieving a deleted response", 404, e.status_code)
    # Turn 3's conversation is its own: deleting turn 1 does not break continuing it.
    r4 = client.responses.create(model=model, instructions=INSTRUCTIONS, previous_response_id=r3.id,
                                 input="Thanks.", max_output_tokens=16)
    H.check_last(client)
    status_ok(r4, "a turn after deleting the first")
    ok(f"delete → 404 ({deleted!r}); later turns still continue")


def streaming(client, model):
    kinds = []
    deltas = []
    # openai-python's stream helper wants `response.completed`: a stop string (a textgen field,
    # passed through) ends the answer before the token limit would make it `incomplete`.
    with client.responses.stream(model=model, input="Count from one to five.", max_output_tokens=48,
                                 extra_body={"stop": [".", "\n"]}) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    events = H.check_last(client, "/v1/responses")
    expect(final.output_text == "".join(deltas) and final.output_text, "streamed text", "the deltas joined",
           (final.output_text, deltas))
    for kind in ("response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.done", "response.content_part.done",
                 "response.output_item.done"):
        expect(kind in kinds, f"event {kind}", "present", kinds)
    stored = client.responses.retrieve(final.id)
    H.check_last(client)
    expect(texts_of(stored) == final.output_text and stored.status == final.status, "stored streamed response",
           "equal to the stream's final response", stored)
    ok(f"responses.stream: {len(events)} events, text {final.output_text!r}")

    raw = client.responses.create(model=model, input="Hello!", max_output_tokens=16, stream=True)
    text = "".join(e.delta for e in raw if e.type == "response.output_text.delta")
    events = H.check_last(client, "/v1/responses")
    expect(events[-1]["response"]["output"][0]["content"][0]["text"] == text, "raw stream text",
           "the deltas joined", events[-1])
    ok("create(stream=True)")


def function_calls(client, model):
    question = "What is the weather in Paris right now?"
    r = client.responses.create(model=model, input=question, tools=TOOLS, tool_choice="required",
                                max_output_tokens=64, temperature=0)
    H.check_last(client, "/v1/responses")
    calls = [o for o in r.output if o.type == "function_call"]
    expect(len(calls) >= 1, "function_call items", "at least one", r.output)
    call = calls[0]
    expect(call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_"),
           "the call", "get_weather with call_…/fc_… ids", call)
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    result = json.dumps({"temperature": 21, "unit": "celsius", "sky": "clear"})
    answer = client.responses.create(model=model, previous_response_id=r.id, tools=TOOLS, max_output_tokens=32,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": result}])
    H.check_last(client, "/v1/responses")
    status_ok(answer, "the answer to a function_call_output")
    # Stateless: the whole conversation as items, nothing stored.
    stateless = client.responses.create(model=model, store=False, tools=TOOLS, max_output_tokens=32, input=[
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": result}])
    H.check_last(client, "/v1/responses")
    status_ok(stateless, "a stateless function_call_output turn")
    expect(stateless.usage.input_tokens > r.usage.input_tokens, "the stateless prompt", "holding the call and result",
           (stateless.usage.input_tokens, r.usage.input_tokens))
    ok(f"function call {call.arguments} answered: {texts_of(answer)!r}")

    with client.responses.stream(model=model, input=question, tools=TOOLS, tool_choice="required",
                                 max_output_tokens=64, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    events = H.check_last(client, "/v1/responses")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    streamed = [o for o in final.output if o.type == "function_call"][0]
    expect(len(done) >= 1 and done[0]["arguments"] == "".join(deltas) == streamed.arguments,
           "streamed call arguments", "deltas joined = done = final item", (deltas, done, streamed))
    jsonschema.validate(json.loads(streamed.arguments), WEATHER)
    ok("a streamed function call")


def json_schema(client, model):
    fmt = {"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}}
    # Greedy: sampled, the object sometimes runs past the token limit and the response ends
    # `incomplete` (the stream helper then has no `response.completed` to return).
    r = client.responses.create(model=model, input="Name a large city and its country, as JSON.", text=fmt,
                                max_output_tokens=48, temperature=0)
    H.check_last(client, "/v1/responses")
    jsonschema.validate(json.loads(r.output_text), CITY)
    expect(r.text.format.type == "json_schema", "text.format echoed", "json_schema", r.text)
    with client.responses.stream(model=model, input="Name a city in Japan and its country.", text=fmt,
                                 max_output_tokens=48, temperature=0) as stream:
        final = stream.get_final_response()
    H.check_last(client, "/v1/responses")
    jsonschema.validate(json.loads(final.output_text), CITY)
    ok(f"text.format json_schema: {r.output_text} / {final.output_text}")


def truncation(client, model):
    # A conversation longer than the server's 2048-token context.
    filler = " ".join(["The lighthouse keeper counted the waves again."] * 12)
    items = []
    for i in range(24):
        items += [{"role": "user", "content": f"Note {i}: {filler}"}, {"role": "assistant", "content": "Noted."}]
    items.append({"role": "user", "content": "How many notes were there?"})
    try:
        client.responses.create(model=model, input=items, max_output_tokens=16)
        H.fail("a conversation longer than the context was accepted without truncation")
    except openai.BadRequestError as e:
        body = H.check_last(client)
        expect(body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "input",
               "the error", "context_length_exceeded about `input`", body)
    r = client.responses.create(model=model, input=items, max_output_tokens=16, truncation="auto",
                                instructions=INSTRUCTIONS)
    H.check_last(client, "/v1/responses")
    status_ok(r, "truncation: auto")
    expect(r.truncation == "auto" and r.usage.input_tokens < 2048, "a truncated prompt", "within the context",
           r.usage.input_tokens)
    ok(f"truncation: disabled → 400, auto → {r.usage.input_tokens} input tokens")


def logprobs(client, model):
    include = ["message.output_text.logprobs"]
    r = client.responses.create(model=model, input="Name a color.", max_output_tokens=16, temperature=0,
                                include=include, top_logprobs=3)
    H.check_last(client, "/v1/responses")
    part = r.output[0].content[0]
    expect(len(part.logprobs) == r.usage.output_tokens, "one score per answer token", r.usage.output_tokens,
           len(part.logprobs))
    expect("".join(lp.token for lp in part.logprobs) == part.text, "the scored tokens", "spelling the text",
           [lp.token for lp in part.logprobs])
    expect(all(1 <= len(lp.top_logprobs) <= 3 and lp.logprob <= 0 for lp in part.logprobs), "top_logprobs",
           "1 to 3 alternatives, log-probabilities ≤ 0", part.logprobs[:2])
    # Greedy: each chosen token is its position's most likely one.
    expect(all(abs(lp.top_logprobs[0].logprob - lp.logprob) < 1e-4 for lp in part.logprobs), "greedy choices",
           "the top alternative", part.logprobs[:2])
    raw = client.responses.create(model=model, input="Name a color.", max_output_tokens=16, temperature=0,
                                  include=include, top_logprobs=3, stream=True)
    streamed = [lp["token"] for e in raw if e.type == "response.output_text.delta" for lp in e.to_dict()["logprobs"]]
    H.check_last(client, "/v1/responses")
    expect(streamed == [lp.token for lp in part.logprobs], "streamed scores", "the same tokens", streamed)
    plain = client.responses.create(model=model, input="Name a color.", max_output_tokens=8)
    H.check_last(client, "/v1/responses")
    expect(plain.output[0].content[0].logprobs == [], "without include", "no scores", plain.output[0].content[0])
    ok(f"logprobs: {len(part.logprobs)} tokens scored, streamed alike")


def reasoning(client, model):
    # A grammar (text-generation-webui's `grammar_string`, passed through) makes SmolLM2 think.
    grammar = r'''root ::= "<think>" [a-z ]{5,40} "</think>" "\n\n" [A-Z] [a-z ]{3,30} "." '''
    extra = {"grammar_string": grammar}
    r = client.responses.create(model=model, input="Is fire hot?", max_output_tokens=60, temperature=0,
                                extra_body=extra)
    H.check_last(client, "/v1/responses")
    kinds = [o.type for o in r.output]
    expect(kinds == ["reasoning", "message"], "output items of a thinking answer", "reasoning, message", kinds)
    thought = r.output[0].content[0].text
    expect(thought and "think>" not in thought and "think>" not in r.output_text, "reasoning text",
           "the thinking, without its markers", (thought, r.output_text))
    expect(0 < r.usage.output_tokens_details.reasoning_tokens < r.usage.output_tokens, "reasoning_tokens",
           "part of the output tokens", r.usage)
    with client.responses.stream(model=model, input="Is fire hot?", max_output_tokens=60, temperature=0,
                                 extra_body=extra) as stream:
        deltas = [e.delta for e in stream if e.type == "response.reasoning_text.delta"]
        final = stream.get_final_response()
    H.check_last(client, "/v1/responses")
    expect("".join(deltas) == thought and final.output_text == r.output_text, "streamed reasoning",
           "the same thinking and answer", ("".join(deltas), final.output_text))
    follow = client.responses.create(model=model, previous_response_id=r.id, input="Why?", max_output_tokens=16)
    H.check_last(client, "/v1/responses")
    status_ok(follow, "a turn after a reasoning item")
    ok(f"reasoning item {thought!r}, answer {r.output_text!r}")


def storage_and_background(client, model):
    r = client.responses.create(model=model, input="Hi", store=False, max_output_tokens=16)
    H.check_last(client)
    expect(r.store is False, "store echoed", False, r.store)
    try:
        client.responses.retrieve(r.id)
        H.fail("a store: false response was retrieved")
    except openai.NotFoundError:
        H.check_last(client)
    ok("store: false is not retrievable")

    stream = client.responses.create(model=model, input="Tell me about cats.", background=True, stream=True,
                                     max_output_tokens=24)
    events = list(stream)
    H.check_last(client, "/v1/responses")
    expect(events[0].response.status == "queued" and events[0].response.background, "a background stream's start",
           "queued, background", events[0].response)
    stored = client.responses.retrieve(events[-1].response.id)
    H.check_last(client)
    expect(stored.status == events[-1].response.status and texts_of(stored) == texts_of(events[-1].response),
           "a finished background response", "stored as it ended", stored)

    queued = client.responses.create(model=model, input="Write a long story about the sea.", background=True,
                                     max_output_tokens=400)
    H.check_last(client)
    expect(queued.status == "queued", "a background response's status", "queued", queued.status)
    cancelled = client.responses.cancel(queued.id)
    H.check_last(client)
    expect(cancelled.status in ("cancelled", "completed", "incomplete"), "a cancelled background response",
           "cancelled (or already ended)", cancelled.status)
    again = client.responses.retrieve(queued.id)
    H.check_last(client)
    expect(again.status == cancelled.status, "the stored state after cancel", cancelled.status, again.status)
    ok(f"background: streamed to {stored.status}; cancel → {cancelled.status}")


def errors(client, model):
    def expect_error(call, status, param=None, code=None, what=""):
        try:
            call()
            H.fail(f"{what}: succeeded")
        except openai.APIStatusError as e:
            body = H.check_last(client)
            expect(e.status_code == status, f"{what}: status", status, e.status_code)
            if param is not None:
                expect(body["error"]["param"] == param, f"{what}: error.param", param, body["error"])
            if code is not None:
                expect(body["error"]["code"] == code, f"{what}: error.code", code, body["error"])

    expect_error(lambda: client.responses.create(model=model, input="x", previous_response_id="resp_missing"),
                 400, "previous_response_id", "previous_response_not_found", "an unknown previous id")
    expect_error(lambda: client.responses.retrieve("resp_0123456789abcdef"), 404, what="an unknown id")
    expect_error(lambda: client.responses.delete("resp_0123456789abcdef"), 404, what="deleting an unknown id")
    expect_error(lambda: client.responses.create(model=model, input="x", tools=[{"type": "web_search"}]),
                 400, "tools[0].type", what="a built-in tool")
    expect_error(lambda: client.responses.create(model=model, input="x", extra_body={"messages": []}),
                 400, "messages", what="a chat-only field")
    expect_error(lambda: client.responses.create(model=model, input=[{"role": "pirate", "content": "x"}]),
                 400, "input[0].role", what="a bad role")
    foreground = client.responses.create(model=model, input="Hi", max_output_tokens=16)
    H.check_last(client)
    expect_error(lambda: client.responses.cancel(foreground.id), 400, what="cancelling a foreground response")
    ok("errors are OpenAI-shaped with the right status")


def main():
    client = H.openai_client()
    model = H.model_id(client)
    turns(client, model)
    streaming(client, model)
    function_calls(client, model)
    json_schema(client, model)
    reasoning(client, model)
    logprobs(client, model)
    truncation(client, model)
    storage_and_background(client, model)
    errors(client, model)


if __name__ == "__main__":
    H.run(main)
