//! Request work that takes CPU time (tokenizing long texts, compiling grammars, rendering
//! templates, calling plugins) runs on tokio's blocking pool, never on an async worker, so
//! `/health` and every other request keep being answered while it runs.

use crate::error::ApiError;

/// Runs `work` on the blocking pool and returns its result; `what` names the work in the error
/// should the task itself fail (a panic inside it).
pub async fn off_runtime<T, F>(what: &'static str, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(format!("{what} failed: {e}")))?
}
