//! Bounds on what a template render may produce. Templates may come from a request
//! (`instruction_template_str`, `chat_template_str`, characters), and minijinja bounds steps
//! (fuel) but not bytes: a filter argument such as `indent(width)` or a `%0999999999d` width
//! asks for one allocation of that size (an abort, not an error, when it fails), and a short
//! loop can print gigabytes. So the filters that pad take bounded widths here, and the output
//! stops at a byte cap.

use std::io;

use minijinja::value::{Kwargs, Rest, StringInput, Value};
use minijinja::{Error, ErrorKind, State};

/// Most bytes one render may write: far above any prompt a context holds (a 128k-token context
/// is well under 1 MiB of text), far below what would hurt the server.
pub const MAX_RENDERED_BYTES: usize = 8 << 20;
/// Widest padding a filter may ask for (`indent`, `tojson`'s indent, format widths).
pub const MAX_PAD: usize = 256;

/// An `io::Write` that refuses to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
pub struct CappedOutput {
    pub bytes: Vec<u8>,
    /// Set when a write was refused (minijinja reports only that writing failed).
    pub overflowed: bool,
}

/// What a render that ran into the cap reports.
pub fn overflow_message() -> String {
    format!("the template's output exceeds {MAX_RENDERED_BYTES} bytes")
}

impl io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other(overflow_message()));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn too_wide(what: &str, width: usize) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("{what} of {width} is too wide; at most {MAX_PAD} is accepted"))
}

/// A padding width from a template, refused past [`MAX_PAD`].
pub fn pad_width(what: &str, width: usize) -> Result<usize, Error> {
    if width > MAX_PAD { Err(too_wide(what, width)) } else { Ok(width) }
}

/// minijinja's `indent` with its width bounded.
pub fn indent(
    value: StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let width = match width {
        Some(w) => Some(w),
        None => kwargs.get::<Option<usize>>("width")?,
    };
    if let Some(w) = width {
        pad_width("indent width", w)?;
    }
    minijinja::filters::indent(value, width, first, blank, kwargs)
}

/// minijinja's `format` (printf style) with its field widths and precisions bounded.
pub fn format(state: &State, format_str: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if let Some(s) = format_str.as_str() {
        check_format_widths(s)?;
    }
    minijinja::filters::format(state, format_str, args)
}

/// Wraps pycompat's method callback so `"{:>99999}".format(x)` is bounded like the filter.
pub fn method_callback(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if method == "format"
        && let Some(s) = value.as_str()
    {
        check_format_widths(s)?;
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Refuses a format string whose field specs (printf `%…d` or `{…:…}`) hold a number above
/// [`MAX_PAD`]; plain digits in the surrounding text are not specs and pass.
fn check_format_widths(fmt: &str) -> Result<(), Error> {
    let bytes = fmt.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let spec_end = match bytes[i] {
            // printf: `%` then flags, width, `.precision`, up to the conversion letter.
            b'%' => bytes[i + 1..].iter().position(|c| c.is_ascii_alphabetic() || *c == b'%').map(|p| i + 1 + p),
            // str.format: a replacement field `{…}`.
            b'{' => bytes[i + 1..].iter().position(|&c| c == b'}').map(|p| i + 1 + p),
            _ => None,
        };
        let Some(end) = spec_end else {
            i += 1;
            continue;
        };
        for digits in fmt[i + 1..end].split(|c: char| !c.is_ascii_digit()).filter(|d| !d.is_empty()) {
            let width = digits.parse::<usize>().unwrap_or(usize::MAX);
            if width > MAX_PAD {
                return Err(too_wide("a format width", width));
            }
        }
        i = end + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_an_error() {
        use io::Write;
        let mut out = CappedOutput::default();
        assert!(out.write_all(&vec![b'x'; MAX_RENDERED_BYTES]).is_ok());
        assert!(out.write_all(b"y").is_err());
    }

    #[test]
    fn format_widths_are_bounded_in_specs_only() {
        assert!(check_format_widths("%0999999999999d").is_err());
        assert!(check_format_widths("{:>99999999999}").is_err());
        assert!(check_format_widths("{0:.5000f}").is_err());
        assert!(check_format_widths("Year 2026000: %5d and {:>8} {0}").is_ok());
        assert!(check_format_widths("100% sure {").is_ok());
    }
}
