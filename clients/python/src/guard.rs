//! The `Guard` pyclass, and a request read from the Python arguments.

use deploy_guard::decision::Ask;
use deploy_guard::{Decision as HostDecision, Request, Target};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::fork::{ForkGate, GuardState, register};
use crate::line::log_decision;
use crate::settings::build_guard;
use crate::types::{Decision, Policy, verdict_str};

/// The deploy-status guard in this process. Never raises once built, and building it
/// never raises either: a guard that cannot work decides fail-safe, naming why.
#[pyclass(frozen, module = "deploy_guard", name = "Guard")]
pub(crate) struct Guard {
    state: Arc<GuardState>,
}

/// A request as the library takes it, or why it cannot be made.
enum Asked<'a> {
    Request {
        work_item: Cow<'a, str>,
        ask: Ask,
        caller: Option<Cow<'a, str>>,
    },
    Refused(String),
}

fn short_repr(value: &Bound<'_, PyAny>) -> String {
    let text = value
        .repr()
        .map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string_lossy().into_owned());
    if text.len() <= 200 {
        return text;
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The request of a stamp (`target` given) or of a tick (`target` none).
fn read_request<'a>(
    work_item: &'a Bound<'_, PyAny>,
    target: Option<&Bound<'_, PyAny>>,
    reason: Option<&'a Bound<'_, PyAny>>,
) -> Asked<'a> {
    // The host's own parser; the refusal quotes the Python value (its repr), which the
    // host's message cannot do for a value that is not text.
    let ask = match target {
        None => Ask::Tick,
        Some(target) => match target
            .cast::<PyString>()
            .ok()
            .and_then(|t| t.to_cow().ok())
            .and_then(|t| t.parse::<Target>().ok())
        {
            Some(parsed) => Ask::Decide(parsed),
            None => {
                return Asked::Refused(format!(
                    "unknown target {} (expected awaiting, deploying or monitoring)",
                    short_repr(target)
                ));
            }
        },
    };
    let work_item = if let Ok(s) = work_item.cast::<PyString>() {
        match s.to_cow() {
            Ok(s) => s,
            Err(_) => return Asked::Refused("the work item id is not valid Unicode text".to_owned()),
        }
    } else if work_item.is_none() {
        return Asked::Refused("the work item id is None".to_owned());
    } else {
        match work_item.str().and_then(|s| s.to_cow().map(Cow::into_owned)) {
            Ok(s) => Cow::Owned(s),
            Err(_) => return Asked::Refused("the work item id cannot be made text".to_owned()),
        }
    };
    let caller = match reason {
        None => None,
        Some(r) if r.is_none() => None,
        Some(r) => match r.cast::<PyString>() {
            Ok(s) => Some(s.to_string_lossy()),
            Err(_) => Some(Cow::Owned(
                r.str()
                    .map_or_else(|_| short_repr(r), |s| s.to_string_lossy().into_owned()),
            )),
        },
    };
    Asked::Request { work_item, ask, caller }
}

/// A fail-safe made here, before the library was asked: ALLOW for a stamp, PROCEED
/// for a tick.
pub(crate) fn refused(cause: &str, ask: Ask) -> HostDecision {
    HostDecision::fail_safe(
        Request {
            work_item: "",
            ask,
            caller: None,
        },
        cause,
    )
}

impl Guard {
    pub(crate) fn make(
        py: Python<'_>,
        db: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
        config: Option<&Bound<'_, PyAny>>,
        watch: bool,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> Guard {
        let state = Arc::new(GuardState {
            guard: build_guard(py, db, policy, config, settings),
            gate: ForkGate::default(),
            closed: AtomicBool::new(false),
            watching: AtomicBool::new(watch),
            watcher: Mutex::new(None),
        });
        register(&state);
        state.start_watcher();
        Guard { state }
    }

    /// The decision of a stamp (`target` given) or a tick (none), unlogged; the GIL is
    /// released while the library decides.
    fn run(
        &self,
        py: Python<'_>,
        work_item: &Bound<'_, PyAny>,
        target: Option<&Bound<'_, PyAny>>,
        reason: Option<&Bound<'_, PyAny>>,
    ) -> HostDecision {
        let as_before = if target.is_some() {
            Ask::Decide(Target::Awaiting)
        } else {
            Ask::Tick
        };
        let (work_item, ask, caller) = match read_request(work_item, target, reason) {
            Asked::Refused(cause) => return refused(&cause, as_before),
            Asked::Request { work_item, ask, caller } => (work_item, ask, caller),
        };
        let guard = match &self.state.guard {
            Err(cause) => return refused(cause, ask),
            Ok(_) if self.state.closed.load(Ordering::SeqCst) => return refused("the guard is closed", ask),
            Ok(guard) => guard,
        };
        let gate = &self.state.gate;
        py.detach(|| {
            let _in_flight = gate.enter();
            guard.decide_unlogged(Request {
                work_item: &work_item,
                ask,
                caller: caller.as_deref(),
            })
        })
    }

    /// The decision of a stamp (`target` given) or a tick (none) as a whole `Decision`,
    /// its line logged.
    fn full(
        &self,
        py: Python<'_>,
        work_item: &Bound<'_, PyAny>,
        target: Option<&Bound<'_, PyAny>>,
        reason: Option<&Bound<'_, PyAny>>,
    ) -> Decision {
        let decision = self.run(py, work_item, target, reason);
        log_decision(py, &decision, work_item, target, reason);
        Decision {
            work_item: work_item.clone().unbind(),
            caller: reason.map_or_else(|| py.None(), |r| r.clone().unbind()),
            target: target.map_or_else(|| py.None(), |t| t.clone().unbind()),
            db_stage: decision.db_stage,
            window_active: decision.window_active,
            verdict: decision.verdict.as_str().to_owned(),
            rule: decision.rule,
            policy: decision.policy,
            policy_digest: decision.policy_digest,
            error: decision.error,
        }
    }
}

#[pymethods]
impl Guard {
    /// `Guard(db=None, policy=None, *, config=None, watch=True, **settings)`.
    ///
    /// What is not given comes from the environment and the config file
    /// (`config`, else `DEPLOY_GUARD_CONFIG`), as the host reads them; `db`,
    /// `policy` and the settings (the config file's keys: `enabled`, `repos`,
    /// `self_hosting_repos`, `timeout_ms`, `fuel`, `memory_mib`, `busy_timeout_ms`,
    /// `cache`, `ledger`, `ledger_max_rows`, ...) override both, as flags do.
    /// `watch`: hot-swap the policy and reload the config file when they change.
    #[new]
    #[pyo3(signature = (db=None, policy=None, *, config=None, watch=None, **settings))]
    fn new(
        py: Python<'_>,
        db: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
        config: Option<&Bound<'_, PyAny>>,
        watch: Option<&Bound<'_, PyAny>>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> Guard {
        let watch = watch.is_none_or(|w| w.is_truthy().unwrap_or(true));
        Guard::make(py, db, policy, config, watch, settings)
    }

