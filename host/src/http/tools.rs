//! Tool calling in a chat request (SPEC §5): `tools`, `tool_choice` and `parallel_tool_calls`
//! checked; the format plugin chosen for the model (settings, else chat-template hints); the
//! conversation prepared for templates that know no tools (the format's instructions in the
//! system prompt, earlier calls and results written out as text); and the grammar that forces
//! a call for `tool_choice: "required"` or a named function.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::constraint::Constraint;
use crate::error::ApiError;
use crate::plugins::{Plugin, PluginRegistry, ToolSpec};
use crate::prompt::template::python_json;
use crate::serving::ServedModel;

/// What the request asks of tool calls (when tools are offered at all).
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call one of the tools.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// The checked tool fields of a request that offers tools.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    pub specs: Vec<ToolSpec>,
    /// The request's `tools` as given (templates that render tools read this shape).
    pub raw: Vec<Value>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` as given (OpenAI's default is true).
    pub parallel: Option<bool>,
}

impl ToolRequest {
    /// Whether an answer may hold more than one call (all but `parallel_tool_calls: false`).
    pub fn parses_several(&self) -> bool {
        self.parallel != Some(false)
    }

    /// Whether a forced answer may hold more than one call: only when the client asks for it
    /// with `parallel_tool_calls: true`. By default a forced answer is exactly one call (as in
    /// llama.cpp), which OpenAI's default allows too: small models, once allowed another call
    /// after a forced one, tend to repeat it until `max_tokens`.
    pub fn forces_several(&self) -> bool {
        self.parallel == Some(true)
    }

    /// The tools a forced call may name: all of them, or the named one.
    pub fn forced_tools(&self) -> Option<Vec<ToolSpec>> {
        match &self.choice {
            ToolChoice::Auto => None,
            ToolChoice::Required => Some(self.specs.clone()),
            ToolChoice::Named(name) => Some(self.specs.iter().filter(|t| &t.name == name).cloned().collect()),
        }
    }
}

/// Tool calling as prepared for one request: the parser plugin and what it parses for.
#[derive(Debug, Clone)]
pub struct ToolSetup {
    pub parser: Arc<Plugin>,
    pub request: ToolRequest,
}

/// Checks `tools`, `tool_choice` and `parallel_tool_calls`. `None`: no tools are offered (none
/// given, or `tool_choice: "none"`), so nothing is parsed.
pub fn parse_request(
    tools: Option<&[Value]>,
    tool_choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolRequest>, ApiError> {
    let raw = tools.unwrap_or_default();
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(raw.len());
    for (i, tool) in raw.iter().enumerate() {
        let spec = parse_tool(i, tool)?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(ApiError::invalid_param(
                format!("tools[{i}].function.name"),
                format!("two tools are named `{}`; tool names must be unique", spec.name),
            ));
        }
        specs.push(spec);
    }
    let choice = match tool_choice {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("`tool_choice` must be `none`, `auto`, `required` or a named function, got `{other}`"),
                ));
            }
        },
        Some(v) => {
            let name = match (v.get("type").and_then(Value::as_str), v.pointer("/function/name")) {
                (Some("function"), Some(Value::String(name))) => name.clone(),
                _ => {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        "a named `tool_choice` is `{\"type\": \"function\", \"function\": {\"name\": …}}`",
                    ));
                }
            };
            if !specs.iter().any(|s| s.name == name) {
                return Err(ApiError::invalid_param(
                    "tool_choice.function.name",
                    format!("`tool_choice` names `{name}`, which is not one of the request's `tools`"),
                ));
            }
            ToolChoice::Named(name)
        }
    };
    if specs.is_empty() {
        if choice == ToolChoice::Required {
            return Err(ApiError::invalid_param("tool_choice", "`tool_choice: \"required\"` needs `tools`"));
        }
        return Ok(None);
    }
    Ok(Some(ToolRequest { specs, raw: raw.to_vec(), choice, parallel }))
}

/// One entry of `tools`: `{"type": "function", "function": {name, description?, parameters?}}`.
fn parse_tool(i: usize, tool: &Value) -> Result<ToolSpec, ApiError> {
    let bad = |field: &str, message: String| ApiError::invalid_param(format!("tools[{i}]{field}"), message);
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => return Err(bad(".type", format!("tools of type `{other}` are not supported; use `function`"))),
        None => return Err(bad(".type", "each tool needs `\"type\": \"function\"`".into())),
    }
    let Some(function) = tool.get("function").and_then(Value::as_object) else {
        return Err(bad(".function", "each tool needs a `function` object".into()));
    };
    let name = match function.get("name") {
        Some(Value::String(name)) if valid_function_name(name) => name.clone(),
        Some(Value::String(name)) => {
            return Err(bad(
                ".function.name",
                format!("`{name}` is not a valid function name: use 1–64 of a–z, A–Z, 0–9, `_` and `-`"),
            ));
        }
        _ => return Err(bad(".function.name", "each function needs a `name` string".into())),
    };
    let description = match function.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err(bad(".function.description", "`description` must be a string".into())),
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => Value::Null,
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad(".function.parameters", "`parameters` must be a JSON Schema object".into())),
    };
    Ok(ToolSpec { name, description, parameters })
}

