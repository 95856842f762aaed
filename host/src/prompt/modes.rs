//! text-generation-webui's chat modes, from a request's messages to the prompt text:
//! - `instruct`: the messages through the instruction template (the model's own, usually);
//! - `chat`: a play script — the character's context (and the user's bio) first, its greeting as
//!   its first line, then `Name: text` lines through the chat template, ending with the
//!   character's name for the model to go on from;
//! - `chat-instruct`: that script rendered without the cue, put into the chat-instruct command
//!   ("write the next reply for …"), and the command sent as a user message through the
//!   instruction template.
//!
//! `continue_` renders the last (assistant) message as an open turn the model continues.

use serde_json::{Map, Value, json};

use super::character::replace_names;
use super::chat::{ChatRenderer, Conversation};
use super::template::{ChatTemplate, TemplateError};

/// The chat template of the chat modes when a request gives none: each message a `Name: text`
/// line (textgen's layout, so character files written for it read the same).
pub const DEFAULT_CHAT_TEMPLATE: &str = r#"{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- if message['content'] -%}{{- message['content'] + '\n\n' -}}{%- endif -%}
        {%- if user_bio -%}{{- user_bio + '\n\n' -}}{%- endif -%}
    {%- elif message['role'] == 'user' -%}
        {{- name1 + ': ' + message['content'] + '\n' -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '[Tool result: ' + message['content'] + ']\n' -}}
    {%- else -%}
        {{- name2 + ': ' + message['content'] + '\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- name2 + ':' -}}{%- endif -%}"#;

/// textgen's chat-instruct command: `<|character|>` becomes the character's name, `<|prompt|>`
/// the chat script.
pub const DEFAULT_CHAT_INSTRUCT_COMMAND: &str = "Continue the chat dialogue below. Write a single reply for the \
character \"<|character|>\". Reply directly, without starting the reply with the character name.\n\n<|prompt|>";

/// Marks where the continued message's text goes: rendered in its place, then cut.
const CONTINUE_MARK: &str = "\u{1}hearth: the continued message\u{1}";

/// How a conversation becomes a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatMode {
    #[default]
    Instruct,
    Chat,
    ChatInstruct,
}

impl ChatMode {
    /// The mode named `name`, as textgen spells it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "instruct" => Some(Self::Instruct),
            "chat" => Some(Self::Chat),
            "chat-instruct" => Some(Self::ChatInstruct),
            _ => None,
        }
    }
}

/// Who speaks in the chat modes, already resolved from the character and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// `name1`.
    pub user: String,
    /// `name2`: the character the model plays.
    pub character: String,
    pub context: String,
    pub greeting: String,
    pub user_bio: String,
}

impl Persona {
    /// Stop strings of the chat modes: a new line that starts either speaker's turn.
    pub fn turn_stops(&self) -> Vec<String> {
        vec![format!("\n{}:", self.user), format!("\n{}:", self.character)]
    }
}

/// A conversation that cannot be made into a prompt.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// `continue_` without a message to continue, or with a template that drops it.
    #[error("{0}")]
    CannotContinue(String),
}

/// One prompt to build.
pub struct ModePrompt<'a> {
    pub mode: ChatMode,
    /// The messages as templates read them (`role`, `content` strings, …).
    pub messages: &'a [Value],
    /// The instruction template (instruct and chat-instruct).
    pub instruct: &'a ChatTemplate,
    /// Tools for the instruction template (instruct mode only).
    pub tools: Option<&'a [Value]>,
    /// Needed by the chat modes.
    pub persona: Option<&'a Persona>,
    /// The request's `chat_template_str`, else [`DEFAULT_CHAT_TEMPLATE`].
    pub chat_template: Option<&'a str>,
    /// The request's `chat_instruct_command`, else [`DEFAULT_CHAT_INSTRUCT_COMMAND`].
    pub command: Option<&'a str>,
    pub continue_last: bool,
    /// Variables passed to every template (`enable_thinking`, …).
    pub extra: Map<String, Value>,
}

