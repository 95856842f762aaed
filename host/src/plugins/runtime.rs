//! The wasmtime side of plugins: one shared [`Engine`] (component model, epoch interruption
//! driven by a ticker thread, pooling allocator, on-disk compilation cache), the per-call
//! [`HostState`] of a store (memory limits, an empty WASI context, the plugin's grants), and
//! running a call under its CPU deadline with traps turned into [`PluginError`]s.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;

use wasmtime::component::ResourceTable;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::PluginError;
use super::host_api::HostServices;
use hearth_settings::{Grant, PluginLimits};

/// How often the epoch advances: the granularity of CPU deadlines.
const TICK: Duration = Duration::from_millis(1);
/// Largest memory any plugin may be given (the pooling allocator reserves slots this size).
pub const MAX_MEMORY_MB: u64 = 1024;

/// The engine every plugin shares, and the thread that drives its epoch.
pub struct PluginEngine {
    pub engine: Engine,
    stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// Builds the engine; `cache_dir` holds compiled components between runs.
    pub fn new(cache_dir: Option<&Path>, max_instances: u32) -> Result<Self, PluginError> {
        let instances = max_instances.max(1);
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances);
        pool.total_core_instances(instances * 8);
        pool.total_memories(instances * 2);
        pool.total_tables(instances * 4);
        pool.max_memory_size((MAX_MEMORY_MB << 20) as usize);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            match wasmtime::Cache::new(cache_config) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::warn!("plugin compilation cache disabled: {e}"),
            }
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("hearth-plugin-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Self { engine, stop })
    }
}

/// What a store of one plugin call (or one generation, for samplers) holds.
pub struct HostState {
    pub plugin: Arc<str>,
    limits: StoreLimits,
    wasi: WasiCtx,
    pub table: ResourceTable,
    pub grants: Vec<Grant>,
    pub services: Option<Arc<dyn HostServices>>,
    /// Whether `generate` would wait on the model thread that is running this call.
    pub on_model_thread: bool,
    /// CPU time this thread spent inside host functions during the current call (not charged
    /// to the plugin's CPU deadline: the wall-clock `host_used` is).
    pub host_time: Duration,
    /// Wall-clock time spent inside host functions during the current call.
    pub host_used: Duration,
    /// How much wall-clock time one call may spend inside host functions.
    pub host_budget: Duration,
    /// Per-token text of the vocabulary (samplers only).
    pub vocab_texts: Option<Arc<Vec<String>>>,
    /// Text generated so far in this sequence (samplers only).
    pub generated: String,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    pub fn new(
        plugin: Arc<str>,
        limits: &PluginLimits,
        grants: Vec<Grant>,
        services: Option<Arc<dyn HostServices>>,
    ) -> Self {
        let memory = (limits.memory_mb.min(MAX_MEMORY_MB) << 20) as usize;
        Self {
            plugin,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            wasi: wasi_context(&grants),
            table: ResourceTable::new(),
            grants,
            services,
            on_model_thread: false,
            host_time: Duration::ZERO,
            host_used: Duration::ZERO,
            host_budget: Duration::from_millis(limits.host_ms),
            vocab_texts: None,
            generated: String::new(),
        }
    }

    /// Runs a host function against the call's host-time budget: refused once the budget is
    /// spent, handed the instant it must be done by, and charged its wall-clock time. Its CPU
    /// time is kept apart from the plugin's own CPU deadline.
    pub fn charged<T>(&mut self, f: impl FnOnce(&mut Self, Instant) -> Result<T, String>) -> Result<T, String> {
        let left = self.host_budget.saturating_sub(self.host_used);
        if left.is_zero() {
            return Err(format!(
                "plugin `{}` used up its {} ms of host-function time for this call (limits.host_ms)",
                self.plugin,
                self.host_budget.as_millis()
            ));
        }
        let (cpu, wall) = (ThreadTime::now(), Instant::now());
        let out = f(self, wall + left);
        self.host_time += cpu.elapsed();
        self.host_used += wall.elapsed();
        out
    }
}

/// WASI as a plugin sees it: no preopened folders, no environment, no arguments, no network
/// (none of these can be granted), and the clocks only with the `clock` grant.
fn wasi_context(grants: &[Grant]) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder.allow_blocking_current_thread(true);
    if !grants.contains(&Grant::Clock) {
        builder.wall_clock(StoppedClock).monotonic_clock(StoppedClock);
    }
    builder.build()
}

/// The clocks of a plugin without the `clock` grant: standing still at the Unix epoch.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The error an expired deadline raises inside the store.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CPU deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A fresh store for one call of a request-scoped plugin (endpoint, moderation), its deadline
/// armed.
pub fn store_for_call(
    engine: &Engine,
    plugin: &super::Plugin,
    services: Option<Arc<dyn HostServices>>,
) -> Store<HostState> {
    let limits = &plugin.settings.limits;
    let state = HostState::new(plugin.name.clone(), limits, plugin.settings.grants.clone(), services);
    let mut store = new_store(engine, state);
    arm_deadline(&mut store, limits);
    store
}

/// A new store with the plugin's limits.
pub fn new_store(engine: &Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store
}

/// Arms the deadline of one call: the plugin may use `limits.call_ms` of CPU time of its own.
///
/// The epoch ticks in wall time, but what is charged is this thread's CPU time (guest code runs
/// on the calling thread), less the CPU time of host functions: on a loaded machine a plugin
/// that is merely waiting for a core is not cut off, and a spinning one still is.
pub fn arm_deadline(store: &mut Store<HostState>, limits: &PluginLimits) {
    let budget = Duration::from_millis(limits.call_ms.max(1));
    // As a duration, not a `ThreadTime`: the callback must be `Send`. It runs on the thread that
    // makes the call, which is this one.
    let started = ThreadTime::now().as_duration();
    store.data_mut().host_time = Duration::ZERO;
    store.data_mut().host_used = Duration::ZERO;
    // A new store's deadline is 0: without this the first instruction would trap.
    store.set_epoch_deadline(limits.call_ms.max(1));
    store.epoch_deadline_callback(move |ctx| {
        let used = ThreadTime::now().as_duration().saturating_sub(started);
        let guest_time = used.saturating_sub(ctx.data().host_time);
        if guest_time < budget {
            // Check again once the rest of the budget could have been used.
            let left = (budget - guest_time).as_millis().max(1) as u64;
            Ok(UpdateDeadline::Continue(left))
        } else {
            Err(DeadlineExceeded.into())
        }
    });
}

/// Explains a failed call: a deadline, a memory limit, a trap, or a host error.
pub fn describe_failure(plugin: &str, limits: &PluginLimits, err: &wasmtime::Error) -> PluginError {
    if err.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(err.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt))
    {
        return PluginError::Timeout { plugin: plugin.to_owned(), ms: limits.call_ms };
    }
    if err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return PluginError::Busy { plugin: plugin.to_owned() };
    }
    let text = format!("{err:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory allocation") {
        return PluginError::MemoryLimit { plugin: plugin.to_owned(), mb: limits.memory_mb };
    }
    // The outer context is "error while executing at wasm backtrace: …"; the cause says what.
    PluginError::Trap { plugin: plugin.to_owned(), detail: first_line(&err.root_cause().to_string()) }
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
    line.chars().take(400).collect()
}
