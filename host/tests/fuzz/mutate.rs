//! Input mutation: a seed from the corpus changed by a few random edits, with a dictionary of
//! the format's tokens so most mutants still parse and reach the code past the parser. The
//! edits include the ones that found Hearth's crashes: huge numbers, and runs repeated many
//! times (amplification).

use rand::Rng;
use rand::rngs::StdRng;

/// Longest input a mutant may grow to.
pub const MAX_INPUT: usize = 64 << 10;

/// Numbers that probe bounds.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"1",
    b"-1",
    b"2",
    b"255",
    b"256",
    b"500",
    b"1999",
    b"2000",
    b"2001",
    b"65535",
    b"65536",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551616",
    b"1e308",
    b"-0.0",
    b"NaN",
];

/// Edits a copy of `seed` (with `other` to splice from) 1–8 times.
pub fn mutate(rng: &mut StdRng, seed: &[u8], other: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..8) {
            0 if !dict.is_empty() => {
                let word = dict[rng.random_range(0..dict.len())];
                out.splice(at..at, word.iter().copied());
            }
            1 if !out.is_empty() => {
                let end = (at + rng.random_range(1..=16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 if !out.is_empty() => {
                let start = rng.random_range(0..out.len());
                let end = (start + rng.random_range(1..=64)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            3 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] = rng.random();
            }
            4 => {
                let n = NUMBERS[rng.random_range(0..NUMBERS.len())];
                // Replace a run of digits where there is one, else insert.
                let digits = out.iter().position(|c| c.is_ascii_digit());
                match digits.filter(|_| rng.random_bool(0.7)) {
                    Some(s) => {
                        let e = s + out[s..].iter().take_while(|c| c.is_ascii_digit()).count();
                        out.splice(s..e, n.iter().copied());
                    }
                    None => {
                        out.splice(at..at, n.iter().copied());
                    }
                }
            }
            5 if !other.is_empty() => {
                let start = rng.random_range(0..other.len());
                let end = (start + rng.random_range(1..=256)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            6 if !out.is_empty() => {
                // A run repeated: what makes a parser or expander amplify.
                let start = rng.random_range(0..out.len());
                let end = (start + rng.random_range(1..=32)).min(out.len());
                let piece = out[start..end].to_vec();
                let times = rng.random_range(2..=64);
                let run: Vec<u8> = piece.iter().copied().cycle().take(piece.len() * times).collect();
                out.splice(end..end, run);
            }
            _ => {
                // Binary formats: a little-endian integer written over four bytes.
                if out.len() >= 4 {
                    let i = rng.random_range(0..out.len() - 3);
                    let v: u32 = if rng.random_bool(0.5) { rng.random() } else { rng.random_range(0..64) };
                    out[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        out.truncate(MAX_INPUT);
    }
    out
}

/// A deterministic generator for a case's index (normal test runs) or fresh (campaigns).
pub fn rng_for(seed: u64) -> StdRng {
    use rand::SeedableRng;
    StdRng::seed_from_u64(seed)
}
