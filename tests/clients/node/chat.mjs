#!/usr/bin/env node
// openai-node chat completions against Hearth: a plain one, then the same streamed.
//
//   HEARTH_BASE_URL=http://127.0.0.1:5000 node tests/clients/node/chat.mjs
//
// Env: HEARTH_BASE_URL (server root, no /v1), HEARTH_API_KEY (default "sk-anything"),
// HEARTH_MODEL (default: first id of GET /v1/models), HEARTH_TIMEOUT (seconds, default 300).
// Same assertions as ../openai_chat.py, with a minimal shape check instead of OpenAPI validation
// (openai-node hands over each chunk's JSON as parsed, so absent and null fields are distinct).
import OpenAI from "openai";

const QUESTION = "What is the capital of France?";
const MAX_TOKENS = 32;

class Failure extends Error {}

const show = (x) => {
  const s = JSON.stringify(x);
  return s === undefined ? String(x) : s.length > 600 ? s.slice(0, 600) + "…" : s;
};
function expect(cond, what, expected, got) {
  if (!cond) throw new Failure(`${what}: expected ${expected}, got ${show(got)}`);
}
const ok = (msg) => console.log(`ok: ${msg}`);

function checkUsage(usage, what, finish) {
  expect(usage && typeof usage === "object", `${what} usage`, "an object", usage);
  const { prompt_tokens: p, completion_tokens: c, total_tokens: t } = usage;
  expect(Number.isInteger(p) && p > 0, `${what} usage.prompt_tokens`, "an integer > 0", p);
  expect(Number.isInteger(c) && c > 0, `${what} usage.completion_tokens`, "an integer > 0", c);
  expect(t === p + c, `${what} usage.total_tokens`, `prompt + completion = ${p} + ${c}`, t);
  expect(c <= MAX_TOKENS, `${what} usage.completion_tokens`, `<= ${MAX_TOKENS}`, c);
  if (finish === "length") {
    expect(c === MAX_TOKENS, `${what} usage.completion_tokens with finish_reason length`,
      MAX_TOKENS, c);
  }
}

function shape(obj, what, object) {
  for (const k of ["id", "object", "created", "model", "choices"]) {
    expect(k in obj, `${what}`, `a '${k}' field`, obj);
  }
  expect(obj.object === object, `${what} object`, `'${object}'`, obj.object);
  expect(typeof obj.id === "string" && obj.id.startsWith("chatcmpl-"), `${what} id`,
    "'chatcmpl-…'", obj.id);
  expect(Number.isInteger(obj.created), `${what} created`, "an integer", obj.created);
  expect(typeof obj.model === "string", `${what} model`, "a string", obj.model);
  expect(Array.isArray(obj.choices), `${what} choices`, "an array", obj.choices);
}

