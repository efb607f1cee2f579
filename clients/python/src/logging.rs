//! The library's own tracing events to Python's `logging`.

use pyo3::intern;
use pyo3::prelude::*;

use crate::line::{INFO, WARNING};

/// The library's own log lines (policy swaps and refusals, configuration reloads,
/// ledger trouble) go to Python's `logging` too, to loggers named after their target
/// (`deploy_guard.policy`, `deploy_guard.config`, ...), checked with `isEnabledFor`
/// first. The decision lines are the binding's own ([`crate::line`]); the library's tracing
/// event for them is never emitted here (`decide_unlogged`).
pub(crate) struct PythonLogging;

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
