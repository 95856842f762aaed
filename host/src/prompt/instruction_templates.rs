//! Named instruction templates: text-generation-webui's `user_data/instruction-templates/NAME.yaml`
//! files, each holding Jinja under `instruction_template:` (a request's `instruction_template`).

use std::path::Path;

/// A named template that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamedTemplateError {
    #[error("{0}")]
    BadName(String),
    #[error("there is no instruction template `{name}` in {dir}")]
    NotFound { name: String, dir: String },
    #[error("the instruction template file {path} cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
}

/// The Jinja source of template `name` in `dir` (textgen's `"None"` means Alpaca).
pub fn load(dir: &Path, name: &str) -> Result<String, NamedTemplateError> {
    let name = if name == "None" { "Alpaca" } else { name };
    let Some(path) = super::user_files::find(dir, name, &["yaml", "yml"]).map_err(NamedTemplateError::BadName)? else {
        return Err(NamedTemplateError::NotFound { name: name.to_owned(), dir: dir.display().to_string() });
    };
    let unreadable = |reason: String| NamedTemplateError::Unreadable { path: path.display().to_string(), reason };
    let data = super::user_files::read_data(&path).map_err(unreadable)?;
    match data.get("instruction_template").and_then(|v| v.as_str()) {
        Some(source) => Ok(source.to_owned()),
        None => Err(unreadable("it has no `instruction_template:` text".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::template::{ChatTemplate, TemplateContext};

    fn shipped() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../user_data/instruction-templates")
    }

    /// Every shipped template compiles and renders a system + user + assistant + user exchange
    /// with the generation cue last, each message's text in it.
    #[test]
    fn the_shipped_templates_render_a_conversation() {
        let messages = [
            serde_json::json!({"role": "system", "content": "SYS"}),
            serde_json::json!({"role": "user", "content": "Q1"}),
            serde_json::json!({"role": "assistant", "content": "A1"}),
            serde_json::json!({"role": "user", "content": "Q2"}),
        ];
        for (name, cue) in [
            ("Alpaca", "### Response:\n"),
            ("ChatML", "<|im_start|>assistant\n"),
            ("Llama-v3", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
            ("Mistral", "[/INST]"),
            ("Vicuna-v1.1", "ASSISTANT:"),
        ] {
            let source = load(&shipped(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let template = ChatTemplate::new(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ctx = TemplateContext {
                messages: &messages,
                tools: None,
                add_generation_prompt: true,
                bos_token: "<s>",
                eos_token: "</s>",
                extra: Default::default(),
            };
            let text = template.render(&ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
            let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{name}: no {s:?} in {text:?}"));
            assert!(at("SYS") < at("Q1") && at("Q1") < at("A1") && at("A1") < at("Q2"), "{name}: {text:?}");
            assert!(text.ends_with(cue), "{name}: {text:?} should end with {cue:?}");
        }
        assert_eq!(load(&shipped(), "None"), load(&shipped(), "Alpaca"));
        assert!(matches!(load(&shipped(), "Nope"), Err(NamedTemplateError::NotFound { .. })));
        assert!(matches!(load(&shipped(), "../x"), Err(NamedTemplateError::BadName(_))));
    }
}
