"""Shared plumbing for Hearth's client end-to-end scripts (tests/clients/*.py).

Environment:
    HEARTH_BASE_URL   server root, e.g. http://127.0.0.1:41234 (no trailing /v1)   [required]
    HEARTH_API_KEY    bearer key to send (default "sk-anything")
    HEARTH_MODEL      model id to send (default: the first id of GET /v1/models)
    HEARTH_TIMEOUT    seconds per HTTP request (default 300: tiny models on a CPU are slow)

Every HTTP exchange made through `recording_http_client()` (handed to openai-python and to
langchain-openai) is recorded byte for byte, so the scripts validate what the server really sent
(`check_exchanges`) rather than what a client library parsed out of it: each JSON body and each
SSE `data:` chunk against OpenAI's OpenAPI schemas (openapi_check.py), plus the SSE framing.
"""
from __future__ import annotations

import json
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

try:  # openai-python 3.x is built on httpx2; fall back to httpx for older clients.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore

import openapi_check

DEFAULT_API_KEY = "sk-anything"


class Failure(AssertionError):
    pass


def fail(msg: str) -> None:
    raise Failure(msg)


def expect(cond: bool, what: str, expected: Any, got: Any) -> None:
    """Assert with a message saying what was expected and what came."""
    if not cond:
        raise Failure(f"{what}: expected {expected}, got {_short(got)}")


def _short(x: Any, n: int = 600) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "…"


def ok(msg: str) -> None:
    print(f"ok: {msg}", flush=True)


def note(msg: str) -> None:
    print(f"note: {msg}", flush=True)


WARMUP_NOTE = (
    "the first (cold) greedy request gave {cold!r}, the repeated one {warm!r}: with a prompt "
    "cache, prefill numerics differ between a cold and a cached prompt and a tiny model's "
    "near-ties flip (llama-server does this too); the checks compare warm requests only")


# --------------------------------------------------------------------------- environment
def base_url() -> str:
    url = os.environ.get("HEARTH_BASE_URL", "").strip()
    if not url:
        fail("HEARTH_BASE_URL is not set (e.g. HEARTH_BASE_URL=http://127.0.0.1:5000)")
    url = url.rstrip("/")
    if url.endswith("/v1"):
        fail(f"HEARTH_BASE_URL must be the server root without /v1, got {url}")
    return url


def api_base() -> str:
    return base_url() + "/v1"


def api_key() -> str:
    return os.environ.get("HEARTH_API_KEY") or DEFAULT_API_KEY


def timeout() -> float:
    return float(os.environ.get("HEARTH_TIMEOUT") or 300)


# --------------------------------------------------------------------------- recording transport
@dataclass
class Exchange:
    method: str
    url: str
    path: str
    request_body: bytes
    status: int = 0
    headers: dict = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the body was read to its end

    @property
    def request_json(self) -> Any:
        try:
            return json.loads(self.request_body or b"null")
        except ValueError:
            return None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def describe(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


class _TeeStream(httpx.SyncByteStream):
    def __init__(self, inner, ex: Exchange):
        self._inner, self._ex = inner, ex

    def __iter__(self):
        for chunk in self._inner:
            self._ex.body.extend(chunk)
            yield chunk
        self._ex.complete = True

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close:
            close()


class RecordingTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request):
        body = request.read()
        ex = Exchange(request.method, str(request.url), request.url.path, bytes(body))
        self.exchanges.append(ex)
        resp = self._inner.handle_request(request)
        ex.status = resp.status_code
        ex.headers = {k.lower(): v for k, v in resp.headers.items()}
        return httpx.Response(
            resp.status_code,
            headers=resp.headers,
            stream=_TeeStream(resp.stream, ex),
            extensions=resp.extensions,
            request=request,
        )

    def take(self) -> list[Exchange]:
        out, self.exchanges = self.exchanges, []
        return out


def recording_http_client() -> tuple[Any, RecordingTransport]:
    transport = RecordingTransport()
    return httpx.Client(transport=transport, timeout=timeout()), transport


