//! The embedding API: [`Guard::decide`] ties configuration, facts, the live policy and
//! the decision line together. Every failure on the way becomes a fail-safe ALLOW
//! here, in one place.

use crate::admission::vectors::FactsRecord;
use crate::config::{Config, Overrides};
use crate::decision::{Decision, FailSafeClass, Request, Target};
use crate::facts::source::{FactsSource, TaskFacts};
use crate::observe::ledger::Ledger;
use crate::observe::metrics::Metrics;
use crate::observe::shadow::{Shadow, ShadowStats};
use crate::rollout::slot::{Outcome, PolicySlot};
use crate::rollout::watch::{WatchState, Watcher};
use crate::sandbox::engine::{EngineError, Sandbox};
use crate::sandbox::policy::LoadedPolicy;
use crate::sandbox::wit::{Facts, Task, wit_target};
use arc_swap::{ArcSwap, ArcSwapOption};
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
    config_watch: Mutex<crate::rollout::watch::ChangeDetector>,
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
                config_watch: Mutex::new(crate::rollout::watch::ChangeDetector::default()),
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
        if let (Some(file), Ok(mut detector)) = (&config.file, guard.shared.config_watch.lock()) {
            detector.settle(file);
        }
        guard
            .shared
            .slot
            .set_trust(crate::admission::signature::Trust::from_files(&config.trusted_keys));
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
        self.decide_many_unlogged(&[request], Runner::Sandbox)
            .pop()
            .unwrap_or_else(|| unreachable_fail_safe(request))
    }

    /// Decide several stamps that are waiting together: their facts are read in one
    /// read transaction (one snapshot), each runs in its own fresh sandbox. One
    /// decision line each.
    pub fn decide_batch(&self, requests: &[Request<'_>]) -> Vec<Decision> {
        let decisions = self.decide_many_unlogged(requests, Runner::Sandbox);
        decisions.iter().for_each(Decision::log);
        decisions
    }

    /// The native reference: the same configuration and the same facts read the same
    /// way, judged by the reference predicate compiled into this binary instead of the
    /// sandboxed policy. For benchmarks and comparisons; not a fallback.
    pub fn decide_native_unlogged(&self, request: Request<'_>) -> Decision {
        self.decide_many_unlogged(&[request], Runner::Native)
            .pop()
            .unwrap_or_else(|| unreachable_fail_safe(request))
    }

    fn decide_many_unlogged(&self, requests: &[Request<'_>], runner: Runner) -> Vec<Decision> {
        if runner == Runner::Native {
            return self.judge(requests, runner).into_iter().map(|j| j.decision).collect();
        }
        let started = std::time::Instant::now();
        let judged = self.judge(requests, runner);
        // A batch's decisions were judged together: each counts its share of the time.
        let each = started.elapsed() / u32::try_from(judged.len().max(1)).unwrap_or(u32::MAX);
        // Every sandboxed-path decision, whatever its outcome, passes the observers:
        // the metrics count it, the ledger records it, the shadow compares it, the
        // probation counts it.
        let ledger = self.shared.ledger.load();
        let shadow = self.shared.shadow.load();
        judged
            .into_iter()
            .map(
                |Judged {
                     decision,
                     facts,
                     policy_failed,
                     fail_safe,
                 }| {
                    self.shared.metrics.observe(&decision, fail_safe, each);
                    if let Some(ledger) = ledger.as_ref() {
                        ledger.record(&decision, facts.as_ref().map(FactsRecord::from_facts));
                    }
                    if let Some(digest) = &decision.policy_digest {
                        self.shared.slot.observe(digest, policy_failed);
                    }
                    if let (Some(shadow), Some(facts)) = (shadow.as_ref(), facts)
                        && !policy_failed
                    {
                        shadow.compare(facts, decision.verdict, &decision.rule);
                    }
                    decision
                },
            )
            .collect()
    }

    /// The decisions, with the facts the policy was given (none when no policy ran).
    fn judge(&self, requests: &[Request<'_>], runner: Runner) -> Vec<Judged> {
        let config = self.shared.config.load();
        let unjudged = |decision, fail_safe| Judged {
            decision,
            facts: None,
            policy_failed: false,
            fail_safe,
        };
        if let Some(problem) = &config.problem {
            return requests
                .iter()
                .map(|r| unjudged(Decision::fail_safe(*r, problem), Some(FailSafeClass::Config)))
                .collect();
        }
        if !config.enabled {
            return requests
                .iter()
                .map(|r| unjudged(Decision::kill_switch(*r), None))
                .collect();
        }
        let policy = match runner {
            Runner::Native => None,
            Runner::Sandbox => match self.shared.slot.current() {
                Some(policy) => Some(policy),
                None => {
                    let cause = self.shared.slot.problem().map_or_else(
                        || "policy-unavailable: no policy is loaded".to_owned(),
                        |p| p.to_string(),
                    );
                    return requests
                        .iter()
                        .map(|r| unjudged(Decision::fail_safe(*r, &cause), Some(FailSafeClass::PolicyUnavailable)))
                        .collect();
                }
            },
        };
        let work_items: Vec<&str> = requests.iter().map(|r| r.work_item).collect();
        let facts = self.shared.facts.load().read_many(&work_items);
        let Some(policy) = policy else {
            return requests
                .iter()
                .zip(facts)
                .map(|(request, task)| match task {
                    Err(e) => unjudged(Decision::fail_safe(*request, e), Some(FailSafeClass::Facts)),
                    Ok(task) => unjudged(run_native(&config, *request, task), None),
                })
                .collect();
        };
        if let ([request], [_]) = (requests, facts.as_slice()) {
            // One request: no batch to share a Store with.
            return match facts.into_iter().next() {
                Some(Ok(task)) => {
                    let (decision, facts) = sandboxed_facts(&policy, &config, *request, task);
                    let ruling = policy.decide(&facts);
                    vec![judged_by(decision, facts, ruling)]
                }
                Some(Err(e)) => vec![unjudged(Decision::fail_safe(*request, e), Some(FailSafeClass::Facts))],
                None => Vec::new(),
            };
        }
        // The facts of each request that could be read, then the policy over all of
        // them at once (see LoadedPolicy::decide_many), then each ruling in its place.
        let asked: Vec<Asked> = requests
            .iter()
            .zip(facts)
            .map(|(request, task)| match task {
                Err(e) => Asked::Judged(unjudged(Decision::fail_safe(*request, e), Some(FailSafeClass::Facts))),
                Ok(task) => {
                    let (decision, facts) = sandboxed_facts(&policy, &config, *request, task);
                    Asked::Policy(decision, facts)
                }
            })
            .collect();
        let wit_facts: Vec<&Facts> = asked
            .iter()
            .filter_map(|asked| match asked {
                Asked::Policy(_, facts) => Some(facts),
                Asked::Judged(_) => None,
            })
            .collect();
        let mut rulings = policy.decide_many(&wit_facts).into_iter();
        asked
            .into_iter()
            .map(|asked| match asked {
                Asked::Judged(judged) => judged,
                Asked::Policy(decision, facts) => match rulings.next() {
                    Some(ruling) => judged_by(decision, facts, ruling),
                    None => unreachable_judged(decision, facts),
                },
            })
            .collect()
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

    /// Look at the config file and the policy file once, and act on what changed:
    /// a new configuration goes into force if it parses; a new policy goes live if it
    /// passes the gate. What [`Guard::watch`] calls every poll interval.
    pub fn refresh(&self) -> Option<Outcome> {
        self.refresh_config();
        self.refresh_policy()
    }

    /// Look at the config file once; a new configuration goes into force if it parses.
    /// `None` when the file did not change (or there is none); else what the reload did.
    pub fn refresh_config(&self) -> Option<ConfigReload> {
        let Ok(mut detector) = self.shared.config_watch.lock() else {
            return None;
        };
        let config = self.shared.config.load_full();
        match &config.file {
            Some(file) if detector.poll(file) => Some(self.reload_config(&config)),
            _ => None,
        }
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
    fn refresh_registry(&self, config: &Config, now: bool) -> Option<Outcome> {
        let mut follower = self.shared.follower.lock().ok()?;
        follower.refresh(&self.shared.slot, &self.shared.sandbox, config, now)
    }

    fn reload_config(&self, running: &Config) -> ConfigReload {
        // The file watched is the running configuration's own (it may have come from
        // `Config::load_from`, not from this process's environment).
        let file = running.file.clone();
        let fresh = Config::load_from(
            |name| match (name, &file) {
                ("DEPLOY_GUARD_CONFIG", Some(file)) => Some(file.display().to_string()),
                _ => std::env::var(name).ok(),
            },
            &self.shared.overrides,
        );
        if let Some(problem) = &fresh.problem {
            tracing::error!(target: "deploy_guard::config", "{problem}; keeping the running configuration");
            return ConfigReload::Refused(problem.clone());
        }
        if fresh == *running {
            return ConfigReload::Unchanged;
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
        if fresh.trusted_keys != running.trusted_keys {
            self.shared
                .slot
                .set_trust(crate::admission::signature::Trust::from_files(&fresh.trusted_keys));
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
        ConfigReload::Reloaded
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Sandbox,
    Native,
}

fn unreachable_fail_safe(request: Request<'_>) -> Decision {
    Decision::fail_safe(request, "internal: no decision was made")
}

/// The decision with the facts the host read: stage trimmed, window, window error.
fn with_facts(request: Request<'_>, task: Option<&TaskFacts>) -> Decision {
    let mut decision = Decision::blank(request, crate::Verdict::Allow, "");
    if let Some(task) = task {
        decision.db_stage = Some(py_strip(&task.stage).to_owned());
        decision.window_active = task.window_active;
        decision.error.clone_from(&task.window_error);
    }
    decision
}

/// A decision, the facts its policy was given, whether the policy failed, and the class
/// of its fail-safe if it is one.
struct Judged {
    decision: Decision,
    facts: Option<Facts>,
    policy_failed: bool,
    fail_safe: Option<FailSafeClass>,
}

/// A request of a batch: judged already (its facts could not be read), or waiting for
/// the policy with its decision so far and the facts the policy is given.
enum Asked {
    Judged(Judged),
    Policy(Decision, Facts),
}

/// The decision as far as the facts go (before any policy ran), and the facts the
/// policy is given.
fn sandboxed_facts(
    policy: &LoadedPolicy,
    config: &Config,
    request: Request<'_>,
    task: Option<TaskFacts>,
) -> (Decision, Facts) {
    let mut decision = with_facts(request, task.as_ref());
    decision.policy = Some(policy.identity().to_owned());
    decision.policy_digest = Some(policy.digest.clone());
    let facts = Facts {
        work_item_id: request.work_item.to_owned(),
        target: wit_target(request.target),
        caller: request.caller.map(str::to_owned),
        window_active: task.as_ref().and_then(|t| t.window_active),
        task: task.map(|t| Task {
            repo: t.repo,
            stage: t.stage,
        }),
        scope_repos: config.scope_repos.clone(),
        self_hosting_repos: config.self_hosting_repos.clone(),
    };
    (decision, facts)
}

/// The decision once the policy ruled (or failed).
fn judged_by(
    mut decision: Decision,
    facts: Facts,
    ruling: Result<crate::sandbox::policy::Ruling, crate::sandbox::policy::RunError>,
) -> Judged {
    match ruling {
        Ok(ruling) => {
            decision.verdict = ruling.verdict;
            decision.rule = ruling.rule;
            Judged {
                decision,
                facts: Some(facts),
                policy_failed: false,
                fail_safe: None,
            }
        }
        Err(e) => Judged {
            // An instance that could not be had (the pool exhausted by the host's own
            // load) is not the policy's failure; probation does not count it.
            policy_failed: !matches!(e, crate::sandbox::policy::RunError::Instantiate(_)),
            fail_safe: Some(e.class()),
            decision: decision.into_fail_safe(e),
            facts: Some(facts),
        },
    }
}

/// decide_many answers every facts it is given; were one missing, the decision would
/// fail safe rather than panic.
fn unreachable_judged(decision: Decision, facts: Facts) -> Judged {
    judged_by(
        decision,
        facts,
        Err(crate::sandbox::policy::RunError::Instantiate(
            "the policy gave no ruling for this request".to_owned(),
        )),
    )
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

/// Identity of the native reference in decisions it makes.
pub const NATIVE_POLICY: &str = "native:deploy-status-guard";

fn run_native(config: &Config, request: Request<'_>, task: Option<TaskFacts>) -> Decision {
    use deploy_status_guard::predicate;
    let mut decision = with_facts(request, task.as_ref());
    decision.policy = Some(NATIVE_POLICY.to_owned());
    let ruling = predicate::decide(&predicate::Facts {
        target: match request.target {
            Target::Awaiting => predicate::Target::Awaiting,
            Target::Deploying => predicate::Target::Deploying,
            Target::Monitoring => predicate::Target::Monitoring,
        },
        task: task.as_ref().map(|t| predicate::Task {
            repo: &t.repo,
            stage: &t.stage,
        }),
        window_active: task.as_ref().and_then(|t| t.window_active),
        scope_repos: &config.scope_repos,
        self_hosting_repos: &config.self_hosting_repos,
    });
    decision.verdict = match ruling.verdict {
        predicate::Verdict::Allow => crate::Verdict::Allow,
        predicate::Verdict::ConvergeDone => crate::Verdict::ConvergeDone,
        predicate::Verdict::Suppress => crate::Verdict::Suppress,
    };
    decision.rule = ruling.rule.as_str().to_owned();
    decision
}
