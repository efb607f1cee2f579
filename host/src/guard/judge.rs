//! The decision pipeline of a [`Guard`]: configuration, facts, the question, the
//! policy, the checked ruling, and the observers every decision passes (metrics, ledger,
//! probation, shadow). A stamp (`decide`) and a monitor tick (`tick`) travel it alike.
//! Every failure on the way becomes a fail-safe here: ALLOW for a stamp, PROCEED for a
//! tick, with its cause.

use crate::config::Config;
use crate::decision::{Ask, Decision, FailSafeClass, Request, Target, Verdict};
use crate::facts::source::{FactsError, TaskFacts};
use crate::guard::Guard;
use crate::sandbox::policy::{Ruling, RunError};
use crate::sandbox::question::{FactsRecord, Question, TaskRef};
use deploy_status_guard::predicate::{self, py_strip};

impl Guard {
    /// Decide one stamp and emit its decision line. Never fails, never panics on bad
    /// input: any failure is a fail-safe ALLOW with its cause in `error`.
    pub fn decide(&self, work_item: &str, target: Target, caller: Option<&str>) -> Decision {
        self.answer(Request::decide(work_item, target, caller))
    }

    /// Decide one tick of the post-deploy monitor (the seed's D4) and emit its decision
    /// line: PROCEED, or NOOP for a zombie tick (a task cancelled during its window).
    /// Never fails: any failure is a fail-safe PROCEED with its cause in `error`; a
    /// policy of the 1.0.0 world answers PROCEED, rule `tick-not-in-policy`.
    pub fn tick(&self, work_item: &str, caller: Option<&str>) -> Decision {
        self.answer(Request::tick(work_item, caller))
    }

    /// Answer one request (a stamp or a tick) and emit its decision line.
    pub fn answer(&self, request: Request<'_>) -> Decision {
        let decision = self.decide_unlogged(request);
        decision.log();
        decision
    }

    /// [`Guard::answer`] without the decision line.
    pub fn decide_unlogged(&self, request: Request<'_>) -> Decision {
        self.decide_many_unlogged(&[request], Runner::Sandbox)
            .pop()
            .unwrap_or_else(|| Decision::fail_safe(request, "internal: no decision was made"))
    }

