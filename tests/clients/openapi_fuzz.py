#!/usr/bin/env python3
"""Hearth's /openapi.json is a valid OpenAPI 3.1 document, and fuzzing the live server from it
finds no server error and no response that breaks the documented schema.

1. The document is fetched and checked with openapi-spec-validator (3.1 rules).
2. schemathesis runs every documented operation but the two that replace the served model
   (`/v1/internal/model/load` with fuzzed loader settings, a 32k context say, and `unload`,
   which would leave nothing for the rest to test; tests/model_load.rs covers them), in all its phases (examples, coverage, fuzzing,
   stateful links) and both modes (valid and invalid data), a bounded number of examples each,
   with a fixed seed, checking `not_a_server_error` and `response_schema_conformance`.
3. Its HAR report is read back: the statuses per operation are printed (the note quotes
   them), and no response may be a 5xx — counted here too, not only taken from schemathesis'
   exit status.

    python openapi_fuzz.py BASE_URL [--max-examples N] [--seed S]
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--max-examples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    base = args.base.rstrip("/")

    with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as r:
        doc = json.load(r)
    if not str(doc.get("openapi", "")).startswith("3.1"):
        print(f"FAIL: the document says openapi {doc.get('openapi')!r}, not 3.1.x")
        return 1
    try:
        validate(doc)
    except OpenAPIValidationError as e:
        print(f"FAIL: /openapi.json is not a valid OpenAPI 3.1 document: {e}")
        return 1
    print(f"ok    /openapi.json: OpenAPI {doc['openapi']}, {len(doc['paths'])} paths, "
          f"{len(doc.get('components', {}).get('schemas', {}))} schemas, valid")

    schemathesis = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory() as reports:
        cmd = [
            str(schemathesis), "run", f"{base}/openapi.json",
            "--max-examples", str(args.max_examples),
            "--seed", str(args.seed),
            "--checks", "not_a_server_error,response_schema_conformance",
            "--exclude-path", "/v1/internal/model/unload",
            "--exclude-path", "/v1/internal/model/load",
            "--workers", "1",
            "--request-timeout", "120",
            "--generation-database", "none",
            "--report", "har", "--report-dir", reports,
        ]
        print("$ " + " ".join(cmd[1:]), flush=True)
        env = dict(os.environ, NO_COLOR="1")
        # From the temporary folder: schemathesis keeps a cache of crashes in its working folder.
        run = subprocess.run(cmd, env=env, cwd=reports, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        summary = run.stdout[run.stdout.find("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-6000:]
        print(summary)
        hars = list(Path(reports).glob("har-*"))
        if not hars:
            print(run.stdout[-6000:])
            print("FAIL: schemathesis wrote no report")
            return 1
        entries = json.loads(hars[0].read_text())["log"]["entries"]

    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in
                  ("get", "post", "put", "delete", "patch", "head", "options", "trace")}
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seconds: collections.Counter = collections.Counter()
    probes: collections.Counter = collections.Counter()
    for e in entries:
        path = e["request"]["url"].removeprefix(base).split("?")[0]
        # Plugin and model paths carry generated segments: group them by route.
        for prefix in ("/v1/plugins/", "/v1/models/"):
            if path.startswith(prefix) and path != prefix:
                rest = path[len(prefix):]
                path = prefix + (rest.split("/")[0] + "/{path}" if prefix == "/v1/plugins/" else "{id}")
        method, status = e["request"]["method"], e["response"]["status"]
        if status >= 500 or (method, path) in documented or path.startswith("/v1/plugins/"):
            statuses[f"{method} {path}"][status] += 1
            seconds[f"{method} {path}"] += e.get("time", 0) / 1000
        else:
            # schemathesis also tries each path with the methods it does not document.
            probes[status] += 1
    print(f"{'operation':44} {'time':>7}  responses by status")
    for op in sorted(statuses):
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(statuses[op].items()))
        print(f"{op:44} {seconds[op]:6.1f}s  {counts}")
    print("undocumented methods on documented paths: " + ", ".join(f"{s}: {n}" for s, n in sorted(probes.items())))
    server_errors = sum(n for c in statuses.values() for s, n in c.items() if s >= 500)
    print(f"{len(entries)} requests, {server_errors} server errors (5xx)")
    if server_errors:
        print("FAIL: the server answered with a 5xx")
        return 1
    if run.returncode != 0:
        print(f"FAIL: schemathesis exited with {run.returncode}")
        print(run.stdout[-20000:])
        return 1
    print("ok    schemathesis: no server error, every checked response matches the documented schema")
    return 0


if __name__ == "__main__":
    sys.exit(main())
