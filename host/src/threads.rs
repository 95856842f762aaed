//! How many threads the CPU path computes on (`--threads N`): the flag, else
//! `RAYON_NUM_THREADS`, else the machine's physical cores (a second hyper-thread on a core
//! shares its memory bandwidth and vector units, which decode already saturates). The kernels
//! and burn's CPU backend both run on rayon's global pool, so this sizes all of them.

/// A thread count that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    #[error("--threads must be at least 1")]
    Zero,
    #[error("the compute threads could not be started: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
}

/// The count for `requested` on this machine.
pub fn choose(requested: Option<usize>) -> Result<usize, ThreadsError> {
    let from_env =
        std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0);
    match requested.or(from_env) {
        Some(0) => Err(ThreadsError::Zero),
        Some(n) => Ok(n),
        None => {
            let logical = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
            // Physical cores, but never more than this process may use (containers and
            // affinity masks limit the logical count, not the physical one).
            Ok(num_cpus::get_physical().clamp(1, logical))
        }
    }
}

/// Sizes the global compute pool; call once, before any model runs.
pub fn configure(requested: Option<usize>) -> Result<usize, ThreadsError> {
    let n = choose(requested)?;
    rayon::ThreadPoolBuilder::new().num_threads(n).thread_name(|i| format!("hearth-compute-{i}")).build_global()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_count_wins_and_zero_is_refused() {
        assert_eq!(choose(Some(3)).unwrap(), 3);
        assert!(matches!(choose(Some(0)), Err(ThreadsError::Zero)));
        assert!(choose(None).unwrap() >= 1);
    }
}
