//! The Python values of the library's types: the `Decision` and `Policy` pyclasses and
//! the verdict as a Python string.

use deploy_guard::Verdict;
use deploy_guard::decision::FIELDS;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The decision object: the contract's fields as attributes, plus `as_dict()`.
/// `work_item`, `caller` and `target` are the values the caller passed.
#[pyclass(frozen, module = "deploy_guard", name = "Decision")]
pub(crate) struct Decision {
    #[pyo3(get)]
    pub(crate) work_item: Py<PyAny>,
    #[pyo3(get)]
    pub(crate) caller: Py<PyAny>,
    #[pyo3(get)]
    pub(crate) target: Py<PyAny>,
    #[pyo3(get)]
    pub(crate) db_stage: Option<String>,
    #[pyo3(get)]
    pub(crate) window_active: Option<bool>,
    #[pyo3(get)]
    pub(crate) verdict: String,
    #[pyo3(get)]
    pub(crate) rule: String,
    #[pyo3(get)]
    pub(crate) policy: Option<String>,
    #[pyo3(get)]
    pub(crate) policy_digest: Option<String>,
    #[pyo3(get)]
    pub(crate) error: Option<String>,
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
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) digest: String,
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

/// The verdict as Python text, the host's own word for it ([`Verdict::as_str`]),
/// interned once.
pub(crate) fn verdict_str(py: Python<'_>, verdict: Verdict) -> &Bound<'_, PyString> {
    match verdict {
        Verdict::Allow => intern!(py, Verdict::Allow.as_str()),
        Verdict::ConvergeDone => intern!(py, Verdict::ConvergeDone.as_str()),
        Verdict::Suppress => intern!(py, Verdict::Suppress.as_str()),
        Verdict::Proceed => intern!(py, Verdict::Proceed.as_str()),
        Verdict::Noop => intern!(py, Verdict::Noop.as_str()),
    }
}
