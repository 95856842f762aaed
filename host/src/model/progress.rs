//! How far a model load has come: parts read (the embedding, each block, the head) of the parts
//! to read, for `/health` while the start-up model loads, and for whoever watches the server
//! start: a progress bar when stderr is a terminal, plain log lines at every quarter otherwise
//! (a log file or a container's output gets no control sequences).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared between the loader and whoever reports on it.
#[derive(Debug)]
pub struct LoadProgress {
    /// What loads, as the log and the bar name it: "the model", "the embedding model".
    what: &'static str,
    done: AtomicUsize,
    /// 0 until the loader knows how many parts there are.
    total: AtomicUsize,
    /// The terminal's bar, once the load has begun with stderr a terminal.
    bar: OnceLock<ProgressBar>,
}

impl Default for LoadProgress {
    fn default() -> Self {
        Self::new("the model")
    }
}

impl LoadProgress {
    /// The progress of loading `what` ("the model").
    pub fn new(what: &'static str) -> Self {
        Self { what, done: AtomicUsize::new(0), total: AtomicUsize::new(0), bar: OnceLock::new() }
    }

    /// The load has `total` parts to read.
    pub fn begin(&self, total: usize) {
        let total = total.max(1);
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_init(|| {
                let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} parts ({percent}%)")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_message(format!("loading {}", self.what))
            });
            bar.set_length(total as u64);
            bar.set_position(0);
        }
    }

    /// One more part read: the bar moves, or the log says so at every quarter.
    pub fn advance(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed).max(1);
        if let Some(bar) = self.bar.get() {
            bar.inc(1);
            if done >= total {
                // Left on screen, whole: the log's next line says the model is ready.
                bar.finish();
            }
            return;
        }
        let quarter = |n: usize| n * 4 / total;
        if quarter(done) > quarter(done - 1) {
            tracing::info!("loading {}: {}% ({done} of {total} parts)", self.what, done * 100 / total);
        }
    }

    /// The share read so far, once the loader knows the total.
    pub fn fraction(&self) -> Option<f64> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| (self.done.load(Ordering::Relaxed) as f64 / total as f64).min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fraction_follows_the_parts_read() {
        let p = LoadProgress::default();
        assert_eq!(p.fraction(), None);
        p.begin(4);
        assert_eq!(p.fraction(), Some(0.0));
        p.advance();
        assert_eq!(p.fraction(), Some(0.25));
        (0..5).for_each(|_| p.advance());
        assert_eq!(p.fraction(), Some(1.0), "never past the whole");
    }
}
