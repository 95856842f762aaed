//! A tool-call format that no first-party parser knows, written the way a third party would:
//! with `hearth-plugin-sdk` alone, loaded by one line of settings.yaml. A call is the function
//! name and its JSON arguments between double angle brackets:
//!
//! ```text
//! Checking. <<get_weather:{"location": "Paris"}>>
//! ```

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{MarkupFormat, Markers, Syntax, describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Tool};

/// The `<<name:{…}>>` format.
pub struct AngleTools;

impl MarkupFormat for AngleTools {
    fn syntax() -> Syntax {
    Syntax {
        markers: vec![Markers { open: "<<", close: ">>" }],
        bare_object: false,
        args_keys: &["arguments"],
        name_args_separator: Some(":"),
        between_calls: "",
    }
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "Functions you can call:\n{}\n\nTo call one, write <<name:{{json arguments}}>>.",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        calls.iter().map(|c| format!("<<{}:{}>>", c.name, c.arguments)).collect::<Vec<_>>().join(" ")
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        let alternatives: Vec<String> = tools
            .iter()
            .map(|t| {
                let open = grammar::literal(&format!("<<{}:", t.name));
                format!("{open} {} \">>\"", grammar::json_rule(&grammar::arguments_schema(t)))
            })
            .collect();
        Ok(grammar::calls(&alternatives.join("\n    | "), " ", parallel))
    }
}

#[cfg(target_arch = "wasm32")]
export_tool_parser!(hearth_plugin_sdk::tool_calls::Markup<AngleTools>);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::ToolParserPlugin;
    use hearth_plugin_sdk::tool_calls::Markup;
    use hearth_plugin_sdk::tool_calls::testing::{replay, tools};
    use serde_json::json;

    fn parser() -> Markup<AngleTools> {
        Markup::new(&Config::default(), tools(&["get_weather"])).unwrap()
    }

    #[test]
    fn a_call_after_content_streams_its_arguments() {
        let out = replay(parser, "Checking. <<get_weather:{\"location\": \"Paris\"}>>");
        assert_eq!(out.content, "Checking. ");
        assert_eq!(out.calls[0].name, "get_weather");
        assert_eq!(out.arguments(0), json!({"location": "Paris"}));
    }

    #[test]
    fn shift_operators_stay_content() {
        let out = replay(parser, "In C, 1 << 3 is 8 and x >> 1 halves it.");
        assert!(out.calls.is_empty());
        assert_eq!(out.content, "In C, 1 << 3 is 8 and x >> 1 halves it.");
    }
}
