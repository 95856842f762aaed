//! Word timestamps as Whisper finds them (`whisper/timing.py`, which faster-whisper follows):
//! the decoder's cross-attention on its alignment heads, softmaxed over the audio frames,
//! standardised per frame over the tokens, median-filtered along time and averaged over the
//! heads, gives a token × frame matrix; dynamic time warping through its negation pairs tokens
//! with frames, and a word starts where its first token's frames start. Then Whisper's
//! clean-ups: punctuation joins its word, words at sentence ends and after pauses are kept to
//! twice the median word length, and the segment's own times win over a first or last word
//! that runs far past them.

/// Frames of cross-attention per second (the encoder halves the 100 mel frames a second).
pub const FRAMES_PER_SECOND: f64 = 50.0;
/// Whisper's median filter width along time.
const MEDIAN_FILTER_WIDTH: usize = 7;
/// Punctuation joined to the word after it, and to the word before it.
const PREPEND_PUNCTUATION: &str = "\"'“¿([{-";
const APPEND_PUNCTUATION: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";

#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// With its leading space, as the tokens spell it.
    pub word: String,
    pub tokens: Vec<u32>,
    /// Seconds from the window's start (after [`place_words`], from the audio's start).
    pub start: f64,
    pub end: f64,
}

/// The averaged, filtered alignment matrix `[tokens, frames]` from raw cross-attention scores
/// `[heads, tokens, all_frames]`, keeping the first `frames` frames (the window's audio).
pub fn alignment_matrix(scores: &[f32], heads: usize, tokens: usize, all_frames: usize, frames: usize) -> Vec<f32> {
    let frames = frames.min(all_frames).max(1);
    let mut matrix = vec![0f32; tokens * frames];
    if heads == 0 || tokens == 0 || scores.len() < heads * tokens * all_frames {
        return matrix;
    }
    let mut weights = vec![0f32; tokens * frames];
    for h in 0..heads {
        // Softmax over the kept frames, token by token.
        for t in 0..tokens {
            let row = &scores[(h * tokens + t) * all_frames..][..frames];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = row.iter().map(|&s| (s - max).exp()).sum();
            for (f, &s) in row.iter().enumerate() {
                weights[t * frames + f] = (s - max).exp() / total;
            }
        }
        // Standardised over the tokens, frame by frame (population deviation).
        for f in 0..frames {
            let mean = (0..tokens).map(|t| weights[t * frames + f]).sum::<f32>() / tokens as f32;
            let var = (0..tokens).map(|t| (weights[t * frames + f] - mean).powi(2)).sum::<f32>() / tokens as f32;
            let std = var.sqrt();
            for t in 0..tokens {
                let w = &mut weights[t * frames + f];
                *w = if std > 0.0 { (*w - mean) / std } else { 0.0 };
            }
        }
        for t in 0..tokens {
            let filtered = median_filter(&weights[t * frames..(t + 1) * frames], MEDIAN_FILTER_WIDTH);
            for (m, w) in matrix[t * frames..(t + 1) * frames].iter_mut().zip(filtered) {
                *m += w / heads as f32;
            }
        }
    }
    matrix
}

/// A running median of odd `width` along `row`, its ends padded by reflection (PyTorch's
/// `reflect`, as Whisper pads); rows shorter than the padding are left as they are.
pub fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let pad = width / 2;
    if row.len() <= pad {
        return row.to_vec();
    }
    let n = row.len() as isize;
    let at = |i: isize| -> f32 {
        let r = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        row[r as usize]
    };
    let mut window = Vec::with_capacity(width);
    (0..n)
        .map(|i| {
            window.clear();
            window.extend((i - pad as isize..=i + pad as isize).map(at));
            window.sort_by(f32::total_cmp);
            window[pad]
        })
        .collect()
}

