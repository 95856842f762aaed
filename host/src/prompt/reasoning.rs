//! Splitting a thinking model's answer into its reasoning and its content, as text streams in:
//! a block between thinking markers (`<think>…</think>`, `<seed:think>…</seed:think>`) at the
//! start of the answer is reasoning, the rest is content. When the prompt itself opened the
//! block (templates that end their generation prompt with `<think>`), the answer starts inside
//! it. A marker split across deltas is held back until it is whole, so no piece of one ever
//! reaches either side.

/// The thinking markers recognised, open and close.
const MARKERS: &[(&str, &str)] = &[("<think>", "</think>"), ("<seed:think>", "</seed:think>")];

/// One piece of the answer, by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: a block may still open.
    Start,
    /// Inside a block that `close` ends.
    Thinking { close: &'static str },
    /// After the block (or there was none): everything is content.
    Content { strip_leading: bool },
}

/// The splitter of one answer.
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    state: State,
    /// Text not yet given out: a possible marker's start, or leading whitespace.
    held: String,
}

impl ReasoningSplitter {
    /// A splitter for an answer to `prompt`: inside a block if the prompt ends by opening one.
    pub fn for_prompt(prompt: &str) -> Self {
        let tail = prompt.trim_end();
        let state = MARKERS
            .iter()
            .find(|(open, _)| tail.ends_with(open))
            .map_or(State::Start, |&(_, close)| State::Thinking { close });
        Self { state, held: String::new() }
    }

    /// Feeds the next text; returns what can be given out now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(&(open, close)) = MARKERS.iter().find(|(open, _)| trimmed.starts_with(open)) {
                        self.held = trimmed[open.len()..].to_string();
                        self.state = State::Thinking { close };
                        continue;
                    }
                    if trimmed.is_empty() || MARKERS.iter().any(|(open, _)| open.starts_with(trimmed)) {
                        return out;
                    }
                    self.state = State::Content { strip_leading: false };
                }
                State::Thinking { close } => {
                    if let Some(at) = self.held.find(close) {
                        let rest = self.held.split_off(at);
                        push_piece(&mut out, Piece::Reasoning(std::mem::take(&mut self.held)));
                        self.held = rest[close.len()..].to_string();
                        self.state = State::Content { strip_leading: true };
                        continue;
                    }
                    let keep = partial_suffix(&self.held, close);
                    let rest = self.held.split_off(self.held.len() - keep);
                    push_piece(&mut out, Piece::Reasoning(std::mem::replace(&mut self.held, rest)));
                    return out;
                }
                State::Content { strip_leading } => {
                    let text = std::mem::take(&mut self.held);
                    let text = if strip_leading {
                        let stripped = text.trim_start().to_string();
                        if stripped.is_empty() {
                            return out;
                        }
                        self.state = State::Content { strip_leading: false };
                        stripped
                    } else {
                        text
                    };
                    push_piece(&mut out, Piece::Content(text));
                    return out;
                }
            }
        }
    }

    /// The end of the answer: whatever was held goes out on its side (a marker's start that
    /// never completed is text after all).
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.state {
            State::Thinking { .. } => push_piece(&mut out, Piece::Reasoning(rest)),
            State::Start => push_piece(&mut out, Piece::Content(rest)),
            State::Content { strip_leading } => {
                push_piece(&mut out, Piece::Content(if strip_leading { rest.trim_start().to_string() } else { rest }))
            }
        }
        out
    }
}

fn push_piece(out: &mut Vec<Piece>, piece: Piece) {
    let empty = match &piece {
        Piece::Reasoning(t) | Piece::Content(t) => t.is_empty(),
    };
    if !empty {
        out.push(piece);
    }
}

/// The length of the longest end of `text` that begins `marker` (without being all of it).
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `deltas` and joins each side.
    fn split(prompt: &str, deltas: &[&str]) -> (String, String) {
        let mut s = ReasoningSplitter::for_prompt(prompt);
        let mut pieces: Vec<Piece> = deltas.iter().flat_map(|d| s.push(d)).collect();
        pieces.extend(s.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        for p in pieces {
            match p {
                Piece::Reasoning(t) => reasoning.push_str(&t),
                Piece::Content(t) => content.push_str(&t),
            }
        }
        (reasoning, content)
    }

    #[test]
    fn a_leading_block_is_reasoning() {
        let (r, c) = split("", &["<think>Two and two.</think>\n\nFour."]);
        assert_eq!((r.as_str(), c.as_str()), ("Two and two.", "Four."));
    }

    #[test]
    fn markers_split_across_deltas_never_leak() {
        let deltas = ["<th", "ink>", "Two and", " two.</", "thi", "nk>", "\n", "Fo", "ur."];
        assert_eq!(split("", &deltas), ("Two and two.".to_string(), "Four.".to_string()));
        // Every single character on its own.
        let text = "  <seed:think>a < b</seed:think> yes";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split("", &refs), ("a < b".to_string(), "yes".to_string()));
    }

    #[test]
    fn an_answer_without_a_block_is_all_content() {
        assert_eq!(split("", &["Four", ". I <think> so"]), (String::new(), "Four. I <think> so".into()));
        // A start that only looked like a marker is given back whole.
        assert_eq!(split("", &["<thi", "s>"]), (String::new(), "<this>".into()));
        assert_eq!(split("", &["<th"]), (String::new(), "<th".into()));
    }

    #[test]
    fn a_prompt_that_opens_the_block_starts_inside_it() {
        let (r, c) = split("<|im_start|>assistant\n<think>\n", &["Hmm.", "</think>", "Yes."]);
        assert_eq!((r.as_str(), c.as_str()), ("Hmm.", "Yes."));
    }

    #[test]
    fn an_unclosed_block_is_all_reasoning() {
        assert_eq!(split("", &["<think>still going"]), ("still going".into(), String::new()));
    }

    #[test]
    fn reasoning_is_released_as_it_comes() {
        let mut s = ReasoningSplitter::for_prompt("");
        assert_eq!(s.push("<think>abc"), vec![Piece::Reasoning("abc".into())]);
        assert_eq!(s.push("de</"), vec![Piece::Reasoning("de".into())]);
        assert_eq!(s.push("think>x"), vec![Piece::Content("x".into())]);
    }
}