async function main() {
  const base = (process.env.HEARTH_BASE_URL || "").replace(/\/+$/, "");
  if (!base) throw new Failure("HEARTH_BASE_URL is not set (e.g. http://127.0.0.1:5000)");
  const client = new OpenAI({
    baseURL: `${base}/v1`,
    apiKey: process.env.HEARTH_API_KEY || "sk-anything",
    maxRetries: 0,
    timeout: Number(process.env.HEARTH_TIMEOUT || 300) * 1000,
  });
  let model = process.env.HEARTH_MODEL;
  if (!model) {
    const page = await client.models.list();
    expect(page.data.length > 0, "GET /v1/models data", "at least one model", page.data);
    model = page.data[0].id;
  }
  const messages = [{ role: "user", content: QUESTION }];

  // ---- non-streamed, twice: the second is the reference (later requests then find the prompt
  // in the same, cached, state; a prompt cache may change a tiny model's greedy near-ties)
  const cold = await client.chat.completions.create({
    model, messages, max_tokens: MAX_TOKENS, temperature: 0,
  });
  const resp = await client.chat.completions.create({
    model, messages, max_tokens: MAX_TOKENS, temperature: 0,
  });
  shape(resp, "chat completion", "chat.completion");
  expect(resp.choices.length === 1, "number of choices", 1, resp.choices.length);
  const choice = resp.choices[0];
  expect(choice.index === 0, "choices[0].index", 0, choice.index);
  expect(choice.message.role === "assistant", "message.role", "'assistant'", choice.message.role);
  const content = choice.message.content;
  expect(typeof content === "string" && content.trim() !== "", "message.content",
    "non-empty text", content);
  expect(!content.includes("\ufffd"), "message.content", "no U+FFFD", content);
  const finish = choice.finish_reason;
  expect(["stop", "length"].includes(finish), "finish_reason", "'stop' or 'length'", finish);
  checkUsage(resp.usage, "chat", finish);
  if (cold.choices[0]?.message?.content !== content) {
    console.log(`note: the first (cold) greedy request gave ${show(cold.choices[0]?.message?.content)}` +
      `, the repeated one ${show(content)} (prompt-cache numerics); later checks compare warm requests`);
  }
  ok(`chat completion: ${show(content)} (finish_reason=${finish}, usage=${show(resp.usage)})`);

  // ---- streamed with include_usage, read with for await
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: MAX_TOKENS, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  expect(chunks.length >= 3, "number of stream chunks", ">= 3", chunks.length);
  chunks.forEach((c, i) => {
    shape(c, `chunk #${i}`, "chat.completion.chunk");
    expect(c.id === chunks[0].id, `chunk #${i} id`, chunks[0].id, c.id);
  });
  const first = chunks[0];
  expect(first.choices.length === 1 && first.choices[0].delta.role === "assistant",
    "first chunk", "choices[0].delta.role == 'assistant'", first);
  const last = chunks.length - 1;
  const usageIdx = chunks.flatMap((c, i) => (c.choices.length === 0 ? [i] : []));
  expect(show(usageIdx) === show([last]), "chunks with choices == []",
    `exactly one, the last one (#${last})`, usageIdx);
  const finishIdx = chunks.flatMap((c, i) =>
    c.choices.length && c.choices[0].finish_reason != null ? [i] : []);
  expect(show(finishIdx) === show([last - 1]), "chunks with a finish_reason",
    `exactly one, right before the usage chunk (#${last - 1})`, finishIdx);
  const sFinish = chunks[last - 1].choices[0].finish_reason;
  expect(["stop", "length"].includes(sFinish), "stream finish_reason", "'stop' or 'length'",
    sFinish);
  chunks.slice(0, last).forEach((c, i) => {
    expect("usage" in c && c.usage === null, `chunk #${i} usage`,
      "present and null when include_usage is set", c.usage);
    expect(c.choices.length === 1 && c.choices[0].index === 0, `chunk #${i} choices`,
      "one choice with index 0", c.choices);
  });
  checkUsage(chunks[last].usage, "stream", sFinish);
  const text = chunks.slice(0, last).map((c) => c.choices[0].delta.content ?? "").join("");
  expect(text.trim() !== "", "concatenated stream content", "non-empty text", text);
  expect(!text.includes("\ufffd"), "stream content", "no U+FFFD", text);
  expect(text === content, "streamed text at temperature 0",
    `the same greedy text as the non-streamed request (${show(content)})`, text);
  expect(sFinish === finish, "stream finish_reason", finish, sFinish);
  ok(`stream with include_usage: ${chunks.length} chunks, ${show(text)}, ` +
    `usage ${show(chunks[last].usage)}`);
}

try {
  await main();
  console.log("PASS node/chat.mjs");
} catch (e) {
  if (e instanceof Failure) {
    console.error(`FAIL node/chat.mjs: ${e.message}`);
  } else if (e instanceof OpenAI.APIConnectionError) {
    console.error(`FAIL node/chat.mjs: cannot reach ${process.env.HEARTH_BASE_URL}: ${e.message}` +
      ` (cause: ${e.cause?.message ?? e.cause})`);
  } else if (e instanceof OpenAI.APIError) {
    console.error(`FAIL node/chat.mjs: unexpected HTTP ${e.status}: ${show(e.error ?? e.message)}`);
  } else {
    console.error(`FAIL node/chat.mjs: unexpected ${e?.stack ?? e}`);
  }
  process.exit(1);
}