/// Dynamic time warping through `cost` (`[n, m]`, lower is closer) from the first cell to the
/// last, moving diagonally, down or right, ties broken as Whisper breaks them: the matched
/// (row, column) pairs in order.
pub fn dtw(cost: &[f32], n: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    let idx = |i: usize, j: usize| i * (m + 1) + j;
    let mut acc = vec![f32::INFINITY; (n + 1) * (m + 1)];
    let mut trace = vec![-1i8; (n + 1) * (m + 1)];
    acc[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let (c0, c1, c2) = (acc[idx(i - 1, j - 1)], acc[idx(i - 1, j)], acc[idx(i, j - 1)]);
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[idx(i, j)] = cost[(i - 1) * m + (j - 1)] + c;
            trace[idx(i, j)] = t;
        }
    }
    for j in 0..=m {
        trace[idx(0, j)] = 2;
    }
    for i in 0..=n {
        trace[idx(i, 0)] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i.saturating_sub(1), j.saturating_sub(1)));
        match trace[idx(i, j)] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path.into_iter().unzip()
}

/// Each word's start and end from the path: `words` are the text's words (their tokens), the
/// matrix's rows being the text's tokens and one more. Times in seconds from the window's start.
pub fn time_words(words: Vec<(String, Vec<u32>)>, text_indices: &[usize], time_indices: &[usize]) -> Vec<WordTiming> {
    // The frame where each row's stretch of the path begins.
    let mut jump_times = Vec::new();
    for (k, (&row, &frame)) in text_indices.iter().zip(time_indices).enumerate() {
        if k == 0 || text_indices[k - 1] != row {
            jump_times.push(frame as f64 / FRAMES_PER_SECOND);
        }
    }
    let mut out = Vec::with_capacity(words.len());
    let mut boundary = 0usize;
    for (word, tokens) in words {
        let next = boundary + tokens.len();
        let (Some(&start), Some(&end)) = (jump_times.get(boundary), jump_times.get(next)) else { break };
        out.push(WordTiming { word, tokens, start, end });
        boundary = next;
    }
    out
}

/// Whisper's `merge_punctuations`: an opening mark joins the word after it, a closing mark the
/// word before it; the emptied entries stay (with no text) so token counts still line up.
pub fn merge_punctuations(words: &mut [WordTiming]) {
    let n = words.len();
    if n < 2 {
        return;
    }
    let (mut i, mut j) = (n as isize - 2, n - 1);
    while i >= 0 {
        let iu = i as usize;
        let previous = &words[iu];
        if previous.word.starts_with(' ') && is_one_of(previous.word.trim(), PREPEND_PUNCTUATION) {
            let (head, tail) = words.split_at_mut(j);
            let (prev, following) = (&mut head[iu], &mut tail[0]);
            following.word = format!("{}{}", prev.word, following.word);
            let mut tokens = std::mem::take(&mut prev.tokens);
            tokens.extend_from_slice(&following.tokens);
            following.tokens = tokens;
            prev.word.clear();
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0usize, 1usize);
    while j < n {
        if !words[i].word.ends_with(' ') && is_one_of(&words[j].word, APPEND_PUNCTUATION) {
            let (head, tail) = words.split_at_mut(j);
            let (previous, following) = (&mut head[i], &mut tail[0]);
            previous.word.push_str(&following.word);
            previous.tokens.append(&mut following.tokens);
            following.word.clear();
        } else {
            i = j;
        }
        j += 1;
    }
}

/// Whether `s` is one character of `set`.
fn is_one_of(s: &str, set: &str) -> bool {
    let mut chars = s.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if set.contains(c))
}

/// A segment's span and how many text tokens it holds.
pub struct SegmentSpan {
    pub start: f64,
    pub end: f64,
    pub text_tokens: usize,
}

