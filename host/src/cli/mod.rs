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
pub mod verify;

use deploy_guard::LogFormat;
use deploy_guard::oci::PolicyRef;
use tracing_subscriber::EnvFilter;

/// Log lines to stderr (never stdout: it carries the answers), text or JSON,
/// filtered by RUST_LOG (default: `default_filter`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a pipe or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `target` as a registry reference: `oci://...`, or `HOST/REPO:TAG` when no such
/// file exists.
pub fn registry_reference(target: &str) -> Option<PolicyRef> {
    if target.starts_with(deploy_guard::oci::SCHEME) || !std::path::Path::new(target).exists() {
        PolicyRef::parse(target).ok()
    } else {
        None
    }
}
