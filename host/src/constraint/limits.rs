//! Bounds on the grammars a request may ask for, checked before any compiler sees them, and the
//! deep stack compilation runs on.
//!
//! A request's grammar drives work far beyond its own size: llama.cpp's GBNF rewrite (which
//! schoolmarm follows) copies a repeated item `n` times — and a repetition of a repetition
//! multiplies — and writes `x{0,n}` as a chain of `n` nested rules, which the parsers then walk
//! recursively. So the expansion is measured from the source, without expanding it, and refused
//! past a budget; what stays within it compiles on a thread whose stack fits the deepest chain
//! the budget allows.

use serde_json::Value;

/// Longest `grammar_string` accepted (llama.cpp's own JSON grammar is ~1 KiB).
pub const MAX_GBNF_BYTES: usize = 64 << 10;
/// Most grammar elements after repetitions are expanded (each a character, a character-set
/// entry or a rule reference; ~8 bytes each in the rewrite, more in the compilers).
pub const MAX_EXPANDED_ELEMENTS: u64 = 200_000;
/// Most rules after the rewrite (each optional repetition adds one rule, nested in the last).
pub const MAX_RULES: u64 = 4_000;
/// Deepest nesting of parenthesised groups (the rewrite's parser recurses on each).
pub const MAX_GROUP_DEPTH: u64 = 64;
/// Largest JSON schema accepted, serialized.
pub const MAX_SCHEMA_BYTES: usize = 256 << 10;
/// Most `$ref`s in one schema: a chain of references is compiled recursively, one level per
/// reference.
pub const MAX_SCHEMA_REFS: usize = 1_000;
/// Stack of the thread grammars compile on: the compilers recurse once per nested rule or
/// reference, a few KiB a level; this holds the deepest grammar the bounds above allow with
/// room to spare. Only the pages touched are ever committed.
pub const COMPILE_STACK_BYTES: usize = 256 << 20;

/// A grammar beyond the bounds.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{0}")]
pub struct TooLarge(pub String);

/// What the GBNF rewrite would produce, measured without producing it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GbnfCost {
    pub elements: u64,
    pub rules: u64,
    pub group_depth: u64,
}

/// Refuses a GBNF grammar whose rewrite would exceed the bounds.
pub fn check_gbnf(gbnf: &str) -> Result<GbnfCost, TooLarge> {
    if gbnf.len() > MAX_GBNF_BYTES {
        return Err(TooLarge(format!("the grammar has {} bytes; at most {MAX_GBNF_BYTES} are accepted", gbnf.len())));
    }
    let cost = gbnf_cost(gbnf.as_bytes());
    if cost.group_depth > MAX_GROUP_DEPTH {
        return Err(TooLarge(format!("groups nest {} deep; at most {MAX_GROUP_DEPTH} are accepted", cost.group_depth)));
    }
    if cost.rules > MAX_RULES {
        return Err(TooLarge(format!(
            "the grammar expands to {} rules (each optional repetition adds one); at most {MAX_RULES} are accepted",
            cost.rules
        )));
    }
    if cost.elements > MAX_EXPANDED_ELEMENTS {
        return Err(TooLarge(format!(
            "the grammar expands to {} elements once repetitions are written out; at most {MAX_EXPANDED_ELEMENTS} are accepted",
            cost.elements
        )));
    }
    Ok(cost)
}

