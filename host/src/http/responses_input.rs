//! A Responses request read into what the chat path takes: input items checked and given ids
//! (as `input_items` lists them), a conversation's items turned into chat messages, function
//! tools, `tool_choice` and `text.format` into their chat forms.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// An id in OpenAI's style: `prefix_` and 32 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message)
}

/// A string field of an item, required.
fn text_field<'a>(item: &'a Value, field: &str, at: &str) -> Result<&'a str, ApiError> {
    item.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.{field}"), format!("`{at}.{field}` must be a string")))
}

/// This turn's `input`, as items with ids: a string is one user message.
pub fn input_items(input: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    match input {
        None | Some(Value::Null) => Err(bad("input", "`input` is required: a string or a list of input items")),
        Some(Value::String(text)) => Ok(vec![message_item("user", vec![json!({"type": "input_text", "text": text})])]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("input", "`input` must hold at least one item")),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(i, item)| input_item(i, item)).collect(),
        Some(_) => Err(bad("input", "`input` must be a string or a list of input items")),
    }
}

fn message_item(role: &str, content: Vec<Value>) -> Value {
    json!({"id": new_id("msg"), "type": "message", "role": role, "content": content, "status": "completed"})
}

fn input_item(i: usize, item: &Value) -> Result<Value, ApiError> {
    let at = format!("input[{i}]");
    if !item.is_object() {
        return Err(bad(&at, format!("`{at}` must be an object (an input item)")));
    }
    let kind = match item.get("type") {
        None | Some(Value::Null) => "message",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(bad(format!("{at}.type"), format!("`{at}.type` must be a string"))),
    };
    let given_id = item.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
    match kind {
        "message" => {
            let role = text_field(item, "role", &at)?;
            if !matches!(role, "user" | "system" | "developer" | "assistant") {
                return Err(bad(
                    format!("{at}.role"),
                    format!("`{at}.role` must be `user`, `system`, `developer` or `assistant`, got `{role}`"),
                ));
            }
            let content = message_content(role, item.get("content"), &at)?;
            let mut out = message_item(role, content);
            if let Some(id) = given_id {
                out["id"] = json!(id);
            }
            Ok(out)
        }
        "function_call" => {
            let call_id = text_field(item, "call_id", &at)?;
            let name = text_field(item, "name", &at)?;
            let arguments = text_field(item, "arguments", &at)?;
            Ok(json!({"id": given_id.map_or_else(|| new_id("fc"), str::to_owned), "type": "function_call",
                "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"}))
        }
        "function_call_output" => {
            let call_id = text_field(item, "call_id", &at)?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts_text(parts, &format!("{at}.output"), false)?,
                _ => {
                    return Err(bad(
                        format!("{at}.output"),
                        format!("`{at}.output` must be a string or a list of `input_text` parts"),
                    ));
                }
            };
            Ok(json!({"id": given_id.map_or_else(|| new_id("fco"), str::to_owned), "type": "function_call_output",
                "call_id": call_id, "output": output, "status": "completed"}))
        }
        "reasoning" => {
            let text = reasoning_text(item);
            Ok(json!({"id": given_id.map_or_else(|| new_id("rs"), str::to_owned), "type": "reasoning",
                "summary": [], "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}))
        }
        "item_reference" => Err(bad(
            format!("{at}.type"),
            "item references are not supported: send the item itself, or continue with `previous_response_id`",
        )),
        other => Err(bad(
            format!("{at}.type"),
            format!("`{other}` input items are not supported: Hearth runs function tools only"),
        )),
    }
}

/// A message's content as parts: `input_text` for the caller's roles, `output_text` for the
/// assistant's.
fn message_content(role: &str, content: Option<&Value>, at: &str) -> Result<Vec<Value>, ApiError> {
    // A caller's message with images keeps its parts in order, each image an `input_image`.
    if role != "assistant"
        && let Some(Value::Array(parts)) = content
        && parts.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("input_image"))
    {
        return parts.iter().enumerate().map(|(j, part)| input_part(part, &format!("{at}.content[{j}]"))).collect();
    }
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts_text(parts, &format!("{at}.content"), role == "assistant")?,
        _ => return Err(bad(format!("{at}.content"), format!("`{at}.content` must be a string or a list of parts"))),
    };
    Ok(vec![if role == "assistant" {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    } else {
        json!({"type": "input_text", "text": text})
    }])
}

