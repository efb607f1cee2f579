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
//!   `isEnabledFor`; the library's own log lines (swaps, refusals, reloads) go to the
//!   loggers `deploy_guard.*` ([`PythonLogging`]). Nothing is written to stderr by
//!   the Rust side.
//! - **Fork.** Threads do not survive `fork()`. The Python package registers
//!   [`before_fork`], [`after_fork_in_parent`] and [`after_fork_in_child`] with
//!   `os.register_at_fork`: before, each guard lets its running decisions finish and
//!   admits no new one, stops its watcher and its ledger writer (so that no thread of
//!   ours holds a lock the child would inherit locked); after, in both processes, the
//!   per-process state is made again (in the child: the epoch ticker and the database
//!   connections too) and the watcher restarted. Wasmtime is built without its
//!   parallel compilation (no rayon pool that a fork could leave half alive).

use deploy_guard::decision::FIELDS;
use deploy_guard::rollout::watch::Watcher;
use deploy_guard::{Config, Decision as HostDecision, Guard as HostGuard, Overrides, Request, Target, Verdict};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// The original module's logger.
const LOGGER: &str = "orchestrator.deploy_status_guard";
/// The original's message, plus rule, policy and the cause of a fail-safe.
const MESSAGE: &str = "deploy_status_guard: work_item=%s caller=%s target=%s db_stage=%s \
                       window_active=%s verdict=%s rule=%s policy=%s error=%s";
/// `logging.INFO` and `logging.WARNING`.
const INFO: i32 = 20;
const WARNING: i32 = 30;

/// Lets no decision start while a fork is prepared, and waits for those running.
#[derive(Debug, Default)]
struct ForkGate {
    forking: AtomicBool,
    in_flight: AtomicUsize,
}

/// A decision in flight (admitted by the gate); dropping it lets a fork proceed.
struct InFlight<'a>(&'a ForkGate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ForkGate {
    fn enter(&self) -> InFlight<'_> {
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
struct GuardState {
    guard: Result<HostGuard, String>,
    gate: ForkGate,
    closed: AtomicBool,
    /// Whether the files should be watched (the watcher is restarted after a fork).
    watching: AtomicBool,
    watcher: Mutex<Option<Watcher>>,
}

impl GuardState {
    fn start_watcher(&self) {
        let Ok(guard) = &self.guard else { return };
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if watcher.is_none() && self.watching.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst) {
            match guard.watch() {
                Ok(started) => *watcher = Some(started),
                Err(e) => tracing::error!(target: "deploy_guard::policy", "{e}: the files are not watched"),
            }
        }
    }