    /// `ALLOW`, `CONVERGE_DONE` or `SUPPRESS`; never raises; one decision line.
    #[pyo3(signature = (work_item_id, target_status, reason=None))]
    pub(crate) fn decide<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        target_status: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Bound<'py, PyString> {
        let decision = self.run(py, work_item_id, Some(target_status), reason);
        log_decision(py, &decision, work_item_id, Some(target_status), reason);
        verdict_str(py, decision.verdict).clone()
    }

    /// The post-deploy monitor's tick (the seed's D4): `PROCEED`, or `NOOP` for a task
    /// cancelled during its window (a zombie tick: no status, no re-queue); never
    /// raises (any failure is `PROCEED`); one decision line.
    #[pyo3(signature = (work_item_id, reason=None))]
    pub(crate) fn monitor_tick<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Bound<'py, PyString> {
        let decision = self.run(py, work_item_id, None, reason);
        log_decision(py, &decision, work_item_id, None, reason);
        verdict_str(py, decision.verdict).clone()
    }

    /// The whole decision object; never raises; one decision line.
    #[pyo3(signature = (work_item_id, target_status, reason=None))]
    pub(crate) fn decide_full<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        target_status: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Decision {
        self.full(py, work_item_id, Some(target_status), reason)
    }

    /// The whole decision object of a tick (`target` is None); never raises; one
    /// decision line. The sidecar's `Client.monitor_tick_full`, in-process.
    #[pyo3(signature = (work_item_id, reason=None))]
    pub(crate) fn monitor_tick_full<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Decision {
        self.full(py, work_item_id, None, reason)
    }

    /// The live policy (name, version, digest), or None when none is live.
    #[getter]
    fn policy(&self) -> Option<Policy> {
        let live = self.state.guard.as_ref().ok()?.policy()?;
        Some(Policy {
            name: live.name.clone(),
            version: live.version.clone(),
            digest: live.digest.clone(),
        })
    }

    /// The guard's metrics in the OpenMetrics text format (CONTRACT.md's "Metrics"):
    /// what `serve --metrics` serves, for an orchestrator to expose through its own
    /// endpoint. A guard that could not be made has none: only the `# EOF` line.
    fn metrics(&self, py: Python<'_>) -> String {
        match &self.state.guard {
            Ok(guard) => py.detach(|| guard.metrics()),
            Err(_) => "# EOF\n".to_owned(),
        }
    }

    /// Why this guard cannot decide at all (every decision fails safe), or None.
    #[getter]
    fn problem(&self) -> Option<String> {
        match &self.state.guard {
            Err(cause) => Some(cause.clone()),
            Ok(_) if self.state.closed.load(Ordering::SeqCst) => Some("the guard is closed".to_owned()),
            Ok(guard) => guard.config().problem.clone(),
        }
    }

    /// Watch the policy file and the config file from now on (idempotent).
    fn watch(&self, py: Python<'_>) {
        self.state.watching.store(true, Ordering::SeqCst);
        py.detach(|| self.state.start_watcher());
    }

    /// Whether the files are watched.
    #[getter]
    fn watching(&self) -> bool {
        self.state
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stop watching, commit the ledger; every later decision fails safe.
    fn close(&self, py: Python<'_>) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.state.watching.store(false, Ordering::SeqCst);
        py.detach(|| {
            self.state.stop_watcher();
            if let Ok(guard) = &self.state.guard {
                guard.before_fork(); // stops the ledger writer after a last commit
            }
        });
    }

    /// Whether [`Guard::close`] was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state.closed.load(Ordering::SeqCst)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}
