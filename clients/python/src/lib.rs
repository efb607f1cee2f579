//! `deploy_guard._native`: the host library inside the orchestrator's own Python
//! process. Thin on purpose: it converts Python values, holds the GIL rules and the
//! fork rules; every decision still goes through [`deploy_guard::Guard`].
//!
//! - **Never raises.** Whatever the arguments (None, ints, bytes, lone surrogates,
//!   megabytes, a target outside the three), a decision comes back; what cannot be
//!   decided is a fail-safe ALLOW naming the cause, as in the library.
//! - **The GIL is released while deciding** (`Python::detach`): the facts read and
//!   the sandboxed call run in parallel with the orchestrator's other threads.
//! - **The decision line goes through Python's `logging`** (logger
//!   `orchestrator.deploy_status_guard`, INFO for ALLOW, WARNING otherwise), after
//!   `isEnabledFor`, for both transports: the sidecar logs its decisions through
//!   `log_decision` ([`line`]), so the two write the same line for the same decision.
//!   The library's own log lines (swaps, refusals, reloads) go to the loggers
//!   `deploy_guard.*` ([`PythonLogging`]). Nothing is written to stderr by the Rust
//!   side.
//! - **Fork.** Threads do not survive `fork()`. The Python package registers
//!   [`before_fork`], [`after_fork_in_parent`] and [`after_fork_in_child`] with
//!   `os.register_at_fork`: before, each guard lets its running decisions finish and
//!   admits no new one, stops its watcher and its ledger writer (so that no thread of
//!   ours holds a lock the child would inherit locked); after, in both processes, the
//!   per-process state is made again (in the child: the epoch ticker and the database
//!   connections too) and the watcher restarted. Wasmtime is built without its
//!   parallel compilation (no rayon pool that a fork could leave half alive).

mod fork;
mod guard;
mod line;
mod logging;
mod settings;
mod types;

use deploy_guard::decision::{Ask, FIELDS};
use fork::{after_fork_in_child, after_fork_in_parent, before_fork};
use guard::{Guard, refused};
use line::log_decision;
use logging::PythonLogging;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};
use types::{Decision, Policy, verdict_str};

static DEFAULT_GUARD: PyOnceLock<Py<Guard>> = PyOnceLock::new();

/// The module-level functions' guard: from the environment, watching its files.
#[pyfunction]
fn default_guard(py: Python<'_>) -> PyResult<Py<Guard>> {
    DEFAULT_GUARD
        .get_or_try_init(py, || Py::new(py, Guard::make(py, None, None, None, true, None)))
        .map(|g| g.clone_ref(py))
}

/// Whether the default guard was made (the exit hook closes it only then).
#[pyfunction]
fn default_guard_made(py: Python<'_>) -> bool {
    DEFAULT_GUARD.get(py).is_some()
}

/// `decide` on the default guard (the original module's function).
#[pyfunction]
#[pyo3(signature = (work_item_id, target_status, reason=None))]
fn decide<'py>(
    py: Python<'py>,
    work_item_id: &Bound<'py, PyAny>,
    target_status: &Bound<'py, PyAny>,
    reason: Option<&Bound<'py, PyAny>>,
) -> Bound<'py, PyString> {
    match default_guard(py) {
        Ok(guard) => guard.get().decide(py, work_item_id, target_status, reason),
        Err(_) => {
            let decision = refused(
                "the default guard could not be made",
                Ask::Decide(deploy_guard::Target::Awaiting),
            );
            log_decision(py, &decision, work_item_id, Some(target_status), reason);
            verdict_str(py, decision.verdict).clone()
        }
    }
}

/// `monitor_tick` on the default guard: the post-deploy monitor's zombie-tick guard
/// (the seed's D4), `PROCEED` or `NOOP`; never raises.
#[pyfunction]
#[pyo3(signature = (work_item_id, reason=None))]
fn monitor_tick<'py>(
    py: Python<'py>,
    work_item_id: &Bound<'py, PyAny>,
    reason: Option<&Bound<'py, PyAny>>,
) -> Bound<'py, PyString> {
    match default_guard(py) {
        Ok(guard) => guard.get().monitor_tick(py, work_item_id, reason),
        Err(_) => {
            let decision = refused("the default guard could not be made", Ask::Tick);
            log_decision(py, &decision, work_item_id, None, reason);
            verdict_str(py, decision.verdict).clone()
        }
    }
}

/// `decide_full` on the default guard.
#[pyfunction]
#[pyo3(signature = (work_item_id, target_status, reason=None))]
fn decide_full<'py>(
    py: Python<'py>,
    work_item_id: &Bound<'py, PyAny>,
    target_status: &Bound<'py, PyAny>,
    reason: Option<&Bound<'py, PyAny>>,
) -> PyResult<Decision> {
    Ok(default_guard(py)?
        .get()
        .decide_full(py, work_item_id, target_status, reason))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Guard>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Policy>()?;
    m.add_function(wrap_pyfunction!(decide, m)?)?;
    m.add_function(wrap_pyfunction!(decide_full, m)?)?;
    m.add_function(wrap_pyfunction!(monitor_tick, m)?)?;
    m.add_function(wrap_pyfunction!(default_guard, m)?)?;
    m.add_function(wrap_pyfunction!(default_guard_made, m)?)?;
    m.add_function(wrap_pyfunction!(before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    // The sidecar's decision line is this module's too (and its warning line's
    // escaping), and its decision objects are read by the host's list of fields.
    m.add_function(wrap_pyfunction!(line::log_decision_object, m)?)?;
    m.add_function(wrap_pyfunction!(line::escaped_py, m)?)?;
    m.add("FIELDS", PyTuple::new(m.py(), FIELDS)?)?;
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        // Fails only if this process has a subscriber already (an embedding Rust
        // program's): then that one keeps the library's lines.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PythonLogging));
    }
    Ok(())
}