    fn stop_watcher(&self) {
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

fn register(state: &Arc<GuardState>) {
    let mut guards = GUARDS.lock().unwrap_or_else(PoisonError::into_inner);
    guards.retain(|g| g.strong_count() > 0);
    guards.push(Arc::downgrade(state));
}

/// Called by `os.register_at_fork(before=...)`.
#[pyfunction]
fn before_fork(py: Python<'_>) {
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
fn after_fork_in_parent(py: Python<'_>) {
    after_fork(py, false);
}

/// Called by `os.register_at_fork(after_in_child=...)`.
#[pyfunction]
fn after_fork_in_child(py: Python<'_>) {
    after_fork(py, true);
}

/// The decision object: the contract's fields as attributes, plus `as_dict()`.
/// `work_item`, `caller` and `target` are the values the caller passed.
#[pyclass(frozen, module = "deploy_guard", name = "Decision")]
struct Decision {
    #[pyo3(get)]
    work_item: Py<PyAny>,
    #[pyo3(get)]
    caller: Py<PyAny>,
    #[pyo3(get)]
    target: Py<PyAny>,
    #[pyo3(get)]
    db_stage: Option<String>,
    #[pyo3(get)]
    window_active: Option<bool>,
    #[pyo3(get)]
    verdict: String,
    #[pyo3(get)]
    rule: String,
    #[pyo3(get)]
    policy: Option<String>,
    #[pyo3(get)]
    policy_digest: Option<String>,
    #[pyo3(get)]
    error: Option<String>,
}

#[pymethods]
impl Decision {
    /// A decision from its fields (what the sidecar transport builds from an answer).
    #[new]
    #[pyo3(signature = (*, work_item, caller, target, db_stage, window_active, verdict, rule, policy, policy_digest, error))]
    #[allow(clippy::too_many_arguments, reason = "the contract's ten fields, by keyword")]
    fn new(
        work_item: Py<PyAny>,
        caller: Py<PyAny>,
        target: Py<PyAny>,
        db_stage: Option<String>,
        window_active: Option<bool>,
        verdict: String,
        rule: String,
        policy: Option<String>,
        policy_digest: Option<String>,
        error: Option<String>,
    ) -> Decision {
        Decision {
            work_item,
            caller,
            target,
            db_stage,
            window_active,
            verdict,
            rule,
            policy,
            policy_digest,
            error,
        }
    }

    /// The fields as a dict (the JSON decision object's keys).
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let dict = PyDict::new(py);
        for field in FIELDS {
            dict.set_item(field, slf.getattr(field)?)?;
        }
        Ok(dict)
    }

    /// `decision["verdict"]`, as the dicts of the earlier client allowed.
    fn __getitem__<'py>(slf: &Bound<'py, Self>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        if FIELDS.contains(&key) {
            slf.getattr(key)
        } else {
            Err(pyo3::exceptions::PyKeyError::new_err(key.to_owned()))
        }
    }

    /// `decision.get("verdict")`, as the dicts of the earlier client allowed.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(slf: &Bound<'py, Self>, key: &str, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        if FIELDS.contains(&key) {
            slf.getattr(key)
        } else {
            Ok(default.unwrap_or_else(|| slf.py().None().into_bound(slf.py())))
        }
    }

    fn __eq__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Decision>() else {
            return Ok(false);
        };
        Decision::as_dict(slf)?.eq(Decision::as_dict(other)?)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Ok(format!("Decision({})", Decision::as_dict(slf)?.repr()?))
    }
}

/// The live policy: name, version and the digest of its file.
#[pyclass(frozen, module = "deploy_guard", name = "Policy", get_all)]
struct Policy {
    name: String,
    version: String,
    digest: String,
}

#[pymethods]
impl Policy {
    /// `name@version`, as in the decision's `policy`.
    #[getter]
    fn identity(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    fn __repr__(&self) -> String {
        format!("Policy({}@{}, {})", self.name, self.version, self.digest)
    }
}

/// Why a value cannot be a setting.
fn setting_value(value: &Bound<'_, PyAny>) -> Result<Option<toml::Value>, String> {
    let kind = || {
        value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string())
    };
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Some(toml::Value::Boolean(b.is_true())));
    }
    if value.cast::<PyInt>().is_ok() {
        return value
            .extract::<i64>()
            .map(|n| Some(toml::Value::Integer(n)))
            .map_err(|_| "an integer out of range".to_owned());
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Ok(Some(toml::Value::Float(f.value())));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Some(toml::Value::String(s.into_owned())))
            .map_err(|_| "text that is not valid Unicode".to_owned());
    }
    if value.cast::<PyList>().is_ok() || value.cast::<PyTuple>().is_ok() {
        let mut items = Vec::new();
        for item in value.try_iter().map_err(|e| e.to_string())? {
            let item = item.map_err(|e| e.to_string())?;
            if let Some(v) = setting_value(&item)? {
                items.push(v);
            }
        }
        return Ok(Some(toml::Value::Array(items)));
    }
    // A path (os.PathLike).
    match fspath(value) {
        Some(path) => Ok(Some(toml::Value::String(path))),
        None => Err(format!("a {} is not a setting value", kind())),
    }
}

/// `os.fspath(value)` as text, if it is a path.
fn fspath(value: &Bound<'_, PyAny>) -> Option<String> {
    let py = value.py();
    let path = py.import("os").ok()?.call_method1("fspath", (value,)).ok()?;
    if let Ok(s) = path.cast::<PyString>() {
        return s.to_cow().ok().map(Cow::into_owned);
    }
    // bytes paths
    path.extract::<Vec<u8>>().ok().and_then(|b| String::from_utf8(b).ok())
}

