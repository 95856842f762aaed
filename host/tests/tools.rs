//! Tool calling end to end (SPEC §5, §6, §10): the real `hearth` binary with SmolLM2 and the
//! tool-call parser plugins built by `scripts/build-plugins` — the first-party ones as
//! `plugins/default.yaml` lists them, a third-party format from `tests/plugins/angle-tools`, and
//! a hostile parser — driven by openai-python and by raw HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{Server, post_json, post_stream, repo_root, run_python, sse_payloads};
use serde_json::{Value, json};

/// The bare binary with SmolLM2: no settings file, no `--settings` — the first-party plugins
/// built into it (`plugins/default.yaml`) load by themselves.
fn default_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::smollm2(&[]))
}

fn component(dir: &str, file: &str) -> PathBuf {
    let path = repo_root().join(dir).join("wasm").join(file);
    assert!(path.exists(), "{} is missing: run scripts/build-plugins (scripts/test does)", path.display());
    path
}

/// A server whose settings list exactly `plugins` (YAML list items).
fn server_with(name: &str, plugins: &str) -> Server {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, format!("plugin_cache_dir: {}\nplugins:\n{plugins}", dir.join("cache").display()))
        .unwrap();
    Server::smollm2(&["--settings", settings.to_str().unwrap()])
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                       "required": ["city"], "additionalProperties": false}}})
}

fn tool_request(choice: Value, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": "What is the weather like in Paris?"}],
        "tools": [weather_tool()],
        "tool_choice": choice,
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn first_call(body: &Value) -> (String, Value) {
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    let name = call["function"]["name"].as_str().unwrap_or_else(|| panic!("no tool call in {body}")).to_owned();
    let args = call["function"]["arguments"].as_str().expect("arguments are a string");
    (name, serde_json::from_str(args).unwrap_or_else(|e| panic!("arguments {args:?} are not JSON: {e}")))
}

/// A conversation with one earlier call to `get_weather` and its `result`.
fn oslo_history(result: &str) -> Value {
    json!({
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": result},
        ],
        "tools": [weather_tool()],
    })
}

fn assert_plain_chat_works(server: &Server) {
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    let (status, answer) = post_json(server, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn openai_python_tool_calls_required_named_none_and_auto() {
    run_python("openai_tools.py", default_server());
}

#[test]
fn a_third_party_tool_format_works_by_one_settings_line() {
    let wasm = component("tests/plugins", "angle_tools.wasm");
    let server = server_with("angle", &format!("  - {{name: angle-tools, path: {}}}\n", wasm.display()));
    let (status, prompt) = post_json(&server, "/v1/internal/chat-prompt", &tool_request(json!("auto"), 8));
    assert_eq!(status, 200, "{prompt}");
    assert!(prompt["prompt"].as_str().unwrap().contains("<<name:{json arguments}>>"), "{prompt}");

    let (status, body) = post_json(&server, "/v1/chat/completions", &tool_request(json!("required"), 48));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let (name, args) = first_call(&body);
    assert_eq!(name, "get_weather");
    assert!(args["city"].is_string(), "{args}");
}

#[test]
fn streamed_tool_call_deltas_follow_the_openai_protocol() {
    let mut req = tool_request(json!({"type": "function", "function": {"name": "get_weather"}}), 48);
    req["stream"] = json!(true);
    let (status, text) = post_stream(default_server(), "/v1/chat/completions", &req);
    assert_eq!(status, 200, "{text}");
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let deltas: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(deltas.len() > 2, "arguments arrive in fragments: {deltas:?}");
    let first = deltas[0];
    assert_eq!(first["index"], 0);
    assert!(first["id"].as_str().unwrap().starts_with("call_"), "{first}");
    assert_eq!((&first["type"], &first["function"]["name"]), (&json!("function"), &json!("get_weather")));
    let mut arguments = String::new();
    for d in &deltas {
        arguments.push_str(d["function"]["arguments"].as_str().unwrap_or_default());
    }
    for d in &deltas[1..] {
        assert!(d.get("id").is_none() && d["function"].get("name").is_none(), "later delta {d}");
    }
    let args: Value = serde_json::from_str(&arguments).unwrap_or_else(|e| panic!("{arguments:?}: {e}"));
    assert!(args["city"].is_string(), "{args}");
    let finish = chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(!content.contains("{\"name\""), "call text leaked into content: {content:?}");
}

#[test]
fn a_call_cut_off_by_max_tokens_still_has_json_arguments() {
    let (status, body) = post_json(default_server(), "/v1/chat/completions", &tool_request(json!("required"), 12));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    let (name, args) = first_call(&body);
    assert_eq!(name, "get_weather");
    assert!(args.is_object());
}

#[test]
fn tool_choice_none_never_yields_tool_calls_and_model_text_is_never_a_500() {
    let server = default_server();
    let (status, body) = post_json(server, "/v1/chat/completions", &tool_request(json!("none"), 24));
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none(), "{body}");
    // Whatever the model writes when it may call (prose, half a call, a call to a tool that
    // was not declared), the answer is well-formed: content, or calls with JSON arguments.
    for question in ["Call get_time for Tokyo.", "Write {\"name\": and stop.", "What is 2+2?"] {
        let mut req = tool_request(json!("auto"), 40);
        req["messages"][0]["content"] = json!(question);
        let (status, body) = post_json(server, "/v1/chat/completions", &req);
        assert_eq!(status, 200, "{question}: {body}");
        let message = &body["choices"][0]["message"];
        match message["tool_calls"].as_array() {
            Some(calls) => {
                assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
                for c in calls {
                    assert_eq!(c["function"]["name"], "get_weather", "{body}");
                    assert!(serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()).is_ok());
                }
            }
            None => assert!(message["content"].is_string(), "{body}"),
        }
    }
}

