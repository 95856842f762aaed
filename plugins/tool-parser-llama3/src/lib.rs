//! Llama 3.1–3.3 JSON tool calls: the answer is a JSON object, optionally after
//! `<|python_tag|>`, with the arguments under `"parameters"` (Meta's prompt format for custom
//! tools); several calls are separated by `;`:
//!
//! ```text
//! {"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA"}}
//! ```

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{Markers, MarkupFormat, Syntax, call_json, describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Tool};

/// The Llama 3 JSON format.
pub struct Llama3;

impl MarkupFormat for Llama3 {
    fn syntax() -> Syntax {
        Syntax {
            markers: vec![Markers { open: "<|python_tag|>", close: "" }],
            bare_object: true,
            args_keys: &["parameters", "arguments"],
            name_args_separator: None,
            between_calls: ";",
        }
    }

    fn template_hints(_config: &Config) -> Vec<String> {
        vec!["<|python_tag|>".into(), "\"parameters\": dictionary of argument name".into()]
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "Given the following functions, please respond with a JSON for a function call with its proper \
             arguments that best answers the given prompt.\n\nRespond in the format {{\"name\": function name, \
             \"parameters\": dictionary of argument name and its value}}. Do not use variables.\n\n{}",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        calls.iter().map(|c| call_json(&c.name, "parameters", &c.arguments)).collect::<Vec<_>>().join("; ")
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        Ok(grammar::calls(&grammar::json_rule(&grammar::call_object_schema(tools, "parameters")), "; ", parallel))
    }
}

// Exported only in the component: a native build (unit tests) has no WIT exports.
#[cfg(target_arch = "wasm32")]
export_tool_parser!(hearth_plugin_sdk::tool_calls::Markup<Llama3>);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::ToolParserPlugin;
    use hearth_plugin_sdk::tool_calls::Markup;
    use hearth_plugin_sdk::tool_calls::testing::{replay, tools};
    use serde_json::json;

    fn parser() -> Markup<Llama3> {
        Markup::new(&Config::default(), tools(&["get_current_conditions", "spotify_trending_songs"])).unwrap()
    }

    /// Meta's Llama 3.1 model card, "JSON based tool calling".
    #[test]
    fn meta_example() {
        let text = "{\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"San Francisco, CA\", \"unit\": \"Fahrenheit\"}}";
        let out = replay(parser, text);
        assert_eq!(out.content, "");
        assert_eq!(out.arguments(0), json!({"location": "San Francisco, CA", "unit": "Fahrenheit"}));
    }

    #[test]
    fn python_tag_and_several_calls() {
        let text = "<|python_tag|>{\"name\": \"spotify_trending_songs\", \"parameters\": {\"n\": 5}}; {\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"Menlo Park\"}}";
        let out = replay(parser, text);
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.arguments(0), json!({"n": 5}));
        assert_eq!(out.calls[1].name, "get_current_conditions");
        assert_eq!(out.content, "");
    }

    #[test]
    fn prose_and_json_that_is_no_call_stay_content() {
        for text in
            ["Sure! The weather is fine.", "{\"answer\": 42}", "{\"name\": \"unknown_tool\", \"parameters\": {}}"]
        {
            let out = replay(parser, text);
            assert_eq!(out.content, text);
            assert!(out.calls.is_empty());
        }
    }
}