/// Build the library's guard from the Python arguments; `Err` says why not.
fn build_guard(
    py: Python<'_>,
    db: Option<&Bound<'_, PyAny>>,
    policy: Option<&Bound<'_, PyAny>>,
    config: Option<&Bound<'_, PyAny>>,
    settings: Option<&Bound<'_, PyDict>>,
) -> Result<HostGuard, String> {
    let path = |name: &str, value: Option<&Bound<'_, PyAny>>| -> Result<Option<std::path::PathBuf>, String> {
        match value {
            None => Ok(None),
            Some(v) if v.is_none() => Ok(None),
            Some(v) => fspath(v)
                .map(|p| Some(p.into()))
                .ok_or_else(|| format!("config: setting: {name} is not a path")),
        }
    };
    let mut overrides = Overrides {
        db: path("db", db)?,
        policy: path("policy", policy)?,
        config_file: path("config", config)?,
        ..Overrides::default()
    };
    if let Some(settings) = settings {
        for (key, value) in settings.iter() {
            let key: String = key
                .extract()
                .map_err(|_| "config: setting: a key that is not text".to_owned())?;
            match setting_value(&value) {
                Ok(Some(v)) => {
                    overrides.settings.insert(key, v);
                }
                Ok(None) => {}
                Err(why) => return Err(format!("config: setting: {key}: {why}")),
            }
        }
    }
    py.detach(move || {
        let config = Config::load(&overrides);
        HostGuard::with_overrides(config, overrides).map_err(|e| e.to_string())
    })
}

/// The deploy-status guard in this process. Never raises once built, and building it
/// never raises either: a guard that cannot work decides fail-safe, naming why.
#[pyclass(frozen, module = "deploy_guard", name = "Guard")]
struct Guard {
    state: Arc<GuardState>,
}

/// A request as the library takes it, or why it cannot be made.
enum Asked<'a> {
    Request {
        work_item: Cow<'a, str>,
        target: Target,
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

fn read_request<'a>(
    work_item: &'a Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    reason: Option<&'a Bound<'_, PyAny>>,
) -> Asked<'a> {
    let target = match target.cast::<PyString>().ok().and_then(|t| t.to_cow().ok()) {
        Some(t) if t == "awaiting" => Target::Awaiting,
        Some(t) if t == "deploying" => Target::Deploying,
        Some(t) if t == "monitoring" => Target::Monitoring,
        _ => {
            return Asked::Refused(format!(
                "unknown target {} (expected awaiting, deploying or monitoring)",
                short_repr(target)
            ));
        }
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
    Asked::Request {
        work_item,
        target,
        caller,
    }
}

/// A fail-safe made here, before the library was asked.
fn refused(cause: &str) -> HostDecision {
    HostDecision::fail_safe(Request::decide("", Target::Awaiting, None), cause)
}