/// Builds the prompt.
pub fn render(renderer: &ChatRenderer, p: &ModePrompt<'_>) -> Result<String, ModeError> {
    let persona = match (p.mode, p.persona) {
        (ChatMode::Instruct, _) | (_, None) => {
            return render_turns(renderer, p.instruct, p.messages, p.tools, &p.extra, p.continue_last);
        }
        (_, Some(persona)) => persona,
    };
    let names = |text: &str| replace_names(text, &persona.user, &persona.character);
    // Leading system messages belong to the context in chat mode; chat-instruct gives them to
    // the instruction template, as textgen does.
    let leading = p.messages.iter().take_while(|m| matches!(role(m), "system" | "developer")).count();
    let (system, rest) = p.messages.split_at(leading);
    let system_text: Vec<&str> =
        system.iter().filter_map(|m| m["content"].as_str()).filter(|s| !s.is_empty()).collect();

    let mut script = Vec::with_capacity(rest.len() + 2);
    let mut context = vec![names(&persona.context)];
    if p.mode == ChatMode::Chat {
        context.extend(system_text.iter().map(|s| s.to_string()));
    }
    let context = context.into_iter().filter(|s| !s.trim().is_empty()).collect::<Vec<_>>().join("\n\n");
    if !context.is_empty() || !persona.user_bio.is_empty() {
        script.push(json!({"role": "system", "content": context}));
    }
    if !persona.greeting.is_empty() && rest.first().is_none_or(|m| role(m) != "assistant") {
        script.push(json!({"role": "assistant", "content": names(&persona.greeting)}));
    }
    script.extend(rest.iter().cloned());

    // The request's own chat template renders sandboxed; the built-in one in place.
    let chat_template = match p.chat_template {
        Some(source) => ChatTemplate::from_request(&names(source))?,
        None => ChatTemplate::new(&names(DEFAULT_CHAT_TEMPLATE))?,
    };
    let mut vars = p.extra.clone();
    vars.insert("name1".into(), Value::String(persona.user.clone()));
    vars.insert("name2".into(), Value::String(persona.character.clone()));
    vars.insert("user_bio".into(), Value::String(names(&persona.user_bio)));
    if p.mode == ChatMode::Chat {
        return render_turns(renderer, &chat_template, &script, None, &vars, p.continue_last);
    }

    let continued = if p.continue_last {
        match script.pop() {
            Some(m) if role(&m) == "assistant" => Some(m),
            _ => return Err(cannot_continue()),
        }
    } else {
        None
    };
    let conversation = Conversation {
        messages: &script,
        tools: None,
        add_generation_prompt: false,
        template_override: None,
        extra: vars,
    };
    let dialogue = renderer.render_with(&chat_template, &conversation)?;
    let command = p
        .command
        .unwrap_or(DEFAULT_CHAT_INSTRUCT_COMMAND)
        .replace("<|character|>", &persona.character)
        .replace("<|prompt|>", &dialogue);
    let mut outer = Vec::with_capacity(3);
    if !system_text.is_empty() {
        outer.push(json!({"role": "system", "content": system_text.join("\n\n")}));
    }
    outer.push(json!({"role": "user", "content": names(&command)}));
    outer.extend(continued);
    render_turns(renderer, p.instruct, &outer, None, &p.extra, p.continue_last)
}

fn role(m: &Value) -> &str {
    m["role"].as_str().unwrap_or_default()
}

fn cannot_continue() -> ModeError {
    ModeError::CannotContinue("`continue_` continues the last message, which must be the assistant's".into())
}

