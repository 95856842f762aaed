//! Chat templates rendered with minijinja the way transformers renders them with Jinja2:
//! `trim_blocks`/`lstrip_blocks`, Python string methods, `raise_exception`, `strftime_now` and a
//! `tojson` that writes what Python's `json.dumps` writes. Templates may come from a request, so
//! rendering is bounded (fuel) and every failure is an error naming the template problem.

use std::io;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use super::template_bounds::{self, CappedOutput};

/// Upper bound on template work, so a request's `instruction_template_str` cannot spin forever.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// A template that failed to compile or render.
#[derive(Debug, thiserror::Error)]
#[error("chat template error: {0}")]
pub struct TemplateError(pub String);

impl From<Error> for TemplateError {
    fn from(e: Error) -> Self {
        // minijinja's Display carries the kind, the line and the detail.
        let mut msg = e.to_string();
        if let Some(detail) = e.detail()
            && !msg.contains(detail)
        {
            msg = format!("{msg}: {detail}");
        }
        TemplateError(msg)
    }
}

/// Inputs of one render, as Hugging Face templates name them.
#[derive(Debug, Serialize)]
pub struct TemplateContext<'a> {
    pub messages: &'a [serde_json::Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<&'a [serde_json::Value]>,
    pub add_generation_prompt: bool,
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    /// Extra variables (`enable_thinking`, `reasoning_effort`, …) passed straight through.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    kind: Kind,
}

enum Kind {
    /// Compiled here (the model's, the settings' and the user data folder's templates).
    Local(Environment<'static>),
    /// A template a request brought: compiled and rendered only in a child process
    /// ([`template_sandbox`](super::template_sandbox)), where no allocation it makes can take
    /// the server down — minijinja folds constant expressions such as `'x' * 100000000` while
    /// compiling, so even compiling one here could.
    Sandboxed { source: String, reads_tools: bool },
}

/// `source` with transformers' `{% generation %}…{% endgeneration %}` (which marks the
/// assistant's tokens for training masks and renders its body unchanged) as a plain block.
fn without_generation_tags(source: &str) -> String {
    static TAGS: std::sync::LazyLock<Option<(regex::Regex, regex::Regex)>> = std::sync::LazyLock::new(|| {
        let open = regex::Regex::new(r"\{%(-?)\s*generation\s*(-?)%\}").ok()?;
        let close = regex::Regex::new(r"\{%(-?)\s*endgeneration\s*(-?)%\}").ok()?;
        Some((open, close))
    });
    match &*TAGS {
        Some((open, close)) if source.contains("generation") => {
            let opened = open.replace_all(source, "{%${1} if true ${2}%}");
            close.replace_all(&opened, "{%${1} endif ${2}%}").into_owned()
        }
        _ => source.to_owned(),
    }
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(template_bounds::method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("indent", template_bounds::indent);
        env.add_filter("format", template_bounds::format);
        env.add_template_owned("chat", without_generation_tags(source))?;
        Ok(Self { kind: Kind::Local(env) })
    }

    /// A template a request brought, checked (it compiles) in a child process with a memory
    /// limit, where it also renders.
    pub fn from_request(source: &str) -> Result<Self, TemplateError> {
        let source = without_generation_tags(source);
        let reads_tools = super::template_sandbox::inspect(&source)?;
        Ok(Self { kind: Kind::Sandboxed { source, reads_tools } })
    }

    /// Whether the template reads the `tools` variable (renders tools itself).
    pub fn reads_tools(&self) -> bool {
        match &self.kind {
            Kind::Local(env) => env.get_template("chat").is_ok_and(|t| t.undeclared_variables(false).contains("tools")),
            Kind::Sandboxed { reads_tools, .. } => *reads_tools,
        }
    }

    /// Renders the conversation to the prompt text (at most
    /// [`template_bounds::MAX_RENDERED_BYTES`]).
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
        match &self.kind {
            Kind::Sandboxed { source, .. } => {
                let context = serde_json::to_value(ctx)
                    .map_err(|e| TemplateError(format!("cannot hand the conversation to the template: {e}")))?;
                super::template_sandbox::render(source, context)
            }
            Kind::Local(_) => self.render_here(Value::from_serialize(ctx)),
        }
    }