fn verdict_str(py: Python<'_>, verdict: Verdict) -> &Bound<'_, PyString> {
    match verdict {
        Verdict::Allow => intern!(py, "ALLOW"),
        Verdict::ConvergeDone => intern!(py, "CONVERGE_DONE"),
        Verdict::Suppress => intern!(py, "SUPPRESS"),
        Verdict::Proceed => intern!(py, "PROCEED"),
        Verdict::Noop => intern!(py, "NOOP"),
    }
}

/// What the decision line needs from Python, looked up once: the original's logger
/// and `sys._getframe`.
struct LogTools {
    logger: Py<PyAny>,
    getframe: Py<PyAny>,
}

static LOG_TOOLS: PyOnceLock<LogTools> = PyOnceLock::new();

/// The decision line, through `logging`; errors are swallowed (logging must never
/// raise, and a handler's own errors are `logging`'s to report).
///
/// The record is made with the logger's own `makeRecord` (so a custom record factory
/// or logger class still applies) and given to its `handle`, which filters it and
/// calls the handlers, as `Logger.log` does. What `Logger.log` would add is its search
/// for the caller's frame, walking the stack past `logging` itself: here the caller
/// is the one Python frame above this native function, so its file, line and function
/// name are read directly. Measured on this path: 1.9 us less per line than
/// `logger.log(level, msg, *args)` (`python -m deploy_guard.bench`).
fn log_decision(
    py: Python<'_>,
    decision: &HostDecision,
    work_item: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    reason: Option<&Bound<'_, PyAny>>,
) {
    let _ = (|| -> PyResult<()> {
        let tools = LOG_TOOLS.get_or_try_init(py, || -> PyResult<LogTools> {
            Ok(LogTools {
                logger: py.import("logging")?.call_method1("getLogger", (LOGGER,))?.unbind(),
                getframe: py.import("sys")?.getattr("_getframe")?.unbind(),
            })
        })?;
        let logger = tools.logger.bind(py);
        let level = if decision.verdict == Verdict::Allow {
            INFO
        } else {
            WARNING
        };
        if !logger
            .call_method1(intern!(py, "isEnabledFor"), (level,))?
            .is_truthy()?
        {
            return Ok(());
        }
        let caller = match reason {
            Some(r) => escaped_value(py, r),
            None => py.None().into_bound(py),
        };
        // Every text field escaped as in the host's own decision line (issue 11): a
        // newline in a work item or a stage must not forge a second line.
        let args = (
            escaped_value(py, work_item),
            caller,
            escaped_value(py, target),
            decision.db_stage.as_deref().map(escaped_text),
            decision.window_active,
            verdict_str(py, decision.verdict),
            escaped_text(&decision.rule),
            decision.policy.as_deref().map(escaped_text),
            decision.error.as_deref().map(escaped_text),
        )
            .into_pyobject(py)?;
        let (path, line, function) = match tools.getframe.bind(py).call0() {
            Ok(frame) => {
                let code = frame.getattr(intern!(py, "f_code"))?;
                (
                    code.getattr(intern!(py, "co_filename"))?,
                    frame.getattr(intern!(py, "f_lineno"))?,
                    code.getattr(intern!(py, "co_name"))?,
                )
            }
            // No Python frame above (called from a thread of another runtime): what
            // `logging` itself says when it cannot find the caller.
            Err(_) => (
                intern!(py, "(unknown file)").clone().into_any(),
                0_i32.into_pyobject(py)?.into_any(),
                intern!(py, "(unknown function)").clone().into_any(),
            ),
        };
        let record = logger.call_method1(
            intern!(py, "makeRecord"),
            (
                logger.getattr(intern!(py, "name"))?,
                level,
                path,
                line,
                intern!(py, MESSAGE),
                args,
                py.None(),
                function,
            ),
        )?;
        logger.call_method1(intern!(py, "handle"), (record,))?;
        Ok(())
    })();
}

/// `text` with control and format characters (and backslashes) escaped, as the host's
/// text decision line writes it; borrowed when there is nothing to escape.
fn escaped_text(text: &str) -> Cow<'_, str> {
    if text
        .chars()
        .any(|c| c == '\\' || deploy_guard::decision::is_control_or_format(c))
    {
        Cow::Owned(deploy_guard::decision::Escaped(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// A value the caller passed, for the decision line: a string escaped as
/// [`escaped_text`] (lone surrogates replaced), anything else as it is (`%s` gives its
/// `str()`, as the original's line did).
fn escaped_value<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    match value.cast::<PyString>() {
        Ok(text) => {
            let text = text.to_string_lossy();
            match escaped_text(&text) {
                Cow::Borrowed(_) => value.clone(),
                Cow::Owned(escaped) => PyString::new(py, &escaped).into_any(),
            }
        }
        Err(_) => value.clone(),
    }
}

impl Guard {
    fn make(
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

    /// The decision, unlogged; the GIL is released while the library decides.
    fn run(
        &self,
        py: Python<'_>,
        work_item: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
        reason: Option<&Bound<'_, PyAny>>,
    ) -> HostDecision {
        let (work_item, target, caller) = match read_request(work_item, target, reason) {
            Asked::Refused(cause) => return refused(&cause),
            Asked::Request {
                work_item,
                target,
                caller,
            } => (work_item, target, caller),
        };
        let guard = match &self.state.guard {
            Err(cause) => return refused(cause),
            Ok(_) if self.state.closed.load(Ordering::SeqCst) => return refused("the guard is closed"),
            Ok(guard) => guard,
        };
        let gate = &self.state.gate;
        py.detach(|| {
            let _in_flight = gate.enter();
            guard.decide_unlogged(Request::decide(&work_item, target, caller.as_deref()))
        })
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
    fn decide<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        target_status: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Bound<'py, PyString> {
        let decision = self.run(py, work_item_id, target_status, reason);
        log_decision(py, &decision, work_item_id, target_status, reason);
        verdict_str(py, decision.verdict).clone()
    }

    /// The whole decision object; never raises; one decision line.
    #[pyo3(signature = (work_item_id, target_status, reason=None))]
    fn decide_full<'py>(
        &self,
        py: Python<'py>,
        work_item_id: &Bound<'py, PyAny>,
        target_status: &Bound<'py, PyAny>,
        reason: Option<&Bound<'py, PyAny>>,
    ) -> Decision {
        let decision = self.run(py, work_item_id, target_status, reason);
        log_decision(py, &decision, work_item_id, target_status, reason);
        Decision {
            work_item: work_item_id.clone().unbind(),
            caller: reason.map_or_else(|| py.None(), |r| r.clone().unbind()),
            target: target_status.clone().unbind(),
            db_stage: decision.db_stage,
            window_active: decision.window_active,
            verdict: decision.verdict.as_str().to_owned(),
            rule: decision.rule,
            policy: decision.policy,
            policy_digest: decision.policy_digest,
            error: decision.error,
        }
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
            let decision = refused("the default guard could not be made");
            log_decision(py, &decision, work_item_id, target_status, reason);
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

/// The library's own log lines (policy swaps and refusals, configuration reloads,
/// ledger trouble) go to Python's `logging` too, to loggers named after their target
/// (`deploy_guard.policy`, `deploy_guard.config`, ...), checked with `isEnabledFor`
/// first. The decision lines are the binding's own (above); the library's tracing
/// event for them is never emitted here (`decide_unlogged`).
struct PythonLogging;

/// Formats an event's message, then its other fields as `key=value`.
struct LineVisitor<'a>(&'a mut String);

impl tracing::field::Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl LineVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let rest = std::mem::take(self.0);
            let _ = write!(self.0, "{value}{rest}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PythonLogging {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "deploy_guard::decision" {
            return;
        }
        let level = match *meta.level() {
            tracing::Level::ERROR => 40,
            tracing::Level::WARN => WARNING,
            tracing::Level::INFO => INFO,
            tracing::Level::DEBUG => 10,
            tracing::Level::TRACE => 5,
        };
        let name = meta.target().replace("::", ".");
        // Not while the interpreter is finalising (a watcher thread may still log).
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let logger = py.import("logging")?.call_method1("getLogger", (name,))?;
            if logger
                .call_method1(intern!(py, "isEnabledFor"), (level,))?
                .is_truthy()?
            {
                let mut line = String::new();
                event.record(&mut LineVisitor(&mut line));
                logger.call_method1(intern!(py, "log"), (level, "%s", line))?;
            }
            Ok(())
        });
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Guard>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Policy>()?;
    m.add_function(wrap_pyfunction!(decide, m)?)?;
    m.add_function(wrap_pyfunction!(decide_full, m)?)?;
    m.add_function(wrap_pyfunction!(default_guard, m)?)?;
    m.add_function(wrap_pyfunction!(default_guard_made, m)?)?;
    m.add_function(wrap_pyfunction!(before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        // Fails only if this process has a subscriber already (an embedding Rust
        // program's): then that one keeps the library's lines.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PythonLogging));
    }
    Ok(())
}