/// Renders `messages` with a cue for the next assistant turn, or — continuing — with the last
/// (assistant) message left open: rendered with a mark for its text, cut at the mark, and the
/// text put back, so whatever the template writes after a message never reaches the model.
fn render_turns(
    renderer: &ChatRenderer,
    template: &ChatTemplate,
    messages: &[Value],
    tools: Option<&[Value]>,
    extra: &Map<String, Value>,
    continue_last: bool,
) -> Result<String, ModeError> {
    let conversation = |messages, add_generation_prompt| Conversation {
        messages,
        tools,
        add_generation_prompt,
        template_override: None,
        extra: extra.clone(),
    };
    if !continue_last {
        return Ok(renderer.render_with(template, &conversation(messages, true))?);
    }
    let mut marked = messages.to_vec();
    let Some(last) = marked.last_mut().filter(|m| role(m) == "assistant") else {
        return Err(cannot_continue());
    };
    let text = last["content"].as_str().unwrap_or_default().to_owned();
    last["content"] = Value::String(CONTINUE_MARK.into());
    let rendered = renderer.render_with(template, &conversation(&marked, false))?;
    let Some(at) = rendered.find(CONTINUE_MARK) else {
        return Err(ModeError::CannotContinue(
            "the template does not show the last assistant message, so it cannot be continued".into(),
        ));
    };
    Ok(format!("{}{text}", &rendered[..at]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TextTokenizer;

    const CHATML: &str = r#"{%- for m in messages -%}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"#;

    fn renderer() -> ChatRenderer {
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab([("[UNK]".to_string(), 0)].into_iter().collect())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        ChatRenderer::new(&TextTokenizer::from_tokenizer(tokenizers::Tokenizer::new(model))).unwrap()
    }

    fn persona() -> Persona {
        Persona {
            user: "Sam".into(),
            character: "Ada".into(),
            context: "{{char}} is a mathematician; {{user}} visits her.".into(),
            greeting: "Welcome, {{user}}.".into(),
            user_bio: String::new(),
        }
    }

    fn prompt(mode: ChatMode, messages: &[Value], continue_last: bool) -> Result<String, ModeError> {
        let instruct = ChatTemplate::new(CHATML).unwrap();
        let persona = persona();
        let p = ModePrompt {
            mode,
            messages,
            instruct: &instruct,
            tools: None,
            persona: Some(&persona),
            chat_template: None,
            command: None,
            continue_last,
            extra: Map::new(),
        };
        render(&renderer(), &p)
    }

    fn msg(role: &str, content: &str) -> Value {
        json!({"role": role, "content": content})
    }

    #[test]
    fn chat_mode_is_a_script_with_context_greeting_and_cue() {
        let messages = [msg("system", "Keep it short."), msg("user", "Hello! Who are you?")];
        let p = prompt(ChatMode::Chat, &messages, false).unwrap();
        assert_eq!(
            p,
            "Ada is a mathematician; Sam visits her.\n\nKeep it short.\n\n\
             Ada: Welcome, Sam.\nSam: Hello! Who are you?\nAda:"
        );
        assert_eq!(persona().turn_stops(), ["\nSam:", "\nAda:"]);
    }

    #[test]
    fn chat_instruct_sends_the_script_inside_the_command() {
        let messages = [msg("system", "Keep it short."), msg("user", "Hello!")];
        let p = prompt(ChatMode::ChatInstruct, &messages, false).unwrap();
        let want = "<|im_start|>system\nKeep it short.<|im_end|>\n<|im_start|>user\n\
                    Continue the chat dialogue below. Write a single reply for the character \"Ada\". Reply \
                    directly, without starting the reply with the character name.\n\n\
                    Ada is a mathematician; Sam visits her.\n\nAda: Welcome, Sam.\nSam: Hello!\n\
                    <|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(p, want);
    }

    #[test]
    fn continuing_leaves_the_last_message_open() {
        let messages = [msg("user", "Tell a story."), msg("assistant", "Once upon")];
        let p = prompt(ChatMode::Instruct, &messages, true).unwrap();
        assert_eq!(p, "<|im_start|>user\nTell a story.<|im_end|>\n<|im_start|>assistant\nOnce upon");
        let p = prompt(ChatMode::Chat, &messages, true).unwrap();
        assert!(p.ends_with("Sam: Tell a story.\nAda: Once upon"), "{p:?}");
        let p = prompt(ChatMode::ChatInstruct, &messages, true).unwrap();
        assert!(p.ends_with("Sam: Tell a story.\n<|im_end|>\n<|im_start|>assistant\nOnce upon"), "{p:?}");
        let err = prompt(ChatMode::Instruct, &messages[..1], true).unwrap_err();
        assert!(matches!(err, ModeError::CannotContinue(_)), "{err}");
    }
}
