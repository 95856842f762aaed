//! One call written as a JSON object — `{"name": "f", "arguments": {…}}` (or `"parameters"`) —
//! read as it streams: the name as soon as it is complete, then the arguments in fragments whose
//! concatenation is valid JSON. Objects with another key order are read whole.

use super::json_tracker::JsonTracker;
use crate::Tool;

/// What reading a call produced so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStep {
    /// The function name, once, when the call is known to be one.
    pub name: Option<String>,
    /// A fragment of the arguments' JSON (possibly empty).
    pub arguments: String,
    /// Set when the call is over: how many bytes of the pushed text it used.
    pub done: Option<usize>,
}

/// The text is not a call to a declared tool with valid JSON arguments; the caller treats what
/// it held back as content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotACall;

/// The header `{"name": "…", "arguments": ` up to the first character of the arguments.
enum Header {
    NeedMore,
    NoMatch,
    Found { name: String, args_at: usize },
}

enum State {
    /// Before the arguments begin.
    Header,
    /// Arguments streaming; `safe` is the tracker where the emitted text ends.
    Streaming { args: JsonTracker, safe: JsonTracker, emitted: usize, args_at: usize },
    /// Arguments complete; the rest of the object follows.
    AfterArgs,
    /// Another key order: the object is read whole, then checked.
    Whole,
    /// The call was cut by invalid JSON and closed.
    Closed,
}

/// Reads one call object. Feed it text from the `{` on.
pub struct CallObjectReader {
    buf: String,
    object: JsonTracker,
    state: State,
    args_keys: &'static [&'static str],
}

/// Keys that may hold the arguments.
pub const ARGUMENT_KEYS: &[&str] = &["arguments", "parameters"];

impl CallObjectReader {
    /// A reader that takes the arguments from any of `args_keys`.
    pub fn new(args_keys: &'static [&'static str]) -> Self {
        Self { buf: String::new(), object: JsonTracker::new(), state: State::Header, args_keys }
    }

    /// The text read so far.
    pub fn raw(&self) -> &str {
        &self.buf
    }

    /// Whether the name has been reported (the call can no longer be turned back into content).
    pub fn committed(&self) -> bool {
        matches!(self.state, State::Streaming { .. } | State::AfterArgs | State::Closed)
    }

    /// Reads `text`; stops at the end of the object (see [`CallStep::done`]).
    pub fn push(&mut self, text: &str, tools: &[Tool]) -> Result<CallStep, NotACall> {
        let mut step = CallStep::default();
        for (i, c) in text.char_indices() {
            let end = i + c.len_utf8();
            if self.object.push(c).is_err() {
                return self.invalid(step, i);
            }
            self.buf.push(c);
            match &mut self.state {
                State::Header => match match_header(&self.buf, self.args_keys) {
                    Header::NeedMore => {}
                    Header::NoMatch => self.state = State::Whole,
                    Header::Found { name, args_at } => {
                        if !self.buf[args_at..].starts_with('{') {
                            self.state = State::Whole;
                        } else if !tools.iter().any(|t| t.name == name) {
                            return Err(NotACall);
                        } else {
                            step.name = Some(name);
                            let mut args = JsonTracker::new();
                            let _ = args.push('{');
                            step.arguments.push('{');
                            self.state = State::Streaming { safe: args.clone(), args, emitted: args_at + 1, args_at };
                        }
                    }
                },
                State::Streaming { args, safe, emitted, args_at } => {
                    if args.push(c).is_err() {
                        return self.invalid(step, i);
                    }
                    if args.is_complete() || args.can_close() {
                        step.arguments.push_str(&self.buf[*emitted..]);
                        *emitted = self.buf.len();
                        *safe = args.clone();
                    }
                    if args.is_complete() {
                        debug_assert!(*args_at < *emitted);
                        self.state = State::AfterArgs;
                    }
                }
                State::AfterArgs | State::Whole | State::Closed => {}
            }
            if self.object.is_complete() {
                return self.complete(step, end, tools);
            }
        }
        Ok(step)
    }

    /// The text ended inside the object: a started call is closed with valid JSON; anything
    /// else was not a call.
    pub fn finish(&mut self) -> Result<CallStep, NotACall> {
        match &self.state {
            State::Streaming { safe, .. } => {
                let closing = safe.closing();
                self.state = State::Closed;
                Ok(CallStep { name: None, arguments: closing, done: Some(0) })
            }
            State::AfterArgs | State::Closed => Ok(CallStep { done: Some(0), ..CallStep::default() }),
            State::Header | State::Whole => Err(NotACall),
        }
    }

    /// Invalid JSON at byte `at` of the pushed text.
    fn invalid(&mut self, mut step: CallStep, at: usize) -> Result<CallStep, NotACall> {
        match &self.state {
            State::Streaming { safe, .. } => {
                step.arguments.push_str(&safe.closing());
                self.state = State::Closed;
                step.done = Some(at);
                Ok(step)
            }
            State::AfterArgs | State::Closed => {
                step.done = Some(at);
                Ok(step)
            }
            State::Header | State::Whole => Err(NotACall),
        }
    }

    fn complete(&mut self, mut step: CallStep, end: usize, tools: &[Tool]) -> Result<CallStep, NotACall> {
        step.done = Some(end);
        if !matches!(self.state, State::Whole | State::Header) {
            return Ok(step);
        }
        let value: serde_json::Value = serde_json::from_str(&self.buf).map_err(|_| NotACall)?;
        let name = value.get("name").and_then(|n| n.as_str()).ok_or(NotACall)?;
        if !tools.iter().any(|t| t.name == name) {
            return Err(NotACall);
        }
        let args = self.args_keys.iter().find_map(|k| value.get(*k));
        let args = match args {
            None => serde_json::Value::Object(Default::default()),
            // Some models write the arguments as a JSON string.
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).map_err(|_| NotACall)?,
            Some(v) => v.clone(),
        };
        if !args.is_object() {
            return Err(NotACall);
        }
        step.name = Some(name.to_owned());
        step.arguments = args.to_string();
        self.state = State::AfterArgs;
        Ok(step)
    }
}

