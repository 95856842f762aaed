#!/usr/bin/env python3
"""/metrics before and after real requests, parsed with prometheus_client's text parser.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/metrics_scrape.py

Needs a server of its own (nothing else may send requests meanwhile) serving a chat model and
an embedding model. Sends a chat completion, a streamed chat completion (with usage) and an
embeddings request with openai-python, then checks that:
- the prompt and generation token counters moved by exactly the `usage` the answers reported;
- each generation was counted once in the TTFT, end-to-end and queue-time histograms and in
  `hearth_requests_finished_total` under its finish reason, and the inter-token histogram
  counted every token after the first;
- the embedding counters moved by one request and its inputs;
- HTTP requests were counted by route pattern and status;
- vLLM's three gauge names exist with the model's `model_name`.
"""
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import hearth_common as H
from hearth_common import expect, ok


def scrape() -> dict[tuple[str, tuple], float]:
    """Every sample, by (name, sorted labels)."""
    request = urllib.request.Request(H.base_url() + "/metrics")
    if H.api_key():
        request.add_header("Authorization", f"Bearer {H.api_key()}")
    with urllib.request.urlopen(request, timeout=H.timeout()) as resp:
        expect(resp.status == 200, "/metrics answers", 200, resp.status)
        kind = resp.headers.get("Content-Type", "")
        expect(kind.startswith("text/plain"), "the text exposition format", "text/plain", kind)
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def main():
    client = H.openai_client()
    model = H.model_id(client)
    before = scrape()

    plain = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, temperature=0)
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Count to five."}], max_tokens=9, temperature=0,
        stream=True, stream_options={"include_usage": True})
    streamed_usage, streamed_finish = None, None
    for chunk in stream:
        if chunk.usage is not None:
            streamed_usage = chunk.usage
        if chunk.choices and chunk.choices[0].finish_reason:
            streamed_finish = chunk.choices[0].finish_reason
    expect(streamed_usage is not None, "the stream's usage chunk", "usage", None)
    embedded = client.embeddings.create(model="all-MiniLM-L6-v2", input=["one sentence", "and another"])
    expect(len(embedded.data) == 2, "two vectors", 2, len(embedded.data))

    after = scrape()
    m = {"model_name": model}
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)

    prompt = plain.usage.prompt_tokens + streamed_usage.prompt_tokens
    generated = plain.usage.completion_tokens + streamed_usage.completion_tokens
    expect(delta("hearth_prompt_tokens_total", **m) == prompt, "prompt tokens = usage", prompt,
           delta("hearth_prompt_tokens_total", **m))
    expect(delta("hearth_generation_tokens_total", **m) == generated, "generated tokens = usage", generated,
           delta("hearth_generation_tokens_total", **m))
    expect(delta("hearth_prefix_cache_queries_total", **m) == prompt, "every prompt token looked up", prompt,
           delta("hearth_prefix_cache_queries_total", **m))
    ok(f"tokens: {prompt} prompt, {generated} generated, as usage said")

    for hist in ("hearth_time_to_first_token_seconds", "hearth_e2e_request_latency_seconds",
                 "hearth_request_queue_time_seconds"):
        expect(delta(hist + "_count", **m) == 2, f"{hist} counted both generations", 2, delta(hist + "_count", **m))
        expect(delta(hist + "_bucket", le="+Inf", **m) == 2, f"{hist}'s +Inf bucket", 2,
               delta(hist + "_bucket", le="+Inf", **m))
    gaps = generated - 2
    expect(delta("hearth_inter_token_latency_seconds_count", **m) == gaps, "every token after a first", gaps,
           delta("hearth_inter_token_latency_seconds_count", **m))
    reasons = {}
    for reason in (plain.choices[0].finish_reason, streamed_finish):
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        got = delta("hearth_requests_finished_total", finished_reason=reason, **m)
        expect(got == n, f"finished with `{reason}`", n, got)
    ok("histograms and finish reasons counted each generation")

    e = {"model_name": "all-MiniLM-L6-v2"}
    expect(delta("hearth_embedding_requests_total", **e) == 1, "one embeddings request", 1,
           delta("hearth_embedding_requests_total", **e))
    expect(delta("hearth_embedding_inputs_total", **e) == 2, "its two inputs", 2, delta("hearth_embedding_inputs_total", **e))
    route = lambda path: delta("hearth_http_requests_total", route=path, method="POST", status="200")
    expect(route("/v1/chat/completions") == 2, "two chat requests by route", 2, route("/v1/chat/completions"))
    expect(route("/v1/embeddings") == 1, "one embeddings request by route", 1, route("/v1/embeddings"))
    ok("embeddings and HTTP routes counted")

    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                  "hearth_requests_running", "hearth_requests_waiting", "hearth_kv_cache_usage_ratio"):
        expect((gauge, tuple(sorted(m.items()))) in after, f"gauge {gauge}", "present", "absent")
    ok("vLLM's gauge names exist for the model")


if __name__ == "__main__":
    H.run(main)
