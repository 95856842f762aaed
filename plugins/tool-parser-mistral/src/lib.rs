//! Mistral tool calls: `[TOOL_CALLS]` then a JSON list of call objects (Mistral 7B v0.3,
//! Mixtral, Nemo), or `[TOOL_CALLS]name[ARGS]{…}` (Mistral Small 3.2 / Magistral tokenizers):
//!
//! ```text
//! [TOOL_CALLS] [{"name": "get_current_weather", "arguments": {"location": "Paris, France"}}]
//! [TOOL_CALLS]get_current_weather[ARGS]{"location": "Paris, France"}
//! ```

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{Markers, MarkupFormat, Syntax, call_json, describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Tool};
use serde_json::json;

/// The Mistral format.
pub struct Mistral;

impl MarkupFormat for Mistral {
    fn syntax() -> Syntax {
        Syntax {
            markers: vec![Markers { open: "[TOOL_CALLS]", close: "" }],
            bare_object: false,
            args_keys: &["arguments"],
            name_args_separator: Some("[ARGS]"),
            between_calls: "",
        }
    }

    fn template_hints(_config: &Config) -> Vec<String> {
        vec!["[TOOL_CALLS]".into(), "[AVAILABLE_TOOLS]".into()]
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "You can call these functions:\n{}\n\nTo call functions, reply with [TOOL_CALLS] followed by a JSON list of \
             calls: [TOOL_CALLS][{{\"name\": <function-name>, \"arguments\": <args-json-object>}}]",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        let items: Vec<String> = calls.iter().map(|c| call_json(&c.name, "arguments", &c.arguments)).collect();
        format!("[TOOL_CALLS][{}]", items.join(", "))
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        let mut list =
            json!({ "type": "array", "items": grammar::call_object_schema(tools, "arguments"), "minItems": 1 });
        if !parallel {
            list["maxItems"] = json!(1);
        }
        Ok(format!("start: \"[TOOL_CALLS]\" {}\n", grammar::json_rule(&list)))
    }
}

// Exported only in the component: a native build (unit tests) has no WIT exports.
#[cfg(target_arch = "wasm32")]
export_tool_parser!(hearth_plugin_sdk::tool_calls::Markup<Mistral>);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::ToolParserPlugin;
    use hearth_plugin_sdk::tool_calls::Markup;
    use hearth_plugin_sdk::tool_calls::testing::{replay, tools};

    fn parser() -> Markup<Mistral> {
        Markup::new(&Config::default(), tools(&["get_current_weather", "get_time"])).unwrap()
    }

    /// The v0.3 list format (mistral-inference's README function-calling example).
    #[test]
    fn list_format() {
        let text = "[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"Paris, France\", \"format\": \"celsius\"}}, {\"name\": \"get_time\", \"arguments\": {}}]";
        let out = replay(parser, text);
        assert_eq!(out.content, "");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.arguments(0), json!({"location": "Paris, France", "format": "celsius"}));
        assert_eq!(out.arguments(1), json!({}));
    }

    /// The newer `name[ARGS]{…}` format, two calls back to back.
    #[test]
    fn name_args_format() {
        let text =
            "[TOOL_CALLS]get_current_weather[ARGS]{\"location\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"CET\"}";
        let out = replay(parser, text);
        assert_eq!(out.content, "");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.calls[1].name, "get_time");
        assert_eq!(out.arguments(0), json!({"location": "Paris"}));
    }

    #[test]
    fn content_and_broken_calls_stay_content() {
        let out = replay(parser, "It is sunny in Paris [citation needed].");
        assert_eq!(out.content, "It is sunny in Paris [citation needed].");
        let out = replay(parser, "[TOOL_CALLS] I cannot do that");
        assert!(out.calls.is_empty());
        assert_eq!(out.content, "[TOOL_CALLS] I cannot do that");
    }
}
