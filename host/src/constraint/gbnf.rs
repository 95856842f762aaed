//! GBNF — llama.cpp's grammar format, text-generation-webui's `grammar_string` — as a Lark
//! grammar for llguidance. schoolmarm (a port of llama.cpp's parser) reads the GBNF into
//! llama.cpp's rule elements, repetitions already expanded into helper rules; each rule then
//! becomes one Lark rule, so GBNF and the other constraints share one decoding engine.

use std::collections::BTreeMap;

use schoolmarm::{Element, ElementType};

/// Why a GBNF grammar cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{0}")]
pub struct GbnfError(String);

/// The Lark grammar that accepts what the GBNF grammar `gbnf` accepts from its `root` rule.
pub fn to_lark(gbnf: &str) -> Result<String, GbnfError> {
    let parsed = schoolmarm::parse::parse(gbnf).map_err(|e| GbnfError(e.to_string()))?;
    let root = parsed.root_index().ok_or_else(|| GbnfError("the grammar has no `root` rule".into()))?;
    let names: BTreeMap<usize, &str> = parsed.symbol_ids.iter().map(|(n, &i)| (i as usize, n.as_str())).collect();
    let mut lark = format!("start: r{root}\n");
    for (i, rule) in parsed.rules.iter().enumerate() {
        let alternatives: Vec<&[Element]> = rule
            .split(|e| matches!(e.etype, ElementType::Alt | ElementType::End))
            .take(rule.iter().filter(|e| matches!(e.etype, ElementType::Alt | ElementType::End)).count())
            .collect();
        if alternatives.is_empty() {
            let name = names.get(&i).copied().unwrap_or("?");
            return Err(GbnfError(format!("rule `{name}` is used but never defined")));
        }
        let mut rendered: Vec<String> = alternatives.iter().map(|alt| sequence(alt)).collect::<Result<_, _>>()?;
        // Lark has no empty alternative: a rule that may match nothing is an optional group.
        let may_be_empty = rendered.iter().any(String::is_empty);
        rendered.retain(|s| !s.is_empty());
        let body = match (rendered.is_empty(), may_be_empty) {
            (true, _) => "\"\"".to_string(),
            (false, true) => format!("({})?", rendered.join(" | ")),
            (false, false) => rendered.join(" | "),
        };
        lark.push_str(&format!("r{i}: {body}\n"));
    }
    Ok(lark)
}

/// One alternative: literal runs as strings, character sets as regexes, references by name.
fn sequence(elements: &[Element]) -> Result<String, GbnfError> {
    let mut parts: Vec<String> = Vec::new();
    let mut literal = String::new();
    let flush = |literal: &mut String, parts: &mut Vec<String>| {
        if !literal.is_empty() {
            parts.push(quote(literal));
            literal.clear();
        }
    };
    let mut i = 0;
    while i < elements.len() {
        let e = elements[i];
        match e.etype {
            ElementType::Char | ElementType::CharNot => {
                // A character set runs on while ranges and alternatives follow.
                let mut end = i + 1;
                while end < elements.len()
                    && matches!(elements[end].etype, ElementType::CharRngUpper | ElementType::CharAlt)
                {
                    end += 1;
                }
                if e.etype == ElementType::Char && end == i + 1 {
                    literal.push(char_of(e.value)?);
                } else {
                    flush(&mut literal, &mut parts);
                    parts.push(char_set(&elements[i..end])?);
                }
                i = end;
            }
            ElementType::CharAny => {
                flush(&mut literal, &mut parts);
                parts.push("/(?s:.)/".into());
                i += 1;
            }
            ElementType::RuleRef => {
                flush(&mut literal, &mut parts);
                parts.push(format!("r{}", e.value));
                i += 1;
            }
            ElementType::CharRngUpper | ElementType::CharAlt | ElementType::Alt | ElementType::End => {
                return Err(GbnfError("a malformed character set".into()));
            }
        }
    }
    flush(&mut literal, &mut parts);
    Ok(parts.join(" "))
}

/// `[...]` or `[^...]` as a Lark regex, every character escaped by its code point.
fn char_set(elements: &[Element]) -> Result<String, GbnfError> {
    let negated = elements[0].etype == ElementType::CharNot;
    let mut set = String::new();
    for e in elements {
        match e.etype {
            ElementType::CharRngUpper => set.push_str(&format!("-\\x{{{:x}}}", checked(e.value)?)),
            _ => set.push_str(&format!("\\x{{{:x}}}", checked(e.value)?)),
        }
    }
    Ok(format!("/[{}{set}]/", if negated { "^" } else { "" }))
}

fn checked(cp: u32) -> Result<u32, GbnfError> {
    char_of(cp).map(|_| cp)
}

fn char_of(cp: u32) -> Result<char, GbnfError> {
    char::from_u32(cp).ok_or_else(|| GbnfError(format!("U+{cp:X} is not a character")))
}

/// A Lark (JSON-syntax) string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_sets_and_references_become_lark() {
        let lark = to_lark("root ::= \"yes\" | \"no\" tail\ntail ::= [a-c0] [^\"\\n]").unwrap();
        assert!(lark.starts_with("start: r0\n"), "{lark}");
        assert!(lark.contains("r0: \"yes\" | \"no\" r1\n"), "{lark}");
        assert!(lark.contains("r1: /[\\x{61}-\\x{63}\\x{30}]/ /[^\\x{22}\\x{a}]/\n"), "{lark}");
    }

    #[test]
    fn repetitions_become_helper_rules_that_may_be_empty() {
        let lark = to_lark("root ::= [0-9]+ \"!\"?").unwrap();
        assert!(lark.contains(")?"), "an optional group for the empty alternative: {lark}");
        assert!(lark.lines().filter(|l| l.starts_with('r')).count() > 1, "helper rules: {lark}");
    }

    #[test]
    fn quoting_escapes_what_json_strings_must() {
        assert_eq!(quote("a\"b\\c\n\u{7f}é"), "\"a\\\"b\\\\c\\u000a\\u007fé\"");
    }

    #[test]
    fn bad_grammars_are_errors() {
        assert!(to_lark("root ::= \"unclosed").is_err());
        assert!(to_lark("other ::= \"x\"").unwrap_err().to_string().contains("root"));
        let err = to_lark("root ::= missing").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
