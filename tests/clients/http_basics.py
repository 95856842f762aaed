#!/usr/bin/env python3
"""Plain-HTTP basics with `requests` (what curl users and the seed's scripts rely on).

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/http_basics.py

- GET /health → 200 {"status": "ok"} (no key needed, SPEC §3);
- GET /v1/models → ListModelsResponse, each entry a Model, ids unique; GET /v1/models/{id}
  for each → the same Model;
- an unknown route → 404, a body that is not JSON → 400, a chat request without `messages`
  → 400, all OpenAI-shaped {"error": {message, type, param, code}} (SPEC §2);
- CORS: a page of another origin is refused (403, no CORS headers) unless the server allows it
  with --cors-allow-origin (tests/hardening.rs covers an allowed origin);
- with HEARTH_REQUIRES_KEY=1 (server started with --api-key HEARTH_API_KEY): a wrong key → 401.
"""
import os

import requests

import hearth_common as H
import openapi_check
from hearth_common import expect, ok


def get_json(resp, what, schema=None):
    expect("application/json" in resp.headers.get("content-type", ""), f"{what} Content-Type",
           "application/json", resp.headers.get("content-type"))
    try:
        body = resp.json()
    except ValueError:
        H.fail(f"{what}: body is not JSON: {resp.text[:300]!r}")
    if schema:
        try:
            openapi_check.validate(schema, body)
        except openapi_check.SchemaError as e:
            raise H.Failure(f"{what}: {e}") from None
    return body


def expect_error(resp, status, what):
    expect(resp.status_code == status, f"{what}: HTTP status", status,
           f"{resp.status_code} {resp.text[:300]!r}")
    body = get_json(resp, what, "ErrorResponse")
    expect(body["error"]["message"].strip() != "", f"{what}: error.message", "non-empty",
           body["error"]["message"])
    ok(f"{what}: {status} {body['error']}")


def main():
    base, t = H.base_url(), H.timeout()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {H.api_key()}"

    r = requests.get(f"{base}/health", timeout=t)  # deliberately without a key
    expect(r.status_code == 200, "GET /health status", 200, f"{r.status_code} {r.text[:200]!r}")
    expect(get_json(r, "GET /health") == {"status": "ok"}, "GET /health body",
           {"status": "ok"}, r.text)
    ok("GET /health → 200 {'status': 'ok'}")

    r = s.get(f"{base}/v1/models", timeout=t)
    expect(r.status_code == 200, "GET /v1/models status", 200, f"{r.status_code} {r.text[:200]!r}")
    listing = get_json(r, "GET /v1/models", "ListModelsResponse")
    ids = [m["id"] for m in listing["data"]]
    expect(len(ids) >= 1, "GET /v1/models data", "at least one model", listing)
    expect(len(set(ids)) == len(ids), "GET /v1/models ids", "unique", ids)
    for m in listing["data"]:
        r = s.get(f"{base}/v1/models/{m['id']}", timeout=t)
        expect(r.status_code == 200, f"GET /v1/models/{m['id']} status", 200,
               f"{r.status_code} {r.text[:200]!r}")
        one = get_json(r, f"GET /v1/models/{m['id']}", "Model")
        expect(one == m, f"GET /v1/models/{m['id']}", f"the same object as in the list {m}", one)
    ok(f"GET /v1/models → {ids}; each GET /v1/models/{{id}} matches")

    # Without --cors-allow-origin, a page of another origin can neither read answers nor make
    # the browser send requests: its requests and its preflight are refused, without CORS headers.
    r = s.get(f"{base}/v1/models", timeout=t, headers={"Origin": "http://example.test"})
    expect_error(r, 403, "GET /v1/models from another origin")
    expect(r.headers.get("access-control-allow-origin") is None, "Access-Control-Allow-Origin of a refused origin",
           None, r.headers.get("access-control-allow-origin"))
    r = requests.options(f"{base}/v1/chat/completions", timeout=t, headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    expect(r.status_code == 403 and r.headers.get("access-control-allow-origin") is None,
           "CORS preflight from another origin", "403 without Access-Control-Allow-Origin",
           f"{r.status_code} {r.headers.get('access-control-allow-origin')!r}")
    ok("pages of other origins are refused (no CORS unless --cors-allow-origin)")

    expect_error(s.get(f"{base}/v1/no-such-route", timeout=t), 404, "GET /v1/no-such-route")
    expect_error(s.post(f"{base}/v1/chat/completions", data=b"{not json",
                        headers={"Content-Type": "application/json"}, timeout=t),
                 400, "POST /v1/chat/completions with a body that is not JSON")
    expect_error(s.post(f"{base}/v1/chat/completions", json={"max_tokens": 4}, timeout=t),
                 400, "POST /v1/chat/completions without messages")

    if os.environ.get("HEARTH_REQUIRES_KEY") == "1":
        r = requests.get(f"{base}/v1/models", timeout=t,
                         headers={"Authorization": "Bearer wrong-" + H.api_key()})
        expect_error(r, 401, "GET /v1/models with a wrong key")
        expect_error(requests.get(f"{base}/v1/models", timeout=t), 401,
                     "GET /v1/models without a key")


if __name__ == "__main__":
    H.run(main)
