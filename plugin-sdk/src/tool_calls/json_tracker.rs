//! An incremental JSON syntax checker: fed one character at a time, it says whether the text so
//! far is a valid prefix of a JSON value, when the value is complete, and how to close it. Tool
//! parsers use it to stream a call's arguments while the model writes them and to end a cut-off
//! call with valid JSON.

/// Where the checker stands inside an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InObject {
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,`: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// After a value: `,` or `}`.
    CommaOrEnd,
}

/// Where the checker stands inside an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InArray {
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `,`: a value.
    Value,
    /// After a value: `,` or `]`.
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object(InObject),
    Array(InArray),
}

/// The token being read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    None,
    /// A string; `key` when it is an object key; `escape` counts the characters of an escape
    /// sequence: 1 right after `\`, 2–5 while `\u`'s hex digits are read (one more than remain).
    Str {
        key: bool,
        escape: u8,
    },
    /// A number, checked when it ends.
    Num(String),
    /// `true`, `false` or `null`: the letters still expected.
    Lit(&'static str),
}

/// The text broke JSON syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidJson;

/// Incremental JSON syntax state. Whitespace before the value is allowed; after the value is
/// complete, every further character is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonTracker {
    stack: Vec<Frame>,
    token: Token,
    started: bool,
    complete: bool,
}

impl Default for JsonTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonTracker {
    /// A checker before the first character.
    pub fn new() -> Self {
        Self { stack: Vec::new(), token: Token::None, started: false, complete: false }
    }

    /// Whether a whole value has been read.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether the value has begun (whitespace does not count).
    pub fn has_started(&self) -> bool {
        self.started
    }

    /// How many objects and arrays are open.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Whether [`JsonTracker::closing`] would turn the text so far into valid JSON: not inside a
    /// key, an escape, a number or a literal, and not right after a `,` or `:`.
    pub fn can_close(&self) -> bool {
        if self.complete {
            return true;
        }
        if !self.started {
            return false;
        }
        match &self.token {
            Token::Str { key: false, escape: 0 } => true,
            Token::None => matches!(
                self.stack.last(),
                Some(Frame::Object(InObject::KeyOrEnd | InObject::CommaOrEnd))
                    | Some(Frame::Array(InArray::ValueOrEnd | InArray::CommaOrEnd))
            ),
            _ => false,
        }
    }

    /// The text that closes the value at a point where [`JsonTracker::can_close`] holds.
    pub fn closing(&self) -> String {
        let mut out = String::new();
        if matches!(self.token, Token::Str { .. }) {
            out.push('"');
        }
        for frame in self.stack.iter().rev() {
            out.push(match frame {
                Frame::Object(_) => '}',
                Frame::Array(_) => ']',
            });
        }
        out
    }

    /// Reads one character.
    pub fn push(&mut self, c: char) -> Result<(), InvalidJson> {
        if self.complete {
            return if c.is_whitespace() { Ok(()) } else { Err(InvalidJson) };
        }
        match std::mem::replace(&mut self.token, Token::None) {
            Token::Str { key, escape } => {
                self.token = Token::Str { key, escape };
                return self.push_in_string(c, key, escape);
            }
            Token::Lit(rest) => {
                let mut chars = rest.chars();
                if chars.next() != Some(c) {
                    return Err(InvalidJson);
                }
                let rest = chars.as_str();
                if rest.is_empty() {
                    self.value_done();
                } else {
                    self.token = Token::Lit(rest);
                }
                return Ok(());
            }
            Token::Num(mut n) => {
                if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                    n.push(c);
                    self.token = Token::Num(n);
                    return Ok(());
                }
                if serde_json::from_str::<serde_json::Number>(&n).is_err() {
                    return Err(InvalidJson);
                }
                self.value_done();
                if self.complete {
                    return if c.is_whitespace() { Ok(()) } else { Err(InvalidJson) };
                }
            }
            Token::None => {}
        }
        self.push_structural(c)
    }

    /// At the end of the text: a number at the very end completes here.
    pub fn finish(&mut self) -> Result<(), InvalidJson> {
        if let Token::Num(n) = &self.token {
            if serde_json::from_str::<serde_json::Number>(n).is_err() {
                return Err(InvalidJson);
            }
            self.token = Token::None;
            self.value_done();
        }
        Ok(())
    }

    fn push_in_string(&mut self, c: char, key: bool, escape: u8) -> Result<(), InvalidJson> {
        match escape {
            0 if c == '"' => {
                self.token = Token::None;
                if key {
                    self.set_top(Frame::Object(InObject::Colon));
                } else {
                    self.value_done();
                }
            }
            0 if c == '\\' => self.token = Token::Str { key, escape: 1 },
            0 if (c as u32) < 0x20 => return Err(InvalidJson),
            0 => {}
            1 => match c {
                'u' => self.token = Token::Str { key, escape: 5 },
                '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => self.token = Token::Str { key, escape: 0 },
                _ => return Err(InvalidJson),
            },
            n => {
                if !c.is_ascii_hexdigit() {
                    return Err(InvalidJson);
                }
                // 5, 4, 3, 2: that many hex digits are still to come, plus one.
                self.token = Token::Str { key, escape: if n == 2 { 0 } else { n - 1 } };
            }
        }
        Ok(())
    }

    fn push_structural(&mut self, c: char) -> Result<(), InvalidJson> {
        if c.is_whitespace() {
            return Ok(());
        }
        let expects_value = match self.stack.last() {
            None => !self.started,
            Some(Frame::Object(InObject::Value)) => true,
            Some(Frame::Array(InArray::ValueOrEnd | InArray::Value)) => true,
            Some(_) => false,
        };
        if expects_value {
            self.started = true;
            return self.begin_value(c);
        }
        match (self.stack.last().copied(), c) {
            (Some(Frame::Object(InObject::KeyOrEnd | InObject::Key)), '"') => {
                self.token = Token::Str { key: true, escape: 0 };
            }
            (Some(Frame::Object(InObject::KeyOrEnd | InObject::CommaOrEnd)), '}') => {
                self.stack.pop();
                self.value_done();
            }
            (Some(Frame::Object(InObject::Colon)), ':') => self.set_top(Frame::Object(InObject::Value)),
            (Some(Frame::Object(InObject::CommaOrEnd)), ',') => self.set_top(Frame::Object(InObject::Key)),
            (Some(Frame::Array(InArray::CommaOrEnd)), ']') => {
                self.stack.pop();
                self.value_done();
            }
            (Some(Frame::Array(InArray::CommaOrEnd)), ',') => self.set_top(Frame::Array(InArray::Value)),
            _ => return Err(InvalidJson),
        }
        Ok(())
    }

    fn begin_value(&mut self, c: char) -> Result<(), InvalidJson> {
        match c {
            '{' => self.stack.push(Frame::Object(InObject::KeyOrEnd)),
            '[' => self.stack.push(Frame::Array(InArray::ValueOrEnd)),
            ']' if self.stack.last() == Some(&Frame::Array(InArray::ValueOrEnd)) => {
                self.stack.pop();
                self.value_done();
            }
            '"' => self.token = Token::Str { key: false, escape: 0 },
            't' => self.token = Token::Lit("rue"),
            'f' => self.token = Token::Lit("alse"),
            'n' => self.token = Token::Lit("ull"),
            '-' | '0'..='9' => self.token = Token::Num(c.to_string()),
            _ => return Err(InvalidJson),
        }
        Ok(())
    }

    fn set_top(&mut self, frame: Frame) {
        if let Some(top) = self.stack.last_mut() {
            *top = frame;
        }
    }

    /// A value ended: its container now expects a comma or its end.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            None => self.complete = true,
            Some(Frame::Object(s)) => *s = InObject::CommaOrEnd,
            Some(Frame::Array(s)) => *s = InArray::CommaOrEnd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<JsonTracker, InvalidJson> {
        let mut t = JsonTracker::new();
        for c in text.chars() {
            t.push(c)?;
        }
        t.finish()?;
        Ok(t)
    }

    #[test]
    fn accepts_what_serde_accepts() {
        for text in [
            r#"{"a": 1, "b": [true, false, null], "c": {"d": "e\"f\\g\u00e9"}, "n": -1.5e3}"#,
            "[]",
            "{}",
            "  [1, 2 ,3]  ",
            r#""just a string""#,
            "42",
            r#"{"emoji": "🙂", "esc": "\ud83d\ude42"}"#,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "{text}");
            let t = check(text).unwrap_or_else(|_| panic!("refused {text}"));
            assert!(t.is_complete(), "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        for text in [r#"{"a" 1}"#, "[1,]", "{,}", r#"{"a": tru}"#, "[01x]", r#"{"a": "\q"}"#, "{} {}", "[1 2]"] {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_err(), "{text}");
            assert!(check(text).map(|t| t.is_complete()) != Ok(true), "accepted {text}");
        }
    }

    #[test]
    fn closing_makes_every_closable_prefix_valid() {
        let text = r#"{"city": "Paris, \"FR\"", "days": [1, 2, {"x": null}], "deep": {"k": "v"}}"#;
        let mut t = JsonTracker::new();
        for (i, c) in text.char_indices() {
            t.push(c).unwrap();
            if t.can_close() {
                let healed = format!("{}{}", &text[..i + c.len_utf8()], t.closing());
                assert!(serde_json::from_str::<serde_json::Value>(&healed).is_ok(), "{healed}");
            }
        }
        assert!(t.is_complete());
    }
}
