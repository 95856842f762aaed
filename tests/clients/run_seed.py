#!/usr/bin/env python3
"""Run the seed's own API examples (tests/clients/seed/, copied verbatim from textgen's
"docs/12 - OpenAI API.md") against a running Hearth and judge what a user would see.

    HEARTH_BASE_URL=http://127.0.0.1:41234 .venv/bin/python tests/clients/run_seed.py
    ... run_seed.py --list                 every example, with its milestone
    ... run_seed.py chat_streaming curl:sse_streaming
    ... run_seed.py --all                  the later-milestone ones too

Each example runs from a temporary copy in which `http://127.0.0.1:5000` becomes
HEARTH_BASE_URL; when HEARTH_API_KEY is set, the doc's own API-key edit is applied (its
"Python example with API key" section: an Authorization header in `headers`), the openai
client examples get the key, and curl gets it through a temporary .curlrc. Nothing in
tests/clients/seed/ is modified.

The interactive chat examples loop on input(): they get one user line on stdin and end with
EOFError at the next prompt. The streaming examples were written when textgen sent neither
`data: [DONE]` nor a finish chunk without `content`; against a server that follows OpenAI (and
SPEC §6) they print the whole reply and then die on json.loads("[DONE]") (JSONDecodeError) or on
`delta['content']` of the finish chunk (KeyError) — textgen itself ends the same way since
2026-03. Those endings are accepted after a complete reply, and reported. Exit 0 when every
selected example passed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = os.path.join(HERE, "seed")
NODE_DIR = os.path.join(HERE, "node")
SEED_HOST = "http://127.0.0.1:5000"
DOC_HEADERS = 'headers = {\n    "Content-Type": "application/json"\n}'
DOC_HEADERS_KEY = ('headers = {\n    "Content-Type": "application/json",\n'
                   '    "Authorization": "Bearer {KEY}"\n}')
DOC_OPENAI_KEY = "sk-111111111111111111111111111111111111111111111111"

# name -> (file or curl function, milestone note or None when it applies now)
EXAMPLES = {
    "chat_basic": ("chat_basic.py", None),
    "chat_streaming": ("chat_streaming.py", None),
    "completions_streaming": ("completions_streaming.py", None),
    "parallel_requests": ("parallel_requests.py", None),
    "openai_python_client": ("openai_python_client.py", None),
    "openai_node_client": ("openai_node_client.mjs", None),
    "tool_calling": ("tool_calling.py", "tool calls (SPEC §5/§10 tool-call parsers)"),
    "curl:completions": ("completions", None),
    "curl:chat_completions": ("chat_completions", None),
    "curl:sse_streaming": ("sse_streaming", None),
    "curl:list_models": ("list_models", None),
    "curl:chat_completions_with_characters": ("chat_completions_with_characters", None),
    "curl:multimodal_chat_completions": ("multimodal_chat_completions",
                                         "multimodal, and a remote image URL (network off by default)"),
    "curl:multimodal_completions": ("multimodal_completions",
                                    "multimodal, and remote image URLs (network off by default)"),
    "curl:image_generation": ("image_generation", "image generation (--image-model)"),
    "curl:logits": ("logits", None),
    "curl:logits_after_sampling": ("logits_after_sampling", None),
    "curl:load_model": ("load_model", "model load/unload (a Qwen3 GGUF by name)"),
    "curl:load_model_2": ("load_model_2", "model load/unload (a Qwen3 GGUF by name)"),
}


class Verdict(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Verdict(msg)


def last_exception(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def rewrite(text: str, base: str, key: str | None) -> str:
    text = text.replace(SEED_HOST, base)
    if key:
        text = text.replace(DOC_HEADERS, DOC_HEADERS_KEY.replace("{KEY}", key))
        text = text.replace(DOC_OPENAI_KEY, key)
    return text


def run_py(path, base, key, stdin, timeout, tmp):
    with open(path, encoding="utf-8") as f:
        src = rewrite(f.read(), base, key)
    dst = os.path.join(tmp, os.path.basename(path))
    with open(dst, "w", encoding="utf-8") as f:
        f.write(src)
    return subprocess.run([sys.executable, "-u", dst], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp)


def run_node(path, base, key, timeout, tmp):
    modules = os.path.join(NODE_DIR, "node_modules")
    check(os.path.isdir(os.path.join(modules, "openai")),
          f"{modules} has no openai package: run scripts/setup-test-clients first")
    os.symlink(modules, os.path.join(tmp, "node_modules"))
    with open(path, encoding="utf-8") as f:
        src = rewrite(f.read(), base, key)
    dst = os.path.join(tmp, os.path.basename(path))
    with open(dst, "w", encoding="utf-8") as f:
        f.write(src)
    env = dict(os.environ, OPENAI_API_KEY=key or DOC_OPENAI_KEY)
    return subprocess.run(["node", dst], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp, env=env)


def run_curl(func, base, key, timeout, tmp):
    with open(os.path.join(SEED, "curl_examples.sh"), encoding="utf-8") as f:
        src = rewrite(f.read(), base, None)
    dst = os.path.join(tmp, "curl_examples.sh")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(src)
    rc_lines = ['silent', 'show-error', 'write-out = "\\nHEARTH_HTTP_STATUS=%{http_code}\\n"']
    if key:
        rc_lines.append(f'header = "Authorization: Bearer {key}"')
    with open(os.path.join(tmp, ".curlrc"), "w") as f:
        f.write("\n".join(rc_lines) + "\n")
    env = dict(os.environ, CURL_HOME=tmp)
    return subprocess.run(["bash", dst, func], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp, env=env)


# --------------------------------------------------------------------------- judges
STREAM_ENDINGS = ("EOFError", "json.decoder.JSONDecodeError", "KeyError: 'content'")


def judge_chat_basic(p):
    check(last_exception(p.stderr).startswith("EOFError"),
          f"expected one reply then EOFError at the next input(), got rc={p.returncode}, "
          f"stderr ends {last_exception(p.stderr)!r}")
    parts = p.stdout.split("> ")
    check(len(parts) >= 3 and parts[1].strip(), f"expected a non-empty reply after '> ', "
          f"stdout {p.stdout[:500]!r}")
    return f"reply {parts[1].strip()[:120]!r}"


def judge_chat_streaming(p):
    end = last_exception(p.stderr)
    check(not end.startswith("TypeError: can only concatenate str (not \"NoneType\")"),
          "a stream delta carried \"content\": null (llama-server does this in its finish chunk): "
          "the example adds it to a str; omit content or send \"\" instead")
    check(any(end.startswith(e) for e in STREAM_ENDINGS),
          f"expected the reply, then an ending in {STREAM_ENDINGS}, got rc={p.returncode}, "
          f"stderr ends {end!r}")
    reply = p.stdout.split("> ", 2)[1] if p.stdout.count("> ") >= 1 else ""
    check(reply.strip(), f"expected a streamed non-empty reply, stdout {p.stdout[:500]!r}")
    how = ("EOFError after a full turn" if end.startswith("EOFError") else
           "json.loads('[DONE]') failed (the example predates [DONE])"
           if "JSONDecodeError" in end else
           "the finish chunk's delta has no 'content' (the example predates that)")
    return f"reply {reply.strip()[:120]!r}; ended: {how}"


def judge_completions_streaming(p):
    end = last_exception(p.stderr)
    prompt = "This is a cake recipe:\n\n1."
    check(p.returncode == 0 or "JSONDecodeError" in end,
          f"expected exit 0 or a JSONDecodeError on [DONE], got rc={p.returncode}, "
          f"stderr ends {end!r}")
    check(p.stdout.startswith(prompt) and p.stdout[len(prompt):].strip(),
          f"expected the prompt then generated text, stdout {p.stdout[:500]!r}")
    return f"text {p.stdout[len(prompt):].strip()[:120]!r}" + (
        "; ended: json.loads('[DONE]') failed (the example predates [DONE])" if p.returncode else "")


def judge_exit0_output(p):
    check(p.returncode == 0, f"expected exit 0, got rc={p.returncode}, stderr "
          f"{p.stderr.strip()[-800:]!r}")
    check(p.stdout.strip(), "expected some output, got none")
    return f"output {p.stdout.strip()[:160]!r}"


def judge_parallel(p):
    judge_exit0_output(p)
    answers = re.findall(r"^Q: ([^\n]*)\nA: (.*?)\n\n", p.stdout, re.M | re.S)
    check(len(answers) == 3 and all(a.strip() for _, a in answers),
          f"expected 3 non-empty answers, stdout {p.stdout[:600]!r}")
    return f"3 answers, first {answers[0][1].strip()[:80]!r}"


def judge_tool_calling(p):
    judge_exit0_output(p)
    calls = re.findall(r"^Tool call: (\w+)\(", p.stdout, re.M)
    check(calls, f"expected at least one 'Tool call: …' line, stdout {p.stdout[:500]!r}")
    check("\nAssistant: " in "\n" + p.stdout, f"expected a final 'Assistant: …' answer, stdout "
          f"{p.stdout[:500]!r}")
    return f"tool calls {calls}, then a final answer"


def curl_split(p):
    m = re.search(r"\nHEARTH_HTTP_STATUS=(\d+)\n?$", p.stdout)
    check(m, f"curl failed: rc={p.returncode} stderr {p.stderr.strip()[:300]!r}")
    return int(m.group(1)), p.stdout[:m.start()]


def curl_json_200(p):
    """The body of an HTTP 200 JSON answer (and its text), or a Verdict."""
    status, body = curl_split(p)
    check(status == 200, f"expected HTTP 200, got {status}: {body[:400]!r}")
    try:
        return json.loads(body), body
    except ValueError:
        raise Verdict(f"expected a JSON body, got {body[:400]!r}")


def judge_curl_json(key):
    def judge(p):
        obj, body = curl_json_200(p)
        check(key in obj, f"expected a '{key}' field, got {body[:400]!r}")
        if key == "choices":
            c = obj["choices"][0]
            text = c.get("text") if "text" in c else (c.get("message") or {}).get("content")
            check(isinstance(text, str) and text.strip(), f"expected generated text, got {c!r}")
            return f"HTTP 200, text {text.strip()[:120]!r}"
        return f"HTTP 200, {body.strip()[:160]}"
    return judge


def judge_curl_sse(p):
    status, body = curl_split(p)
    check(status == 200, f"expected HTTP 200, got {status}: {body[:400]!r}")
    data = [l[5:].strip() for l in body.splitlines() if l.startswith("data:")]
    check(data and data[-1] == "[DONE]", f"expected data: events ending with [DONE], "
          f"got {body[-400:]!r}")
    text = "".join((json.loads(d)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for d in data[:-1])
    check(text.strip(), f"expected streamed text, got {body[:400]!r}")
    return f"{len(data)} events, text {text.strip()[:120]!r}"


def judge_curl_logits(p):
    obj, body = curl_json_200(p)
    check(isinstance(obj, dict) and obj and all(isinstance(v, float) and 0 <= v <= 1 for v in obj.values()),
          f"expected {{token: probability}}, got {body[:400]!r}")
    return f"HTTP 200, {len(obj)} tokens, most likely {next(iter(obj))!r}"


def judge_curl_later(p):
    status, body = curl_split(p)
    check(status == 200, f"HTTP {status}: {body[:400]!r}")
    return f"HTTP 200, {body.strip()[:160]!r}"


JUDGES = {
    "chat_basic": judge_chat_basic,
    "chat_streaming": judge_chat_streaming,
    "completions_streaming": judge_completions_streaming,
    "parallel_requests": judge_parallel,
    "openai_python_client": judge_exit0_output,
    "openai_node_client": judge_exit0_output,
    "tool_calling": judge_tool_calling,
    "curl:completions": judge_curl_json("choices"),
    "curl:chat_completions": judge_curl_json("choices"),
    "curl:sse_streaming": judge_curl_sse,
    "curl:list_models": judge_curl_json("model_names"),
    "curl:chat_completions_with_characters": judge_curl_json("choices"),
    "curl:logits": judge_curl_logits,
    "curl:logits_after_sampling": judge_curl_logits,
}


def run_one(name, base, key, timeout):
    target, _ = EXAMPLES[name]
    tmp = tempfile.mkdtemp(prefix="hearth-seed-")
    try:
        if name.startswith("curl:"):
            p = run_curl(target, base, key, timeout, tmp)
        elif target.endswith(".mjs"):
            p = run_node(os.path.join(SEED, target), base, key, timeout, tmp)
        else:
            stdin = "Hello!\n" if name in ("chat_basic", "chat_streaming") else ""
            p = run_py(os.path.join(SEED, target), base, key, stdin, timeout, tmp)
        return JUDGES.get(name, judge_curl_later)(p)
    except subprocess.TimeoutExpired:
        raise Verdict(f"no result within {timeout} s (HEARTH_SEED_TIMEOUT)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="examples to run (default: those that apply now)")
    ap.add_argument("--all", action="store_true", help="also the later-milestone examples")
    ap.add_argument("--list", action="store_true", help="list the examples and exit")
    args = ap.parse_args()
    if args.list:
        for n, (_, later) in EXAMPLES.items():
            print(f"{n:40s} {'now' if later is None else 'later: ' + later}")
        return 0
    base = os.environ.get("HEARTH_BASE_URL", "").rstrip("/")
    if not base:
        print("run_seed.py: HEARTH_BASE_URL is not set", file=sys.stderr)
        return 2
    key = os.environ.get("HEARTH_API_KEY") or None
    timeout = float(os.environ.get("HEARTH_SEED_TIMEOUT") or 600)
    unknown = [n for n in args.names if n not in EXAMPLES]
    if unknown:
        print(f"run_seed.py: unknown example(s) {unknown}; see --list", file=sys.stderr)
        return 2
    names = args.names or [n for n, (_, later) in EXAMPLES.items() if args.all or later is None]
    failed = 0
    for n in names:
        try:
            detail = run_one(n, base, key, timeout)
            print(f"PASS seed {n}: {detail}", flush=True)
        except Verdict as v:
            failed += 1
            later = EXAMPLES[n][1]
            print(f"FAIL seed {n}: {v}" + (f"  [later milestone: {later}]" if later else ""),
                  flush=True)
    print(f"{len(names) - failed}/{len(names)} seed examples passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
