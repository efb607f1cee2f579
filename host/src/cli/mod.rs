//! One file per command.

pub mod bench;
pub mod check;
pub mod decide;
pub mod demo;
pub mod diff;
pub mod export;
pub mod keygen;
pub mod push;
pub mod replay;
pub mod rollback;
pub mod serve;
pub mod sign;
pub mod tick;
pub mod verify;

use deploy_guard::LogFormat;
use deploy_guard::rollout::oci::reference::PolicyRef;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// Log lines to stderr (never stdout: it carries the answers), text or JSON,
/// filtered by RUST_LOG (default: `default_filter`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only on a terminal: a pipe or a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Stderr);
    deploy_guard::decision::set_line_format(format);
    let _ = match format {
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder
            .event_format(TextLine(tracing_subscriber::fmt::format().with_ansi(false)))
            .try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
}

/// Decision lines waiting to be written to stderr (see [`Stderr`]).
static PENDING_LINES: parking_lot::Mutex<Vec<u8>> = parking_lot::Mutex::new(Vec::new());

/// Whether decision lines are gathered (in `serve` only; see [`gather_decision_lines`]).
static GATHER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, gather decision lines until [`flush_decision_lines`] (or 64 KiB of
/// them): for a loop that flushes with each batch of answers.
pub fn gather_decision_lines() {
    GATHER.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Past this many bytes, pending decision lines are written without waiting.
const PENDING_LIMIT: usize = 64 * 1024;

/// Where log lines go: stderr. In `serve`, decision lines are gathered and written by
/// [`flush_decision_lines`] (called with each batch's answers), so that a batch costs
/// one write to stderr rather than one per decision; every other line is
/// written at once, after any decision lines still pending, so the order holds and a
/// warning from a watcher thread never waits for the next request.
struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = LineSink;

    fn make_writer(&'a self) -> LineSink {
        LineSink { pending: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineSink {
        LineSink {
            pending: meta.target() == "deploy_guard::decision" && GATHER.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// One log line on its way to stderr (tracing-subscriber writes a line in one call).
struct LineSink {
    pending: bool,
}

impl std::io::Write for LineSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = PENDING_LINES.lock();
        if self.pending {
            pending.extend_from_slice(line);
            if pending.len() >= PENDING_LIMIT {
                write_out(&mut pending);
            }
        } else {
            write_out(&mut pending);
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write the pending lines to stderr. A failed write loses them, as it would have
/// lost each line: logging never fails a decision.
fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), pending);
        pending.clear();
    }
}

/// Write the decision lines gathered so far to stderr.
pub fn flush_decision_lines() {
    write_out(&mut PENDING_LINES.lock());
}

/// Plain text log lines, exactly as tracing-subscriber's default format writes them
/// without colours; the decision line, written once per decision, by a shorter path.
///
/// Why: the default format paints every part of a line (level, target, each field
/// name) through `nu_ansi_term` even with colours off, and visits each field through
/// `core::fmt` twice over. On `serve`, the decision line was 14% of the time per
/// decision (`perf record`); this path writes the same bytes in about half of it.
struct TextLine(tracing_subscriber::fmt::format::Format);

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        // Inside a span the default format names the spans first: leave those lines
        // (and every other event) to it.
        if meta.target() != "deploy_guard::decision" || ctx.event_scope().is_some() {
            return self.0.format_event(ctx, writer, event);
        }
        if SystemTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_str(match *meta.level() {
            tracing::Level::ERROR => " ERROR ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::TRACE => " TRACE ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = PlainFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The fields of a decision line as tracing-subscriber's default visitor writes them
/// without colours: the message, then ` name=value` with `Debug` of each value (so a
/// `str` is quoted and a `Display` field written as it is).
struct PlainFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: std::fmt::Result,
}

impl tracing::field::Visit for PlainFields<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
        {
            // What `{:?}` gives for text with nothing to escape, without `core::fmt`.
            self.result = self.result.and_then(|()| {
                self.writer.write_char(' ')?;
                self.writer.write_str(field.name())?;
                self.writer.write_str("=\"")?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.record_str_raw(field, if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.result = self.result.and_then(|()| {
            if field.name() == "message" {
                // The default format escapes ANSI sequences in a message; this one's
                // message is the fixed text of the decision line.
                write!(self.writer, "{value:?}")
            } else {
                self.writer.write_char(' ')?;
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
                write!(self.writer, "{value:?}")
            }
        });
    }
}

impl PlainFields<'_, '_> {
    fn record_str_raw(&mut self, field: &tracing::field::Field, value: &str) {
        self.result = self.result.and_then(|()| {
            self.writer.write_char(' ')?;
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
            self.writer.write_str(value)
        });
    }
}

/// JSON log lines in tracing-subscriber's shape (`timestamp`, `level`, `fields`,
/// `target`), with a decision's missing values as JSON null.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonFields(&mut fields));
        let meta = event.metadata();
        if meta.target() == "deploy_guard::decision" {
            // Each written even when the decision has no value for it: null, not "null".
            // A stamp's line always carries its target; a tick's has none, and gets none
            // (CONTRACT.md, third round).
            let names: &[&str] = if fields.contains_key("target") {
                &deploy_guard::decision::FIELDS
            } else {
                &deploy_guard::decision::TICK_FIELDS
            };
            for name in names {
                fields.entry(*name).or_insert(serde_json::Value::Null);
            }
        }
        let mut timestamp = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let line = serde_json::json!({
            "timestamp": timestamp,
            "level": meta.level().as_str(),
            "fields": fields,
            "target": meta.target(),
        });
        writeln!(writer, "{line}")
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// `target` as a registry reference: `oci://...`, or `HOST/REPO:TAG` when no such
/// file exists.
pub fn registry_reference(target: &str) -> Option<PolicyRef> {
    if target.starts_with(deploy_guard::rollout::oci::reference::SCHEME) || !std::path::Path::new(target).exists() {
        PolicyRef::parse(target).ok()
    } else {
        None
    }
}
