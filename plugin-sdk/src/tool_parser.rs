//! Tool-call parser plugins: turn streamed model output into content and tool-call deltas, and
//! tell the host how to offer tools in the format (hints, instructions, a forcing grammar).

use crate::Config;
use crate::bindings::tool_parser::exports::hearth::plugin::tool_parser as wit;

/// A tool the request declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function name.
    pub name: String,
    /// What the function does (may be empty).
    pub description: String,
    /// The JSON schema of its arguments, parsed (`null` when none was given).
    pub parameters: serde_json::Value,
}

/// A whole call from an earlier turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function name.
    pub name: String,
    /// The arguments' JSON text.
    pub arguments: String,
}

/// A piece of one tool call. The first delta of a call carries `name`; later ones carry
/// `arguments` fragments whose concatenation is the arguments' JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolCallDelta {
    /// Which call (0, 1, …).
    pub index: u32,
    /// The call's id; `None` lets the host assign `call_…`.
    pub id: Option<String>,
    /// The function name (first delta only).
    pub name: Option<String>,
    /// A fragment of the arguments' JSON.
    pub arguments: Option<String>,
}

/// What a chunk of model output turned into.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Text for the user, with call markup removed.
    pub content: String,
    /// Tool-call deltas.
    pub calls: Vec<ToolCallDelta>,
}

/// A tool-call format: a streaming parser (one value parses one response) and what the host
/// needs to offer tools in the format.
pub trait ToolParserPlugin: Sized + 'static {
    /// Starts a response that may call `tools`.
    fn new(config: &Config, tools: Vec<Tool>) -> Result<Self, String>;
    /// Feeds the next piece of generated text. Text that may start a call should be held back.
    fn push(&mut self, text: &str) -> Result<Parsed, String>;
    /// Ends the response: release held-back text, finish open calls.
    fn finish(&mut self) -> Result<Parsed, String>;
    /// Substrings of a chat template that show its model writes this format.
    fn template_hints(_config: &Config) -> Vec<String> {
        Vec::new()
    }
    /// A system-prompt text telling the model how to call `tools` in this format.
    fn instructions(config: &Config, tools: &[Tool]) -> String;
    /// The text the model writes for `calls`.
    fn render_calls(config: &Config, calls: &[Call]) -> String;
    /// A grammar (llguidance Lark) matching one call to one of `tools` — one or more when
    /// `parallel` — in this format. See [`crate::tool_calls::grammar`].
    fn call_grammar(config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String>;
}

fn to_wit(p: Parsed) -> wit::Parsed {
    wit::Parsed {
        content: p.content,
        calls: p
            .calls
            .into_iter()
            .map(|c| wit::ToolCallDelta { index: c.index, id: c.id, name: c.name, arguments: c.arguments })
            .collect(),
    }
}

fn from_wit(tools: Vec<wit::Tool>) -> Vec<Tool> {
    tools
        .into_iter()
        .map(|t| Tool {
            parameters: serde_json::from_str(&t.parameters).unwrap_or(serde_json::Value::Null),
            description: t.description,
            name: t.name,
        })
        .collect()
}

/// Glue between the WIT resource and a [`ToolParserPlugin`] (used by [`export_tool_parser!`]).
#[doc(hidden)]
pub struct __ToolParser<P: ToolParserPlugin> {
    inner: std::cell::RefCell<P>,
}

impl<P: ToolParserPlugin> __ToolParser<P> {
    pub fn new(config: String, tools: Vec<wit::Tool>) -> Result<Self, String> {
        let config = Config::parse(&config)?;
        Ok(Self { inner: std::cell::RefCell::new(P::new(&config, from_wit(tools))?) })
    }

    pub fn push(&self, text: String) -> Result<wit::Parsed, String> {
        self.inner.borrow_mut().push(&text).map(to_wit)
    }

    pub fn finish(&self) -> Result<wit::Parsed, String> {
        self.inner.borrow_mut().finish().map(to_wit)
    }

    pub fn template_hints(config: String) -> Vec<String> {
        Config::parse(&config).map(|c| P::template_hints(&c)).unwrap_or_default()
    }

    pub fn instructions(config: String, tools: Vec<wit::Tool>) -> String {
        Config::parse(&config).map(|c| P::instructions(&c, &from_wit(tools))).unwrap_or_default()
    }

    pub fn render_calls(config: String, calls: Vec<wit::Call>) -> String {
        let calls: Vec<Call> = calls.into_iter().map(|c| Call { name: c.name, arguments: c.arguments }).collect();
        Config::parse(&config).map(|c| P::render_calls(&c, &calls)).unwrap_or_default()
    }

    pub fn call_grammar(config: String, tools: Vec<wit::Tool>, parallel: bool) -> Result<String, String> {
        P::call_grammar(&Config::parse(&config)?, &from_wit(tools), parallel)
    }
}

/// Exports `$plugin` (a [`ToolParserPlugin`]) as the component's tool-call parser.
#[macro_export]
macro_rules! export_tool_parser {
    ($plugin:ty) => {
        struct __HearthToolParsers;
        struct __HearthStreamParser(
            std::cell::RefCell<Option<$crate::__ToolParser<$plugin>>>,
            std::cell::RefCell<Option<String>>,
        );
        use $crate::bindings::tool_parser::exports::hearth::plugin::tool_parser as __hearth_wit;
        impl __hearth_wit::Guest for __HearthToolParsers {
            type StreamParser = __HearthStreamParser;
            fn template_hints(config: String) -> Vec<String> {
                $crate::__ToolParser::<$plugin>::template_hints(config)
            }
            fn instructions(config: String, tools: Vec<__hearth_wit::Tool>) -> String {
                $crate::__ToolParser::<$plugin>::instructions(config, tools)
            }
            fn render_calls(config: String, calls: Vec<__hearth_wit::Call>) -> String {
                $crate::__ToolParser::<$plugin>::render_calls(config, calls)
            }
            fn call_grammar(config: String, tools: Vec<__hearth_wit::Tool>, parallel: bool) -> Result<String, String> {
                $crate::__ToolParser::<$plugin>::call_grammar(config, tools, parallel)
            }
        }
        impl __hearth_wit::GuestStreamParser for __HearthStreamParser {
            fn new(config: String, tools: Vec<__hearth_wit::Tool>) -> Self {
                // A constructor cannot fail in WIT: a failure is reported by the first push.
                match $crate::__ToolParser::<$plugin>::new(config, tools) {
                    Ok(p) => __HearthStreamParser(std::cell::RefCell::new(Some(p)), std::cell::RefCell::new(None)),
                    Err(e) => __HearthStreamParser(std::cell::RefCell::new(None), std::cell::RefCell::new(Some(e))),
                }
            }
            fn push(&self, text: String) -> Result<__hearth_wit::Parsed, String> {
                match &*self.0.borrow() {
                    Some(p) => p.push(text),
                    None => Err(self.1.borrow().clone().unwrap_or_default()),
                }
            }
            fn finish(&self) -> Result<__hearth_wit::Parsed, String> {
                match &*self.0.borrow() {
                    Some(p) => p.finish(),
                    None => Err(self.1.borrow().clone().unwrap_or_default()),
                }
            }
        }
        $crate::bindings::tool_parser::__export_tool_parser!(__HearthToolParsers);
    };
}
