//! The embedding API: [`Guard::decide`] ties configuration, facts, the live policy and
//! the decision line together. Every failure on the way becomes a fail-safe ALLOW
//! here, in one place.

mod judge;
mod refresh;

use crate::config::{Config, Overrides};
use crate::facts::source::FactsSource;
use crate::observe::ledger::Ledger;
use crate::observe::metrics::Metrics;
use crate::observe::shadow::{Shadow, ShadowStats};
use crate::rollout::slot::{Outcome, PolicySlot};
use crate::rollout::watch::WatchState;
use crate::sandbox::engine::{EngineError, Sandbox};
use crate::sandbox::policy::LoadedPolicy;
use arc_swap::{ArcSwap, ArcSwapOption};
pub use judge::{NATIVE_POLICY, native_ruling};
pub use refresh::ConfigReload;
use std::sync::{Arc, Mutex};

/// The deploy-status guard: cheap to clone, safe to call from many threads at once.
#[derive(Clone, Debug)]
pub struct Guard {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    sandbox: Arc<Sandbox>,
    overrides: Overrides,
    config: ArcSwap<Config>,
    facts: ArcSwap<FactsSource>,
    slot: PolicySlot,
    watch: Mutex<WatchState>,
    config_watch: Mutex<refresh::ConfigWatch>,
    ledger: ArcSwapOption<Ledger>,
    shadow: ArcSwapOption<Shadow>,
    metrics: Metrics,
    /// The registry side of an `oci://` policy (issue 13).
    follower: Mutex<crate::rollout::follow::Follower>,
}

/// Errors creating a guard (deciding never fails).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The wasmtime engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The watcher thread could not start.
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] std::io::Error),
}

impl Guard {
    /// A guard configured from the environment (and `DEPLOY_GUARD_CONFIG`).
    pub fn from_env() -> Result<Guard, GuardError> {
        Guard::new(Config::load(&Overrides::default()))
    }

    /// A guard with an explicit configuration. The policy is loaded (through the gate)
    /// before this returns; if it cannot be, decisions fail safe until a good one lands
    /// (with [`Guard::watch`] running, or on [`Guard::refresh`]).
    pub fn new(config: Config) -> Result<Guard, GuardError> {
        Guard::with_overrides(config, Overrides::default())
    }

    /// As [`Guard::new`], remembering the command-line overrides so that a reload of
    /// the config file keeps them.
    pub fn with_overrides(config: Config, overrides: Overrides) -> Result<Guard, GuardError> {
        let sandbox = Sandbox::with_cache(config.cache.as_deref())?;
        Guard::with_sandbox(sandbox, config, overrides)
    }

    /// As [`Guard::with_overrides`], on a sandbox shared with other guards.
    pub fn with_sandbox(sandbox: Arc<Sandbox>, config: Config, overrides: Overrides) -> Result<Guard, GuardError> {
        // Keys named but never read (a configuration made in code without
        // `Config::with_trusted_keys`): read now, so that naming keys always requires
        // signatures.
        let config = match (&config.trust, config.trusted_keys.is_empty()) {
            (None, false) => {
                let keys = config.trusted_keys.clone();
                config.with_trusted_keys(keys)
            }
            _ => config,
        };
        config.report();
        let facts = FactsSource::new(config.db.clone(), config.busy_timeout);
        let metrics = Metrics::new();
        let guard = Guard {
            shared: Arc::new(Shared {
                sandbox,
                overrides,
                facts: ArcSwap::from_pointee(facts),
                config: ArcSwap::from_pointee(config.clone()),
                slot: PolicySlot::counted(metrics.swap_counters()),
                watch: Mutex::new(WatchState::default()),
                config_watch: Mutex::new(refresh::ConfigWatch::new(&config)),
                ledger: ArcSwapOption::from(open_ledger(&config, &metrics).map(Arc::new)),
                shadow: ArcSwapOption::empty(),
                metrics,
                follower: Mutex::new(crate::rollout::follow::Follower::default()),
            }),
        };
        if let Ok(mut watch) = guard.shared.watch.lock() {
            watch.policy_path = config.policy.clone();
            watch.policy.settle(&config.policy);
            watch
                .vectors
                .settle(&crate::admission::vectors::vectors_path(&config.policy));
            watch
                .signature
                .settle(&crate::admission::signature::signature_path(&config.policy));
        }
        guard.shared.slot.set_trust(config.trust.clone());
        if crate::rollout::oci::reference::is_oci(&config.policy) {
            guard.refresh_registry(&config, true);
        } else {
            guard
                .shared
                .slot
                .load_from(&guard.shared.sandbox, &config.policy, config.limits);
        }
        Ok(guard)
    }

    /// Run `candidate` (admitted by the gate) beside the live policy on every decision
    /// from now on, off the answers' path. Replaces a previous shadow.
    pub fn start_shadow(&self, candidate: LoadedPolicy) -> Result<Arc<Shadow>, GuardError> {
        let shadow = Arc::new(Shadow::start_counted(
            candidate,
            self.shared.metrics.shadow_disagreements(),
        )?);
        self.shared.shadow.store(Some(Arc::clone(&shadow)));
        Ok(shadow)
    }

    /// Stop shadowing; the shadow's totals once its queue has drained.
    pub fn finish_shadow(&self) -> Option<ShadowStats> {
        self.shared.shadow.swap(None).map(|shadow| shadow.finish())
    }

    /// Every metric of this guard, in the OpenMetrics text format (what `serve
    /// --metrics` serves): decisions, fail-safes by class, durations, the live policy,
    /// swaps, refusals, roll backs, the ledger and the shadow (see [`crate::observe::metrics`]).
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode(self.policy().as_deref())
    }

    /// The decision ledger in use, if any.
    pub fn ledger(&self) -> Option<Arc<Ledger>> {
        self.shared.ledger.load_full()
    }

    /// Return to the previous good policy now (what an automatic roll back does).
    pub fn roll_back(&self, why: &str) -> Option<Outcome> {
        self.shared.slot.roll_back(why)
    }

    /// The policy live now.
    pub fn policy(&self) -> Option<Arc<LoadedPolicy>> {
        self.shared.slot.current()
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config.load_full()
    }

    /// The shared sandbox (to load other policies on the same engine).
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.shared.sandbox
    }
}

fn open_ledger(config: &Config, metrics: &Metrics) -> Option<Ledger> {
    let path = config.ledger.as_ref()?;
    match Ledger::open_counted(path, &config.db, config.ledger_max_rows, metrics.ledger_counters()) {
        Ok(ledger) => Some(ledger),
        Err(e) => {
            tracing::error!(target: "deploy_guard::ledger", "{e}: decisions are not recorded");
            None
        }
    }
}
