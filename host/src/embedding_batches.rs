//! Concurrent embedding requests run together: many clients sending one sentence each is the
//! common load, and one forward pass over all their sentences (padded batches of similar
//! lengths, spread over the threads) costs far less than one pass per request.
//!
//! No thread of its own: the first caller to find the model idle takes every request queued so
//! far (up to [`ROUND_SEQUENCES`]), runs them as one round and hands each its vectors; requests
//! that arrive meanwhile queue for the next round, which one of their callers runs. A request
//! never waits for more than the round before its own.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::model::encoder::{EmbeddingModel, EncoderError};

/// Most sequences one round takes (whole requests: a larger request runs alone).
const ROUND_SEQUENCES: usize = 256;

/// What a round gives each request: its vectors, or why there are none.
type Outcome = Result<Vec<Vec<f32>>, String>;

#[derive(Default)]
struct State {
    queue: Vec<(u64, Vec<Vec<u32>>)>,
    /// A caller is running a round.
    running: bool,
    finished: HashMap<u64, Outcome>,
    next_id: u64,
}

/// The queue of one embedding model's requests.
#[derive(Default)]
pub struct EmbeddingBatches {
    state: Mutex<State>,
    changed: Condvar,
}

impl EmbeddingBatches {
    /// The vectors of `sequences` (checked with [`EmbeddingModel::check`]), computed together
    /// with whatever other requests are waiting. Blocking.
    pub fn embed(&self, model: &EmbeddingModel, sequences: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, EncoderError> {
        // A bad request is refused here, so that it never fails a round shared with others.
        model.check(&sequences)?;
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push((id, sequences));
        loop {
            if let Some(outcome) = state.finished.remove(&id) {
                return outcome.map_err(EncoderError::Execution);
            }
            if !state.running && !state.queue.is_empty() {
                state.running = true;
                let round = take_round(&mut state.queue);
                drop(state);
                let outcomes = run_round(model, round);
                state = self.lock();
                state.running = false;
                state.finished.extend(outcomes);
                self.changed.notify_all();
                continue;
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A round runs outside the lock, so a poisoned lock holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The oldest requests, up to [`ROUND_SEQUENCES`] sequences (always at least one request).
fn take_round(queue: &mut Vec<(u64, Vec<Vec<u32>>)>) -> Vec<(u64, Vec<Vec<u32>>)> {
    let mut total = 0;
    let count = queue
        .iter()
        .take_while(|(_, seqs)| {
            total += seqs.len();
            total <= ROUND_SEQUENCES
        })
        .count()
        .max(1);
    queue.drain(..count).collect()
}

/// One forward pass over every request of the round; each gets its own vectors back. A
/// failure (or a panic in the model) fails the round's requests, not the server.
fn run_round(model: &EmbeddingModel, round: Vec<(u64, Vec<Vec<u32>>)>) -> Vec<(u64, Outcome)> {
    let ids: Vec<(u64, usize)> = round.iter().map(|(id, seqs)| (*id, seqs.len())).collect();
    let all: Vec<Vec<u32>> = round.into_iter().flat_map(|(_, seqs)| seqs).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.embed(&all)))
        .unwrap_or_else(|_| Err(EncoderError::Execution("the encoder panicked".into())))
        .and_then(|vectors| {
            // Split below by count: a short answer must fail the round, not the splitting.
            if vectors.len() == all.len() {
                Ok(vectors)
            } else {
                Err(EncoderError::Execution(format!("{} vectors for {} inputs", vectors.len(), all.len())))
            }
        });
    match result {
        Ok(mut vectors) => {
            let mut outcomes = Vec::with_capacity(ids.len());
            // Split from the back so that each request's vectors move out without copies.
            for &(id, n) in ids.iter().rev() {
                let rest = vectors.len() - n;
                outcomes.push((id, Ok(vectors.split_off(rest))));
            }
            outcomes
        }
        Err(e) => {
            let message = e.to_string();
            ids.into_iter().map(|(id, _)| (id, Err(message.clone()))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_takes_whole_requests_up_to_the_cap() {
        let mut queue: Vec<(u64, Vec<Vec<u32>>)> =
            vec![(0, vec![vec![1]; 200]), (1, vec![vec![1]; 50]), (2, vec![vec![1]; 10]), (3, vec![vec![1]; 1])];
        let round = take_round(&mut queue);
        assert_eq!(round.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(queue.len(), 2);
        // A request larger than the cap runs alone.
        let mut queue = vec![(7, vec![vec![1]; 1000]), (8, vec![vec![1]])];
        assert_eq!(take_round(&mut queue).len(), 1);
        assert_eq!(queue.len(), 1);
    }
}