    /// Renders with a context given as JSON, in this process (the sandbox's child uses it).
    pub fn render_value(&self, ctx: &serde_json::Value) -> Result<String, TemplateError> {
        self.render_here(Value::from_serialize(ctx))
    }

    fn render_here(&self, ctx: Value) -> Result<String, TemplateError> {
        let Kind::Local(env) = &self.kind else {
            return Err(TemplateError("a request's template renders only in the sandbox".into()));
        };
        let template = env.get_template("chat")?;
        let mut out = CappedOutput::default();
        if let Err(e) = template.render_captured_to(ctx, &mut out) {
            return Err(if out.overflowed { TemplateError(template_bounds::overflow_message()) } else { e.into() });
        }
        String::from_utf8(out.bytes).map_err(|e| TemplateError(format!("the template wrote invalid UTF-8: {e}")))
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("invalid strftime format `{format}`")))?;
    Ok(out)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` — note Python's `", "` and `": "` separators.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(template_bounds::pad_width("tojson's indent", s.len()).map(|_| s.to_owned())?),
            None => Some(" ".repeat(template_bounds::pad_width(
                "tojson's indent",
                usize::try_from(v).map_err(|_| {
                    Error::new(ErrorKind::InvalidOperation, "tojson indent must be a number or a string")
                })?,
            )?)),
        },
    };
    let mut json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("cannot serialize to JSON: {e}")))?;
    if sort_keys.unwrap_or(false) {
        sort_json_keys(&mut json);
    }
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(ErrorKind::InvalidOperation, "tojson separators must be two strings"));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let formatter = PyFormatter {
        indent,
        item_sep,
        key_sep,
        depth: 0,
        has_value: false,
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let text = write_json(&json, formatter).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
    Ok(Value::from_safe_string(text))
}

/// `json` as Python's `json.dumps(json, ensure_ascii=False)` writes it (`{"a": 1, "b": [2, 3]}`),
/// the way models saw JSON in training.
pub fn python_json(json: &serde_json::Value) -> String {
    let formatter = PyFormatter {
        indent: None,
        item_sep: ", ".into(),
        key_sep: ": ".into(),
        depth: 0,
        has_value: false,
        ensure_ascii: false,
    };
    // Serializing a `Value` into memory cannot fail; fall back to serde_json's own spacing.
    write_json(json, formatter).unwrap_or_else(|_| json.to_string())
}

fn write_json(json: &serde_json::Value, formatter: PyFormatter) -> Result<String, String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    json.serialize(&mut ser).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn sort_json_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut val) in entries {
                sort_json_keys(&mut val);
                map.insert(k, val);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_json_keys),
        _ => {}
    }
}

/// A serde_json formatter that writes Python `json.dumps` spacing.
struct PyFormatter {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    depth: usize,
    /// Whether the innermost open container has a value (Python then closes on a new line).
    has_value: bool,
    ensure_ascii: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(indent) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.depth {
                w.write_all(indent.as_bytes())?;
            }
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"[")
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(b"]")
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(b"{")
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(b"}")
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(self.key_sep.as_bytes())
    }
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Alpaca, the last resort when neither the request, the settings nor the model name a template.
pub const ALPACA_TEMPLATE: &str = "{%- set ns = namespace(found=false) -%}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.found = true -%}
    {%- endif -%}
{%- endfor -%}
{%- if not ns.found -%}
    {{- '' + 'Below is an instruction that describes a task. Write a response that appropriately completes the request.' + '\\n\\n' -}}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'system' -%}
        {{- '' + message['content'] + '\\n\\n' -}}
    {%- else -%}
        {%- if message['role'] == 'user' -%}
            {{-'### Instruction:\\n' + message['content'] + '\\n\\n'-}}
        {%- else -%}
            {{-'### Response:\\n' + message['content'] + '\\n\\n' -}}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{-'### Response:\\n'-}}
{%- endif -%}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn ctx<'a>(messages: &'a [serde_json::Value], tools: Option<&'a [serde_json::Value]>) -> TemplateContext<'a> {
        TemplateContext {
            messages,
            tools,
            add_generation_prompt: true,
            bos_token: "<s>",
            eos_token: "</s>",
            extra: Default::default(),
        }
    }

    #[test]
    fn chatml_renders_like_transformers() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let msgs = [json!({"role": "user", "content": "Hi"})];
        assert_eq!(t.render(&ctx(&msgs, None)).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn generation_tags_render_their_body_as_transformers_does() {
        let source = "{% for m in messages %}{%- generation -%} [{{ m['content'] }}] {% endgeneration %}{% endfor %}";
        let t = ChatTemplate::new(source).unwrap();
        let msgs = [json!({"role": "assistant", "content": "a"}), json!({"role": "assistant", "content": "b"})];
        assert_eq!(t.render(&ctx(&msgs, None)).unwrap(), "[a] [b] ");
    }

    #[test]
    fn tojson_uses_python_separators_and_keeps_key_order() {
        let t = ChatTemplate::new("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}").unwrap();
        let tools = [json!({"name": "f", "args": {"b": 1, "a": [1, 2]}, "ü": "é"})];
        let out = t.render(&ctx(&[], Some(&tools))).unwrap();
        assert_eq!(
            out,
            "[{\"name\": \"f\", \"args\": {\"b\": 1, \"a\": [1, 2]}, \"ü\": \"é\"}]|{\n  \"name\": \"f\",\n  \"args\": {\n    \"b\": 1,\n    \"a\": [\n      1,\n      2\n    ]\n  },\n  \"ü\": \"é\"\n}"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t =
            ChatTemplate::new("{{ messages[0]['content'].strip().upper() }}{{ 'a,b'.split(',') | length }}").unwrap();
        let msgs = [json!({"role": "user", "content": "  hi  "})];
        assert_eq!(t.render(&ctx(&msgs, None)).unwrap(), "HI2");
    }

    #[test]
    fn raise_exception_becomes_a_template_error() {
        let t = ChatTemplate::new("{{ raise_exception('Conversation roles must alternate') }}").unwrap();
        let err = t.render(&ctx(&[], None)).unwrap_err();
        assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_reported_not_panicked() {
        let err = ChatTemplate::new("{% for x in %}").unwrap_err();
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn an_endless_template_runs_out_of_fuel() {
        let t = ChatTemplate::new("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
            .unwrap();
        assert!(t.render(&ctx(&[], None)).is_err());
    }

    #[test]
    fn huge_paddings_and_outputs_are_errors_not_aborts() {
        let wide_string_indent = format!("{{{{ messages | tojson(indent='{}') }}}}", "x".repeat(300));
        for source in [
            "{{ messages | tojson(indent=9223372036854775807) }}",
            wide_string_indent.as_str(),
            "{{ 'a\nb' | indent(9223372036854775807) }}",
            "{{ 'a\nb' | indent(width=9223372036854775807) }}",
            "{{ '%0999999999999d' | format(1) }}",
            "{{ '{:>99999999999}'.format(1) }}",
            "{% for i in range(5) %}{{ 'x' * 100000000 }}{% endfor %}",
        ] {
            let t = ChatTemplate::new(source).unwrap();
            let msgs = [json!({"role": "user", "content": "Hi"})];
            let err = t.render(&ctx(&msgs, None)).expect_err(source).to_string();
            assert!(err.contains("too wide") || err.contains("exceeds"), "{source}: {err}");
        }
        let t =
            ChatTemplate::new("{{ 'a\nb' | indent(4) }}{{ '%05d' | format(7) }}{{ [1] | tojson(indent=2) }}").unwrap();
        assert_eq!(t.render(&ctx(&[], None)).unwrap(), "a\n    b00007[\n  1\n]");
    }

    #[test]
    fn alpaca_fallback_renders() {
        let t = ChatTemplate::new(ALPACA_TEMPLATE).unwrap();
        let msgs = [json!({"role": "user", "content": "Hi"})];
        let out = t.render(&ctx(&msgs, None)).unwrap();
        assert!(out.ends_with("### Instruction:\nHi\n\n### Response:\n"), "{out:?}");
    }
}
