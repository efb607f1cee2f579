//! The decision pipeline of a [`Guard`]: configuration, facts, the policy, the checked
//! ruling, and the observers every decision passes (metrics, ledger, probation, shadow).
//! Every failure on the way becomes a fail-safe ALLOW here.

use crate::admission::vectors::FactsRecord;
use crate::config::Config;
use crate::decision::{Decision, FailSafeClass, Request, Target};
use crate::facts::source::TaskFacts;
use crate::guard::Guard;
use crate::sandbox::policy::LoadedPolicy;
use crate::sandbox::wit::{Facts, Task, wit_target};
use deploy_status_guard::predicate::py_strip;

impl Guard {
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
