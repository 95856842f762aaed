//! Hermes / Qwen tool calls: each call a JSON object inside `<tool_call>…</tool_call>`, as
//! NousResearch Hermes 2/3, Qwen 2.5/3 and most ChatML tool models write them:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"location": "Paris"}}
//! </tool_call>
//! ```

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{ARGUMENT_KEYS, Markers, MarkupFormat, Syntax, call_json, describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Tool};

/// The Hermes format.
pub struct Hermes;

impl MarkupFormat for Hermes {
    fn syntax() -> Syntax {
        Syntax {
            markers: vec![Markers { open: "<tool_call>", close: "</tool_call>" }],
            bare_object: false,
            args_keys: ARGUMENT_KEYS,
            name_args_separator: None,
            between_calls: "",
        }
    }

    fn template_hints(_config: &Config) -> Vec<String> {
        vec!["<tool_call>".into()]
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\n\
             For each function call, return a json object with function name and arguments within \
             <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        calls
            .iter()
            .map(|c| format!("<tool_call>\n{}\n</tool_call>", call_json(&c.name, "arguments", &c.arguments)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        let call = grammar::json_rule(&grammar::call_object_schema(tools, "arguments"));
        Ok(grammar::calls(&format!("\"<tool_call>\\n\" {call} \"\\n</tool_call>\""), "\n", parallel))
    }
}

// Exported only in the component: a native build (unit tests) has no WIT exports.
#[cfg(target_arch = "wasm32")]
export_tool_parser!(hearth_plugin_sdk::tool_calls::Markup<Hermes>);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::ToolParserPlugin;
    use hearth_plugin_sdk::tool_calls::Markup;
    use hearth_plugin_sdk::tool_calls::testing::replay;
    use serde_json::json;

    fn tools() -> Vec<Tool> {
        ["get_current_temperature", "get_temperature_date"]
            .map(|n| Tool { name: n.into(), description: String::new(), parameters: json!({"type": "object"}) })
            .to_vec()
    }

    fn parser() -> Markup<Hermes> {
        Markup::new(&Config::default(), tools()).unwrap()
    }

    /// Qwen2.5's own function-calling example (qwen.readthedocs.io, "Function Calling").
    #[test]
    fn qwen_parallel_calls() {
        let text = "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}}\n</tool_call>";
        let out = replay(parser, text);
        assert_eq!(out.content.trim(), "");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.calls[1].name, "get_temperature_date");
        assert_eq!(out.arguments(1), json!({"location": "San Francisco, CA, USA", "date": "2024-10-01"}));
    }

    #[test]
    fn content_before_a_call_is_kept_and_markers_never_leak() {
        let text = "Let me check that for you.\n<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"Tōkyō \\\"JP\\\"\", \"unit\": \"celsius\"}}\n</tool_call>";
        let out = replay(parser, text);
        assert_eq!(out.content, "Let me check that for you.\n");
        assert_eq!(out.arguments(0), json!({"location": "Tōkyō \"JP\"", "unit": "celsius"}));
    }

    #[test]
    fn plain_answers_and_lookalikes_stay_content() {
        for text in ["The temperature is 22 °C.", "a < b and <tool> is not a call", "<tool_call>not json</tool_call>"]
        {
            let out = replay(parser, text);
            assert_eq!(out.content, text);
            assert!(out.calls.is_empty());
        }
    }

    #[test]
    fn an_undeclared_tool_is_content() {
        let text = "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>";
        let out = replay(parser, text);
        assert!(out.calls.is_empty());
        assert_eq!(out.content, text);
    }

    #[test]
    fn a_call_cut_off_by_the_length_limit_still_has_valid_arguments() {
        let out = replay(
            parser,
            "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Fr",
        );
        assert_eq!(out.arguments(0), json!({"location": "San Fr"}));
    }

    #[test]
    fn other_key_order_and_string_arguments_are_read_whole() {
        let text = "<tool_call>{\"arguments\": \"{\\\"location\\\": \\\"Oslo\\\"}\", \"name\": \"get_current_temperature\"}</tool_call>";
        let out = replay(parser, text);
        assert_eq!(out.arguments(0), json!({"location": "Oslo"}));
        assert_eq!(out.content, "");
    }

    #[test]
    fn the_grammar_names_every_tool() {
        let g = Hermes::call_grammar(&Config::default(), &tools(), false).unwrap();
        assert!(g.contains("get_temperature_date") && g.contains("<tool_call>"));
    }
}