    /// Answer several requests that are waiting together: their facts are read in one
    /// read transaction (one snapshot), each runs in its own fresh sandbox. One
    /// decision line each.
    pub fn decide_batch(&self, requests: &[Request<'_>]) -> Vec<Decision> {
        let decisions = self.decide_many_unlogged(requests, Runner::Sandbox);
        decisions.iter().for_each(Decision::log);
        decisions
    }

    /// The native reference: the same configuration and the same facts read the same
    /// way, judged by the reference predicates compiled into this binary instead of the
    /// sandboxed policy. For benchmarks and comparisons; not a fallback.
    pub fn decide_native_unlogged(&self, request: Request<'_>) -> Decision {
        self.decide_many_unlogged(&[request], Runner::Native)
            .pop()
            .unwrap_or_else(|| Decision::fail_safe(request, "internal: no decision was made"))
    }

    /// The facts a policy would be asked for `request`, read and put together exactly
    /// as a decision reads them (for the bench, and tools that call a policy directly).
    pub fn facts_record(&self, request: Request<'_>) -> Result<FactsRecord, FactsError> {
        let config = self.shared.config.load();
        let task = self.shared.facts.load().read(request.work_item)?;
        Ok(question(&config, request, task.as_ref()).to_record())
    }

    fn decide_many_unlogged(&self, requests: &[Request<'_>], runner: Runner) -> Vec<Decision> {
        let started = std::time::Instant::now();
        let config = self.shared.config.load();
        let judged = self.judge(&config, requests, runner);
        if runner == Runner::Native {
            return judged.into_iter().map(|j| j.decision).collect();
        }
        // A batch's decisions were judged together: each counts its share of the time.
        let each = started.elapsed() / u32::try_from(judged.len().max(1)).unwrap_or(u32::MAX);
        // Every sandboxed-path decision, whatever its outcome, passes the observers:
        // the metrics count it, the ledger records it, the shadow compares it, the
        // probation counts it.
        let ledger = self.shared.ledger.load();
        let shadow = self.shared.shadow.load();
        judged
            .into_iter()
            .map(|judged| {
                let Judged {
                    decision,
                    question,
                    policy_failed,
                    fail_safe,
                    fuel,
                } = judged;
                self.shared.metrics.observe(&decision, fail_safe, each);
                if let Some(ledger) = ledger.as_ref() {
                    ledger.record(&decision, question.as_ref().map(OwnedQuestion::to_record), fuel);
                }
                if let Some(digest) = &decision.policy_digest {
                    self.shared.slot.observe(digest, policy_failed);
                }
                if let (Some(shadow), Some(question)) = (shadow.as_ref(), question)
                    && !policy_failed
                {
                    shadow.compare(question.to_record(), decision.verdict, &decision.rule);
                }
                decision
            })
            .collect()
    }

    /// The decisions, with the question the policy was asked (none when no policy
    /// ran).
    fn judge<'a>(&self, config: &'a Config, requests: &[Request<'a>], runner: Runner) -> Vec<Judged<'a>> {
        if let Some(problem) = &config.problem {
            return requests
                .iter()
                .map(|r| Judged::unasked(Decision::fail_safe(*r, problem), Some(FailSafeClass::Config)))
                .collect();
        }
        if !config.enabled {
            return requests
                .iter()
                .map(|r| Judged::unasked(Decision::kill_switch(*r), None))
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
                        .map(|r| {
                            Judged::unasked(Decision::fail_safe(*r, &cause), Some(FailSafeClass::PolicyUnavailable))
                        })
                        .collect();
                }
            },
        };
        let work_items: Vec<&str> = requests.iter().map(|r| r.work_item).collect();
        let facts = self.shared.facts.load().read_many(&work_items);
        // Each request with its facts, or the reason they could not be read.
        let asked: Vec<Result<(Request<'a>, Option<TaskFacts>), FactsError>> = requests
            .iter()
            .zip(facts)
            .map(|(request, task)| task.map(|task| (*request, task)))
            .collect();
        let questions: Vec<Question<'_>> = asked
            .iter()
            .filter_map(|asked| asked.as_ref().ok())
            .map(|(request, task)| question(config, *request, task.as_ref()))
            .collect();
        let mut rulings = match &policy {
            None => questions.iter().map(|q| Ok(native_ruling(q))).collect::<Vec<_>>(),
            // Remembered answers first: a policy imports nothing, so the same question
            // under the same policy and limits has the same answer (sandbox::memo).
            Some(policy) if questions.len() == 1 => vec![policy.rule_remembered(&questions[0])],
            Some(policy) => policy.rule_many_remembered(&questions),
        }
        .into_iter();
        asked
            .into_iter()
            .zip(requests)
            .map(|(asked, request)| match asked {
                Err(e) => Judged::unasked(Decision::fail_safe(*request, e), Some(FailSafeClass::Facts)),
                Ok((request, task)) => {
                    let ruling = rulings.next().unwrap_or_else(|| {
                        Err(RunError::Instantiate(
                            "the policy gave no ruling for this request".to_owned(),
                        ))
                    });
                    let mut decision = with_facts(request, task.as_ref());
                    match &policy {
                        Some(policy) => {
                            decision.policy = Some(policy.identity().to_owned());
                            decision.policy_digest = Some(policy.digest.clone());
                        }
                        None => decision.policy = Some(NATIVE_POLICY.to_owned()),
                    }
                    // The question again, borrowing what the Judged keeps alive.
                    Judged::ruled(decision, ruling, request, task, config)
                }
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Sandbox,
    Native,
}

/// What a policy is asked for `request`, given the facts read for it.
fn question<'a>(config: &'a Config, request: Request<'a>, task: Option<&'a TaskFacts>) -> Question<'a> {
    Question {
        ask: request.ask,
        work_item: request.work_item,
        caller: request.caller,
        task: task.map(|t| TaskRef {
            repo: &t.repo,
            stage: &t.stage,
        }),
        window_active: task.and_then(|t| t.window_active),
        scope_repos: &config.scope_repos,
        self_hosting_repos: &config.self_hosting_repos,
    }
}

/// The decision with the facts the host read: stage trimmed, window, window error.
fn with_facts(request: Request<'_>, task: Option<&TaskFacts>) -> Decision {
    let mut decision = Decision::blank(request, request.ask.as_before(), "");
    if let Some(task) = task {
        decision.db_stage = Some(py_strip(&task.stage).to_owned());
        decision.window_active = task.window_active;
        decision.error.clone_from(&task.window_error);
    }
    decision
}

/// A decision, the question its policy was asked (the facts kept for the observers),
/// whether the policy failed, the class of its fail-safe if it is one, and the fuel
/// the policy used.
struct Judged<'a> {
    decision: Decision,
    question: Option<OwnedQuestion<'a>>,
    policy_failed: bool,
    fail_safe: Option<FailSafeClass>,
    fuel: Option<u64>,
}

/// A question with the facts it borrows, kept until the observers have seen it.
struct OwnedQuestion<'a> {
    request: Request<'a>,
    task: Option<TaskFacts>,
    config: &'a Config,
}

impl OwnedQuestion<'_> {
    fn to_record(&self) -> FactsRecord {
        question(self.config, self.request, self.task.as_ref()).to_record()
    }
}

