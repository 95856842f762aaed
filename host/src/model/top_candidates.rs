//! What a GPU step reads back of a row when the sampler can choose from a few candidates: the
//! row's log-normalisers and its most likely tokens (a few hundred bytes rather than every
//! logit). The sampler decides when that choice is the whole row's ([`crate::sampling`]).

/// A row's most likely tokens and its normalisers.
#[derive(Debug, Clone, PartialEq)]
pub struct TopCandidates {
    /// `log Σ exp(logit)` over the whole row.
    pub log_norm: f32,
    /// `log Σ exp(logit / t)` at the temperature the candidates were asked for.
    pub log_norm_t: f32,
    /// Most likely first; ties lower id first.
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

impl TopCandidates {
    /// From a device row `[lse, lse_t, logits…, ids…]` (ids as exact f32 integers).
    pub fn from_device_row(row: &[f32]) -> Self {
        let n = row.len().saturating_sub(2) / 2;
        let logits = row.get(2..2 + n).unwrap_or_default().to_vec();
        let ids = row.get(2 + n..2 + 2 * n).unwrap_or_default().iter().map(|&id| id as u32).collect();
        Self {
            log_norm: row.first().copied().unwrap_or(0.0),
            log_norm_t: row.get(1).copied().unwrap_or(0.0),
            ids,
            logits,
        }
    }
}