#[test]
fn a_template_without_tools_gets_the_format_instructions_and_the_history() {
    let req = oslo_history("-3 °C, snow");
    let (status, body) = post_json(default_server(), "/v1/internal/chat-prompt", &req);
    assert_eq!(status, 200, "{body}");
    let prompt = body["prompt"].as_str().unwrap();
    assert!(prompt.contains("\"name\": \"get_weather\"") && prompt.contains("To call a function"), "{prompt}");
    assert!(prompt.contains("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"), "{prompt}");
    assert!(prompt.contains("Result of `get_weather`:\n-3 °C, snow"), "{prompt}");
}

#[test]
fn bad_tool_requests_are_400s_naming_the_field() {
    let server = default_server();
    let cases = [
        (tool_request(json!({"type": "function", "function": {"name": "get_time"}}), 8), "tool_choice.function.name"),
        (json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}), "tools[0].function"),
        (json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}), "tool_choice"),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (req, param) in cases {
        let (status, body) = post_json(server, "/v1/chat/completions", &req);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
}

#[test]
fn tools_without_a_parser_plugin_are_a_400_not_ignored() {
    let server = Server::smollm2(&["--no-default-plugins"]);
    let (status, body) = post_json(&server, "/v1/chat/completions", &tool_request(json!("auto"), 8));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tools");
    assert!(body["error"]["message"].as_str().unwrap().contains("tool-call parser plugin"), "{body}");
}

