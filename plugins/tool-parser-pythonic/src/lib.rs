//! Pythonic tool calls: the answer is a Python list of calls with keyword arguments, as Llama
//! 3.2/4 (its "pythonic" system prompt) and ToolACE-style models write them. A call is sent
//! when its closing parenthesis arrives, its arguments converted to JSON:
//!
//! ```text
//! [get_weather(city='San Francisco', metric='celsius'), get_time(timezone="PST")]
//! ```

mod literal;

#[cfg(target_arch = "wasm32")]
use hearth_plugin_sdk::export_tool_parser;
use hearth_plugin_sdk::tool_calls::{describe_tools, grammar};
use hearth_plugin_sdk::{Call, Config, Parsed, Tool, ToolCallDelta, ToolParserPlugin};
use literal::{Scan, scan_calls};

/// The pythonic format's parser.
pub struct Pythonic {
    tools: Vec<Tool>,
    /// Text held back while it may still be a list of calls.
    buf: String,
    /// Calls already sent.
    sent: usize,
    mode: Mode,
}

#[derive(PartialEq)]
enum Mode {
    /// Nothing but whitespace yet.
    Start,
    /// Reading a list of calls.
    Calls,
    /// Plain text from here on.
    Content,
}

impl Pythonic {
    fn advance(&mut self, out: &mut Parsed, at_end: bool) {
        if self.mode == Mode::Start {
            match self.buf.trim_start().chars().next() {
                None if !at_end => return,
                Some('[') => self.mode = Mode::Calls,
                _ => self.mode = Mode::Content,
            }
        }
        if self.mode == Mode::Content {
            out.content.push_str(&std::mem::take(&mut self.buf));
            return;
        }
        let scan = scan_calls(&self.buf);
        let (calls, outcome) = (scan.calls, scan.outcome);
        if calls.iter().any(|(name, _)| !self.tools.iter().any(|t| &t.name == name)) {
            return self.not_calls(out);
        }
        for (i, (name, args)) in calls.into_iter().enumerate().skip(self.sent) {
            let index = i as u32;
            out.calls.push(ToolCallDelta { index, name: Some(name), id: None, arguments: Some(String::new()) });
            out.calls.push(ToolCallDelta { index, arguments: Some(args.to_string()), ..Default::default() });
            self.sent += 1;
        }
        match outcome {
            Scan::Complete(end) => {
                let rest = self.buf[end..].to_owned();
                self.buf.clear();
                self.mode = Mode::Content;
                out.content.push_str(rest.trim_start());
            }
            Scan::Invalid => self.not_calls(out),
            Scan::Incomplete if at_end => {
                if self.sent == 0 {
                    self.not_calls(out);
                }
                self.buf.clear();
            }
            Scan::Incomplete => {}
        }
    }

    /// What looked like calls was not: it is content (calls already sent stay sent).
    fn not_calls(&mut self, out: &mut Parsed) {
        if self.sent == 0 {
            out.content.push_str(&std::mem::take(&mut self.buf));
        } else {
            self.buf.clear();
        }
        self.mode = Mode::Content;
    }
}

impl ToolParserPlugin for Pythonic {
    fn new(_config: &Config, tools: Vec<Tool>) -> Result<Self, String> {
        Ok(Self { tools, buf: String::new(), sent: 0, mode: Mode::Start })
    }

    fn push(&mut self, text: &str) -> Result<Parsed, String> {
        self.buf.push_str(text);
        let mut out = Parsed::default();
        self.advance(&mut out, false);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Parsed, String> {
        let mut out = Parsed::default();
        self.advance(&mut out, true);
        Ok(out)
    }

    fn template_hints(_config: &Config) -> Vec<String> {
        vec!["[func_name1(params_name1=params_value1".into()]
    }

    fn instructions(_config: &Config, tools: &[Tool]) -> String {
        format!(
            "You are an expert in composing functions. If you decide to invoke any of the function(s), you MUST put it \
             in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n\
             You SHOULD NOT include any other text in the response if you call a function.\n\
             Here is a list of functions in JSON format that you can invoke:\n{}",
            describe_tools(tools)
        )
    }

    fn render_calls(_config: &Config, calls: &[Call]) -> String {
        let items: Vec<String> = calls
            .iter()
            .map(|c| {
                let args: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&c.arguments).unwrap_or_default();
                let kwargs: Vec<String> = args.iter().map(|(k, v)| format!("{k}={}", literal::to_python(v))).collect();
                format!("{}({})", c.name, kwargs.join(", "))
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    fn call_grammar(_config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        let mut rules = Vec::new();
        let mut alternatives = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let schema = grammar::arguments_schema(tool);
            let props = schema.get("properties").and_then(|p| p.as_object()).cloned().unwrap_or_default();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            // Required arguments first, in the schema's order; then each optional one may follow.
            let mut body = String::new();
            let mut first = true;
            for (name, prop) in props.iter().filter(|(n, _)| required.contains(&n.as_str())) {
                let sep = if first { "" } else { "\", \" " };
                body.push_str(&format!("{sep}\"{name}=\" {} ", literal::value_rule(prop)));
                first = false;
            }
            for (name, prop) in props.iter().filter(|(n, _)| !required.contains(&n.as_str())) {
                let sep = if first { "" } else { "\", \" " };
                body.push_str(&format!("({sep}\"{name}=\" {})? ", literal::value_rule(prop)));
            }
            rules.push(format!("call{i}: {} \"(\" {body}\")\"", grammar::literal(&tool.name)));
            alternatives.push(format!("call{i}"));
        }
        let call = alternatives.join(" | ");
        let start = if parallel { "start: \"[\" call (\", \" call)* \"]\"" } else { "start: \"[\" call \"]\"" };
        Ok(format!("{start}\ncall: {call}\n{}\n{}", rules.join("\n"), literal::GRAMMAR_RULES))
    }
}

// Exported only in the component: a native build (unit tests) has no WIT exports.
#[cfg(target_arch = "wasm32")]
export_tool_parser!(Pythonic);

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_plugin_sdk::tool_calls::testing::{replay, tools};
    use serde_json::json;

    fn parser() -> Pythonic {
        let tools = tools(&["get_weather", "get_time"]);
        Pythonic::new(&Config::default(), tools).unwrap()
    }

    /// Llama 3.2's pythonic format (Meta's prompt-format docs, "Zero shot function calling").
    #[test]
    fn llama_3_2_example() {
        let text = "[get_weather(city='San Francisco', metric='celsius'), get_time(timezone=\"PST\", hours=[1, 2.5], exact=True, extra=None)]";
        let out = replay(parser, text);
        assert_eq!(out.content, "");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.arguments(0), json!({"city": "San Francisco", "metric": "celsius"}));
        assert_eq!(out.arguments(1), json!({"timezone": "PST", "hours": [1, 2.5], "exact": true, "extra": null}));
    }

    #[test]
    fn text_is_content() {
        for text in ["[1] A footnote.", "Paris is sunny.", "[get_weather(city=)]", "[delete_all()]"] {
            let out = replay(parser, text);
            assert_eq!(out.content, text);
            assert!(out.calls.is_empty());
        }
    }

    #[test]
    fn render_then_parse_round_trips() {
        let calls = [Call { name: "get_weather".into(), arguments: r#"{"city":"O'Hare \"X\"","n":3}"#.into() }];
        let text = Pythonic::render_calls(&Config::default(), &calls);
        let out = replay(parser, &text);
        assert_eq!(out.arguments(0), json!({"city": "O'Hare \"X\"", "n": 3}));
    }
}
