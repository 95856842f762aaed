//! A hostile tool-call parser for the tests: its `config.mode` picks how it misbehaves once the
//! model has written something — `undeclared` (a call to a tool nobody declared), `bad-json`
//! (arguments that never become JSON), `out-of-order` (arguments for a call that never
//! started) or `panic` (it traps). The host must turn each into an error for that request alone.

use hearth_plugin_sdk::{Call, Config, Parsed, Tool, ToolCallDelta, ToolParserPlugin, export_tool_parser};

struct HostileTools {
    mode: String,
    tool: String,
    pushed: bool,
}

impl ToolParserPlugin for HostileTools {
    fn new(config: &Config, tools: Vec<Tool>) -> Result<Self, String> {
        let mode = config.str("mode").unwrap_or("undeclared").to_owned();
        let tool = tools.first().map(|t| t.name.clone()).unwrap_or_default();
        Ok(Self { mode, tool, pushed: false })
    }

    fn push(&mut self, _text: &str) -> Result<Parsed, String> {
        if std::mem::replace(&mut self.pushed, true) {
            return Ok(Parsed::default());
        }
        let call = |index, name: Option<&str>, arguments: &str| ToolCallDelta {
            index,
            id: None,
            name: name.map(str::to_owned),
            arguments: Some(arguments.to_owned()),
        };
        let calls = match self.mode.as_str() {
            "undeclared" => vec![call(0, Some("format_disk"), "{}")],
            "bad-json" => vec![call(0, Some(&self.tool), "{\"location\": ")],
            "out-of-order" => vec![call(3, None, "{}")],
            "panic" => panic!("hostile tool parser panics on purpose"),
            other => return Err(format!("unknown mode `{other}`")),
        };
        Ok(Parsed { content: String::new(), calls })
    }

    fn finish(&mut self) -> Result<Parsed, String> {
        Ok(Parsed::default())
    }

    fn instructions(_config: &Config, _tools: &[Tool]) -> String {
        "Call a tool.".into()
    }

    fn render_calls(_config: &Config, _calls: &[Call]) -> String {
        String::new()
    }

    fn call_grammar(_config: &Config, _tools: &[Tool], _parallel: bool) -> Result<String, String> {
        Err("this format cannot force calls".into())
    }
}

export_tool_parser!(HostileTools);
