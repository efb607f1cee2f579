//! Fork: the fork gate of each guard, the registry of this process's guards, and the
//! hooks the Python package registers with `os.register_at_fork`.

use deploy_guard::Guard as HostGuard;
use deploy_guard::rollout::watch::Watcher;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// Lets no decision start while a fork is prepared, and waits for those running.
#[derive(Debug, Default)]
pub(crate) struct ForkGate {
    forking: AtomicBool,
    in_flight: AtomicUsize,
}

/// A decision in flight (admitted by the gate); dropping it lets a fork proceed.
pub(crate) struct InFlight<'a>(&'a ForkGate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ForkGate {
    pub(crate) fn enter(&self) -> InFlight<'_> {
        loop {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.forking.load(Ordering::SeqCst) {
                return InFlight(self);
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            while self.forking.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Admit no new decision and wait for the running ones (GIL released).
    fn close(&self) {
        self.forking.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn open(&self) {
        self.forking.store(false, Ordering::SeqCst);
    }
}

/// One Python `Guard`: the library's guard (or why there is none), its watcher, its
/// fork gate.
pub(crate) struct GuardState {
    pub(crate) guard: Result<HostGuard, String>,
    pub(crate) gate: ForkGate,
    pub(crate) closed: AtomicBool,
    /// Whether the files should be watched (the watcher is restarted after a fork).
    pub(crate) watching: AtomicBool,
    pub(crate) watcher: Mutex<Option<Watcher>>,
}

impl GuardState {
    pub(crate) fn start_watcher(&self) {
        let Ok(guard) = &self.guard else { return };
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if watcher.is_none() && self.watching.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst) {
            match guard.watch() {
                Ok(started) => *watcher = Some(started),
                Err(e) => tracing::error!(target: "deploy_guard::policy", "{e}: the files are not watched"),
            }
        }
    }

    pub(crate) fn stop_watcher(&self) {
        let stopped = self.watcher.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(stopped); // joins the threads
    }
}

/// Every guard of this process, for the fork hooks. Only touched with the GIL held,
/// so never locked by another thread while `os.fork()` runs.
static GUARDS: Mutex<Vec<Weak<GuardState>>> = Mutex::new(Vec::new());

fn live_guards() -> Vec<Arc<GuardState>> {
    GUARDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

pub(crate) fn register(state: &Arc<GuardState>) {
    let mut guards = GUARDS.lock().unwrap_or_else(PoisonError::into_inner);
    guards.retain(|g| g.strong_count() > 0);
    guards.push(Arc::downgrade(state));
}

/// Called by `os.register_at_fork(before=...)`.
#[pyfunction]
pub(crate) fn before_fork(py: Python<'_>) {
    let guards = live_guards();
    py.detach(|| {
        // The watchers first, while decisions still run: a watcher may be in the middle
        // of a registry call (seconds), which must never hold decisions up.
        for state in &guards {
            state.stop_watcher();
        }
        for state in &guards {
            state.gate.close();
            if let Ok(guard) = &state.guard {
                guard.before_fork();
            }
        }
    });
}

fn after_fork(py: Python<'_>, in_child: bool) {
    let guards = live_guards();
    py.detach(|| {
        for state in &guards {
            if let (Ok(guard), false) = (&state.guard, state.closed.load(Ordering::SeqCst)) {
                guard.after_fork(in_child);
            }
            state.start_watcher();
            state.gate.open();
        }
    });
}

/// Called by `os.register_at_fork(after_in_parent=...)`.
#[pyfunction]
pub(crate) fn after_fork_in_parent(py: Python<'_>) {
    after_fork(py, false);
}

/// Called by `os.register_at_fork(after_in_child=...)`.
#[pyfunction]
pub(crate) fn after_fork_in_child(py: Python<'_>) {
    after_fork(py, true);
}
