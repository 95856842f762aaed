//! Helpers for [`crate::ToolParserPlugin::call_grammar`]: the grammar a format returns so the
//! host can force a call (`tool_choice: "required"` or a named function). Grammars use
//! llguidance's Lark syntax, where `%json { schema }` matches JSON valid against a schema.

use serde_json::{Value, json};

use crate::Tool;

/// A Lark string literal matching `text` exactly.
pub fn literal(text: &str) -> String {
    // JSON's escapes (`\"`, `\\`, `\n`, `\uXXXX`) are also Lark's.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// The schema of a tool's arguments: its own, or any object when it declared none.
pub fn arguments_schema(tool: &Tool) -> Value {
    match &tool.parameters {
        Value::Object(o) if !o.is_empty() => tool.parameters.clone(),
        _ => json!({ "type": "object" }),
    }
}

/// The schema of one call object `{"name": <tool>, "<args_key>": <its arguments>}` to any of
/// `tools`, keys in that order so the name streams first.
pub fn call_object_schema(tools: &[Tool], args_key: &str) -> Value {
    let variants: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": { "name": { "const": t.name }, args_key: arguments_schema(t) },
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    if variants.len() == 1 { variants.into_iter().next().unwrap_or_default() } else { json!({ "anyOf": variants }) }
}

/// A whole grammar: one `call` (the rule given), or with `parallel` one or more of them with
/// `separator` between.
pub fn calls(call: &str, separator: &str, parallel: bool) -> String {
    let start = if parallel { format!("start: call ({} call)*", literal(separator)) } else { "start: call".into() };
    format!("{start}\ncall: {call}\n")
}

/// `%json { schema }`, written the way models write JSON (`{"a": 1, "b": 2}`: Python's
/// `json.dumps` separators) with no other whitespace between tokens. Flexible whitespace lets
/// a small model wander into endless runs of spaces and newlines inside a forced call.
pub fn json_rule(schema: &Value) -> String {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " }),
        );
    }
    format!("%json {schema}")
}
