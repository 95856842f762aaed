//! Python literals (strings, numbers, `True`/`False`/`None`, lists, tuples, dicts) read into
//! JSON, written from JSON, and as grammar rules; and the scan of a `[f(a=1), …]` call list.

use serde_json::{Map, Number, Value};

/// How far a scan got.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// The list ended at this byte offset.
    Complete(usize),
    /// The text ended inside the list.
    Incomplete,
    /// Not a call list.
    Invalid,
}

/// The calls read whole, and how the scan ended.
pub struct Scanned {
    pub calls: Vec<(String, Value)>,
    pub outcome: Scan,
}

enum Stop {
    /// Ran out of text.
    More,
    Bad,
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

type R<T> = Result<T, Stop>;

impl Cursor<'_> {
    fn ws(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.s.get(self.at).copied().ok_or(Stop::More)
    }
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.at += 1;
            Ok(())
        } else {
            Err(Stop::Bad)
        }
    }
    fn ident(&mut self) -> R<String> {
        self.ws();
        let start = self.at;
        while self.at < self.s.len()
            && (self.s[self.at].is_ascii_alphanumeric() || matches!(self.s[self.at], b'_' | b'.'))
        {
            self.at += 1;
        }
        if self.at == self.s.len() {
            return Err(Stop::More);
        }
        if self.at == start || self.s[start].is_ascii_digit() {
            return Err(Stop::Bad);
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }
    fn value(&mut self) -> R<Value> {
        match self.peek()? {
            q @ (b'\'' | b'"') => self.string(q).map(Value::String),
            b'[' | b'(' => {
                let close = if self.peek()? == b'[' { b']' } else { b')' };
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek()? == close {
                        self.at += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    match self.peek()? {
                        b',' => self.at += 1,
                        c if c == close => {}
                        _ => return Err(Stop::Bad),
                    }
                }
            }
            b'{' => {
                self.at += 1;
                let mut map = Map::new();
                loop {
                    if self.peek()? == b'}' {
                        self.at += 1;
                        return Ok(Value::Object(map));
                    }
                    let key = match self.value()? {
                        Value::String(k) => k,
                        other => other.to_string(),
                    };
                    self.eat(b':')?;
                    map.insert(key, self.value()?);
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {}
                        _ => return Err(Stop::Bad),
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while self.at < self.s.len()
                    && matches!(self.s[self.at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    self.at += 1;
                }
                if self.at == self.s.len() {
                    return Err(Stop::More);
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).map_err(|_| Stop::Bad)?;
                let n: Number = text
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
                    .ok_or(Stop::Bad)?;
                Ok(Value::Number(n))
            }
            _ => match self.ident()?.as_str() {
                "True" | "true" => Ok(Value::Bool(true)),
                "False" | "false" => Ok(Value::Bool(false)),
                "None" | "null" => Ok(Value::Null),
                _ => Err(Stop::Bad),
            },
        }
    }
    fn string(&mut self, quote: u8) -> R<String> {
        self.at += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.at) {
            self.at += 1;
            match c {
                b'\\' => {
                    let e = *self.s.get(self.at).ok_or(Stop::More)?;
                    self.at += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                c if c == quote => return String::from_utf8(out).map_err(|_| Stop::Bad),
                c => out.push(c),
            }
        }
        Err(Stop::More)
    }
    fn call(&mut self) -> R<(String, Value)> {
        let name = self.ident()?;
        self.eat(b'(')?;
        let mut args = Map::new();
        loop {
            if self.peek()? == b')' {
                self.at += 1;
                return Ok((name, Value::Object(args)));
            }
            let key = self.ident()?;
            self.eat(b'=')?;
            args.insert(key, self.value()?);
            match self.peek()? {
                b',' => self.at += 1,
                b')' => {}
                _ => return Err(Stop::Bad),
            }
        }
    }
}

/// Reads `[f(a=1), g(b="x")]` from the start of `text` (whitespace allowed before it).
pub fn scan_calls(text: &str) -> Scanned {
    let mut cur = Cursor { s: text.as_bytes(), at: 0 };
    let mut calls = Vec::new();
    let outcome = (|| -> R<usize> {
        cur.eat(b'[')?;
        loop {
            calls.push(cur.call()?);
            match cur.peek()? {
                b',' => cur.at += 1,
                b']' => return Ok(cur.at + 1),
                _ => return Err(Stop::Bad),
            }
        }
    })();
    let outcome = match outcome {
        Ok(end) => Scan::Complete(end),
        Err(Stop::More) => Scan::Incomplete,
        Err(Stop::Bad) => Scan::Invalid,
    };
    Scanned { calls, outcome }
}

/// A JSON value as a Python literal.
pub fn to_python(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let escaped = s.replace('\\', "\\\\").replace('\'', "\\'").replace('\n', "\\n");
            format!("'{escaped}'")
        }
        Value::Array(items) => format!("[{}]", items.iter().map(to_python).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", to_python(&Value::String(k.clone())), to_python(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The grammar rule for a value of a JSON-schema property.
pub fn value_rule(schema: &Value) -> &'static str {
    match schema.get("type").and_then(|t| t.as_str()) {
        Some("string") => "PYSTRING",
        Some("integer") => "PYINT",
        Some("number") => "PYNUMBER",
        Some("boolean") => "pybool",
        _ => "pyvalue",
    }
}

/// Rules every pythonic grammar shares.
pub const GRAMMAR_RULES: &str = r#"pybool: "True" | "False"
pyvalue: PYSTRING | PYNUMBER | pybool | "None" | "[" (pyvalue (", " pyvalue)*)? "]" | "{" (PYSTRING ": " pyvalue (", " PYSTRING ": " pyvalue)*)? "}"
PYSTRING: /'([^'\\\n]|\\.){0,200}'/
PYINT: /-?[0-9]{1,12}/
PYNUMBER: /-?[0-9]{1,12}(\.[0-9]{1,8})?/
"#;