/// Whisper's `add_word_timestamps` after the alignment: long words at sentence ends kept to
/// twice the median, punctuation merged, words shifted by `offset` (the window's start),
/// handed out to the segments by their token counts (rounded to 10 ms), and the first and last
/// word of each segment reconciled with the segment's own times. `last_speech` is the end of
/// the speech before this window; returns the words of each segment and the segments' new
/// spans, and updates `last_speech`.
pub fn place_words(
    mut alignment: Vec<WordTiming>,
    segments: &[SegmentSpan],
    offset: f64,
    last_speech: &mut f64,
) -> Vec<(f64, f64, Vec<WordTiming>)> {
    let mut durations: Vec<f64> = alignment.iter().map(|w| w.end - w.start).filter(|&d| d != 0.0).collect();
    durations.sort_by(f64::total_cmp);
    let median = match durations.len() {
        0 => 0.0,
        n if n % 2 == 1 => durations[n / 2],
        n => (durations[n / 2 - 1] + durations[n / 2]) / 2.0,
    }
    .min(0.7);
    let max_duration = median * 2.0;
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if is_one_of(&alignment[i].word, SENTENCE_END_MARKS) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if is_one_of(&alignment[i - 1].word, SENTENCE_END_MARKS) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment);
    let round = |t: f64| (t * 100.0).round() / 100.0;
    let mut next = 0usize;
    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        let (mut seg_start, mut seg_end) = (segment.start, segment.end);
        let mut saved = 0usize;
        let mut words: Vec<WordTiming> = Vec::new();
        while next < alignment.len() && saved < segment.text_tokens {
            let timing = &alignment[next];
            if !timing.word.is_empty() {
                words.push(WordTiming {
                    word: timing.word.clone(),
                    tokens: timing.tokens.clone(),
                    start: round(offset + timing.start),
                    end: round(offset + timing.end),
                });
            }
            saved += timing.tokens.len();
            next += 1;
        }
        if !words.is_empty() {
            let first_long = words[0].end - words[0].start > max_duration;
            let second_long = words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0;
            if words[0].end - *last_speech > median * 4.0 && (first_long || second_long) {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            if seg_start < words[0].end && seg_start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median).min(seg_start).max(0.0);
            } else {
                seg_start = words[0].start;
            }
            let last = words.len() - 1;
            if seg_end > words[last].start && seg_end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median).max(seg_end);
            } else {
                seg_end = words[last].end;
            }
            *last_speech = seg_end;
        }
        out.push((seg_start, seg_end, words));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str, start: f64, end: f64) -> WordTiming {
        WordTiming { word: w.into(), tokens: vec![0], start, end }
    }

    #[test]
    fn dtw_follows_the_cheap_diagonal() {
        // A 3 × 4 cost with a cheap path (0,0) (1,1) (1,2) (2,3).
        #[rustfmt::skip]
        let cost = [
            0.0, 9.0, 9.0, 9.0,
            9.0, 0.0, 0.0, 9.0,
            9.0, 9.0, 9.0, 0.0,
        ];
        let (rows, cols) = dtw(&cost, 3, 4);
        assert_eq!(rows, vec![0, 1, 1, 2]);
        assert_eq!(cols, vec![0, 1, 2, 3]);
    }

    #[test]
    fn the_median_filter_reflects_at_the_ends() {
        let row = [5.0, 1.0, 9.0, 2.0, 8.0];
        // Width 3: [1,5,1]→1, [5,1,9]→5, [1,9,2]→2, [9,2,8]→8, [2,8,2]→2.
        assert_eq!(median_filter(&row, 3), vec![1.0, 5.0, 2.0, 8.0, 2.0]);
        assert_eq!(median_filter(&[1.0, 2.0], 7), vec![1.0, 2.0]);
    }

    #[test]
    fn punctuation_joins_its_word() {
        let mut words = vec![
            word(" \"", 0.0, 0.1),
            word("Hello", 0.1, 0.5),
            word(",", 0.5, 0.6),
            word(" world", 0.6, 1.0),
            word(".", 1.0, 1.1),
        ];
        merge_punctuations(&mut words);
        let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(texts, vec!["", " \"Hello,", "", " world.", ""]);
        assert_eq!(words[1].tokens.len(), 3);
    }

    #[test]
    fn words_take_the_frames_where_their_tokens_begin() {
        // Rows: token 0, token 1, token 2 (the end).
        let (rows, cols) = (vec![0, 0, 1, 1, 1, 2], vec![0, 1, 2, 3, 4, 5]);
        let words = vec![(" a".to_string(), vec![1]), (" b".to_string(), vec![2])];
        let timed = time_words(words, &rows, &cols);
        assert_eq!((timed[0].start, timed[0].end), (0.0, 0.04));
        assert_eq!((timed[1].start, timed[1].end), (0.04, 0.1));
    }
}
