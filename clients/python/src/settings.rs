//! Python values to settings, and the library's guard built from them.

use deploy_guard::{Config, Guard as HostGuard, Overrides};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::borrow::Cow;

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
pub(crate) fn build_guard(
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