/// One part of a caller's message with images: its text, or its image by URL (`data:` or
/// http(s), as chat's `image_url` takes them).
fn input_part(part: &Value, here: &str) -> Result<Value, ApiError> {
    match part.get("type").and_then(Value::as_str).unwrap_or_default() {
        "input_text" | "text" => Ok(json!({"type": "input_text", "text": text_field(part, "text", here)?})),
        "input_image" => {
            let url = part.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    format!("{here}.image_url"),
                    "an `input_image` needs its `image_url` (uploaded files are not stored here)",
                )
            })?;
            let detail = part.get("detail").and_then(Value::as_str).unwrap_or("auto");
            Ok(json!({"type": "input_image", "image_url": url, "detail": detail}))
        }
        "input_file" | "input_audio" => Err(bad(
            here.to_owned(),
            "file and audio inputs need a model that reads them, which this server does not serve yet",
        )),
        other => Err(bad(format!("{here}.type"), format!("`{other}` parts are not allowed here"))),
    }
}

/// The text of content parts, joined by newlines (as chat joins its text parts).
fn parts_text(parts: &[Value], at: &str, assistant: bool) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let here = format!("{at}[{j}]");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        let field = match kind {
            "input_text" | "text" => "text",
            "output_text" if assistant => "text",
            "refusal" if assistant => "refusal",
            "input_file" | "input_audio" => {
                return Err(bad(
                    here,
                    "file and audio inputs need a model that reads them, which this server does not serve yet",
                ));
            }
            "" => return Err(bad(format!("{here}.type"), format!("`{here}.type` must be a string"))),
            other => return Err(bad(format!("{here}.type"), format!("`{other}` parts are not allowed here"))),
        };
        texts.push(text_field(part, field, &here)?.to_owned());
    }
    Ok(texts.join("\n"))
}

/// A reasoning item's text: its `content` texts, else its summary's.
fn reasoning_text(item: &Value) -> String {
    let texts = |key: &str| {
        item.get(key)
            .and_then(Value::as_array)
            .map(|parts| {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default()
    };
    let content = texts("content");
    if content.is_empty() { texts("summary") } else { content }
}

/// A stored message item's content as chat takes it: its text, or with images chat's parts.
fn chat_content(item: &Value) -> Value {
    let parts = item.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !parts.iter().any(|p| p["type"] == "input_image") {
        return json!(stored_text(item));
    }
    let chat: Vec<Value> = parts
        .iter()
        .map(|p| match p["type"].as_str() {
            Some("input_image") => json!({"type": "image_url", "image_url": {"url": p["image_url"]}}),
            _ => json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or_default()}),
        })
        .collect();
    Value::Array(chat)
}

/// The text of a stored message item's parts.
fn stored_text(item: &Value) -> String {
    item.get("content")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A conversation's items (checked by [`input_items`], or written by Hearth) as chat
/// messages: consecutive calls join one assistant message, as chat represents parallel calls,
/// and reasoning goes to the assistant message after it.
pub fn chat_messages(items: &[Value]) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::with_capacity(items.len());
    let mut reasoning: Option<String> = None;
    let last_is_assistant = |m: &[Value]| m.last().is_some_and(|m| m["role"] == "assistant");
    for item in items {
        match item.get("type").and_then(Value::as_str).unwrap_or("message") {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let mut message = json!({"role": role, "content": chat_content(item)});
                if role == "assistant"
                    && let Some(r) = reasoning.take()
                {
                    message["reasoning_content"] = json!(r);
                }
                messages.push(message);
            }
            "reasoning" => reasoning = Some(reasoning_text(item)).filter(|r| !r.is_empty()),
            "function_call" => {
                let call = json!({"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}});
                if !last_is_assistant(&messages) || reasoning.is_some() {
                    let mut message = json!({"role": "assistant", "content": "", "tool_calls": []});
                    if let Some(r) = reasoning.take() {
                        message["reasoning_content"] = json!(r);
                    }
                    messages.push(message);
                }
                if let Some(last) = messages.last_mut() {
                    match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    }
                }
            }
            "function_call_output" => {
                messages.push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}));
            }
            _ => {}
        }
    }
    messages
}

