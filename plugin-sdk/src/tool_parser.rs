//! Tool-call parser plugins: turn streamed model output into content and tool-call deltas.

use crate::Config;
use crate::bindings::tool_parser::exports::hearth::plugin::tool_parser as wit;

/// A tool the request declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function name.
    pub name: String,
    /// The JSON schema of its arguments, parsed.
    pub parameters: serde_json::Value,
}

/// A piece of one tool call. The first delta of a call carries `id` and `name`; later ones
/// carry `arguments` fragments whose concatenation is the arguments' JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolCallDelta {
    /// Which call (0, 1, …).
    pub index: u32,
    /// The call's id, e.g. `call_…` (first delta only).
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

/// A streaming tool-call parser: one value parses one response.
pub trait ToolParserPlugin: Sized + 'static {
    /// Starts a response that may call `tools`.
    fn new(config: &Config, tools: Vec<Tool>) -> Result<Self, String>;
    /// Feeds the next piece of generated text. Text that may start a call should be held back.
    fn push(&mut self, text: &str) -> Result<Parsed, String>;
    /// Ends the response: release held-back text, finish open calls.
    fn finish(&mut self) -> Result<Parsed, String>;
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

/// Glue between the WIT resource and a [`ToolParserPlugin`] (used by [`export_tool_parser!`]).
#[doc(hidden)]
pub struct __ToolParser<P: ToolParserPlugin> {
    inner: std::cell::RefCell<P>,
}

impl<P: ToolParserPlugin> __ToolParser<P> {
    pub fn new(config: String, tools: Vec<wit::Tool>) -> Result<Self, String> {
        let config = Config::parse(&config)?;
        let tools = tools
            .into_iter()
            .map(|t| Tool {
                parameters: serde_json::from_str(&t.parameters).unwrap_or(serde_json::Value::Null),
                name: t.name,
            })
            .collect();
        Ok(Self { inner: std::cell::RefCell::new(P::new(&config, tools)?) })
    }

    pub fn push(&self, text: String) -> Result<wit::Parsed, String> {
        self.inner.borrow_mut().push(&text).map(to_wit)
    }

    pub fn finish(&self) -> Result<wit::Parsed, String> {
        self.inner.borrow_mut().finish().map(to_wit)
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
        impl $crate::bindings::tool_parser::exports::hearth::plugin::tool_parser::Guest for __HearthToolParsers {
            type StreamParser = __HearthStreamParser;
        }
        impl $crate::bindings::tool_parser::exports::hearth::plugin::tool_parser::GuestStreamParser
            for __HearthStreamParser
        {
            fn new(
                config: String,
                tools: Vec<$crate::bindings::tool_parser::exports::hearth::plugin::tool_parser::Tool>,
            ) -> Self {
                // A constructor cannot fail in WIT: a failure is reported by the first push.
                match $crate::__ToolParser::<$plugin>::new(config, tools) {
                    Ok(p) => __HearthStreamParser(std::cell::RefCell::new(Some(p)), std::cell::RefCell::new(None)),
                    Err(e) => __HearthStreamParser(std::cell::RefCell::new(None), std::cell::RefCell::new(Some(e))),
                }
            }
            fn push(
                &self,
                text: String,
            ) -> Result<$crate::bindings::tool_parser::exports::hearth::plugin::tool_parser::Parsed, String> {
                match &*self.0.borrow() {
                    Some(p) => p.push(text),
                    None => Err(self.1.borrow().clone().unwrap_or_default()),
                }
            }
            fn finish(
                &self,
            ) -> Result<$crate::bindings::tool_parser::exports::hearth::plugin::tool_parser::Parsed, String> {
                match &*self.0.borrow() {
                    Some(p) => p.finish(),
                    None => Err(self.1.borrow().clone().unwrap_or_default()),
                }
            }
        }
        $crate::bindings::tool_parser::__export_tool_parser!(__HearthToolParsers);
    };
}
