//! The decision line through Python's `logging`: the original's logger and message,
//! every text field escaped, the record made by the logger and attributed to the caller.

use deploy_guard::{Decision as HostDecision, Verdict};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use std::borrow::Cow;

use crate::types::{Decision, verdict_str};

/// The original module's logger.
const LOGGER: &str = "orchestrator.deploy_status_guard";
/// The original's message, plus rule, policy and the cause of a fail-safe.
const MESSAGE: &str = "deploy_status_guard: work_item=%s caller=%s target=%s db_stage=%s \
                       window_active=%s verdict=%s rule=%s policy=%s error=%s";
/// The message of a monitor tick's line (CONTRACT.md, third round): no target.
const TICK_MESSAGE: &str = "deploy_status_guard: tick work_item=%s caller=%s db_stage=%s \
                            window_active=%s verdict=%s rule=%s policy=%s error=%s";
/// `logging.INFO` and `logging.WARNING`.
pub(crate) const INFO: i32 = 20;
pub(crate) const WARNING: i32 = 30;

/// What the decision line needs from Python, looked up once: the original's logger
/// and `sys._getframe`.
struct LogTools {
    logger: Py<PyAny>,
    getframe: Py<PyAny>,
}

static LOG_TOOLS: PyOnceLock<LogTools> = PyOnceLock::new();

/// The fields of one decision line: the values the caller passed (work item, caller,
/// target) as the Python objects they are, the rest as the decision holds them.
struct Fields<'a, 'py> {
    work_item: &'a Bound<'py, PyAny>,
    caller: Option<&'a Bound<'py, PyAny>>,
    /// The stamp's target as passed; none for a tick (its line has no target).
    target: Option<&'a Bound<'py, PyAny>>,
    db_stage: Option<&'a str>,
    window_active: Option<bool>,
    verdict: &'a str,
    rule: &'a str,
    policy: Option<&'a str>,
    error: Option<&'a str>,
}

/// The frame a record is located at.
enum Frame<'a, 'py> {
    /// The Python frame that called the native function (`Guard.decide` and friends).
    Caller,
    /// A frame the caller found (the sidecar's: the first one outside it); None when
    /// there is none.
    Given(Option<&'a Bound<'py, PyAny>>),
}

/// The decision line of a decision made in this process by the library, for the
/// values the caller passed, located at the Python frame that called the native
/// function. See [`log`].
pub(crate) fn log_decision(
    py: Python<'_>,
    decision: &HostDecision,
    work_item: &Bound<'_, PyAny>,
    target: Option<&Bound<'_, PyAny>>,
    reason: Option<&Bound<'_, PyAny>>,
) {
    let fields = Fields {
        work_item,
        caller: reason,
        target,
        db_stage: decision.db_stage.as_deref(),
        window_active: decision.window_active,
        verdict: decision.verdict.as_str(),
        rule: &decision.rule,
        policy: decision.policy.as_deref(),
        error: decision.error.as_deref(),
    };
    log(py, &fields, Frame::Caller);
}

/// `log_decision(decision, frame, tick=False)`: the decision line of a `Decision` made
/// elsewhere (the sidecar's answer, or its own fail-safe), located at `frame` (a Python
/// frame object, the orchestrator's call site; None: unknown); `tick`: it answers a
/// monitor tick (the tick's line, without a target). The very line `Guard.decide` (or
/// `Guard.monitor_tick`) logs for the same decision, by the same code: one message,
/// one field order, one escaping. Never raises.
#[pyfunction(name = "log_decision")]
#[pyo3(signature = (decision, frame, tick=false))]
pub(crate) fn log_decision_object(
    py: Python<'_>,
    decision: &Bound<'_, Decision>,
    frame: Option<&Bound<'_, PyAny>>,
    tick: bool,
) {
    let decision = decision.get();
    let (work_item, caller, target) = (
        decision.work_item.bind(py),
        decision.caller.bind(py),
        decision.target.bind(py),
    );
    let fields = Fields {
        work_item,
        caller: Some(caller),
        target: (!tick).then_some(target),
        db_stage: decision.db_stage.as_deref(),
        window_active: decision.window_active,
        verdict: &decision.verdict,
        rule: &decision.rule,
        policy: decision.policy.as_deref(),
        error: decision.error.as_deref(),
    };
    log(py, &fields, Frame::Given(frame));
}

