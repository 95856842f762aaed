//! A harness for parser tests: replays a model transcript fed whole, one character at a time,
//! and split in two at every position, and checks that every way gives the same content and
//! calls, that each call's arguments are valid JSON, and that the first delta of a call names it.

use crate::{Parsed, ToolParserPlugin};

/// Tools of these names that take any arguments.
pub fn tools(names: &[&str]) -> Vec<crate::Tool> {
    names
        .iter()
        .map(|n| crate::Tool { name: (*n).into(), description: String::new(), parameters: serde_json::json!({}) })
        .collect()
}

/// A call put together from its deltas.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledCall {
    /// The function name.
    pub name: String,
    /// The concatenated argument fragments.
    pub arguments: String,
}

/// What a whole answer turned into.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The content the user sees.
    pub content: String,
    /// The calls, by index.
    pub calls: Vec<AssembledCall>,
}

impl Outcome {
    /// The arguments of call `i`, parsed.
    pub fn arguments(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&self.calls[i].arguments).expect("arguments are JSON")
    }

    fn absorb(&mut self, parsed: Parsed) {
        self.content.push_str(&parsed.content);
        for delta in parsed.calls {
            let i = delta.index as usize;
            if let Some(name) = delta.name {
                assert_eq!(i, self.calls.len(), "call {i} starts out of order");
                self.calls.push(AssembledCall { name, arguments: String::new() });
            }
            let call = self.calls.get_mut(i).unwrap_or_else(|| panic!("delta for call {i} before its name"));
            if let Some(fragment) = delta.arguments {
                call.arguments.push_str(&fragment);
            }
        }
    }
}

/// Feeds `pieces` to a fresh parser and assembles the outcome.
pub fn run<P: ToolParserPlugin>(new: &impl Fn() -> P, pieces: &[&str]) -> Outcome {
    let mut parser = new();
    let mut outcome = Outcome::default();
    for piece in pieces {
        outcome.absorb(parser.push(piece).expect("push"));
    }
    outcome.absorb(parser.finish().expect("finish"));
    outcome
}

/// Replays `text` every way and returns the outcome they all agree on.
pub fn replay<P: ToolParserPlugin>(new: impl Fn() -> P, text: &str) -> Outcome {
    let whole = run(&new, &[text]);
    for call in &whole.calls {
        assert!(
            serde_json::from_str::<serde_json::Value>(&call.arguments).is_ok_and(|v| v.is_object()),
            "arguments of `{}` are not a JSON object: {:?}",
            call.name,
            call.arguments
        );
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let by_char: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(run(&new, &by_char), whole, "fed one character at a time");
    for (at, _) in text.char_indices().skip(1) {
        assert_eq!(run(&new, &[&text[..at], &text[at..]]), whole, "split at byte {at}: {:?}", &text[..at]);
    }
    whole
}
