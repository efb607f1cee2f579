//! Configuration: the environment, then the `DEPLOY_GUARD_CONFIG` TOML file, then the
//! overrides (the command-line flags, an embedding program's settings), each overriding
//! the one before (CONTRACT.md).
//!
//! Every setting is declared once, in [`settings::SETTINGS`]: its variable, its key in
//! the file, its default as shown, its meaning and how its text is read and applied.
//! The loader (`load.rs`: [`Config::load`], [`Config::load_from`]), `deploy-guard
//! --help` and the README's table are drawn from that table. This module holds what
//! they produce ([`Config`], [`Limits`]), what they take ([`Overrides`]) and the
//! helpers that read a value.
//!
//! Loading never fails: what cannot be read is reported and replaced by the safe
//! choice. An unreadable boolean disables the guard (the seed's `getattr(settings,
//! "deploy_status_guard_enabled", False)`: verdict ALLOW); an unusable limit keeps its
//! default; a config file that cannot be read or parsed makes every decision a
//! fail-safe ALLOW naming it (a half-applied configuration could decide with a scope
//! the operator did not mean). Each problem is a warning, reported once per load.

mod load;
pub mod settings;

use crate::admission::signature::Trust;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default database file.
pub const DEFAULT_DB: &str = "orchestrator.db";
/// Default active policy.
pub const DEFAULT_POLICY: &str = "policies/deploy-status-guard.wasm";
/// Default self-hosting repositories.
pub const DEFAULT_SELF_HOSTING: &str = "orchestrator";

/// Default retention, in decisions.
pub const DEFAULT_LEDGER_MAX_ROWS: u64 = 1_000_000;

/// The seed's `_REPO_TOKEN`: what a scope token must look like.
pub fn is_repo_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub use crate::decision::LogFormat;

/// What one decision may spend inside the sandbox. The table's size is fixed; the
/// others are settings ([`settings::SETTINGS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one decision (instantiation and call), enforced with
    /// epoch interruption.
    pub timeout: Duration,
    /// WebAssembly fuel (about one unit per instruction) for one decision. The default,
    /// 100,000,000, is enough to strip a stage padded with the most whitespace that
    /// fits in the memory limit (about 8 fuel per byte), still spent in tens of
    /// milliseconds by an endless loop.
    pub fuel: u64,
    /// Linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Table elements of one instance. Fixed: 10,000.
    pub table_elements: usize,
}

impl Limits {
    /// Defaults that the reference policy never comes near: it decides in a few
    /// thousand instructions, in one page (64 KiB) of memory, in microseconds.
    pub const DEFAULT: Limits = Limits {
        timeout: Duration::from_millis(100),
        fuel: 100_000_000,
        memory_bytes: 16 << 20,
        table_elements: 10_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A validated configuration. Each field's variable, config key and default are in
/// [`settings::SETTINGS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The orchestrator's SQLite database (opened read-only).
    pub db: PathBuf,
    /// The active policy component.
    pub policy: PathBuf,
    /// The kill-switch: false makes every verdict ALLOW without running the policy.
    pub enabled: bool,
    /// The sanitised scope; empty means self-hosting repos only.
    pub scope_repos: Vec<String>,
    /// The self-hosting repos.
    pub self_hosting_repos: Vec<String>,
    /// Decision line format.
    pub log: LogFormat,
    /// Sandbox limits.
    pub limits: Limits,
    /// How long a read waits for a writer's lock before it fails (then: fail-safe).
    pub busy_timeout: Duration,
    /// Where compiled policies are kept (see [`crate::sandbox::cache`]); none: compile every
    /// time. By default [`default_cache_dir`] when loaded from the environment, none in
    /// [`Config::default`].
    pub cache: Option<PathBuf>,
    /// The decision ledger, off by default.
    pub ledger: Option<PathBuf>,
    /// The ledger keeps the newest this many decisions.
    pub ledger_max_rows: u64,
    /// Where `serve` serves `GET /metrics` (`PORT` or `HOST:PORT`; a port alone binds
    /// the loopback interface); none: no endpoint. Read at start-up (`serve --metrics`
    /// overrides it).
    pub metrics_addr: Option<String>,
    /// Public-key files a policy must be signed by (none: signatures not required); see
    /// [`crate::admission::signature`].
    pub trusted_keys: Vec<PathBuf>,
    /// The keys of `trusted_keys`, read once, when this configuration was loaded (see
    /// [`Config::with_trusted_keys`] for a configuration made in code): the one place
    /// the key files are read. Two configurations are equal only if their keys are, so
    /// a key file rewritten in place makes a reload that changes something.
    pub trust: Option<Arc<Trust>>,
    /// How often an `oci://` policy's tag is resolved.
    pub poll: Duration,
    /// Registries (`host:port`) allowed over plain HTTP besides loopback.
    pub registry_insecure: Vec<String>,
    /// The config file this was loaded from, if any (`serve` watches it).
    pub file: Option<PathBuf>,
    /// The environment this was loaded from, as it was read: a reload reads the files
    /// again with it, never another environment (a configuration loaded with an
    /// embedder's or a test's environment stays theirs).
    pub environment: Environment,
    /// Set when the configuration could not be read: every decision fails safe with it.
    pub problem: Option<String>,
    /// What was wrong but had a safe fallback; logged once per load.
    pub warnings: Vec<String>,
}

impl Config {
    /// This configuration requiring signatures by the public keys in `keys`, read now
    /// (a configuration loaded from the environment or a file reads them itself). A key
    /// that cannot be read is a problem: every decision fails safe naming it.
    pub fn with_trusted_keys(mut self, keys: Vec<PathBuf>) -> Config {
        self.trusted_keys = keys;
        self.trust = Trust::from_files(&self.trusted_keys).map(Arc::new);
        if let Some(problem) = self.trust.as_ref().and_then(|trust| trust.problem())
            && self.problem.is_none()
        {
            self.problem = Some(format!("trusted_keys: {problem}"));
        }
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: DEFAULT_DB.into(),
            policy: DEFAULT_POLICY.into(),
            enabled: true,
            scope_repos: Vec::new(),
            self_hosting_repos: vec![DEFAULT_SELF_HOSTING.to_owned()],
            log: LogFormat::Text,
            limits: Limits::DEFAULT,
            busy_timeout: Duration::from_millis(250),
            cache: None,
            ledger: None,
            ledger_max_rows: DEFAULT_LEDGER_MAX_ROWS,
            metrics_addr: None,
            trusted_keys: Vec::new(),
            trust: None,
            poll: Duration::from_millis(30_000),
            registry_insecure: Vec::new(),
            file: None,
            environment: Environment::default(),
            problem: None,
            warnings: Vec::new(),
        }
    }
}