def openai_client():
    """An openai-python client on Hearth, recording every exchange (client.recorder)."""
    import openai

    http_client, rec = recording_http_client()
    client = openai.OpenAI(
        base_url=api_base(), api_key=api_key(), http_client=http_client, max_retries=0
    )
    client.recorder = rec  # type: ignore[attr-defined]
    return client


# --------------------------------------------------------------------------- SSE
def parse_sse(body: bytes) -> list[str]:
    """The `data` payload of each event, in order (comments and other fields skipped)."""
    return [data for _, data in parse_sse_named(body)]


# --------------------------------------------------------------------------- validation
RESPONSE_EVENTS = "<each Responses event against its own schema>"
SCHEMAS = {
    # path (exact or regex) -> (schema for a JSON body, schema for each SSE chunk)
    "/v1/chat/completions": ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    "/v1/completions": ("CreateCompletionResponse", "CreateCompletionStreamResponse"),
    "/v1/models": ("ListModelsResponse", None),
    r"/v1/models/.+": ("Model", None),
    "/v1/moderations": ("CreateModerationResponse", None),
    "/v1/embeddings": ("CreateEmbeddingResponse", None),
    "/v1/images/generations": ("ImagesResponse", None),
    # response_format json; text, srt and vtt answers are plain text (checked by the script).
    "/v1/audio/transcriptions": ("CreateTranscriptionResponseJson", "CreateTranscriptionResponseStreamEvent"),
    # The Responses API streams typed events (each validated against its own event schema) and
    # ends with its terminal event, not `data: [DONE]`.
    "/v1/responses": ("Response", RESPONSE_EVENTS),
    r"/v1/responses/[^/]+": ("Response", None),
    r"/v1/responses/[^/]+/cancel": ("Response", None),
    r"/v1/responses/[^/]+/input_items": ("ResponseItemList", None),
}

# Each Responses stream event type -> its schema in OpenAI's document.
RESPONSE_EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
}
RESPONSE_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _schemas_for(path: str):
    for pat, schemas in SCHEMAS.items():
        if re.fullmatch(pat, path):
            return schemas
    return (None, None)


