//! Responses being generated now, by id: `POST /v1/responses/{id}/cancel` stops a background
//! one (and `DELETE` any one) and waits until its final state is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One running response's handles.
struct Running {
    cancel: CancellationToken,
    /// Turns true once the response's final state is stored.
    stored: watch::Receiver<bool>,
}

/// What the task running a response keeps: it reports the end through it, and leaves the
/// registry when dropped.
pub struct RunningGuard {
    registry: Arc<RunningResponses>,
    id: String,
    stored: watch::Sender<bool>,
}

impl RunningGuard {
    /// The final state is stored: a waiting cancel may read it.
    pub fn stored(&self) {
        let _ = self.stored.send(true);
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        // A cancel waiting on a task that ended without storing must not wait forever.
        let _ = self.stored.send(true);
    }
}

#[derive(Default)]
pub struct RunningResponses {
    running: Mutex<HashMap<String, Running>>,
}

impl RunningResponses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `id`; the token stops it.
    pub fn start(self: &Arc<Self>, id: &str) -> (RunningGuard, CancellationToken) {
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(false);
        self.lock().insert(id.to_owned(), Running { cancel: cancel.clone(), stored: rx });
        (RunningGuard { registry: self.clone(), id: id.to_owned(), stored: tx }, cancel)
    }

    /// Stops `id` and waits until its final state is stored; false when it is not running.
    pub async fn cancel(&self, id: &str) -> bool {
        let stored = {
            let running = self.lock();
            let Some(r) = running.get(id) else { return false };
            r.cancel.cancel();
            r.stored.clone()
        };
        let mut stored = stored;
        // Err: the task is gone, which also means it is done.
        let _ = stored.wait_for(|done| *done).await;
        true
    }
}
