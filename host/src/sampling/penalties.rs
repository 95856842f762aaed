//! The stages that move logits by what the context already holds: repetition, presence and
//! frequency penalties, the encoder ("hallucination") penalty, DRY and the n-gram ban. Each
//! follows text-generation-webui's (or transformers') processor of the same name.

use std::collections::HashMap;

use super::params::Dry;
use super::pool::Pool;

/// The last `range` tokens of the context (0: all of it), as the penalties see it.
pub fn window(context: &[u32], range: usize) -> &[u32] {
    match range {
        0 => context,
        n => &context[context.len().saturating_sub(n)..],
    }
}

/// How often each token occurs in `tokens`.
pub fn counts(tokens: &[u32]) -> HashMap<u32, u32> {
    let mut counts = HashMap::new();
    for &t in tokens {
        *counts.entry(t).or_default() += 1;
    }
    counts
}

/// Divides the positive logits of tokens seen (multiplies the negative ones) by `penalty`.
pub fn repetition(pool: &mut Pool, seen: &HashMap<u32, u32>, penalty: f32) {
    pool.edit(seen, |_, l| *l = if *l < 0.0 { *l * penalty } else { *l / penalty });
}

/// Subtracts `penalty` once from every token seen.
pub fn presence(pool: &mut Pool, seen: &HashMap<u32, u32>, penalty: f32) {
    pool.edit(seen, |_, l| *l -= penalty);
}

/// Subtracts `penalty` for every occurrence of a token.
pub fn frequency(pool: &mut Pool, seen: &HashMap<u32, u32>, penalty: f32) {
    pool.edit(seen, |&count, l| *l -= penalty * count as f32);
}

/// transformers' encoder repetition penalty: tokens of the prompt are made likelier by
/// `penalty > 1` (their positive logits multiplied by it, negative ones divided).
pub fn encoder_repetition(pool: &mut Pool, prompt_tokens: &HashMap<u32, u32>, penalty: f32) {
    pool.edit(prompt_tokens, |_, l| *l = if *l < 0.0 { *l / penalty } else { *l * penalty });
}

/// Bans every token that would complete an n-gram of size `n` already in the context.
pub fn no_repeat_ngram(pool: &mut Pool, context: &[u32], n: usize) {
    if n == 0 || context.len() + 1 < n {
        return;
    }
    let prefix = &context[context.len() + 1 - n..];
    let banned: HashMap<u32, ()> =
        context.windows(n).filter(|gram| &gram[..n - 1] == prefix).map(|gram| (gram[n - 1], ())).collect();
    pool.edit(&banned, |_, l| *l = f32::NEG_INFINITY);
}

/// Matches are extended backwards at most this far (textgen's cap: the penalty grows
/// exponentially, and this bounds the worst case's work).
const DRY_MAX_MATCH: usize = 50;

/// DRY: for each earlier occurrence of the last token, the length of the sequence ending there
/// that repeats the context's end; the token that followed it gets
/// `multiplier * base^(length - allowed_length)` subtracted once the length reaches
/// `allowed_length`. Sequence breakers end a match.
pub fn dry(pool: &mut Pool, context: &[u32], dry: &Dry) {
    let Some(&last) = context.last() else { return };
    let breaks = |t: u32| dry.sequence_breakers.contains(&t);
    if breaks(last) {
        return;
    }
    let mut longest: HashMap<u32, usize> = HashMap::new();
    let end = context.len() - 1;
    for i in (0..end).filter(|&i| context[i] == last) {
        let next = context[i + 1];
        if breaks(next) {
            continue;
        }
        let mut length = 1;
        while length < DRY_MAX_MATCH {
            let Some(j) = i.checked_sub(length) else { break };
            let previous = context[end - length];
            if context[j] != previous || breaks(previous) {
                break;
            }
            length += 1;
        }
        let entry = longest.entry(next).or_default();
        *entry = (*entry).max(length);
    }
    longest.retain(|_, length| *length >= dry.allowed_length);
    pool.edit(&longest, |&length, l| {
        *l -= dry.multiplier * dry.base.powi((length - dry.allowed_length) as i32);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(n: usize) -> Pool {
        Pool::dense(vec![1.0; n])
    }

    #[test]
    fn the_window_is_the_recent_tokens() {
        assert_eq!(window(&[1, 2, 3, 4], 2), &[3, 4]);
        assert_eq!(window(&[1, 2, 3, 4], 0), &[1, 2, 3, 4]);
        assert_eq!(window(&[1, 2], 9), &[1, 2]);
    }

    #[test]
    fn encoder_penalty_favours_prompt_tokens() {
        let mut pool = Pool::dense(vec![2.0, -2.0, 2.0]);
        encoder_repetition(&mut pool, &counts(&[0, 1]), 2.0);
        assert_eq!(pool.logits, vec![4.0, -1.0, 2.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_the_completing_token() {
        // Context "1 2 3 1 2": size 3 forbids 3 after "1 2"; size 2 forbids 3 after "2".
        let mut pool = dense(5);
        no_repeat_ngram(&mut pool, &[1, 2, 3, 1, 2], 3);
        assert_eq!(pool.logits, vec![1.0, 1.0, 1.0, f32::NEG_INFINITY, 1.0]);
        let mut pool = dense(5);
        no_repeat_ngram(&mut pool, &[1, 2, 3, 1, 2], 2);
        assert_eq!(pool.logits, vec![1.0, 1.0, 1.0, f32::NEG_INFINITY, 1.0]);
        let mut pool = dense(5);
        no_repeat_ngram(&mut pool, &[1, 2, 3, 1], 2);
        assert_eq!(pool.logits, vec![1.0, 1.0, f32::NEG_INFINITY, 1.0, 1.0]);
        let mut pool = dense(5);
        no_repeat_ngram(&mut pool, &[1], 3);
        assert_eq!(pool.logits, vec![1.0; 5], "too short to repeat");
    }

    fn dry_settings(breakers: Vec<u32>) -> Dry {
        Dry { multiplier: 0.8, base: 1.75, allowed_length: 2, sequence_breakers: breakers }
    }

    #[test]
    fn dry_penalises_the_token_that_extends_a_repeat() {
        // "5 6 7 8 ... 5 6 7": the next 8 would extend a repeat of length 3.
        let context = [5, 6, 7, 8, 1, 5, 6, 7];
        let mut pool = dense(10);
        dry(&mut pool, &context, &dry_settings(vec![]));
        let expected = 1.0 - 0.8 * 1.75f32.powi(1);
        assert!((pool.logits[8] - expected).abs() < 1e-6, "{:?}", pool.logits);
        assert!(pool.logits.iter().enumerate().all(|(i, &l)| i == 8 || l == 1.0));
    }

    #[test]
    fn dry_spares_short_repeats_and_stops_at_breakers() {
        // A repeat of length 1 is under allowed_length 2.
        let mut pool = dense(10);
        dry(&mut pool, &[7, 8, 1, 7], &dry_settings(vec![]));
        assert_eq!(pool.logits, vec![1.0; 10]);
        // A breaker (6) inside the repeat shortens it to "7" alone.
        let mut pool = dense(10);
        dry(&mut pool, &[6, 7, 8, 1, 6, 7], &dry_settings(vec![6]));
        assert_eq!(pool.logits, vec![1.0; 10]);
        // A breaker as the last token switches DRY off for this step.
        let mut pool = dense(10);
        dry(&mut pool, &[5, 6, 7, 8, 5, 6, 7], &dry_settings(vec![7]));
        assert_eq!(pool.logits, vec![1.0; 10]);
    }
}