/// OpenAI's rule for function names.
fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The parser settings assign to `model` (the longest matching `tool_parsers` key, compared
/// case-insensitively as a substring of the model name).
pub fn preferred_parser<'a>(map: &'a BTreeMap<String, String>, model: &str) -> Option<&'a str> {
    let model = model.to_lowercase();
    map.iter()
        .filter(|(key, _)| model.contains(&key.to_lowercase()))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, parser)| parser.as_str())
}

/// Picks the format plugin for a request that offers tools.
pub fn choose_parser(
    registry: &PluginRegistry,
    preferred: Option<&str>,
    template_source: &str,
) -> Result<Arc<Plugin>, ApiError> {
    registry.tool_parser_for(preferred, template_source).ok_or_else(|| {
        ApiError::invalid_param(
            "tools",
            "tool calling needs a tool-call parser plugin and none is loaded: list one under `plugins:` in \
             settings.yaml (plugins/default.yaml lists the first-party parsers)",
        )
    })
}

/// Rewrites template messages for a template that does not render tools itself: the format's
/// instructions join the system prompt, earlier calls become the text the model would have
/// written, and tool results become user turns that name the function.
pub fn messages_for_plain_template(
    registry: &PluginRegistry,
    setup: &ToolSetup,
    mut messages: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let instructions = registry.tool_instructions(&setup.parser, &setup.request.specs)?;
    let mut names_by_id: Map<String, Value> = Map::new();
    for m in messages.iter_mut() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default().to_owned();
        if role == "assistant" {
            let calls = called_functions(m);
            if calls.is_empty() {
                continue;
            }
            for (id, name, _) in &calls {
                if let Some(id) = id {
                    names_by_id.insert(id.clone(), Value::String(name.clone()));
                }
            }
            let pairs: Vec<(String, String)> = calls.into_iter().map(|(_, name, args)| (name, args)).collect();
            let written = registry.render_tool_calls(&setup.parser, &pairs)?;
            let content = m["content"].as_str().unwrap_or_default().trim_end();
            m["content"] = Value::String(if content.is_empty() { written } else { format!("{content}\n{written}") });
        } else if role == "tool" {
            let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
            let name = names_by_id.get(id).and_then(Value::as_str).unwrap_or("the function").to_owned();
            let result = format!("Result of `{name}`:\n{}", m["content"].as_str().unwrap_or_default());
            m["role"] = Value::String("user".into());
            m["content"] = Value::String(result);
        }
    }
    let first_is_system = messages
        .first()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .is_some_and(|r| r == "system" || r == "developer");
    if first_is_system {
        let content = messages[0]["content"].as_str().unwrap_or_default().trim_end().to_owned();
        messages[0]["content"] =
            Value::String(if content.is_empty() { instructions } else { format!("{content}\n\n{instructions}") });
    } else {
        messages.insert(0, json!({ "role": "system", "content": instructions }));
    }
    Ok(messages)
}

/// `(id, name, arguments JSON)` of each call in an assistant message's `tool_calls`.
fn called_functions(message: &Value) -> Vec<(Option<String>, String, String)> {
    let Some(calls) = message.get("tool_calls").and_then(Value::as_array) else {
        return Vec::new();
    };
    calls
        .iter()
        .filter_map(|c| {
            let f = c.get("function")?;
            let name = f.get("name")?.as_str()?.to_owned();
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Object(_)) => python_json(v),
                _ => "{}".to_owned(),
            };
            Some((c.get("id").and_then(Value::as_str).map(str::to_owned), name, arguments))
        })
        .collect()
}

/// Checks an assistant message's `tool_calls` and gives them to templates the way Hugging Face
/// templates read them: `function.arguments` as an object (OpenAI clients send a JSON string).
pub fn template_tool_calls(index: usize, calls: &[Value]) -> Result<Value, ApiError> {
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let param = format!("messages[{index}].tool_calls[{j}]");
        let Some(name) = call.pointer("/function/name").and_then(Value::as_str) else {
            return Err(ApiError::invalid_param(
                format!("{param}.function.name"),
                "each tool call needs `function.name`",
            ));
        };
        let arguments = match call.pointer("/function/arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                ApiError::invalid_param(
                    format!("{param}.function.arguments"),
                    format!("`arguments` must be a JSON object in a string: {e}"),
                )
            })?,
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(ApiError::invalid_param(
                    format!("{param}.function.arguments"),
                    "`arguments` must be a JSON object in a string",
                ));
            }
        };
        let mut entry = call.clone();
        entry["type"] = Value::String("function".into());
        entry["function"] = json!({ "name": name, "arguments": arguments });
        out.push(entry);
    }
    Ok(Value::Array(out))
}

