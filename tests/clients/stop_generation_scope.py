"""`/v1/internal/stop-generation` stops only the caller's own generations, unless the caller
holds the admin key.

Callers are told apart by their address. Every address of 127.0.0.0/8 is this machine's
loopback, so two callers are made by binding the client sockets to 127.0.0.1 and 127.0.0.2.
The server must run with `--api-key user-key --admin-key admin-key`.

Run by `cargo test -p hearth --test hardening` (HEARTH_BASE_URL set by the harness).
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse

from hearth_common import base_url, expect, ok

USER_KEY, ADMIN_KEY = "user-key", "admin-key"
# Enough tokens that an unstopped generation is still running when the stop arrives.
LONG = 200


def connect(source: str) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(base_url())
    return http.client.HTTPConnection(url.hostname, url.port, timeout=300, source_address=(source, 0))


def post(source: str, path: str, body: dict, key: str) -> tuple[int, bytes]:
    conn = connect(source)
    conn.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


class Stream:
    """A streamed completion from `source`, read on its own thread once it has begun."""

    def __init__(self, source: str):
        self.conn = connect(source)
        body = {"prompt": "Count to one thousand: 1, 2, 3,", "max_tokens": LONG, "stream": True,
                "temperature": 0, "ban_eos_token": True}
        self.conn.request("POST", "/v1/completions", json.dumps(body),
                          {"Authorization": f"Bearer {USER_KEY}", "Content-Type": "application/json"})
        self.resp = self.conn.getresponse()
        expect(self.resp.status == 200, "stream status", 200, self.resp.status)
        self.chunks: list[dict] = []
        # The first chunk proves the generation is running before anyone stops it.
        self._read_one()
        self.thread = threading.Thread(target=self._read_rest)
        self.thread.start()

    def _read_one(self) -> bool:
        while True:
            line = self.resp.readline()
            if not line:
                return False
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return False
            self.chunks.append(json.loads(payload))
            return True

    def _read_rest(self) -> None:
        while self._read_one():
            pass

    def finish(self) -> tuple[str, int]:
        """(finish_reason, text chunks) once the stream has ended."""
        self.thread.join(timeout=300)
        self.conn.close()
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c.get("choices")]
        reason = next((r for r in reversed(reasons) if r), None)
        texts = sum(1 for c in self.chunks if c.get("choices") and c["choices"][0].get("text"))
        return reason, texts


def stop_and_finish(stopper: str, key: str) -> tuple[str, int]:
    """Starts a generation from 127.0.0.2, sends a stop from `stopper` with `key`, and returns
    how the generation ended (finish_reason, text chunks)."""
    mine = Stream("127.0.0.2")
    status, _ = post(stopper, "/v1/internal/stop-generation", {}, key)
    expect(status == 200, "stop status", 200, status)
    return mine.finish()


def main() -> None:
    # Another caller's stop (normal key) leaves this generation running to its length.
    reason, _ = stop_and_finish("127.0.0.1", USER_KEY)
    expect(reason == "length", "finish of a generation another caller tried to stop", "length", reason)
    ok("a normal-key stop from another address leaves the generation running")

    # The caller's own stop ends it early, and so does one with the admin key from anywhere.
    for stopper, key, what in [("127.0.0.2", USER_KEY, "the caller's own stop"),
                               ("127.0.0.1", ADMIN_KEY, "an admin-key stop from another address")]:
        reason, texts = stop_and_finish(stopper, key)
        expect(reason == "stop" and texts < LONG, f"finish after {what}", f"stop before {LONG} tokens",
               (reason, texts))
        ok(f"{what} ends the generation")


if __name__ == "__main__":
    main()