def check_exchange(ex: Exchange) -> Any:
    """Validate one recorded exchange; returns the parsed JSON body or the list of SSE chunks."""
    sse = ex.content_type.startswith("text/event-stream")
    # openai-python stops reading a stream at `data: [DONE]` and closes it; other bodies must
    # have been read to their end.
    if not ex.complete and not sse:
        fail(f"{ex.describe()}: the client did not read the response to its end (test bug?)")
    body_schema, chunk_schema = _schemas_for(ex.path)
    if ex.method == "DELETE" and body_schema == "Response":
        # OpenAI's document gives the deletion no schema: {"id", "object": "response.deleted", "deleted"}.
        body_schema = None
    if ex.status >= 400:
        expect("application/json" in ex.content_type, f"{ex.describe()} Content-Type",
               "application/json for an error", ex.content_type)
        obj = _json(ex, bytes(ex.body))
        try:
            openapi_check.validate("ErrorResponse", obj)
        except openapi_check.SchemaError as e:
            raise Failure(f"{ex.describe()}: error body is not OpenAI-shaped (SPEC §2): {e}") from None
        return obj
    if sse and chunk_schema == RESPONSE_EVENTS:
        return check_response_events(ex)
    if sse:
        expect(chunk_schema is not None, f"{ex.describe()}", "a JSON body", "an event stream")
        payloads = parse_sse(bytes(ex.body))
        expect(bool(payloads) and payloads[-1] == "[DONE]", f"{ex.describe()}: last SSE event",
               "data: [DONE]", payloads[-1] if payloads else "no events at all")
        expect(payloads.count("[DONE]") == 1, f"{ex.describe()}: number of [DONE] events",
               1, payloads.count("[DONE]"))
        chunks = []
        for i, p in enumerate(payloads[:-1]):
            obj = _json(ex, p.encode(), f"SSE event #{i}")
            if isinstance(obj, dict) and "error" in obj:
                fail(f"{ex.describe()}: the stream carried an error event #{i}: {_short(p)}")
            try:
                openapi_check.validate(chunk_schema, obj)
            except openapi_check.SchemaError as e:
                raise Failure(f"{ex.describe()}: SSE event #{i}: {e}") from None
            chunks.append(obj)
        if ex.path == "/v1/chat/completions":
            first = chunks[0]["choices"][0]["delta"] if chunks and chunks[0].get("choices") else {}
            expect("refusal" in first and first["refusal"] is None,
                   f"{ex.describe()}: first chunk's delta.refusal", "null (as OpenAI streams it)",
                   first.get("refusal", "absent"))
        return chunks
    if ex.path == "/v1/audio/transcriptions" and not ex.content_type.startswith("application/json"):
        return bytes(ex.body).decode("utf-8")
    if ex.path == "/v1/audio/speech":
        # Audio bytes, checked by the script; the type must say which audio.
        expect(ex.content_type.startswith("audio/"), f"{ex.describe()} Content-Type", "audio/…", ex.content_type)
        return bytes(ex.body)
    obj = _json(ex, bytes(ex.body))
    expect("application/json" in ex.content_type, f"{ex.describe()} Content-Type",
           "application/json", ex.content_type)
    if body_schema:
        try:
            openapi_check.validate(body_schema, _as_floats(ex, obj))
        except openapi_check.SchemaError as e:
            raise Failure(f"{ex.describe()}: {e}") from None
    if ex.path == "/v1/chat/completions":
        for choice in obj.get("choices", []):
            expect(choice["message"].get("annotations") == [], f"{ex.describe()}: message.annotations",
                   "[] (current OpenAI message fields)", choice["message"].get("annotations", "absent"))
    return obj