/// The decision line, through `logging`; errors are swallowed (logging must never
/// raise, and a handler's own errors are `logging`'s to report).
///
/// The record is made with the logger's own `makeRecord` (so a custom record factory
/// or logger class still applies) and given to its `handle`, which filters it and
/// calls the handlers, as `Logger.log` does. What `Logger.log` would add is its search
/// for the caller's frame, walking the stack past `logging` itself: here the caller
/// is the one Python frame above this native function (or the frame given), so its
/// file, line and function name are read directly. Measured on this path: 1.9 us less
/// per line than `logger.log(level, msg, *args)` (`python -m deploy_guard.bench`).
fn log(py: Python<'_>, fields: &Fields<'_, '_>, frame: Frame<'_, '_>) {
    let _ = (|| -> PyResult<()> {
        let tools = LOG_TOOLS.get_or_try_init(py, || -> PyResult<LogTools> {
            Ok(LogTools {
                logger: py.import("logging")?.call_method1("getLogger", (LOGGER,))?.unbind(),
                getframe: py.import("sys")?.getattr("_getframe")?.unbind(),
            })
        })?;
        let logger = tools.logger.bind(py);
        let level = if fields.verdict == Verdict::Allow.as_str() || fields.verdict == Verdict::Proceed.as_str() {
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
        let caller = match fields.caller {
            Some(r) => escaped_value(py, r),
            None => py.None().into_bound(py),
        };
        // Every text field escaped as in the host's own decision line (issue 11): a
        // newline in a work item or a stage must not forge a second line.
        let (message, args) = match fields.target {
            Some(target) => (
                intern!(py, MESSAGE),
                (
                    escaped_value(py, fields.work_item),
                    caller,
                    escaped_value(py, target),
                    fields.db_stage.map(escaped_text),
                    fields.window_active,
                    verdict_text(py, fields.verdict),
                    escaped_text(fields.rule),
                    fields.policy.map(escaped_text),
                    fields.error.map(escaped_text),
                )
                    .into_pyobject(py)?,
            ),
            None => (
                intern!(py, TICK_MESSAGE),
                (
                    escaped_value(py, fields.work_item),
                    caller,
                    fields.db_stage.map(escaped_text),
                    fields.window_active,
                    verdict_text(py, fields.verdict),
                    escaped_text(fields.rule),
                    fields.policy.map(escaped_text),
                    fields.error.map(escaped_text),
                )
                    .into_pyobject(py)?,
            ),
        };
        let frame = match frame {
            Frame::Caller => tools.getframe.bind(py).call0().ok(),
            Frame::Given(frame) => frame.filter(|f| !f.is_none()).cloned(),
        };
        let (path, line, function) = match frame {
            Some(frame) => {
                let code = frame.getattr(intern!(py, "f_code"))?;
                (
                    code.getattr(intern!(py, "co_filename"))?,
                    frame.getattr(intern!(py, "f_lineno"))?,
                    code.getattr(intern!(py, "co_name"))?,
                )
            }
            // No Python frame above (called from a thread of another runtime): what
            // `logging` itself says when it cannot find the caller.
            None => (
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
                message,
                args,
                py.None(),
                function,
            ),
        )?;
        logger.call_method1(intern!(py, "handle"), (record,))?;
        Ok(())
    })();
}

/// A verdict for the line: one of the host's as the interned word, anything else (a
/// `Decision` can be made with any text) escaped.
fn verdict_text<'py>(py: Python<'py>, verdict: &str) -> Bound<'py, PyAny> {
    match Verdict::ALL.into_iter().find(|v| v.as_str() == verdict) {
        Some(known) => verdict_str(py, known).clone().into_any(),
        None => PyString::new(py, &escaped_text(verdict)).into_any(),
    }
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

/// `escaped(value)`: the text of `value` (a string's own, else its `str()`) as the
/// decision line writes a field: control and format characters as `\u{..}`, a
/// backslash as `\\`. For the sidecar's warning line, whose fields are the caller's
/// values too. Never raises: a value whose `str()` raises is `<unprintable>`.
#[pyfunction(name = "escaped")]
pub(crate) fn escaped_py<'py>(value: &Bound<'py, PyAny>) -> Bound<'py, PyString> {
    let py = value.py();
    match escaped_value(py, value).cast_into::<PyString>() {
        Ok(text) => text,
        Err(_) => intern!(py, "<unprintable>").clone(),
    }
}

/// A value the caller passed, for the decision line: its text escaped as
/// [`escaped_text`] (lone surrogates replaced), a string's own text and anything
/// else's `str()` (what `%s` gave, as in the original's line), so that no value can
/// forge a line whatever its type, and a value reads the same here as through the
/// sidecar (which sends `str()` of what is not a string). A value whose `str()` raises
/// is left as it is: `logging` reports it, as it did.
fn escaped_value<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    let (text, exact) = match value.cast::<PyString>() {
        Ok(text) => (text.clone(), value.is_exact_instance_of::<PyString>()),
        Err(_) => match value.str() {
            Ok(text) => (text, false),
            Err(_) => return value.clone(),
        },
    };
    let text = text.to_string_lossy();
    match escaped_text(&text) {
        // The common case, a plain string with nothing to escape: the caller's object.
        Cow::Borrowed(_) if exact => value.clone(),
        escaped => PyString::new(py, &escaped).into_any(),
    }
}
