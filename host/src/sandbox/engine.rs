//! The one wasmtime [`Engine`] of the process, its configuration, and the sandbox a
//! decision runs in: a fresh [`Store`] with fuel, an epoch deadline and memory limits.
//!
//! Why both fuel and a deadline: fuel bounds the work of a policy deterministically,
//! whatever the machine's load; the epoch deadline bounds wall-clock time, whatever
//! the policy does. Every Store starts with zero of both (wasmtime's default traps at
//! once), so [`Sandbox::store`] sets both, every time.
//!
//! Instances come from the pooling allocator: a decision's instance reuses a slot
//! whose memory was kept resident, which is what makes a fresh instance per decision
//! cheap. The pool is sized for the policies this host runs (one memory, one table,
//! a few core instances), not wasmtime's default of 1000 slots.
//!
//! Lanes: one Engine (with its own pool) per core, up to [`MAX_LANES`]. Threads
//! deciding on one shared Engine contend on its pool and reference counts: measured
//! here, two threads on one Engine decided no faster than one (0.99 x), two threads on
//! two Engines 1.90 x. Each thread keeps to one lane; a policy is compiled once and its
//! artifact deserialized into every lane.

use crate::config::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};

/// How often the epoch advances; the deadline is a whole number of these.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The largest memory any instance may have, whatever the configured limit.
pub const MEMORY_CEILING: usize = 1 << 30;
/// Concurrent instances per lane (decisions in flight plus gate runs). A decision that
/// finds the pool exhausted fails safe. Each slot reserves (not commits) 4 GiB of
/// address space, so that bounds checks on 32-bit memories are elided.
pub const POOL_SLOTS: u32 = 32;
/// The most lanes (engines) a sandbox runs, whatever the number of cores.
pub const MAX_LANES: usize = 8;
/// The most decisions of one batch whose fresh instances share a Store (see
/// [`crate::sandbox::policy::LoadedPolicy::rule_many`]): making and dropping a Store is part
/// of what a decision costs, and a batch need not pay it each time. Each decision
/// still has an instance of its own, its own fuel and its own deadline.
pub const INSTANCES_PER_STORE: usize = 8;
/// The most core instances, memories and tables one policy instance may have (the
/// pool's per-component limits).
pub const MAX_CORE_INSTANCES_PER_POLICY: usize = 8;
/// See [`MAX_CORE_INSTANCES_PER_POLICY`].
pub const MAX_MEMORIES_PER_POLICY: usize = 2;
/// See [`MAX_CORE_INSTANCES_PER_POLICY`].
pub const MAX_TABLES_PER_POLICY: usize = 4;

/// Errors building the engine.
#[derive(Debug, thiserror::Error)]
#[error("engine: {0}")]
pub struct EngineError(String);

/// The state of one decision's Store: its limits and what they stopped.
#[derive(Debug)]
pub struct SandboxState {
    limits: Limits,
    /// Set when the policy asked for more memory (or table) than allowed.
    pub denied: Option<String>,
    /// Set when an instance grew a memory or a table past its initial size: a Store
    /// that holds one is not given a further decision of its batch (see
    /// [`INSTANCES_PER_STORE`]), so that a batch never keeps more than one grown
    /// instance alive.
    pub grew: bool,
}

impl ResourceLimiter for SandboxState {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            let why = format!(
                "memory: the policy asked for {desired} bytes of linear memory (had {current}), the limit is {}",
                self.limits.memory_bytes
            );
            self.denied = Some(why.clone());
            return Err(wasmtime::format_err!("{why}"));
        }
        // `current` is 0 when the memory is made for a new instance.
        self.grew |= current > 0;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            let why = format!(
                "memory: the policy asked for a table of {desired} elements (had {current}), the limit is {}",
                self.limits.table_elements
            );
            self.denied = Some(why.clone());
            return Err(wasmtime::format_err!("{why}"));
        }
        self.grew |= current > 0;
        Ok(true)
    }

    // Per Store, which holds one decision's instance, or the instances of up to
    // INSTANCES_PER_STORE decisions of one batch. The caps are those of the largest
    // single policy the pool takes (max_*_per_component below), so that a batch's Store
    // never holds more of the lane's pool than one such instance would: a policy of
    // one core instance, one memory and one table shares a Store eight ways, a larger
    // one fewer (the batch then goes on in a new Store).
    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_POLICY
    }
    fn tables(&self) -> usize {
        INSTANCES_PER_STORE.max(MAX_TABLES_PER_POLICY)
    }
    fn memories(&self) -> usize {
        INSTANCES_PER_STORE.max(MAX_MEMORIES_PER_POLICY)
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the thread: after a fork, the child has the Ticker
    /// but not the thread.
    pid: u32,
}

