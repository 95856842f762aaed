//! A streaming parser for the common shape of tool-call formats: content, then calls opened by a
//! marker (`<tool_call>`, `[TOOL_CALLS]`, a code fence, or nothing at all at the start of the
//! answer), each call a JSON object or an array of them, or `name` + separator + arguments, and an
//! optional closing marker. Text that may be the start of a marker is held back; a call that
//! turns out not to be one (undeclared name, not JSON) goes out as content.

use super::call_object::{CallObjectReader, CallStep};
use super::json_tracker::JsonTracker;
use crate::{Call, Config, Parsed, Tool, ToolCallDelta, ToolParserPlugin};

/// A pair of markers around calls.
#[derive(Debug, Clone)]
pub struct Markers {
    /// Opens a call (or a list of calls).
    pub open: &'static str,
    /// Closes it; skipped when present.
    pub close: &'static str,
}

/// What a format looks like.
#[derive(Debug, Clone)]
pub struct Syntax {
    /// Marker pairs, tried in order at each position.
    pub markers: Vec<Markers>,
    /// A call may begin with a bare `{` at the start of the answer and after a call.
    pub bare_object: bool,
    /// Keys that hold the arguments.
    pub args_keys: &'static [&'static str],
    /// Separator between a bare function name and its arguments (Mistral's `[ARGS]`).
    pub name_args_separator: Option<&'static str>,
    /// Characters skipped between calls (`;` in Llama 3's JSON format).
    pub between_calls: &'static str,
}

