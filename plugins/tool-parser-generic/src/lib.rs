//! The generic fallback (text-generation-webui's way): a call is a JSON object
//! `{"name": …, "arguments": …}` — bare at the start of the answer, or inside `<tool_call>`,
//! `<function>` or `<functioncall>` tags or a code fence — for models with no tool format of
//! their own.
//!
//! ```text
//! <function>{"name": "get_weather", "arguments": {"location": "Tokyo"}}</function>
//! ```

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{ARGUMENT_KEYS, Markers, MarkupFormat, Syntax, call_json, describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Tool};

/// The generic format.
pub struct Generic;

impl MarkupFormat for Generic {
    fn syntax() -> Syntax {
        Syntax {
            markers: vec![
                Markers { open: "<tool_call>", close: "</tool_call>" },
                Markers { open: "<function>", close: "</function>" },
                Markers { open: "<functioncall>", close: "</functioncall>" },
                Markers { open: "```json", close: "```" },
                Markers { open: "```", close: "```" },
            ],
            bare_object: true,
            args_keys: ARGUMENT_KEYS,
            name_args_separator: None,
            between_calls: "",
        }
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "You have access to these functions:\n{}\n\nTo call a function, reply with only a JSON object \
             {{\"name\": <function-name>, \"arguments\": <args-json-object>}}, one per line for several calls.",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        calls.iter().map(|c| call_json(&c.name, "arguments", &c.arguments)).collect::<Vec<_>>().join("\n")
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        Ok(grammar::calls(&grammar::json_rule(&grammar::call_object_schema(tools, "arguments")), "\n", parallel))
    }
}

// Exported only in the component: a native build (unit tests) has no WIT exports.
#[cfg(target_arch = "wasm32")]
export_tool_parser!(hearth_plugin_sdk::tool_calls::Markup<Generic>);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::ToolParserPlugin;
    use hearth_plugin_sdk::tool_calls::Markup;
    use hearth_plugin_sdk::tool_calls::testing::{replay, tools};
    use serde_json::json;

    fn parser() -> Markup<Generic> {
        Markup::new(&Config::default(), tools(&["get_weather", "get_time"])).unwrap()
    }

    #[test]
    fn function_tags() {
        let text = "I'll look that up.\n<function>{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Tokyo\"}}</function>\n<function>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"Asia/Tokyo\"}}\n</function>";
        let out = replay(parser, text);
        assert_eq!(out.content, "I'll look that up.\n");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.arguments(1), json!({"timezone": "Asia/Tokyo"}));
    }

    #[test]
    fn code_fences_and_bare_objects() {
        let out = replay(parser, "```json\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"UTC\"}}\n```");
        assert_eq!((out.content.as_str(), out.calls.len()), ("", 1));
        let out = replay(parser, "  {\"name\": \"get_weather\", \"parameters\": {\"location\": \"Lima\"}}");
        assert_eq!(out.arguments(0), json!({"location": "Lima"}));
    }

    #[test]
    fn code_that_is_not_a_call_stays_content() {
        for text in ["```python\nprint('hi')\n```", "Use {braces} wisely.", "```json\n{\"a\": 1}\n```"] {
            let out = replay(parser, text);
            assert_eq!(out.content, text);
            assert!(out.calls.is_empty());
        }
    }
}