impl Ticker {
    /// Start a thread that advances the epoch of every engine in `engines`.
    fn start(engines: Vec<Engine>) -> Result<Ticker, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("deploy-guard-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    // Parked, not asleep: dropping the owner unparks it at once.
                    std::thread::park_timeout(EPOCH_TICK);
                    engines.iter().for_each(Engine::increment_epoch);
                }
            })
            .map_err(|e| EngineError(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
            pid: std::process::id(),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Forked: the thread is the parent's. Nothing here to join or detach (its
            // handle names a thread of another process), so the handle is leaked.
            std::mem::forget(self.thread.take());
            return;
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// One engine and its empty linker.
pub struct Lane {
    engine: Engine,
    linker: Linker<SandboxState>,
}

impl Lane {
    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker: it defines nothing, so a component that imports anything fails.
    pub fn linker(&self) -> &Linker<SandboxState> {
        &self.linker
    }
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").finish_non_exhaustive()
    }
}

/// The engines (one per lane), their linkers, and the epoch ticker. Share it: one per
/// process.
pub struct Sandbox {
    lanes: Vec<Lane>,
    cache: Option<crate::sandbox::cache::ArtifactCache>,
    /// How many components this sandbox compiled (a cache hit compiles none): what
    /// proves that the precompiled cache was used.
    compiles: std::sync::atomic::AtomicU64,
    ticker: std::sync::Mutex<Ticker>,
}

static NEXT_LANE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's lane number (taken modulo a sandbox's lane count), given out in
    /// turn the first time a thread decides.
    static THREAD_LANE: usize = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Build the engine, with no precompiled cache. Fails only if the pooling allocator
    /// cannot reserve its slots.
    pub fn new() -> Result<Arc<Sandbox>, EngineError> {
        Sandbox::with_cache(None)
    }

    /// Build the engine, keeping compiled policies in the cache directory `cache` (see
    /// [`crate::sandbox::cache`]). A cache that cannot be used is reported and left out.
    pub fn with_cache(cache: Option<&std::path::Path>) -> Result<Arc<Sandbox>, EngineError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 2)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memories_per_component(MAX_MEMORIES_PER_POLICY as u32)
            .max_tables_per_component(MAX_TABLES_PER_POLICY as u32)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_POLICY as u32)
            .max_memory_size(MEMORY_CEILING)
            // Keep what a policy touches mapped between instances: resetting it is a
            // memset instead of an munmap and page faults.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 20)
            // Reset by a memset of the memory, not by asking the kernel which pages a
            // decision dirtied (PAGEMAP_SCAN, Linux 6.7+): for a policy of one 64 KiB page
            // (the reference policy's), the ioctl alone costs more than the memset
            // (criterion, `sandbox alone`: 5.2-6.6 us without it, 6.9-7.9 us with it).
            .pagemap_scan(wasmtime::Enabled::No);
        let mut config = wasmtime::Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(256 << 10)
            .consume_fuel(true)
            .epoch_interruption(true)
            // Answers exact to the bit, whatever the machine: what lets a policy's
            // answers be remembered (see [`crate::sandbox::memo`]).
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        let lane_count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_LANES);
        let lanes = (0..lane_count)
            .map(|_| {
                let engine = Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))?;
                let linker = Linker::new(&engine);
                Ok(Lane { engine, linker })
            })
            .collect::<Result<Vec<Lane>, EngineError>>()?;
        let ticker = Ticker::start(lanes.iter().map(|lane| lane.engine.clone()).collect())?;
        let cache = cache.and_then(|dir| match crate::sandbox::cache::ArtifactCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(target: "deploy_guard::cache", "{e}");
                None
            }
        });
        Ok(Arc::new(Sandbox {
            lanes,
            cache,
            compiles: std::sync::atomic::AtomicU64::new(0),
            ticker: std::sync::Mutex::new(ticker),
        }))
    }

    /// Restart the epoch ticker if this process did not start it: threads do not
    /// survive `fork()`, and without the ticker no deadline would ever pass in a
    /// forked child. Cheap and idempotent; an embedding that forks calls it in the
    /// child (the Python extension does, from `os.register_at_fork`).
    pub fn ensure_ticker(&self) -> Result<(), EngineError> {
        let mut ticker = self.ticker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ticker.pid != std::process::id() {
            *ticker = Ticker::start(self.lanes.iter().map(|lane| lane.engine.clone()).collect())?;
        }
        Ok(())
    }

    /// The first lane's engine: where policies are compiled and checked.
    pub fn engine(&self) -> &Engine {
        &self.lanes[0].engine
    }

    /// Every lane.
    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// The lane of the calling thread.
    pub fn current_lane(&self) -> usize {
        THREAD_LANE.with(|lane| *lane) % self.lanes.len()
    }

    /// The precompiled cache, if one is in use.
    pub fn cache(&self) -> Option<&crate::sandbox::cache::ArtifactCache> {
        self.cache.as_ref()
    }

    /// How many components this sandbox has compiled so far ([`crate::sandbox::policy::compile`]);
    /// a load served by the precompiled cache leaves it unchanged.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    pub(crate) fn count_compile(&self) {
        self.compiles.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh Store for one decision in `lane` (or a batch's, see
    /// [`INSTANCES_PER_STORE`]), with its fuel, deadline and memory limits set.
    pub fn store(&self, lane: usize, limits: Limits) -> Store<SandboxState> {
        let mut store = Store::new(
            &self.lanes[lane].engine,
            SandboxState {
                limits,
                denied: None,
                grew: false,
            },
        );
        store.limiter(|state| state);
        rearm(&mut store);
        store.epoch_deadline_trap();
        store
    }
}

/// Give the Store its whole fuel and its whole deadline from now, and forget what an
/// earlier decision's instance was denied: done when a Store is made, and before each
/// further decision of a batch that shares it.
pub fn rearm(store: &mut Store<SandboxState>) {
    let limits = store.data().limits;
    store.data_mut().denied = None;
    // consume_fuel is on for this engine, so set_fuel cannot fail.
    let _ = store.set_fuel(limits.fuel);
    // One tick more than the timeout holds: the first tick may come at once, so
    // `n` ticks guarantee only `(n - 1) * EPOCH_TICK` of running time.
    let ticks = limits.timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
}
