//! The next version of the deploy-status guard (1.1.0): the orchestrator gained a
//! terminal stage `failed` (a deployment that was given up), and a failed task is held
//! like a cancelled one: no deploy-phase status is stamped over it (rule `failed`).
//! Everything else is the reference policy, unchanged, so `deploy-guard diff` between
//! the two shows exactly the `failed` cases.

use deploy_status_guard::predicate::{self, Facts, Rule, Verdict};

/// The stage this version adds to the terminal ones.
pub const FAILED: &str = "failed";
/// The rule for a stamp over a failed task.
pub const RULE_FAILED: &str = "failed";
/// This policy's name: the same policy, a new version.
pub const POLICY_NAME: &str = deploy_status_guard::POLICY_NAME;
/// This policy's version: the crate's version.
pub const POLICY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The predicate of 1.1.0: the reference, except that a failed task in scope is
/// suppressed.
pub fn decide<S: AsRef<str>>(facts: &Facts<'_, S>) -> (Verdict, &'static str) {
    let ruling = predicate::decide(facts);
    let failed = facts.task.is_some_and(|task| predicate::py_strip(task.stage) == FAILED);
    // NonTerminal means: a task exists and the guard applies to its repo.
    if ruling.rule == Rule::NonTerminal && failed {
        return (Verdict::Suppress, RULE_FAILED);
    }
    (ruling.verdict, ruling.rule.as_str())
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: deploy_status_guard::arena::Arena = deploy_status_guard::arena::Arena::new();

/// The `guard-policy` world of 1.0.0 (`wit/1.0.0/deploy-guard.wit`), exported: this
/// version stays a policy of the first world (it has no monitor), so that the host's
/// swaps across world versions are exercised by a real policy.
#[cfg(target_arch = "wasm32")]
mod export {
    wit_bindgen::generate!({
        path: "../../wit/1.0.0",
        world: "guard-policy",
    });

    use self::exports::orchestrator::deploy_guard::policy::Guest;
    use self::exports::orchestrator::deploy_guard::types::{Decision, Facts, PolicyInfo, TargetStatus, Verdict};
    use deploy_status_guard::predicate;

    struct NextPolicy;

    impl Guest for NextPolicy {
        fn decide(facts: Facts) -> Decision {
            let (verdict, rule) = crate::decide(&predicate::Facts {
                target: match facts.target {
                    TargetStatus::Awaiting => predicate::Target::Awaiting,
                    TargetStatus::Deploying => predicate::Target::Deploying,
                    TargetStatus::Monitoring => predicate::Target::Monitoring,
                },
                task: facts.task.as_ref().map(|t| predicate::Task {
                    repo: &t.repo,
                    stage: &t.stage,
                }),
                window_active: facts.window_active,
                scope_repos: &facts.scope_repos,
                self_hosting_repos: &facts.self_hosting_repos,
            });
            Decision {
                verdict: match verdict {
                    predicate::Verdict::Allow => Verdict::Allow,
                    predicate::Verdict::ConvergeDone => Verdict::ConvergeDone,
                    predicate::Verdict::Suppress => Verdict::Suppress,
                },
                rule: rule.into(),
            }
        }

        fn info() -> PolicyInfo {
            PolicyInfo {
                name: crate::POLICY_NAME.into(),
                version: crate::POLICY_VERSION.into(),
            }
        }
    }

    export!(NextPolicy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_status_guard::predicate::{Target, Task};

    fn facts<'a>(repo: &'a str, stage: &'a str, scope: &'a [&'a str]) -> Facts<'a, &'a str> {
        Facts {
            target: Target::Deploying,
            task: Some(Task { repo, stage }),
            window_active: Some(false),
            scope_repos: scope,
            self_hosting_repos: &["orchestrator"],
        }
    }

    #[test]
    fn a_failed_task_in_scope_is_suppressed_padded_or_not() {
        assert_eq!(
            decide(&facts("orchestrator", "failed", &[])),
            (Verdict::Suppress, "failed")
        );
        assert_eq!(
            decide(&facts(" orchestrator", "\tfailed \n", &[])),
            (Verdict::Suppress, "failed")
        );
    }

    #[test]
    fn a_failed_task_out_of_scope_is_left_alone() {
        assert_eq!(
            decide(&facts("enduro-trails", "failed", &[])),
            (Verdict::Allow, "out-of-scope")
        );
        assert_eq!(
            decide(&facts("orchestrator", "failed", &["svc"])),
            (Verdict::Allow, "out-of-scope")
        );
    }

    #[test]
    fn failed_is_case_sensitive_like_the_other_stages() {
        assert_eq!(
            decide(&facts("orchestrator", "FAILED", &[])),
            (Verdict::Allow, "non-terminal")
        );
    }

    #[test]
    fn everything_else_is_the_reference() {
        assert_eq!(
            decide(&facts("orchestrator", "done", &[])),
            (Verdict::ConvergeDone, "converge-done")
        );
        assert_eq!(
            decide(&facts("orchestrator", "cancelled", &[])),
            (Verdict::Suppress, "cancelled")
        );
        assert_eq!(
            decide(&facts("orchestrator", "deploy", &[])),
            (Verdict::Allow, "non-terminal")
        );
        let mut none = facts("orchestrator", "failed", &[]);
        none.task = None;
        assert_eq!(decide(&none), (Verdict::Allow, "task-not-found"));
    }
}