#[test]
fn a_misbehaving_tool_parser_fails_only_its_own_request() {
    let wasm = component("tests/plugins", "hostile_tools.wasm");
    for (mode, on_error, status, code) in [
        ("undeclared", "fail", 502, "plugin_bad_output"),
        ("bad-json", "fail", 502, "plugin_bad_output"),
        ("out-of-order", "fail", 502, "plugin_bad_output"),
        ("panic", "fail", 502, "plugin_crashed"),
        ("panic", "skip", 200, ""),
    ] {
        let line = format!(
            "  - {{name: hostile-tools, path: {}, on_error: {on_error}, config: {{mode: {mode}}}}}\n",
            wasm.display()
        );
        let server = server_with(&format!("hostile-{mode}-{on_error}"), &line);
        let (got, body) = post_json(&server, "/v1/chat/completions", &tool_request(json!("auto"), 8));
        assert_eq!(got, status, "{mode}/{on_error}: {body}");
        if status == 200 {
            assert!(body["choices"][0]["message"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{body}");
            assert!(body["choices"][0]["message"].get("tool_calls").is_none(), "{body}");
        } else {
            assert_eq!(body["error"]["code"], code, "{mode}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("hostile-tools"), "{body}");
        }
        // Streamed, the failure is the last event before [DONE].
        let mut req = tool_request(json!("auto"), 8);
        req["stream"] = json!(true);
        let (got, text) = post_stream(&server, "/v1/chat/completions", &req);
        assert_eq!(got, 200, "{text}");
        let payloads = sse_payloads(&text);
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{text}");
        let errored = payloads.iter().any(|p| p.contains("\"error\""));
        assert_eq!(errored, status != 200, "{mode}/{on_error}: {text}");
        assert_plain_chat_works(&server);
        assert!(server.exit_status().is_none(), "the server exited");
    }
}

/// A Qwen-style template that renders `tools` itself (as Hugging Face templates do).
const TOOL_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
For each function call, return a json object within <tool_call></tool_call> XML tags.<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

#[test]
fn a_template_that_renders_tools_gets_them_with_object_arguments() {
    let mut req = oslo_history("-3 °C");
    req["instruction_template_str"] = json!(TOOL_TEMPLATE);
    let (status, body) = post_json(default_server(), "/v1/internal/chat-prompt", &req);
    assert_eq!(status, 200, "{body}");
    let prompt = body["prompt"].as_str().unwrap();
    assert!(prompt.contains("<tools>{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""), "{prompt}");
    // Arguments reach the template as an object, so `tojson` does not quote them twice.
    assert!(prompt.contains("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"), "{prompt}");
    assert!(prompt.contains("<tool_response>\n-3 °C\n</tool_response>"), "{prompt}");
    assert!(!prompt.contains("To call a function"), "the fallback instructions were added too: {prompt}");

    let mut req = tool_request(json!("required"), 48);
    req["instruction_template_str"] = json!(TOOL_TEMPLATE);
    let (status, body) = post_json(default_server(), "/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    assert_eq!(first_call(&body).0, "get_weather");
}

/// The bare binary moderates too: with its embedding model, by embedding similarity; without
/// one (a model name that is not installed), the built-in embedding moderation steps aside
/// (`on_error: skip`) and keyword moderation answers.
#[test]
fn the_bare_binary_moderates_with_or_without_an_embedding_model() {
    let input = json!({"input": "I will kill you"});
    let (status, body) = post_json(default_server(), "/v1/moderations", &input);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "embedding-moderation", "{body}");
    assert!(body["results"][0]["category_scores"]["violence"].is_number(), "{body}");

    let model = common::smollm2();
    let args = ["--model", model.to_str().unwrap(), "--device", "flex", "--ctx-size", "2048"];
    let server = Server::start_with_env(&args, &[("OPENEDAI_EMBEDDING_MODEL", "no-such-embedding-model")]);
    let (status, body) = post_json(&server, "/v1/moderations", &input);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "keyword-moderation", "{body}");
    assert_eq!(body["results"][0]["flagged"], true, "{body}");
}

/// A settings file that lists plugins gets those and no built-in ones: here keyword moderation
/// alone, so a tool request finds no parser.
#[test]
fn a_listed_plugin_replaces_the_built_in_ones() {
    let server = server_with("listed", "  - {name: words, path: \"builtin:keyword_moderation.wasm\"}\n");
    assert_eq!(server.log().matches("plugin loaded").count(), 1, "{}", server.log());
    let (status, body) = post_json(&server, "/v1/moderations", &json!({"input": "I will kill you"}));
    assert_eq!((status, body["model"].as_str()), (200, Some("words")), "{body}");
    let (status, body) = post_json(&server, "/v1/chat/completions", &tool_request(json!("auto"), 8));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("tool-call parser plugin"), "{body}");
}
