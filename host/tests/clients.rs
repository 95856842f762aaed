//! End-to-end with real clients: openai-python (sync and streaming chat, completions, errors),
//! openai-node, langchain-openai, `requests`, and the seed's own curl and `requests` +
//! `sseclient-py` examples, against the real `hearth` binary serving SmolLM2. The client
//! scripts live in `tests/clients/`; each validates every body and chunk against OpenAI's
//! OpenAPI document.

mod common;

use common::{Server, repo_root, run_client, run_python};

fn server() -> &'static Server {
    Server::shared()
}

#[test]
fn openai_python_chat_sync_and_streaming() {
    run_python("openai_chat.py", server());
}

#[test]
fn openai_python_completions() {
    run_python("openai_completions.py", server());
}

#[test]
fn openai_python_logprobs() {
    run_python("openai_logprobs.py", server());
}

#[test]
fn openai_python_structured_outputs() {
    run_python("openai_structured.py", server());
}

#[test]
fn openai_python_errors() {
    run_python("openai_errors.py", server());
}

#[test]
fn langchain_openai_chat_sends_max_completion_tokens() {
    run_python("langchain_chat.py", server());
}

#[test]
fn plain_http_basics() {
    run_python("http_basics.py", server());
}

#[test]
fn openai_node_chat() {
    let script = repo_root().join("tests/clients/node/chat.mjs");
    run_client(std::path::Path::new("node"), &[script.to_str().unwrap()], server(), &[]);
}

#[test]
fn the_seeds_own_examples() {
    run_python("run_seed.py", server());
}