/// The request's tools: each in chat's form, and as the response echoes it.
pub struct Tools {
    pub chat: Vec<Value>,
    pub echo: Vec<Value>,
}

pub fn tools(given: Option<&[Value]>) -> Result<Tools, ApiError> {
    let mut out = Tools { chat: Vec::new(), echo: Vec::new() };
    for (i, tool) in given.unwrap_or_default().iter().enumerate() {
        let at = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(
                    format!("{at}.type"),
                    format!("`{other}` tools are not supported: Hearth offers function tools only"),
                ));
            }
            None => return Err(bad(format!("{at}.type"), format!("`{at}.type` must be `function`"))),
        }
        let name = text_field(tool, "name", &at)?;
        let parameters = match tool.get("parameters") {
            None | Some(Value::Null) => Value::Null,
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(bad(format!("{at}.parameters"), format!("`{at}.parameters` must be a JSON schema object")));
            }
        };
        let description = tool.get("description").and_then(Value::as_str);
        let mut function = json!({"name": name});
        if let Some(d) = description {
            function["description"] = json!(d);
        }
        if !parameters.is_null() {
            function["parameters"] = parameters.clone();
        }
        out.chat.push(json!({"type": "function", "function": function}));
        let mut echo = json!({"type": "function", "name": name, "parameters": parameters,
            "strict": tool.get("strict").and_then(Value::as_bool)});
        if let Some(d) = description {
            echo["description"] = json!(d);
        }
        out.echo.push(echo);
    }
    Ok(out)
}

/// `tool_choice` in chat's form (`None`: chat's default), and the tools it leaves offered.
pub fn tool_choice(given: Option<&Value>, tools: &mut Tools) -> Result<Option<Value>, ApiError> {
    let named = |name: &str| json!({"type": "function", "function": {"name": name}});
    match given {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(Some(json!(s))),
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some("function") => Ok(Some(named(text_field(v, "name", "tool_choice")?))),
            Some("allowed_tools") => {
                let mode = v.get("mode").and_then(Value::as_str).unwrap_or("auto");
                if !matches!(mode, "auto" | "required") {
                    return Err(bad("tool_choice.mode", "`tool_choice.mode` must be `auto` or `required`"));
                }
                let allowed = v
                    .get("tools")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("tool_choice.tools", "`tool_choice.tools` must list the allowed tools"))?;
                let names: Vec<&str> = allowed.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect();
                // Only the allowed ones are offered; the response still echoes every tool.
                tools.chat.retain(|t| t["function"]["name"].as_str().is_some_and(|n| names.contains(&n)));
                Ok(Some(json!(mode)))
            }
            _ => Err(bad(
                "tool_choice",
                "`tool_choice` must be `none`, `auto`, `required`, `{\"type\": \"function\", \"name\": …}` or `allowed_tools`",
            )),
        },
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text), and `text` as the
/// response echoes it.
pub fn text_format(text: Option<&Value>) -> Result<(Option<Value>, Value), ApiError> {
    let plain = json!({"format": {"type": "text"}});
    let format = match text {
        None | Some(Value::Null) => return Ok((None, plain)),
        Some(Value::Object(t)) => match t.get("format") {
            None | Some(Value::Null) => return Ok((None, plain)),
            Some(f) => f,
        },
        Some(_) => return Err(bad("text", "`text` must be an object with a `format`")),
    };
    let chat = match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let name = text_field(format, "name", "text.format")?;
            let schema = match format.get("schema") {
                Some(s @ (Value::Object(_) | Value::Bool(true))) => s.clone(),
                _ => return Err(bad("text.format.schema", "`text.format.schema` must be a JSON schema object")),
            };
            Some(json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                "strict": format.get("strict").and_then(Value::as_bool)}}))
        }
        _ => return Err(bad("text.format.type", "`text.format.type` must be `text`, `json_object` or `json_schema`")),
    };
    let mut echo = Map::new();
    echo.insert("format".into(), format.clone());
    if let Some(v) = text.and_then(|t| t.get("verbosity")).filter(|v| !v.is_null()) {
        echo.insert("verbosity".into(), v.clone());
    }
    Ok((chat, Value::Object(echo)))
}

