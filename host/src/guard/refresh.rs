//! How a [`Guard`] follows change while it runs: the config file reloaded, the policy
//! file (or followed tag) looked at, the watcher threads, and the fork hooks.

use crate::config::Config;
use crate::facts::source::FactsSource;
use crate::guard::{Guard, GuardError, open_ledger};
use crate::rollout::slot::Outcome;
use crate::rollout::watch::{FileSet, Watcher};
use std::path::PathBuf;
use std::sync::Arc;

impl Guard {
    /// Look at the config file and the policy file once, and act on what changed:
    /// a new configuration goes into force if it parses; a new policy goes live if it
    /// passes the gate. What [`Guard::watch`] calls every poll interval.
    pub fn refresh(&self) -> Option<Outcome> {
        self.refresh_config();
        self.refresh_policy()
    }

    /// Look at the config file and the trusted key files once; a new configuration
    /// goes into force if it parses (with new keys, a new generation of trust). `None`
    /// when none of them changed (or there are none); else what the reload did.
    pub fn refresh_config(&self) -> Option<ConfigReload> {
        let Ok(mut watch) = self.shared.config_watch.lock() else {
            return None;
        };
        let config = self.shared.config.load_full();
        // The same files as the configuration in force names, unless something other
        // than a reload replaced it.
        let files = watch.files_for(&config);
        watch.files.rewatch(files);
        if !watch.files.poll() {
            return None;
        }
        let (reload, named) = self.reload_config(&config);
        // A refused configuration's files stay watched: a key file named before it was
        // there is read when it lands, without another change to the config file.
        watch.refused = match reload {
            ConfigReload::Refused(_) => named,
            ConfigReload::Reloaded | ConfigReload::Unchanged => Vec::new(),
        };
        // A reload may name other key files: watched from now on, those kept keeping
        // what they saw (a config file rewritten again meanwhile is still a change).
        let files = watch.files_for(&self.shared.config.load());
        watch.files.rewatch(files);
        Some(reload)
    }

    /// Look at the policy file and its vectors once; a new candidate goes live if it
    /// passes the gate.
    pub fn refresh_policy(&self) -> Option<Outcome> {
        let Ok(mut watch) = self.shared.watch.lock() else {
            return None;
        };
        let config = self.shared.config.load_full();
        if crate::rollout::oci::reference::is_oci(&config.policy) {
            drop(watch);
            return self.refresh_registry(&config, false);
        }
        let vectors = crate::admission::vectors::vectors_path(&config.policy);
        let signature = crate::admission::signature::signature_path(&config.policy);
        let path_changed = watch.policy_path != config.policy;
        if path_changed {
            watch.policy_path = config.policy.clone();
            watch.policy.settle(&config.policy);
            watch.vectors.settle(&vectors);
            watch.signature.settle(&signature);
        }
        // All are polled every time (each detector tracks its own file's stability).
        let policy_changed = watch.policy.poll(&config.policy);
        let vectors_changed = watch.vectors.poll(&vectors);
        let signature_changed = watch.signature.poll(&signature);
        // Trusted keys changed since the live policy was verified: that first.
        if let Some(outcome) = self.shared.slot.recheck_live_file(&config.policy) {
            return Some(outcome);
        }
        if path_changed || policy_changed || vectors_changed || signature_changed {
            return Some(
                self.shared
                    .slot
                    .load_from(&self.shared.sandbox, &config.policy, config.limits),
            );
        }
        None
    }

    /// An `oci://` policy: resolve its tag (at most every `poll_ms`, or `now`).
    pub(super) fn refresh_registry(&self, config: &Config, now: bool) -> Option<Outcome> {
        let mut follower = self.shared.follower.lock().ok()?;
        follower.refresh(&self.shared.slot, &self.shared.sandbox, config, now)
    }

