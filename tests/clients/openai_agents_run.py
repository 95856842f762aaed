#!/usr/bin/env python3
"""The OpenAI Agents SDK (`openai-agents`) runs an agent with one function tool against Hearth's
Responses API to completion:

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_agents_run.py

The SDK's tracing is off (it would send traces to OpenAI). The agent's first turn is made to call
its tool (`tool_choice: required`; the SDK then resets the choice to `auto`), the SDK runs the
Python function and sends its output back as a `function_call_output` item, and the run ends
with the model's answer. Checked: the tool ran with arguments that fit its signature, the run's
items hold the call, its output and a final message, and every exchange (bodies and stream
events) validates against OpenAI's OpenAPI schemas on the wire bytes. Then the same agent
streamed (`Runner.run_streamed`), and a second run continuing the first with
`previous_response_id` (server-side conversation state).
"""
import asyncio

import hearth_common as H
from hearth_common import expect, ok

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore

from agents import (Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool,
                    set_tracing_disabled)
from openai import AsyncOpenAI

CALLS: list[str] = []


def not_called_yet(_ctx, _agent) -> bool:
    # Offered until it has run once in this run (CALLS is cleared before each): SmolLM2-135M calls any tool it is offered, so the turn after
    # the call (which carries the call and its output back as items) has no tools and ends the
    # run with the model's answer.
    return not CALLS


@function_tool(is_enabled=not_called_yet)
def get_weather(city: str) -> str:
    """The current weather in a city."""
    CALLS.append(city)
    return f"It is sunny and 21 degrees Celsius in {city}."


class AsyncRecording(httpx.AsyncBaseTransport):
    """Records each exchange (as hearth_common's sync transport does) for validation."""

    def __init__(self, rec):
        self.inner = httpx.AsyncHTTPTransport()
        self.rec = rec

    async def handle_async_request(self, request):
        ex = H.Exchange(method=request.method, url=str(request.url), path=request.url.path,
                        request_body=request.content)
        self.rec.exchanges.append(ex)
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        ex.status, ex.headers, ex.complete = response.status_code, dict(response.headers), True
        ex.body.extend(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)


class Recorder:
    def __init__(self):
        self.exchanges = []

    def take(self):
        taken, self.exchanges = self.exchanges, []
        return taken


def agent_for(client, model_id):
    model = OpenAIResponsesModel(model=model_id, openai_client=client)
    return Agent(name="Weather", instructions="You answer questions about the weather. Use the tool.",
                 tools=[get_weather], model=model,
                 # A tiny model's greedy answer can loop until the token limit, which the SDK
                 # reports as a failed run (`response.incomplete`): the answer ends at its first
                 # sentence (`stop`, a text-generation-webui field Hearth takes here too).
                 model_settings=ModelSettings(tool_choice="required", max_tokens=256, temperature=0,
                                              extra_body={"stop": [".", "\n"]}))


def check_run(result, what):
    kinds = [item.type for item in result.new_items]
    expect("tool_call_item" in kinds and "tool_call_output_item" in kinds and "message_output_item" in kinds,
           f"{what}: run items", "a call, its output and a message", kinds)
    expect(kinds.index("tool_call_item") < kinds.index("tool_call_output_item") < len(kinds),
           f"{what}: order", "call, then output, then the answer", kinds)
    expect(isinstance(result.final_output, str) and result.final_output.strip() != "", f"{what}: final_output",
           "the model's answer", result.final_output)


async def main_async():
    set_tracing_disabled(True)
    rec = Recorder()
    http = httpx.AsyncClient(transport=AsyncRecording(rec), timeout=H.timeout())
    client = AsyncOpenAI(base_url=H.api_base(), api_key=H.api_key(), http_client=http, max_retries=0)
    model_id = H.model_id()
    agent = agent_for(client, model_id)

    CALLS.clear()
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=6)
    exchanges = rec.take()
    for ex in exchanges:
        H.check_exchange(ex)
    expect(len(CALLS) >= 1 and CALLS[0].strip() != "", "get_weather ran", "with a city", CALLS)
    check_run(result, "Runner.run")
    responses = [ex for ex in exchanges if ex.path == "/v1/responses"]
    ok(f"Runner.run: {len(responses)} model calls, tool called with {CALLS}, answer {result.final_output!r}")

    CALLS.clear()
    streamed = Runner.run_streamed(agent, "And the weather in Rome?", max_turns=6)
    kinds = [event.type async for event in streamed.stream_events()]
    for ex in rec.take():
        H.check_exchange(ex)
    expect("raw_response_event" in kinds and "run_item_stream_event" in kinds, "stream events",
           "raw and item events", set(kinds))
    check_run(streamed, "Runner.run_streamed")
    ok(f"Runner.run_streamed: answer {streamed.final_output!r}")

    CALLS.clear()
    follow = await Runner.run(agent, "Thanks! Which city did I ask about first?", max_turns=6,
                              previous_response_id=result.last_response_id)
    for ex in rec.take():
        H.check_exchange(ex)
    expect(isinstance(follow.final_output, str) and follow.final_output.strip() != "", "a continued run",
           "an answer", follow.final_output)
    ok(f"previous_response_id={result.last_response_id}: answer {follow.final_output!r}")
    await http.aclose()


if __name__ == "__main__":
    H.run(lambda: asyncio.run(main_async()))