/// The variables a configuration load asked its environment for, and what it was told.
/// Where a configuration came from, not what it says: it takes no part in comparing
/// two configurations (all environments are equal), as a reload compares what changed.
#[derive(Clone, Debug, Default)]
pub struct Environment(Arc<std::collections::BTreeMap<String, Option<String>>>);

impl PartialEq for Environment {
    fn eq(&self, _: &Environment) -> bool {
        true
    }
}

impl Eq for Environment {}

impl Environment {
    /// What the load was told `name` is (nothing, for a name it never asked for).
    pub fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().flatten()
    }

    /// Whether a load recorded this environment: false for a configuration made in code
    /// ([`Config::default`] and its kind), which no load read and a reload cannot read
    /// again.
    pub fn is_recorded(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Values given on the command line (or by an embedding program); they override
/// everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `--policy`.
    pub policy: Option<PathBuf>,
    /// The config file to read instead of `DEPLOY_GUARD_CONFIG`'s.
    pub config_file: Option<PathBuf>,
    /// Settings with the config file's keys and value types (`enabled`, `repos`,
    /// `timeout_ms`, ...), over both the environment and the file, as flags are: what
    /// the Python `Guard(**settings)` passes. An unknown key or a value of the wrong
    /// type is a problem (every decision fails safe naming it), as in the file.
    pub settings: toml::Table,
}

impl Config {
    /// Emit the load's warnings (and its problem) as log lines.
    pub fn report(&self) {
        for warning in &self.warnings {
            tracing::warn!(target: "deploy_guard::config", "{warning}");
        }
        if let Some(problem) = &self.problem {
            tracing::error!(target: "deploy_guard::config", "{problem}: every decision fails safe (ALLOW)");
        }
    }
}

/// true/false/1/0/yes/no/on/off, in any case, surrounding whitespace ignored.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A whole number from `min` to `max`: surrounding whitespace ignored, `_` allowed
/// anywhere (`1_000_000`).
fn parse_number(text: &str, min: u64, max: u64) -> Option<u64> {
    text.trim()
        .replace('_', "")
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// The seed's `_scope_repos()`: split on commas, trim, keep the tokens matching
/// `^[A-Za-z0-9._-]+$`, warn once for each dropped one.
pub fn sanitise_scope(csv: &str, source: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let mut scope: Vec<String> = Vec::new();
    for token in csv.split(',') {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        if is_repo_token(token) {
            if !scope.iter().any(|t| t == token) {
                scope.push(token.to_owned());
            }
        } else {
            warnings.push(format!("{source}: dropping invalid repo token {token:?}"));
        }
    }
    scope
}

/// Split on commas, trim, drop the empty items.
fn split_csv(csv: &str) -> Vec<String> {
    csv.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The default cache directory: `$XDG_CACHE_HOME/deploy-guard`, else
/// `$HOME/.cache/deploy-guard`.
/// `env` stands for the environment.
pub fn default_cache_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("deploy-guard"))
}
