#!/usr/bin/env python3
"""openai-python sees Hearth's errors as the right exception classes (SPEC §2).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_errors.py

- a parameter of the wrong type (temperature="hot") on chat and on completions →
  openai.BadRequestError (HTTP 400) whose body is {"error": {message, type, param, code}}
  naming the parameter;
- client.models.retrieve("no-such-model") → openai.NotFoundError (HTTP 404), same body shape.
Error bodies are validated against OpenAI's ErrorResponse schema (on the wire bytes).
"""
import openai

import hearth_common as H
from hearth_common import expect, fail, ok


def expect_error(client, exc_class, status, what, call, param=None):
    try:
        call()
    except openai.APIStatusError as e:
        expect(isinstance(e, exc_class), f"{what}: exception", exc_class.__name__,
               f"{type(e).__name__} (HTTP {e.status_code}: {e.response.text[:300]})")
        expect(e.status_code == status, f"{what}: HTTP status", status, e.status_code)
        raw = H.check_last(client)  # validates {"error": {...}} against ErrorResponse
        err = raw["error"]
        expect(isinstance(err.get("message"), str) and err["message"].strip() != "",
               f"{what}: error.message", "a non-empty string", err.get("message"))
        expect(isinstance(err.get("type"), str) and err["type"] != "", f"{what}: error.type",
               "a non-empty string", err.get("type"))
        # what openai-python hands to user code: e.body is the inner error object
        expect(isinstance(e.body, dict) and e.body.get("message") == err["message"],
               f"{what}: openai-python e.body['message']", err["message"], e.body)
        expect(e.message and err["message"] in e.message, f"{what}: str(exception)",
               f"containing {err['message']!r}", e.message)
        if param is not None:
            expect(err.get("param") == param or param in err["message"],
                   f"{what}: the error names the parameter",
                   f"error.param == {param!r} or {param!r} in error.message (SPEC §2)", err)
        ok(f"{what}: {type(e).__name__} {e.status_code} {err}")
        return err
    except openai.APIConnectionError:
        raise
    fail(f"{what}: expected {exc_class.__name__} (HTTP {status}), but the call succeeded")


def main():
    client = H.openai_client()
    model = H.model_id(client)
    messages = [{"role": "user", "content": "Hello"}]

    expect_error(client, openai.BadRequestError, 400, "chat with temperature='hot'",
                 lambda: client.chat.completions.create(
                     model=model, messages=messages, max_tokens=4, temperature="hot"),
                 param="temperature")
    expect_error(client, openai.BadRequestError, 400, "completions with temperature='hot'",
                 lambda: client.completions.create(
                     model=model, prompt="Hello", max_tokens=4, temperature="hot"),
                 param="temperature")
    expect_error(client, openai.BadRequestError, 400, "streamed chat with temperature='hot'",
                 lambda: list(client.chat.completions.create(
                     model=model, messages=messages, max_tokens=4, temperature="hot",
                     stream=True)),
                 param="temperature")
    expect_error(client, openai.NotFoundError, 404, "models.retrieve('no-such-model')",
                 lambda: client.models.retrieve("no-such-model"))

    # and the happy path of the same endpoint, for contrast
    m = client.models.retrieve(model)
    body = H.check_last(client, f"/v1/models/{model}")
    expect(body["id"] == model and m.id == model, f"GET /v1/models/{model} id", model, body)
    ok(f"models.retrieve({model!r}) → {body}")


if __name__ == "__main__":
    H.run(main)