def parse_sse_named(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event, in order."""
    text = body.decode("utf-8")
    events, name, data = [], None, []
    for line in re.split(r"\r\n|\r|\n", text) + [""]:
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return events


def check_response_events(ex: Exchange) -> list[Any]:
    """A streamed Responses answer: every event valid against its type's schema, its SSE
    `event:` name equal to its `type`, `sequence_number` 0, 1, 2, …, `response.created` first,
    and one terminal event (`response.completed` / `.incomplete` / `.failed`) last."""
    events = []
    for i, (name, payload) in enumerate(parse_sse_named(bytes(ex.body))):
        obj = _json(ex, payload.encode(), f"SSE event #{i}")
        kind = obj.get("type") if isinstance(obj, dict) else None
        schema = RESPONSE_EVENT_SCHEMAS.get(kind)
        expect(schema is not None, f"{ex.describe()}: SSE event #{i} type", "a Responses event type", kind)
        expect(name == kind, f"{ex.describe()}: SSE event #{i} `event:` name", kind, name)
        expect(obj.get("sequence_number") == i, f"{ex.describe()}: SSE event #{i} sequence_number", i,
               obj.get("sequence_number"))
        try:
            openapi_check.validate(schema, obj)
        except openapi_check.SchemaError as e:
            raise Failure(f"{ex.describe()}: SSE event #{i} ({kind}): {e}") from None
        events.append(obj)
    expect(bool(events) and events[0]["type"] == "response.created", f"{ex.describe()}: first event",
           "response.created", events[0]["type"] if events else "no events")
    terminal = [e["type"] for e in events if e["type"] in RESPONSE_TERMINAL]
    expect(len(terminal) == 1 and events[-1]["type"] in RESPONSE_TERMINAL, f"{ex.describe()}: terminal events",
           "exactly one, last", [e["type"] for e in events[-3:]])
    return events


def _as_floats(ex: Exchange, obj: Any) -> Any:
    """An embeddings body asked for as base64, with its vectors decoded: OpenAI's schema only
    describes float lists, though its API (and openai-python's default) sends base64 strings."""
    request = ex.request_json
    if ex.path != "/v1/embeddings" or not isinstance(request, dict) or request.get("encoding_format") != "base64":
        return obj
    import base64
    import struct
    decoded = json.loads(json.dumps(obj))
    for item in decoded.get("data", []):
        if isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"], validate=True)
            expect(len(raw) % 4 == 0, "base64 embedding length", "a whole number of f32s", len(raw))
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return decoded


def _json(ex: Exchange, raw: bytes, what: str = "body") -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        fail(f"{ex.describe()}: {what} is not JSON: {_short(raw.decode('utf-8', 'replace'))}")


def check_last(client_or_rec, path: str | None = None) -> Any:
    """Validate every exchange recorded since the last call; return the last one's content."""
    rec = getattr(client_or_rec, "recorder", client_or_rec)
    exchanges = rec.take()
    expect(bool(exchanges), "recorded HTTP exchanges", "at least one request", "none")
    result = None
    for ex in exchanges:
        result = check_exchange(ex)
    if path is not None:
        expect(exchanges[-1].path == path, "request path", path, exchanges[-1].path)
    return result


# --------------------------------------------------------------------------- speech
def words(s: str) -> list[str]:
    """A transcript's words for scoring: lower case, letters, digits and apostrophes only."""
    return [w for w in (re.sub(r"[^a-z0-9']", "", t.lower()) for t in s.split()) if w]


def edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level edit distance (substitutions, insertions, deletions): a word error rate's numerator."""
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev = cur
    return row[len(hyp)]


# --------------------------------------------------------------------------- model id
_model: str | None = None


def model_id(client=None) -> str:
    """HEARTH_MODEL, else the first id of GET /v1/models (validated as ListModelsResponse)."""
    global _model
    if _model:
        return _model
    env = os.environ.get("HEARTH_MODEL")
    if env:
        _model = env
        return env
    client = client or openai_client()
    models = client.models.list()
    listing = check_last(client, "/v1/models")
    expect(len(listing["data"]) > 0, "GET /v1/models data", "at least one model", listing)
    _model = listing["data"][0]["id"]
    expect(_model == models.data[0].id, "openai-python's first model id", _model, models.data[0].id)
    return _model


# --------------------------------------------------------------------------- runner
def run(main: Callable[[], None]) -> None:
    """Run a script body: exit 0 on success, 1 with a FAIL message on any failed assertion."""
    name = os.path.basename(sys.argv[0])
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {name}: {e}", file=sys.stderr)
        if os.environ.get("HEARTH_TEST_TRACEBACK"):
            traceback.print_exc()
        sys.exit(1)
    except Exception as e:  # connection refused, unexpected API errors…
        import openai

        try:
            import requests

            if isinstance(e, requests.ConnectionError):
                print(f"FAIL {name}: cannot reach {os.environ.get('HEARTH_BASE_URL')}: {e}",
                      file=sys.stderr)
                sys.exit(1)
        except ImportError:  # pragma: no cover
            pass
        if isinstance(e, openai.APITimeoutError):
            print(f"FAIL {name}: no answer from {os.environ.get('HEARTH_BASE_URL')} within "
                  f"HEARTH_TIMEOUT={timeout():g} s", file=sys.stderr)
            sys.exit(1)
        if isinstance(e, openai.APIConnectionError):
            print(f"FAIL {name}: cannot reach {os.environ.get('HEARTH_BASE_URL')}: {e!r} "
                  f"(cause: {e.__cause__!r})", file=sys.stderr)
            if os.environ.get("HEARTH_TEST_TRACEBACK"):
                traceback.print_exc()
            sys.exit(1)
        elif isinstance(e, openai.APIStatusError):
            print(f"FAIL {name}: unexpected HTTP {e.status_code} from the server: "
                  f"{_short(e.response.text)}", file=sys.stderr)
        else:
            print(f"FAIL {name}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"PASS {name}", flush=True)