/// `metadata`: at most 16 keys of up to 64 characters, string values of up to 512 (OpenAI's
/// limits).
pub fn metadata(given: Option<&Map<String, Value>>) -> Result<Map<String, Value>, ApiError> {
    let Some(map) = given else { return Ok(Map::new()) };
    if map.len() > 16 {
        return Err(bad("metadata", "`metadata` may hold at most 16 keys"));
    }
    for (k, v) in map {
        if k.chars().count() > 64 {
            return Err(bad("metadata", "`metadata` keys may be at most 64 characters"));
        }
        match v {
            Value::String(s) if s.chars().count() <= 512 => {}
            _ => {
                return Err(bad(
                    format!("metadata.{k}"),
                    "`metadata` values must be strings of at most 512 characters",
                ));
            }
        }
    }
    Ok(map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_input_is_one_user_message() {
        let items = input_items(Some(&json!("Hi"))).unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(chat_messages(&items), [json!({"role": "user", "content": "Hi"})]);
    }

    #[test]
    fn calls_and_outputs_become_chat_tool_messages() {
        let items = input_items(Some(&json!([
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
        ])))
        .unwrap();
        let messages = chat_messages(&items);
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[1]["reasoning_content"], "hmm");
        assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(messages[1]["tool_calls"][1]["function"]["arguments"], "{\"city\":\"Rome\"}");
        assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "call_2", "content": "rain"}));
    }

    #[test]
    fn images_reach_chat_as_image_url_parts_in_order() {
        let input = json!([{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
        ]}]);
        let items = input_items(Some(&input)).unwrap();
        let messages = chat_messages(&items);
        assert_eq!(
            messages[0]["content"],
            json!([{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
        );
    }

    #[test]
    fn bad_items_name_their_field() {
        let param = |input: Value| input_items(Some(&input)).unwrap_err().param;
        assert_eq!(param(json!([{"role": "robot", "content": "x"}])).as_deref(), Some("input[0].role"));
        assert_eq!(param(json!([{"type": "function_call", "name": "f"}])).as_deref(), Some("input[0].call_id"));
        assert_eq!(
            param(json!(["x", {"role": "user", "content": [{"type": "input_image", "image_url": "data:"}]}]))
                .as_deref(),
            Some("input[0]")
        );
        assert_eq!(
            param(json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}])).as_deref(),
            Some("input[0].content[0].image_url")
        );
        assert_eq!(
            param(json!([{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}])).as_deref(),
            Some("input[0].content[0]")
        );
        assert_eq!(param(json!([{"type": "web_search_call"}])).as_deref(), Some("input[0].type"));
        assert_eq!(param(json!([])).as_deref(), Some("input"));
    }

    #[test]
    fn allowed_tools_narrow_what_is_offered() {
        let given = [json!({"type": "function", "name": "a"}), json!({"type": "function", "name": "b"})];
        let mut t = tools(Some(&given)).unwrap();
        let choice = json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]});
        assert_eq!(tool_choice(Some(&choice), &mut t).unwrap(), Some(json!("required")));
        assert_eq!(t.chat.len(), 1);
        assert_eq!(t.echo.len(), 2);
        assert!(tools(Some(&[json!({"type": "web_search"})])).is_err());
    }

    #[test]
    fn json_schema_formats_become_chat_response_formats() {
        let text =
            json!({"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": true}});
        let (chat, echo) = text_format(Some(&text)).unwrap();
        assert_eq!(chat.unwrap()["json_schema"]["schema"], json!({"type": "object"}));
        assert_eq!(echo, text);
        assert!(text_format(Some(&json!({"format": {"type": "json_schema", "name": "x"}}))).is_err());
    }
}
