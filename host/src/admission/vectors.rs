//! Test vectors shipped with a policy: `<stem>.vectors.json` beside `<stem>.wasm`.
//! Each case gives facts and the expected verdict (and, optionally, rule); the gate
//! refuses a policy that fails one.
//!
//! ```json
//! {"cases": [
//!   {"target": "monitoring", "task": {"repo": "orchestrator", "stage": "done"},
//!    "window_active": false, "expect": {"verdict": "CONVERGE_DONE", "rule": "converge-done"}},
//!   {"op": "tick", "task": {"repo": "orchestrator", "stage": "cancelled"},
//!    "expect": {"verdict": "NOOP", "rule": "zombie-tick"}}
//! ]}
//! ```
//! The facts are a [`FactsRecord`] (its defaults: a `decide` unless `op` is `tick`,
//! `scope_repos` `[]`, `self_hosting_repos` `["orchestrator"]`, `window_active` and
//! `caller` null, `work_item` `"VECTOR-1"`). A tick vector tests a policy's own tick
//! rules: for a policy of the 1.0.0 world, which has none (the host answers its ticks),
//! it does not apply, and the gate says so.

use crate::decision::Verdict;
use crate::sandbox::question::FactsRecord;
use serde::Deserialize;
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
