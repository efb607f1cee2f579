//! The reference deploy-status guard policy.
//!
//! [`predicate`] is the seed's `decide()` and its monitor's zombie-tick guard (D4) in
//! plain Rust, tested natively. On wasm32 this crate also exports both through the
//! `guard-policy` world of `wit/deploy-guard.wit` (1.1.0); the host's build script
//! encodes the core module as a component that imports nothing. To build the
//! deployable file by hand, see the README ("Building a deployable policy").

pub mod predicate;

#[cfg(target_arch = "wasm32")]
pub mod arena;

/// The policy's name, as `info()` answers it.
pub const POLICY_NAME: &str = "deploy-status-guard";
/// The policy's version, as `info()` answers it: the crate's version.
pub const POLICY_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(all(target_arch = "wasm32", feature = "export"))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

/// The bindings of the `guard-policy` world (1.1.0), and the glue between them and
/// [`predicate`]. Compiled only when this crate is the component (feature `export`):
/// a policy built on the predicate alone (`policies/deploy-status-guard-next`, a
/// 1.0.0-world component) links none of this world's metadata.
#[cfg(all(target_arch = "wasm32", feature = "export"))]
mod component {
    wit_bindgen::generate!({
        path: "../wit",
        world: "guard-policy",
    });

    use self::exports::orchestrator::deploy_guard::monitor::{Guest as Monitor, TickDecision, TickFacts, TickVerdict};
    use self::exports::orchestrator::deploy_guard::policy::Guest as Policy;
    use self::exports::orchestrator::deploy_guard::types::{Decision, Facts, PolicyInfo, TargetStatus, Verdict};
    use crate::predicate;

    /// The reference policy, exported.
    struct ReferencePolicy;

    impl Policy for ReferencePolicy {
        fn decide(facts: Facts) -> Decision {
            let ruling = predicate::decide(&predicate::Facts {
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
                verdict: match ruling.verdict {
                    predicate::Verdict::Allow => Verdict::Allow,
                    predicate::Verdict::ConvergeDone => Verdict::ConvergeDone,
                    predicate::Verdict::Suppress => Verdict::Suppress,
                },
                rule: ruling.rule.as_str().into(),
            }
        }

        fn info() -> PolicyInfo {
            PolicyInfo {
                name: crate::POLICY_NAME.into(),
                version: crate::POLICY_VERSION.into(),
            }
        }
    }

    impl Monitor for ReferencePolicy {
        fn tick(facts: TickFacts) -> TickDecision {
            let ruling = predicate::tick(&predicate::TickFacts {
                task: facts.task.as_ref().map(|t| predicate::Task {
                    repo: &t.repo,
                    stage: &t.stage,
                }),
                window_active: facts.window_active,
                scope_repos: &facts.scope_repos,
                self_hosting_repos: &facts.self_hosting_repos,
            });
            TickDecision {
                verdict: match ruling.verdict {
                    predicate::TickVerdict::Proceed => TickVerdict::Proceed,
                    predicate::TickVerdict::Noop => TickVerdict::Noop,
                },
                rule: ruling.rule.as_str().into(),
            }
        }
    }

    export!(ReferencePolicy);
}