enum State {
    /// Ordinary text.
    Content,
    /// After an opening marker, before its body.
    Opened { close: &'static str },
    /// Inside a call object; `in_array` when it is an item of a `[…]` list.
    Object { close: &'static str, reader: CallObjectReader, in_array: bool },
    /// Inside a `[…]` list, between items.
    Array { close: &'static str, expect_item: bool },
    /// `name[ARGS]{…}`: reading the name.
    Name { close: &'static str, name: String },
    /// `name[ARGS]{…}`: reading the arguments.
    Args { close: &'static str, args: JsonTracker, safe: JsonTracker, pending: String },
    /// After a call: its closing marker may follow.
    AfterCall { close: &'static str },
}

/// The streaming parser of one answer.
pub struct MarkupParser {
    syntax: Syntax,
    tools: Vec<Tool>,
    state: State,
    /// Text received but not yet decided.
    buf: String,
    /// Text of the call being read, from its marker on (content again if it is no call).
    raw: String,
    /// Whether a bare `{` may start a call here.
    bare_ok: bool,
    /// Calls started so far; the next call's index.
    calls: u32,
}

impl MarkupParser {
    /// A parser for `syntax` that accepts calls to `tools`.
    pub fn new(syntax: Syntax, tools: Vec<Tool>) -> Self {
        let bare_ok = syntax.bare_object;
        Self { syntax, tools, state: State::Content, buf: String::new(), raw: String::new(), bare_ok, calls: 0 }
    }

    /// Feeds generated text.
    pub fn push(&mut self, text: &str) -> Parsed {
        self.buf.push_str(text);
        let mut out = Parsed::default();
        while self.step(&mut out, false) {}
        out
    }

    /// Ends the answer.
    pub fn finish(&mut self) -> Parsed {
        let mut out = Parsed::default();
        while self.step(&mut out, false) {}
        while self.step(&mut out, true) {}
        out
    }

    /// Makes one move; `false` when it needs more text (or, at the end, when all is done).
    fn step(&mut self, out: &mut Parsed, at_end: bool) -> bool {
        match std::mem::replace(&mut self.state, State::Content) {
            State::Content => self.content(out, at_end),
            State::Opened { close } => self.opened(close, out, at_end),
            State::Object { close, reader, in_array } => self.object(close, reader, in_array, out, at_end),
            State::Array { close, expect_item } => self.array(close, expect_item, out, at_end),
            State::Name { close, name } => self.name(close, name, out, at_end),
            State::Args { close, args, safe, pending } => self.args(close, args, safe, pending, out, at_end),
            State::AfterCall { close } => self.after_call(close, out, at_end),
        }
    }

    fn content(&mut self, out: &mut Parsed, at_end: bool) -> bool {
        if self.bare_ok {
            let trimmed =
                self.buf.trim_start_matches(|c: char| c.is_whitespace() || self.syntax.between_calls.contains(c));
            if trimmed.is_empty() && !at_end {
                return false;
            }
            if trimmed.starts_with('{') {
                self.buf = trimmed.to_owned();
                self.raw.clear();
                self.state = State::Object { close: "", reader: self.new_reader(), in_array: false };
                return true;
            }
            self.bare_ok = false;
        }
        let found = self
            .syntax
            .markers
            .iter()
            .filter_map(|m| self.buf.find(m.open).map(|at| (at, m)))
            .min_by_key(|(at, m)| (*at, std::cmp::Reverse(m.open.len())));
        if let Some((at, m)) = found {
            let (open, close) = (m.open, m.close);
            // "```" found, but "```json" may still be coming: wait for it to tell.
            let rest = &self.buf[at..];
            let longer_may_follow =
                self.syntax.markers.iter().any(|m2| m2.open.len() > rest.len() && m2.open.starts_with(rest));
            if longer_may_follow && !at_end {
                out.content.push_str(&self.buf[..at]);
                self.buf.drain(..at);
                return false;
            }
            out.content.push_str(&self.buf[..at]);
            self.raw = open.to_owned();
            self.buf.drain(..at + open.len());
            self.state = State::Opened { close };
            return true;
        }
        let keep = if at_end { 0 } else { held_back(&self.buf, self.syntax.markers.iter().map(|m| m.open)) };
        let release = self.buf.len() - keep;
        out.content.push_str(&self.buf[..release]);
        self.buf.drain(..release);
        false
    }

    fn opened(&mut self, close: &'static str, out: &mut Parsed, at_end: bool) -> bool {
        let trimmed = self.buf.trim_start();
        let Some(first) = trimmed.chars().next() else {
            if at_end {
                return self.not_a_call(out);
            }
            self.state = State::Opened { close };
            return false;
        };
        let skipped = self.buf.len() - trimmed.len();
        self.raw.push_str(&self.buf[..skipped]);
        self.buf.drain(..skipped);
        match first {
            '{' => self.state = State::Object { close, reader: self.new_reader(), in_array: false },
            '[' => {
                self.raw.push('[');
                self.buf.drain(..1);
                self.state = State::Array { close, expect_item: true };
            }
            _ if self.syntax.name_args_separator.is_some() => self.state = State::Name { close, name: String::new() },
            _ => return self.not_a_call(out),
        }
        true
    }

    fn object(
        &mut self,
        close: &'static str,
        mut reader: CallObjectReader,
        in_array: bool,
        out: &mut Parsed,
        at_end: bool,
    ) -> bool {
        let text = std::mem::take(&mut self.buf);
        let before = reader.raw().len();
        let result = if at_end { reader.finish() } else { reader.push(&text, &self.tools) };
        match result {
            Ok(step) => {
                self.emit(&step, out);
                match step.done {
                    Some(used) => {
                        let used = if at_end { 0 } else { used };
                        self.buf = text[used..].to_owned();
                        self.calls += u32::from(reader.committed());
                        self.raw.clear();
                        self.state = if in_array {
                            State::Array { close, expect_item: false }
                        } else {
                            State::AfterCall { close }
                        };
                        true
                    }
                    None => {
                        self.state = State::Object { close, reader, in_array };
                        false
                    }
                }
            }
            Err(_) => {
                // Everything read since the marker goes out as content, unparsed text after it.
                self.raw.push_str(reader.raw());
                if !at_end {
                    let consumed = reader.raw().len() - before;
                    self.buf = text[consumed.min(text.len())..].to_owned();
                } else {
                    self.buf = text;
                }
                self.not_a_call(out)
            }
        }
    }

    fn array(&mut self, close: &'static str, expect_item: bool, out: &mut Parsed, at_end: bool) -> bool {
        let trimmed = self.buf.trim_start();
        let Some(first) = trimmed.chars().next() else {
            self.state = State::Array { close, expect_item };
            return if at_end { self.end_of_calls(out) } else { false };
        };
        let skipped = self.buf.len() - trimmed.len();
        self.buf.drain(..skipped);
        match (first, expect_item) {
            ('{', true) => self.state = State::Object { close, reader: self.new_reader(), in_array: true },
            (',', false) => {
                self.buf.drain(..1);
                self.state = State::Array { close, expect_item: true };
            }
            (']', _) => {
                self.buf.drain(..1);
                self.state = State::AfterCall { close };
            }
            _ => return self.end_of_calls(out),
        }
        true
    }

    fn name(&mut self, close: &'static str, mut name: String, out: &mut Parsed, at_end: bool) -> bool {
        let Some(sep) = self.syntax.name_args_separator else {
            return self.not_a_call(out);
        };
        if let Some(at) = self.buf.find(sep) {
            name.push_str(&self.buf[..at]);
            self.raw.push_str(&self.buf[..at + sep.len()]);
            self.buf.drain(..at + sep.len());
            let name = name.trim().to_owned();
            if !self.tools.iter().any(|t| t.name == name) {
                return self.not_a_call(out);
            }
            let trimmed = self.buf.trim_start().to_owned();
            if trimmed.is_empty() && !at_end {
                // Wait for the arguments before committing to the call.
                self.buf.insert_str(0, sep);
                self.raw.truncate(self.raw.len() - sep.len());
                self.state = State::Name { close, name };
                return false;
            }
            if !trimmed.starts_with('{') {
                return self.not_a_call(out);
            }
            self.buf = trimmed;
            self.start_call(name, out);
            let tracker = JsonTracker::new();
            self.state = State::Args { close, args: tracker.clone(), safe: tracker, pending: String::new() };
            return true;
        }
        let name_like = self.buf.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if at_end || !name_like && held_back(&self.buf, [sep]) == 0 {
            self.raw.push_str(&self.buf);
            self.buf.clear();
            return self.not_a_call(out);
        }
        self.state = State::Name { close, name };
        false
    }

    fn args(
        &mut self,
        close: &'static str,
        mut args: JsonTracker,
        mut safe: JsonTracker,
        mut pending: String,
        out: &mut Parsed,
        at_end: bool,
    ) -> bool {
        let index = self.calls - 1;
        let mut fragment = String::new();
        if at_end {
            fragment.push_str(&closing_of(&safe));
            self.buf.clear();
        } else {
            let text = std::mem::take(&mut self.buf);
            for (i, c) in text.char_indices() {
                if args.push(c).is_err() {
                    fragment.push_str(&closing_of(&safe));
                    self.buf = text[i..].to_owned();
                    break;
                }
                pending.push(c);
                if args.is_complete() || args.can_close() {
                    fragment.push_str(&pending);
                    pending.clear();
                    safe = args.clone();
                }
                if args.is_complete() {
                    self.buf = text[i + c.len_utf8()..].to_owned();
                    break;
                }
            }
        }
        if !fragment.is_empty() {
            out.calls.push(ToolCallDelta { index, arguments: Some(fragment), ..Default::default() });
        }
        if at_end || args.is_complete() || !self.buf.is_empty() {
            self.state = State::AfterCall { close };
            return !at_end;
        }
        self.state = State::Args { close, args, safe, pending };
        false
    }

    fn after_call(&mut self, close: &'static str, _out: &mut Parsed, at_end: bool) -> bool {
        let trimmed = self.buf.trim_start();
        if !close.is_empty() {
            if trimmed.starts_with(close) {
                let at = self.buf.len() - trimmed.len() + close.len();
                self.buf.drain(..at);
                self.state = State::AfterCall { close: "" };
                return true;
            } else if !at_end && close.starts_with(trimmed) {
                self.state = State::AfterCall { close };
                return false;
            }
        }
        // Whitespace between calls is not content.
        let skipped = self.buf.len() - trimmed.len();
        self.buf.drain(..skipped);
        if self.buf.is_empty() && !at_end {
            self.state = State::AfterCall { close: "" };
            return false;
        }
        // Another call may follow: the marker again, or a bare object in formats without one.
        self.bare_ok = self.syntax.bare_object;
        if self.syntax.name_args_separator.is_some() && close.is_empty() {
            // `[TOOL_CALLS]a[ARGS]{…}b[ARGS]{…}`: the next name follows directly.
            if self.buf.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                self.state = State::Name { close, name: String::new() };
                return true;
            }
        }
        self.state = State::Content;
        !self.buf.is_empty() || at_end
    }

    /// The held-back call text goes out as content.
    fn not_a_call(&mut self, out: &mut Parsed) -> bool {
        out.content.push_str(&self.raw);
        self.raw.clear();
        self.state = State::Content;
        self.bare_ok = false;
        true
    }

    /// A list of calls ended without its `]` (or with something unexpected).
    fn end_of_calls(&mut self, out: &mut Parsed) -> bool {
        if self.raw.len() > 1 && self.calls == 0 {
            return self.not_a_call(out);
        }
        self.raw.clear();
        self.state = State::Content;
        true
    }

    fn new_reader(&self) -> CallObjectReader {
        CallObjectReader::new(self.syntax.args_keys)
    }

    fn start_call(&mut self, name: String, out: &mut Parsed) {
        out.calls.push(ToolCallDelta { index: self.calls, name: Some(name), id: None, arguments: Some(String::new()) });
        self.calls += 1;
    }

    fn emit(&self, step: &CallStep, out: &mut Parsed) {
        let index = self.calls;
        if let Some(name) = &step.name {
            out.calls.push(ToolCallDelta { index, name: Some(name.clone()), id: None, arguments: Some(String::new()) });
        }
        if !step.arguments.is_empty() {
            out.calls.push(ToolCallDelta { index, arguments: Some(step.arguments.clone()), ..Default::default() });
        }
    }
}

/// Closes arguments cut short; arguments that never began are `{}`.
fn closing_of(safe: &JsonTracker) -> String {
    if safe.has_started() { safe.closing() } else { "{}".to_owned() }
}

/// How many bytes at the end of `text` may be the beginning of one of `markers` and must wait.
pub fn held_back<'a>(text: &str, markers: impl IntoIterator<Item = &'a str>) -> usize {
    let mut keep = 0;
    for marker in markers {
        for (at, _) in text.char_indices().rev().take(marker.chars().count()) {
            let tail = &text[at..];
            if tail.len() < marker.len() && marker.starts_with(tail) {
                keep = keep.max(tail.len());
            }
        }
    }
    keep
}

/// A tool-call format that [`MarkupParser`] parses. Describe the format here and export
/// [`Markup<YourFormat>`](Markup) with [`crate::export_tool_parser!`]; the parsing is done.
pub trait MarkupFormat: 'static {
    /// What the format looks like.
    fn syntax() -> Syntax;
    /// See [`ToolParserPlugin::template_hints`].
    fn template_hints(_config: &Config) -> Vec<String> {
        Vec::new()
    }
    /// See [`ToolParserPlugin::instructions`].
    fn instructions(config: &Config, tools: &[Tool]) -> String;
    /// See [`ToolParserPlugin::render_calls`].
    fn render_calls(config: &Config, calls: &[Call]) -> String;
    /// See [`ToolParserPlugin::call_grammar`].
    fn call_grammar(config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String>;
}

/// The [`ToolParserPlugin`] of a [`MarkupFormat`].
pub struct Markup<F: MarkupFormat> {
    parser: MarkupParser,
    format: std::marker::PhantomData<F>,
}

impl<F: MarkupFormat> ToolParserPlugin for Markup<F> {
    fn new(_config: &Config, tools: Vec<Tool>) -> Result<Self, String> {
        Ok(Self { parser: MarkupParser::new(F::syntax(), tools), format: std::marker::PhantomData })
    }

    fn push(&mut self, text: &str) -> Result<Parsed, String> {
        Ok(self.parser.push(text))
    }

    fn finish(&mut self) -> Result<Parsed, String> {
        Ok(self.parser.finish())
    }

    fn template_hints(config: &Config) -> Vec<String> {
        F::template_hints(config)
    }

    fn instructions(config: &Config, tools: &[Tool]) -> String {
        F::instructions(config, tools)
    }

    fn render_calls(config: &Config, calls: &[Call]) -> String {
        F::render_calls(config, calls)
    }

    fn call_grammar(config: &Config, tools: &[Tool], parallel: bool) -> Result<String, String> {
        F::call_grammar(config, tools, parallel)
    }
}
