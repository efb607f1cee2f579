//! Test vectors shipped with a policy: `<stem>.vectors.json` beside `<stem>.wasm`.
//! Each case gives facts and the expected verdict (and, optionally, rule); the gate
//! refuses a policy that fails one.
//!
//! ```json
//! {"cases": [
//!   {"target": "monitoring", "task": {"repo": "orchestrator", "stage": "done"},
//!    "window_active": false, "expect": {"verdict": "CONVERGE_DONE", "rule": "converge-done"}}
//! ]}
//! ```
//! `scope_repos` defaults to `[]`, `self_hosting_repos` to `["orchestrator"]`,
//! `window_active` to null, `work_item` to `"VECTOR-1"`, `caller` to null.

use crate::decision::{Target, Verdict};
use crate::sandbox::wit::{Facts, Task, host_target, wit_target};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A vectors file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vectors {
    /// The policy these vectors were written for (`name@version`); informative only:
    /// the gate judges behaviour, not names.
    #[serde(default)]
    pub policy: Option<String>,
    /// The cases.
    pub cases: Vec<VectorCase>,
}

/// One case: facts, and what the policy must answer.
#[derive(Clone, Debug, Deserialize)]
pub struct VectorCase {
    /// A name for messages (optional).
    #[serde(default)]
    pub name: Option<String>,
    /// The facts.
    #[serde(flatten)]
    pub facts: FactsRecord,
    /// What the policy must answer.
    pub expect: Expectation,
}

/// The facts of one decision in their canonical JSON form, as vectors give them and
/// the decision ledger records them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsRecord {
    /// The work item.
    #[serde(default = "default_work_item")]
    pub work_item: String,
    /// The target.
    pub target: Target,
    /// The caller.
    #[serde(default)]
    pub caller: Option<String>,
    /// The task, null for none.
    #[serde(default)]
    pub task: Option<VectorTask>,
    /// The window.
    #[serde(default)]
    pub window_active: Option<bool>,
    /// The scope.
    #[serde(default)]
    pub scope_repos: Vec<String>,
    /// The self-hosting repos.
    #[serde(default = "default_self_hosting")]
    pub self_hosting_repos: Vec<String>,
}

/// A task of a vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorTask {
    /// Repo as stored.
    pub repo: String,
    /// Stage as stored.
    pub stage: String,
}

/// The expected answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule, when it matters.
    #[serde(default)]
    pub rule: Option<String>,
}

fn default_work_item() -> String {
    "VECTOR-1".to_owned()
}

fn default_self_hosting() -> Vec<String> {
    vec![crate::config::DEFAULT_SELF_HOSTING.to_owned()]
}

impl FactsRecord {
    /// The facts for the policy.
    pub fn to_facts(&self) -> Facts {
        Facts {
            work_item_id: self.work_item.clone(),
            target: wit_target(self.target),
            caller: self.caller.clone(),
            task: self.task.as_ref().map(|t| Task {
                repo: t.repo.clone(),
                stage: t.stage.clone(),
            }),
            window_active: self.window_active,
            scope_repos: self.scope_repos.clone(),
            self_hosting_repos: self.self_hosting_repos.clone(),
        }
    }

    /// The record of the facts a policy was given.
    pub fn from_facts(facts: &Facts) -> FactsRecord {
        FactsRecord {
            work_item: facts.work_item_id.clone(),
            target: host_target(facts.target),
            caller: facts.caller.clone(),
            task: facts.task.as_ref().map(|t| VectorTask {
                repo: t.repo.clone(),
                stage: t.stage.clone(),
            }),
            window_active: facts.window_active,
            scope_repos: facts.scope_repos.clone(),
            self_hosting_repos: facts.self_hosting_repos.clone(),
        }
    }
}

impl VectorCase {
    /// How messages name this case.
    pub fn describe(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("vector {} ({name})", index + 1),
            None => format!("vector {}", index + 1),
        }
    }
}

/// Where the vectors of the policy at `policy_path` live: `<dir>/<stem>.vectors.json`.
pub fn vectors_path(policy_path: &Path) -> PathBuf {
    let stem = policy_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    policy_path.with_file_name(format!("{stem}.vectors.json"))
}

/// Read the vectors at `path`: `Ok(None)` if there is no such file.
pub fn read_vectors(path: &Path) -> Result<Option<Vectors>, String> {
    match crate::files::read::read_bounded(path, crate::files::read::MAX_VECTORS_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("vectors: cannot parse {}: {e}", path.display())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(format!("vectors: cannot read {}: {e}", path.display())),
    }
}
