// Seed example, copied VERBATIM (everything below the blank line after this header).
// Source: oobabooga/text-generation-webui (renamed oobabooga/textgen), docs/12 - OpenAI API.md
//   at commit 65cef2c73177fa674ebb8b70a2566e9bac7990a8 (file blob 866b6432d1a83ab144d1ce55459fce781d7f1916),
//   section "Third-party application setup".
// The hard-coded http://127.0.0.1:5000 is left as is: run it through tests/clients/run_seed.py,
// which rewrites the host:port (and applies the doc's own API-key edit) in a temporary copy.
// (the "official Node.js openai client" example; run_seed.py runs it with
// tests/clients/node/node_modules and OPENAI_API_KEY set)

import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.OPENAI_API_KEY,
  baseURL: "http://127.0.0.1:5000/v1",
});

const response = await client.chat.completions.create({
  model: "x",
  messages: [{ role: "user", content: "Hello!" }],
});
console.log(response.choices[0].message.content);
