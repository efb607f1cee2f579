//! The embedding API: [`Guard::decide`] ties configuration, facts, the live policy and
//! the decision line together. Every failure on the way becomes a fail-safe ALLOW
//! here, in one place.

use crate::config::{Config, Overrides};
use crate::decision::{Decision, Request, Target};
use crate::engine::{EngineError, Sandbox};
use crate::facts::FactsSource;
use crate::policy::{Facts, LoadedPolicy, TargetStatus, Task};
use crate::swap::{Outcome, PolicySlot, WatchState, Watcher};
use arc_swap::ArcSwap;
use deploy_status_guard::predicate::py_strip;
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

pub(crate) fn wit_target(target: Target) -> TargetStatus {
    match target {
        Target::Awaiting => TargetStatus::Awaiting,
        Target::Deploying => TargetStatus::Deploying,
        Target::Monitoring => TargetStatus::Monitoring,
    }
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
        Guard::with_sandbox(Sandbox::new()?, config, overrides)
    }

    /// As [`Guard::with_overrides`], on a sandbox shared with other guards.
    pub fn with_sandbox(
        sandbox: Arc<Sandbox>,
        config: Config,
        overrides: Overrides,
    ) -> Result<Guard, GuardError> {
        config.report();
        let facts = FactsSource::new(config.db.clone(), config.busy_timeout);
        let guard = Guard {
            shared: Arc::new(Shared {
                sandbox,
                overrides,
                facts: ArcSwap::from_pointee(facts),
                config: ArcSwap::from_pointee(config.clone()),
                slot: PolicySlot::default(),
                watch: Mutex::new(WatchState::default()),
            }),
        };
        if let Ok(mut watch) = guard.shared.watch.lock() {
            watch.policy_path = config.policy.clone();
            watch.policy.settle(&config.policy);
            if let Some(file) = &config.file {
                watch.config.settle(file);
            }
        }
        guard
            .shared
            .slot
            .load_from(&guard.shared.sandbox, &config.policy, config.limits);
        Ok(guard)
    }

    /// Decide one stamp and emit its decision line. Never fails, never panics on bad
    /// input: any failure is a fail-safe ALLOW with its cause in `error`.
    pub fn decide(&self, work_item: &str, target: Target, caller: Option<&str>) -> Decision {
        let decision = self.decide_unlogged(Request {
            work_item,
            target,
            caller,
        });
        decision.log();
        decision
    }

    /// [`Guard::decide`] without the decision line.
    pub fn decide_unlogged(&self, request: Request<'_>) -> Decision {
        let config = self.shared.config.load();
        if let Some(problem) = &config.problem {
            return Decision::fail_safe(request, problem);
        }
        if !config.enabled {
            return Decision::kill_switch(request);
        }
        let Some(policy) = self.shared.slot.current() else {
            let cause = self.shared.slot.problem().map_or_else(
                || "policy-unavailable: no policy is loaded".to_owned(),
                |p| p.to_string(),
            );
            return Decision::fail_safe(request, cause);
        };
        let task = match self.shared.facts.load().read(request.work_item) {
            Ok(task) => task,
            Err(e) => return Decision::fail_safe(request, e),
        };
        let mut decision = Decision::blank(request, crate::Verdict::Allow, "");
        decision.policy = Some(policy.identity());
        decision.policy_digest = Some(policy.digest.clone());
        let facts = Facts {
            work_item_id: request.work_item.to_owned(),
            target: wit_target(request.target),
            caller: request.caller.map(str::to_owned),
            window_active: task.as_ref().and_then(|t| t.window_active),
            task: task.map(|t| {
                decision.db_stage = Some(py_strip(&t.stage).to_owned());
                decision.window_active = t.window_active;
                decision.error = t.window_error;
                Task {
                    repo: t.repo,
                    stage: t.stage,
                }
            }),
            scope_repos: config.scope_repos.clone(),
            self_hosting_repos: config.self_hosting_repos.clone(),
        };
        run(&policy, &facts, decision)
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

    /// Look at the config file and the policy file once, and act on what changed:
    /// a new configuration goes into force if it parses; a new policy goes live if it
    /// passes the gate. What [`Guard::watch`] calls every poll interval.
    pub fn refresh(&self) -> Option<Outcome> {
        let Ok(mut watch) = self.shared.watch.lock() else {
            return None;
        };
        let config = self.shared.config.load_full();
        if let Some(file) = &config.file
            && watch.config.poll(file)
        {
            self.reload_config(&config);
        }
        let config = self.shared.config.load_full();
        let path_changed = watch.policy_path != config.policy;
        if path_changed {
            watch.policy_path = config.policy.clone();
            watch.policy.settle(&config.policy);
        }
        if path_changed || watch.policy.poll(&config.policy) {
            return Some(self.shared.slot.load_from(
                &self.shared.sandbox,
                &config.policy,
                config.limits,
            ));
        }
        None
    }

    fn reload_config(&self, running: &Config) {
        let fresh = Config::load(&self.shared.overrides);
        if let Some(problem) = &fresh.problem {
            tracing::error!(target: "deploy_guard::config", "{problem}; keeping the running configuration");
            return;
        }
        if fresh == *running {
            return;
        }
        for warning in &fresh.warnings {
            tracing::warn!(target: "deploy_guard::config", "{warning}");
        }
        if fresh.db != running.db || fresh.busy_timeout != running.busy_timeout {
            self.shared.facts.store(Arc::new(FactsSource::new(
                fresh.db.clone(),
                fresh.busy_timeout,
            )));
        }
        self.shared.slot.relimit(fresh.limits);
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
    }

    /// Start watching the policy and config files (hot swap); stops when dropped.
    pub fn watch(&self) -> Result<Watcher, GuardError> {
        let guard = self.clone();
        Ok(Watcher::spawn(move || {
            guard.refresh();
        })?)
    }
}

fn run(policy: &LoadedPolicy, facts: &Facts, mut decision: Decision) -> Decision {
    match policy.decide(facts) {
        Ok(ruling) => {
            decision.verdict = ruling.verdict;
            decision.rule = ruling.rule;
            decision
        }
        Err(e) => decision.into_fail_safe(e),
    }
}