impl<'a> Judged<'a> {
    /// A decision no policy was asked for.
    fn unasked(decision: Decision, fail_safe: Option<FailSafeClass>) -> Judged<'a> {
        Judged {
            decision,
            question: None,
            policy_failed: false,
            fail_safe,
            fuel: None,
        }
    }

    /// A decision once the policy ruled (or failed).
    fn ruled(
        mut decision: Decision,
        ruling: Result<Ruling, RunError>,
        request: Request<'a>,
        task: Option<TaskFacts>,
        config: &'a Config,
    ) -> Judged<'a> {
        let question = Some(OwnedQuestion { request, task, config });
        match ruling {
            Ok(ruling) => {
                decision.verdict = ruling.verdict;
                decision.rule = ruling.rule;
                Judged {
                    decision,
                    question,
                    policy_failed: false,
                    fail_safe: None,
                    fuel: ruling.fuel,
                }
            }
            Err(e) => Judged {
                // An instance that could not be had (the pool exhausted by the host's own
                // load) is not the policy's failure; probation does not count it.
                policy_failed: !matches!(e, RunError::Instantiate(_)),
                fail_safe: Some(e.class()),
                decision: decision.into_fail_safe(e),
                question,
                fuel: None,
            },
        }
    }
}

/// Identity of the native reference in decisions it makes.
pub const NATIVE_POLICY: &str = "native:deploy-status-guard";

/// The reference predicates, natively: `decide` for a stamp, `tick` for a tick. What
/// the native reference answers, and what the tests compare a policy's answers with.
pub fn native_ruling(question: &Question<'_>) -> Ruling {
    let task = question.task.map(|t| predicate::Task {
        repo: t.repo,
        stage: t.stage,
    });
    match question.ask {
        Ask::Decide(target) => {
            let ruling = predicate::decide(&predicate::Facts {
                target: match target {
                    Target::Awaiting => predicate::Target::Awaiting,
                    Target::Deploying => predicate::Target::Deploying,
                    Target::Monitoring => predicate::Target::Monitoring,
                },
                task,
                window_active: question.window_active,
                scope_repos: question.scope_repos,
                self_hosting_repos: question.self_hosting_repos,
            });
            Ruling {
                verdict: match ruling.verdict {
                    predicate::Verdict::Allow => Verdict::Allow,
                    predicate::Verdict::ConvergeDone => Verdict::ConvergeDone,
                    predicate::Verdict::Suppress => Verdict::Suppress,
                },
                rule: ruling.rule.as_str().to_owned(),
                fuel: None,
            }
        }
        Ask::Tick => {
            let ruling = predicate::tick(&predicate::TickFacts {
                task,
                window_active: question.window_active,
                scope_repos: question.scope_repos,
                self_hosting_repos: question.self_hosting_repos,
            });
            Ruling {
                verdict: match ruling.verdict {
                    predicate::TickVerdict::Proceed => Verdict::Proceed,
                    predicate::TickVerdict::Noop => Verdict::Noop,
                },
                rule: ruling.rule.as_str().to_owned(),
                fuel: None,
            }
        }
    }
}
