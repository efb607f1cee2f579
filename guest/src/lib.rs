//! The reference deploy-status guard policy.
//!
//! [`predicate`] is the seed's `decide()` in plain Rust, tested natively. On wasm32
//! this crate also exports it through the `guard-policy` world of
//! `wit/deploy-guard.wit`; the host's build script encodes the core module as a
//! component that imports nothing. To build the deployable file by hand, see the
//! README ("Building a policy").

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

/// The bindings of the `guard-policy` world, and the glue between them and
/// [`predicate`]. Public so that a policy built on this one (see
/// `policies/deploy-status-guard-next`) exports through the same bindings with
/// `deploy_status_guard::component::export!(ItsType with_types_in deploy_status_guard::component)`.
#[cfg(target_arch = "wasm32")]
pub mod component {
    wit_bindgen::generate!({
        path: "../wit",
        world: "guard-policy",
        pub_export_macro: true,
        default_bindings_module: "deploy_status_guard::component",
    });

    use self::exports::orchestrator::deploy_guard::types::{Decision, Facts, PolicyInfo, TargetStatus, Verdict};
    use crate::predicate;

    /// The facts as the predicate reads them, borrowed from the bindings' values.
    pub fn view(facts: &Facts) -> predicate::Facts<'_, String> {
        predicate::Facts {
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
        }
    }

    /// A decision for the boundary.
    pub fn decision(verdict: predicate::Verdict, rule: &str) -> Decision {
        Decision {
            verdict: match verdict {
                predicate::Verdict::Allow => Verdict::Allow,
                predicate::Verdict::ConvergeDone => Verdict::ConvergeDone,
                predicate::Verdict::Suppress => Verdict::Suppress,
            },
            rule: rule.into(),
        }
    }

    /// A policy's identity for the boundary.
    pub fn info(name: &str, version: &str) -> PolicyInfo {
        PolicyInfo {
            name: name.into(),
            version: version.into(),
        }
    }
}

/// The reference policy, exported when this crate is the component.
#[cfg(all(target_arch = "wasm32", feature = "export"))]
mod reference {
    use crate::component::exports::orchestrator::deploy_guard::policy::Guest;
    use crate::component::exports::orchestrator::deploy_guard::types::{Decision, Facts, PolicyInfo};
    use crate::{component, predicate};

    struct ReferencePolicy;

    impl Guest for ReferencePolicy {
        fn decide(facts: Facts) -> Decision {
            let ruling = predicate::decide(&component::view(&facts));
            component::decision(ruling.verdict, ruling.rule.as_str())
        }

        fn info() -> PolicyInfo {
            component::info(crate::POLICY_NAME, crate::POLICY_VERSION)
        }
    }

    component::export!(ReferencePolicy with_types_in crate::component);
}
