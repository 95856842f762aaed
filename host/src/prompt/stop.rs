//! Stop strings matched on generated text across token boundaries. Text that might be the start
//! of a stop string is held back until it is known not to be, so no part of a stop string ever
//! reaches the client.

/// What [`StopMatcher::push`] decided about the text so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty while a possible stop prefix is held back).
    Continue(String),
    /// A stop string matched: emit this last text (everything before the match) and finish.
    Stopped(String),
}

/// Incremental stop-string matcher for one sequence.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted (it may begin a stop string).
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self { stops, pending: String::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_owned());
        }
        self.pending.push_str(text);
        // The earliest match wins, whichever stop string it is.
        let first = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = first {
            let out = self.pending[..at].to_owned();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        let hold = self.held_suffix_len();
        let emit_to = self.pending.len() - hold;
        let out = self.pending[..emit_to].to_owned();
        self.pending.drain(..emit_to);
        StopOutcome::Continue(out)
    }

    /// Releases held-back text when generation ends without a stop string.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Bytes at the end of `pending` that are a proper prefix of some stop string.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        let mut longest = 0;
        for stop in &self.stops {
            // Longest suffix of `p` that is a prefix of `stop`, on char boundaries.
            for (i, _) in p.char_indices() {
                let suffix = &p[i..];
                if suffix.len() < stop.len() && stop.starts_with(suffix) {
                    longest = longest.max(suffix.len());
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()));
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_tokens_is_never_streamed() {
        let mut m = StopMatcher::new(["\nUser:".to_string()]);
        assert_eq!(m.push("Hello"), StopOutcome::Continue("Hello".into()));
        // "\nUs" could start the stop string: nothing of it is released.
        assert_eq!(m.push("\nUs"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("er: hi"), StopOutcome::Stopped(String::new()));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        assert_eq!(run(&["abc"], &["xa", "b", "x"]), ("xabx".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["world", "lo"], &["hello world"]), ("hel".into(), true));
    }

    #[test]
    fn unicode_stop_strings_hold_back_on_char_boundaries() {
        assert_eq!(run(&["日本"], &["今日は", "日", "本語"]), ("今日は".into(), true));
        assert_eq!(run(&["日本"], &["今日は", "日"]), ("今日は日".into(), false));
    }

    #[test]
    fn without_stops_text_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