/// Walks the GBNF source as schoolmarm's parser does (strings, character sets, names, groups,
/// repetition operators, comments), adding up what its rewrite creates. Counts saturate, so an
/// absurd grammar measures as `u64::MAX` rather than overflowing. Malformed input is measured as
/// far as it goes; the parser reports the syntax error itself.
fn gbnf_cost(src: &[u8]) -> GbnfCost {
    let mut cost = GbnfCost::default();
    // Elements the item before a repetition operator occupies (what the rewrite copies).
    let mut last_item: u64 = 0;
    let mut depth: u64 = 0;
    let mut i = 0;
    let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
    while i < src.len() {
        match src[i] {
            b'#' => {
                while i < src.len() && src[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let (chars, next) = quoted(src, i + 1, b'"');
                add(&mut cost.elements, chars);
                last_item = chars;
                i = next;
            }
            b'[' => {
                // A set's entries, ranges counting twice, all copied by a repetition.
                let (chars, next) = quoted(src, i + 1, b']');
                add(&mut cost.elements, chars);
                last_item = chars.max(1);
                i = next;
            }
            b'(' => {
                depth += 1;
                cost.group_depth = cost.group_depth.max(depth);
                add(&mut cost.rules, 1);
                last_item = 0;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                add(&mut cost.elements, 1);
                last_item = 1;
                i += 1;
            }
            b'.' => {
                add(&mut cost.elements, 1);
                last_item = 1;
                i += 1;
            }
            b'*' | b'+' | b'?' => {
                let (min, max) = match src[i] {
                    b'*' => (0, None),
                    b'+' => (1, None),
                    _ => (0, Some(1)),
                };
                last_item = repeat(&mut cost, last_item, min, max);
                i += 1;
            }
            b'{' => {
                let (min, max, next) = braces(src, i + 1);
                last_item = repeat(&mut cost, last_item, min, max);
                i = next;
            }
            b':' if src[i..].starts_with(b"::=") => {
                add(&mut cost.rules, 1);
                last_item = 0;
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                while i < src.len() && (src[i].is_ascii_alphanumeric() || src[i] == b'-' || src[i] == b'_') {
                    i += 1;
                }
                add(&mut cost.elements, 1);
                last_item = 1;
            }
            _ => i += 1,
        }
    }
    cost
}

/// llama.cpp's rewrite of `item{min,max}` (`max` `None`: unbounded): `min` copies inline, then
/// one rule per optional copy (one recursive rule when unbounded), each holding a copy plus a
/// reference. Returns the size of what now stands where the item stood.
fn repeat(cost: &mut GbnfCost, item: u64, min: u64, max: Option<u64>) -> u64 {
    let optional = match max {
        Some(max) => max.saturating_sub(min),
        None => 1,
    };
    cost.elements = cost
        .elements
        .saturating_add(item.saturating_mul(min.saturating_sub(1)))
        .saturating_add(optional.saturating_mul(item.saturating_add(3)));
    cost.rules = cost.rules.saturating_add(optional);
    let inline = if min == 0 { 0 } else { item.saturating_mul(min) };
    inline.saturating_add(u64::from(optional > 0))
}

/// Counts the characters of a string or set body starting at `start` up to the unescaped
/// `close`; returns the count and the index after `close`.
fn quoted(src: &[u8], start: usize, close: u8) -> (u64, usize) {
    let mut chars = 0u64;
    let mut i = start;
    while i < src.len() && src[i] != close {
        i += if src[i] == b'\\' { 2 } else { utf8_len(src[i]) };
        chars += 1;
    }
    (chars, i + 1)
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// `{n}`, `{n,}` or `{n,m}` from after the `{`: (min, max, index after `}`).
fn braces(src: &[u8], start: usize) -> (u64, Option<u64>, usize) {
    let end = src[start..].iter().position(|&c| c == b'}').map_or(src.len(), |p| start + p);
    let body = String::from_utf8_lossy(&src[start..end]);
    let number = |s: &str| s.trim().parse::<u64>().unwrap_or(u64::MAX);
    let (min, max) = match body.split_once(',') {
        None => (number(&body), Some(number(&body))),
        Some((lo, hi)) if hi.trim().is_empty() => (number(lo), None),
        Some((lo, hi)) => (number(lo), Some(number(hi))),
    };
    (min, max, (end + 1).min(src.len()))
}

/// Refuses a JSON schema too large to compile safely (bytes, `$ref`s).
pub fn check_schema(schema: &Value) -> Result<(), TooLarge> {
    let bytes = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_SCHEMA_BYTES {
        return Err(TooLarge(format!("the schema has {bytes} bytes; at most {MAX_SCHEMA_BYTES} are accepted")));
    }
    // An explicit stack: the schema is request data, and its nesting must not drive recursion.
    let mut refs = 0usize;
    let mut pending = vec![schema];
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                refs += usize::from(map.contains_key("$ref"));
                pending.extend(map.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    if refs > MAX_SCHEMA_REFS {
        return Err(TooLarge(format!("the schema has {refs} `$ref`s; at most {MAX_SCHEMA_REFS} are accepted")));
    }
    Ok(())
}

/// Runs `f` on a thread with [`COMPILE_STACK_BYTES`] of stack and waits for it. A panic in `f`
/// comes back as `Err` with its message.
pub fn on_compile_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("hearth-grammar".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start the grammar compiler's thread: {e}"))?;
        handle.join().map_err(|panic| crate::panics::panic_message(&*panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_size(gbnf: &str) -> (u64, u64) {
        let parsed = schoolmarm::parse::parse(gbnf).expect("parses");
        let elements: usize = parsed.rules.iter().map(Vec::len).sum();
        (elements as u64, parsed.rules.len() as u64)
    }

    /// The estimate is an upper bound of what schoolmarm really builds, and not a loose one.
    #[test]
    fn the_estimate_bounds_the_real_rewrite_closely() {
        for gbnf in [
            "root ::= \"abc\"{5}",
            "root ::= \"a\"{0,50}",
            "root ::= (\"ab\" [0-9]+){2,7} x*\nx ::= [a-z] | \"q\"?",
            "root ::= \"abc\"{3}{4}",
            "root ::= [^\"\\\\] \"\\\"\" ( \"x\" ( \"y\" )? )*  # comment \"{9999}\n",
            "root ::= \"é€😀\"{4,9}",
        ] {
            let (elements, rules) = parsed_size(gbnf);
            let cost = gbnf_cost(gbnf.as_bytes());
            assert!(cost.elements + 2 * cost.rules >= elements, "{gbnf}: {cost:?} vs {elements}");
            assert!(cost.rules + 1 >= rules, "{gbnf}: {cost:?} vs {rules} rules");
            assert!(cost.elements <= 4 * elements + 16, "{gbnf}: {cost:?} is far above {elements}");
        }
    }

    #[test]
    fn amplifying_grammars_are_refused_before_parsing() {
        let big_literal = format!("root ::= \"{}\"{{2000}}", "x".repeat(100_000));
        assert!(check_gbnf(&big_literal).unwrap_err().0.contains("bytes"));
        let literal = format!("root ::= \"{}\"{{2000}}", "x".repeat(1_000));
        assert!(check_gbnf(&literal).unwrap_err().0.contains("elements"));
        assert!(check_gbnf("root ::= \"a\"{2000}{2000}{2000}").unwrap_err().0.contains("elements"));
        assert!(check_gbnf("root ::= \"a\"{0,1999}{0,1999}{0,1999}").unwrap_err().0.contains("rules"));
        let chain: String = (0..4_100).map(|i| format!("r{i} ::= r{}\n", i + 1)).collect();
        assert!(check_gbnf(&format!("root ::= r0\n{chain}")).unwrap_err().0.contains("rules"));
        let chain: String = (0..20_000).map(|i| format!("r{i} ::= r{}\n", i + 1)).collect();
        assert!(check_gbnf(&format!("root ::= r0\n{chain}")).unwrap_err().0.contains("bytes"));
        let nested = format!("root ::= {}\"a\"{}", "(".repeat(500), ")".repeat(500));
        assert!(check_gbnf(&nested).unwrap_err().0.contains("nest"));
    }

    #[test]
    fn ordinary_grammars_pass() {
        for gbnf in [
            "root ::= \"a\"{0,500}",
            "root ::= [0-9]{1,10} (\",\" [0-9]{1,10})*",
            "root ::= object\nobject ::= \"{\" ws ( string \":\" ws value )? \"}\"\nvalue ::= object | string\nstring ::= \"\\\"\" [^\"]* \"\\\"\"\nws ::= [ \\t\\n]*",
        ] {
            check_gbnf(gbnf).unwrap_or_else(|e| panic!("{gbnf}: {e}"));
        }
    }

    #[test]
    fn schemas_with_too_many_refs_are_refused() {
        let chain = |n: usize| {
            let defs: serde_json::Map<String, Value> = (0..n)
                .map(|i| {
                    let next = if i + 1 < n {
                        serde_json::json!({"$ref": format!("#/$defs/d{}", i + 1)})
                    } else {
                        serde_json::json!({"type": "integer"})
                    };
                    (format!("d{i}"), next)
                })
                .collect();
            serde_json::json!({"$ref": "#/$defs/d0", "$defs": defs})
        };
        assert!(check_schema(&chain(200)).is_ok());
        assert!(check_schema(&chain(2000)).unwrap_err().0.contains("$ref"));
    }

    #[test]
    fn the_compile_stack_holds_deep_recursion_and_reports_panics() {
        fn depth(n: u64) -> u64 {
            let pad = std::hint::black_box([0u8; 512]);
            if n == 0 { u64::from(pad[0]) } else { 1 + depth(n - 1) }
        }
        assert_eq!(on_compile_stack(|| depth(100_000)).unwrap(), 100_000);
        let err = on_compile_stack(|| -> u32 { panic!("boom") }).unwrap_err();
        assert!(err.contains("boom"), "{err}");
    }
}
