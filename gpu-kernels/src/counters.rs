//! How much work the GPU path asks of the device: every compute dispatch CubeCL issues (burn's
//! kernels, fused or not, and this crate's), counted through CubeCL's launch observer, and every
//! read of device memory back to the host, counted by the code that reads. A decode step's cost
//! on a real GPU is set by these two numbers long before bandwidth (each dispatch and each
//! round trip costs microseconds, a small model's weights are read in a few), so they are what
//! `scripts/bench-decode --devices wgpu` reports per token, on lavapipe as on a GPU.
//!
//! Process-wide, like the observer: the totals only grow; a caller takes a [`DeviceWork`] before
//! and after the work it measures and subtracts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cubecl::logging::{LaunchObservation, LaunchObserver};

/// Totals since the process started counting.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceWork {
    /// Compute dispatches issued.
    pub dispatches: u64,
    /// Reads of device memory back to the host (each one waits for the device).
    pub readbacks: u64,
    /// Bytes those reads brought back.
    pub readback_bytes: u64,
    /// Dispatches by kernel name, as CubeCL names its kernels.
    pub by_kernel: Vec<(String, u64)>,
}

#[derive(Default)]
struct Counts {
    dispatches: AtomicU64,
    readbacks: AtomicU64,
    readback_bytes: AtomicU64,
    // Names are the kernels' own `&'static str`s: counting allocates nothing per launch.
    by_kernel: Mutex<HashMap<&'static str, u64>>,
}

impl LaunchObserver for Counts {
    fn launched(&self, kernel: &'static str) {
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        // A poisoned map only loses the breakdown, never the launch.
        if let Ok(mut map) = self.by_kernel.lock() {
            *map.entry(kernel).or_default() += 1;
        }
    }
}

struct Watch {
    counts: Arc<Counts>,
    // Kept for the life of the process: dropping it would stop the counting.
    _observation: LaunchObservation,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// Starts counting dispatches (once per process; later calls do nothing). Costs a relaxed
/// atomic and an uncontended lock per launch.
pub fn watch_launches() {
    WATCH.get_or_init(|| {
        let counts = Arc::new(Counts::default());
        let observation = LaunchObservation::new(counts.clone());
        Watch { counts, _observation: observation }
    });
}

/// Records one read of `bytes` bytes from the device.
pub fn note_readback(bytes: usize) {
    if let Some(w) = WATCH.get() {
        w.counts.readbacks.fetch_add(1, Ordering::Relaxed);
        w.counts.readback_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The totals so far; `None` when nothing is counting (no GPU model was loaded).
pub fn device_work() -> Option<DeviceWork> {
    let c = &WATCH.get()?.counts;
    let mut by_kernel: Vec<(String, u64)> =
        c.by_kernel.lock().map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()).unwrap_or_default();
    by_kernel.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Some(DeviceWork {
        dispatches: c.dispatches.load(Ordering::Relaxed),
        readbacks: c.readbacks.load(Ordering::Relaxed),
        readback_bytes: c.readback_bytes.load(Ordering::Relaxed),
        by_kernel,
    })
}