/// Matches `{"name": "…", "<args key>": ` and one more character.
fn match_header(buf: &str, args_keys: &[&str]) -> Header {
    let mut cur = Cursor { s: buf, at: 0 };
    macro_rules! need {
        ($e:expr) => {
            match $e {
                Some(true) => {}
                Some(false) => return Header::NoMatch,
                None => return Header::NeedMore,
            }
        };
    }
    need!(cur.literal("{"));
    need!(cur.literal("\"name\""));
    need!(cur.literal(":"));
    let name = match cur.string() {
        Some(Some(name)) => name,
        Some(None) => return Header::NoMatch,
        None => return Header::NeedMore,
    };
    need!(cur.literal(","));
    let mut matched = None;
    for key in args_keys {
        let mut probe = Cursor { s: buf, at: cur.at };
        match probe.literal(&format!("\"{key}\"")) {
            Some(true) => matched = Some(Some(probe.at)),
            Some(false) => {}
            None => matched = matched.or(Some(None)),
        }
    }
    match matched {
        Some(Some(at)) => cur.at = at,
        Some(None) => return Header::NeedMore,
        None => return Header::NoMatch,
    }
    need!(cur.literal(":"));
    cur.skip_ws();
    if cur.at >= buf.len() {
        return Header::NeedMore;
    }
    Header::Found { name, args_at: cur.at }
}

/// A position in the header being matched. `None` from a method: the text ends too soon.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.s[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Skips whitespace, then matches `lit`.
    fn literal(&mut self, lit: &str) -> Option<bool> {
        self.skip_ws();
        let rest = &self.s[self.at..];
        if rest.starts_with(lit) {
            self.at += lit.len();
            Some(true)
        } else if lit.starts_with(rest) {
            None
        } else {
            Some(false)
        }
    }

    /// Skips whitespace, then reads a JSON string (`Some(None)`: not a string).
    fn string(&mut self) -> Option<Option<String>> {
        self.skip_ws();
        let rest = &self.s[self.at..];
        if rest.is_empty() {
            return None;
        }
        if !rest.starts_with('"') {
            return Some(None);
        }
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    self.at += i + 1;
                    return Some(serde_json::from_str(&rest[..=i]).ok());
                }
                _ => {}
            }
        }
        None
    }
}