/// The constraint that forces the request's call (`required` or named), compiled for the model.
pub fn forcing_constraint(
    registry: &PluginRegistry,
    served: &ServedModel,
    setup: &ToolSetup,
) -> Result<Option<Constraint>, ApiError> {
    let Some(tools) = setup.request.forced_tools() else {
        return Ok(None);
    };
    let grammar = registry.tool_call_grammar(&setup.parser, &tools, setup.request.forces_several())?;
    let constraint = served.grammar()?.compile(&grammar).map_err(|e| {
        ApiError::invalid_param(
            "tools",
            format!("cannot force a call in the `{}` tool format with these tools: {e}", setup.parser.name),
        )
    })?;
    Ok(Some(constraint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
    }

    fn param_of(e: ApiError) -> String {
        e.to_json()["error"]["param"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn no_tools_or_tool_choice_none_offers_nothing() {
        assert!(parse_request(None, None, None).unwrap().is_none());
        assert!(parse_request(Some(&[tool("f")]), Some(&json!("none")), None).unwrap().is_none());
        assert!(parse_request(Some(&[]), Some(&json!("auto")), None).unwrap().is_none());
    }

    #[test]
    fn tool_choice_forms_are_read() {
        let tools = [tool("f"), tool("g")];
        let r = parse_request(Some(&tools), None, Some(false)).unwrap().unwrap();
        assert_eq!((r.choice.clone(), r.parses_several(), r.forces_several()), (ToolChoice::Auto, false, false));
        let r = parse_request(Some(&tools), None, None).unwrap().unwrap();
        assert_eq!((r.parses_several(), r.forces_several()), (true, false));
        let r = parse_request(Some(&tools), None, Some(true)).unwrap().unwrap();
        assert_eq!((r.parses_several(), r.forces_several()), (true, true));
        let r = parse_request(Some(&tools), Some(&json!("required")), None).unwrap().unwrap();
        assert_eq!(r.forced_tools().unwrap().len(), 2);
        let named = json!({"type": "function", "function": {"name": "g"}});
        let r = parse_request(Some(&tools), Some(&named), None).unwrap().unwrap();
        assert_eq!(r.choice, ToolChoice::Named("g".into()));
        assert_eq!(r.forced_tools().unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["g"]);
    }

    #[test]
    fn bad_tool_fields_are_400s_naming_the_field() {
        let cases = [
            (vec![json!({"type": "web_search"})], None, "tools[0].type"),
            (vec![json!({"type": "function"})], None, "tools[0].function"),
            (vec![json!({"type": "function", "function": {"name": "a b"}})], None, "tools[0].function.name"),
            (vec![tool("f"), json!({"type": "function", "function": {"name": "f"}})], None, "tools[1].function.name"),
            (
                vec![json!({"type": "function", "function": {"name": "f", "parameters": []}})],
                None,
                "tools[0].function.parameters",
            ),
            (vec![tool("f")], Some(json!("sometimes")), "tool_choice"),
            (
                vec![tool("f")],
                Some(json!({"type": "function", "function": {"name": "g"}})),
                "tool_choice.function.name",
            ),
            (vec![], Some(json!("required")), "tool_choice"),
        ];
        for (tools, choice, param) in cases {
            let err = parse_request(Some(&tools), choice.as_ref(), None).unwrap_err();
            assert_eq!(param_of(err), param);
        }
    }

    #[test]
    fn settings_pick_the_longest_matching_key() {
        let map: BTreeMap<String, String> =
            [("qwen".into(), "hermes".into()), ("qwen2.5-coder".into(), "generic".into())].into();
        assert_eq!(preferred_parser(&map, "Qwen2.5-Coder-7B.gguf"), Some("generic"));
        assert_eq!(preferred_parser(&map, "qwen3-0.6b"), Some("hermes"));
        assert_eq!(preferred_parser(&map, "SmolLM2"), None);
    }

    #[test]
    fn earlier_calls_reach_templates_with_object_arguments() {
        let calls = [json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}})];
        let v = template_tool_calls(2, &calls).unwrap();
        assert_eq!(v[0]["function"]["arguments"], json!({"a": 1}));
        let bad = [json!({"function": {"name": "f", "arguments": "{oops"}})];
        assert_eq!(param_of(template_tool_calls(2, &bad).unwrap_err()), "messages[2].tool_calls[0].function.arguments");
    }
}
