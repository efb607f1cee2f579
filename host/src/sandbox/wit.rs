//! The boundary's vocabulary: the types of `wit/deploy-guard.wit` (the 1.1.0 world) as
//! `bindgen!` generates them, and the lowering of a [`Question`] into them.
//!
//! `bindgen!` runs here and nowhere else. The facts a policy is given are generated as
//! borrowing types (`ownership: Borrowing`): a [`Question`] borrowed from the request,
//! the facts read and the configuration is lowered into the sandbox as it is, without
//! an owned copy per decision. What a policy answers is owned (and checked by
//! [`crate::sandbox::policy`] before it is believed).
//!
//! A policy of the 1.0.0 world exports `types` and `policy` at `@1.0.0`: the host finds
//! them under the 1.1.0 names by their major line (see the WIT's "How this contract
//! evolves"), and the types of both are the same, to the character.

use crate::decision::Target;
use crate::sandbox::question::Question;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "guard-policy",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

pub use generated::exports::orchestrator::deploy_guard::monitor::{
    TickDecision as WitTickDecision, TickFacts, TickVerdict as WitTickVerdict,
};
pub use generated::exports::orchestrator::deploy_guard::types::{
    Decision as WitDecision, Facts, PolicyInfo, TargetStatus, Task, Verdict as WitVerdict,
};

/// The package every interface of a policy belongs to.
pub const PACKAGE: &str = "orchestrator:deploy-guard";
/// The major version of the package this host speaks (every `1.x`).
pub const MAJOR: u64 = 1;
/// The interfaces of the world, by name (without the package and version).
pub const POLICY: &str = "policy";
/// See [`POLICY`]; since 1.1.0.
pub const MONITOR: &str = "monitor";

/// The WIT enum of a host target.
pub fn wit_target(target: Target) -> TargetStatus {
    match target {
        Target::Awaiting => TargetStatus::Awaiting,
        Target::Deploying => TargetStatus::Deploying,
        Target::Monitoring => TargetStatus::Monitoring,
    }
}

/// The most list entries lowered from the stack; a longer list is gathered on the heap.
const ON_STACK: usize = 8;

/// Call `f` with `list` as `&[&str]` (what the borrowing bindings take), gathered on
/// the stack when it is short, as scopes are.
fn with_strs<R>(list: &[String], f: impl FnOnce(&[&str]) -> R) -> R {
    if list.len() <= ON_STACK {
        let mut buffer = [""; ON_STACK];
        for (slot, text) in buffer.iter_mut().zip(list) {
            *slot = text;
        }
        f(&buffer[..list.len()])
    } else {
        let gathered: Vec<&str> = list.iter().map(String::as_str).collect();
        f(&gathered)
    }
}

/// `question` as `decide`'s facts (the target given), lent to `f`.
pub fn with_facts<R>(question: &Question<'_>, target: Target, f: impl FnOnce(&Facts<'_>) -> R) -> R {
    with_strs(question.scope_repos, |scope_repos| {
        with_strs(question.self_hosting_repos, |self_hosting_repos| {
            f(&Facts {
                work_item_id: question.work_item,
                target: wit_target(target),
                caller: question.caller,
                task: question.task.map(|t| Task {
                    repo: t.repo,
                    stage: t.stage,
                }),
                window_active: question.window_active,
                scope_repos,
                self_hosting_repos,
            })
        })
    })
}

/// `question` as `tick`'s facts, lent to `f`.
pub fn with_tick_facts<R>(question: &Question<'_>, f: impl FnOnce(&TickFacts<'_>) -> R) -> R {
    with_strs(question.scope_repos, |scope_repos| {
        with_strs(question.self_hosting_repos, |self_hosting_repos| {
            f(&TickFacts {
                work_item_id: question.work_item,
                caller: question.caller,
                task: question.task.map(|t| Task {
                    repo: t.repo,
                    stage: t.stage,
                }),
                window_active: question.window_active,
                scope_repos,
                self_hosting_repos,
            })
        })
    })
}
