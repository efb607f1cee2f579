//! The boundary's vocabulary: the types of `wit/deploy-guard.wit` as `bindgen!`
//! generates them, and the conversions between them and the host's own.
//!
//! `bindgen!` runs here and nowhere else. This module sits at the bottom of the crate,
//! beside `decision`, so that everything that speaks in facts (the grid, the vectors,
//! the ledger, the guard) imports them from below rather than from the module that
//! runs policies.

use crate::decision::Target;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "guard-policy",
    });
}

pub use generated::exports::orchestrator::deploy_guard::types::{
    Decision as WitDecision, Facts, PolicyInfo, TargetStatus, Task, Verdict as WitVerdict,
};
pub(crate) use generated::{GuardPolicy, GuardPolicyPre};

/// The WIT enum of a host target.
pub fn wit_target(target: Target) -> TargetStatus {
    match target {
        Target::Awaiting => TargetStatus::Awaiting,
        Target::Deploying => TargetStatus::Deploying,
        Target::Monitoring => TargetStatus::Monitoring,
    }
}

/// The host target of a WIT enum.
pub fn host_target(target: TargetStatus) -> Target {
    match target {
        TargetStatus::Awaiting => Target::Awaiting,
        TargetStatus::Deploying => Target::Deploying,
        TargetStatus::Monitoring => Target::Monitoring,
    }
}