    /// Read the configuration again and put it in force if it can be used; also the
    /// files the configuration read names (watched while it is refused).
    fn reload_config(&self, running: &Config) -> (ConfigReload, Vec<PathBuf>) {
        let fresh = if running.environment.is_recorded() {
            // The files again, with the environment the running configuration was
            // loaded from (an embedder's or a test's, not necessarily this process's).
            Config::load_from(|name| running.environment.var(name), &self.shared.overrides)
        } else {
            // Made in code, not loaded: nothing to read again but the key files it names.
            Config {
                problem: None,
                trust: None,
                ..running.clone()
            }
            .with_trusted_keys(running.trusted_keys.clone())
        };
        let named = config_files(&fresh);
        if let Some(problem) = &fresh.problem {
            tracing::error!(target: "deploy_guard::config", "{problem}; keeping the running configuration");
            return (ConfigReload::Refused(problem.clone()), named);
        }
        if fresh == *running {
            return (ConfigReload::Unchanged, named);
        }
        for warning in &fresh.warnings {
            tracing::warn!(target: "deploy_guard::config", "{warning}");
        }
        // A reload that points the database at the ledger's files closes the ledger
        // (issue 11): it must never write a file of the orchestrator's database.
        if fresh.db != running.db
            && let Some(ledger) = self.shared.ledger.load_full()
            && let Some(why) = crate::observe::ledger::conflicts_with_database(ledger.path(), &fresh.db)
        {
            tracing::error!(
                target: "deploy_guard::ledger",
                "ledger: {} would write over a file of the orchestrator's database ({why}): the ledger is closed, decisions are not recorded",
                ledger.path().display()
            );
            self.shared.ledger.store(None);
        }
        if fresh.db != running.db || fresh.busy_timeout != running.busy_timeout {
            self.shared
                .facts
                .store(Arc::new(FactsSource::new(fresh.db.clone(), fresh.busy_timeout)));
        }
        self.shared.slot.relimit(fresh.limits);
        // New keys (other files, or a key file rewritten in place): a new generation.
        if fresh.trust != running.trust {
            self.shared.slot.set_trust(fresh.trust.clone());
        }
        tracing::warn!(
            target: "deploy_guard::config",
            enabled = fresh.enabled,
            scope = %fresh.scope_repos.join(","),
            self_hosting = %fresh.self_hosting_repos.join(","),
            db = %fresh.db.display(),
            policy = %fresh.policy.display(),
            "configuration reloaded"
        );
        self.shared.config.store(Arc::new(fresh));
        (ConfigReload::Reloaded, named)
    }

    /// Before `fork()`: stop this guard's ledger writer (what waits is committed), so
    /// that no thread of it holds a lock (SQLite's, the allocator's) that the child
    /// would inherit locked. The caller stops its [`Watcher`] too, and lets no decision
    /// run until [`Guard::after_fork`]. Decisions in between are not recorded.
    pub fn before_fork(&self) {
        drop(self.shared.ledger.swap(None));
        // The idle-connection reaper too: it may be closing a connection (inside
        // SQLite's mutexes) at the moment of the fork.
        self.shared.facts.load().quiesce();
    }

    /// After `fork()`, in the parent (`in_child` false) or the child (true): the
    /// per-process state is made again. In the child: the epoch ticker (threads do not
    /// survive a fork; without it no deadline would pass), fresh database connections
    /// (SQLite's are not to be used across a fork; the inherited ones are leaked, never
    /// closed). In both: the ledger writer. A watcher is the caller's to restart.
    pub fn after_fork(&self, in_child: bool) {
        if in_child {
            if let Err(e) = self.shared.sandbox.ensure_ticker() {
                tracing::error!(target: "deploy_guard::engine", "{e}: deadlines cannot pass in this process");
            }
            std::mem::forget(self.shared.facts.load_full());
            let config = self.shared.config.load_full();
            self.shared
                .facts
                .store(Arc::new(FactsSource::new(config.db.clone(), config.busy_timeout)));
            // The registry client holds an async runtime whose threads did not survive
            // and sockets shared with the parent: never used again (forgotten, since
            // dropping the runtime would wait for threads that are not there).
            if let Ok(mut follower) = self.shared.follower.lock() {
                follower.forget_connection();
            }
        }
        let config = self.shared.config.load_full();
        self.shared
            .ledger
            .store(open_ledger(&config, &self.shared.metrics).map(Arc::new));
    }

    /// Start watching the policy and config files (hot swap); stops when dropped. The
    /// config file has a thread of its own, so that a slow candidate under the gate never
    /// delays the kill-switch.
    pub fn watch(&self) -> Result<Watcher, GuardError> {
        let config_guard = self.clone();
        let policy_guard = self.clone();
        Ok(Watcher::spawn(move || {
            config_guard.refresh_config();
        })?
        .and(Watcher::spawn(move || {
            policy_guard.refresh_policy();
        })?))
    }
}

/// What a look at a changed config file did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigReload {
    /// The new configuration is in force.
    Reloaded,
    /// The file changed but says what the running configuration says.
    Unchanged,
    /// The file cannot be used (the problem); the running configuration is kept.
    Refused(String),
}

/// The files whose change reloads the configuration: its file, and the trusted key
/// files (read once per configuration load).
fn config_files(config: &Config) -> Vec<PathBuf> {
    config.file.iter().chain(&config.trusted_keys).cloned().collect()
}

/// The files watched for a reload of the configuration.
#[derive(Debug)]
pub(super) struct ConfigWatch {
    files: FileSet,
    /// The files a refused reload named: watched beside the running configuration's
    /// until a reload is no longer refused.
    refused: Vec<PathBuf>,
}

impl ConfigWatch {
    /// The files of `config`, watched from their state now.
    pub(super) fn new(config: &Config) -> ConfigWatch {
        ConfigWatch {
            files: FileSet::settled(config_files(config)),
            refused: Vec::new(),
        }
    }

    /// What to watch while `config` is in force.
    fn files_for(&self, config: &Config) -> Vec<PathBuf> {
        let mut files = config_files(config);
        for path in &self.refused {
            if !files.contains(path) {
                files.push(path.clone());
            }
        }
        files
    }
}
