//! Building blocks for tool-call parsers, so a format plugin is a page of code: an incremental
//! JSON checker ([`JsonTracker`]), a reader for call objects that streams their arguments
//! ([`CallObjectReader`]), a parser for the usual marker-delimited shape ([`MarkupParser`]),
//! grammar helpers for forced calls ([`grammar`]) and a test harness that replays a transcript
//! split at every position ([`testing`]).

mod call_object;
pub mod grammar;
mod json_tracker;
mod markup;
pub mod testing;

pub use call_object::{ARGUMENT_KEYS, CallObjectReader, CallStep, NotACall};
pub use json_tracker::{InvalidJson, JsonTracker};
pub use markup::{Markers, Markup, MarkupFormat, MarkupParser, Syntax, held_back};

/// One call as a JSON object, `{"name": …, "<args_key>": …}` (`arguments` is JSON text).
pub fn call_json(name: &str, args_key: &str, arguments: &str) -> String {
    format!("{{\"name\": {}, {}: {arguments}}}", grammar::literal(name), grammar::literal(args_key))
}

/// A short description of each tool for a system prompt: one JSON object a line, as
/// `{"name": …, "description": …, "parameters": …}` (the shape most tool-trained models saw).
pub fn describe_tools(tools: &[crate::Tool]) -> String {
    tools
        .iter()
        .map(|t| {
            let mut obj = serde_json::Map::new();
            obj.insert("name".into(), t.name.clone().into());
            if !t.description.is_empty() {
                obj.insert("description".into(), t.description.clone().into());
            }
            obj.insert("parameters".into(), t.parameters.clone());
            serde_json::Value::Object(obj).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
