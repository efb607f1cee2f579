//! What a policy is asked: the facts of one stamp (`decide`) or one monitor tick
//! (`tick`), in two forms. On the decision path they are a [`Question`], borrowed from
//! the request, the facts read and the configuration, and lowered into the sandbox as
//! they are (no copy is made to call a policy). Where they are kept (the ledger, the
//! shadow's queue, the fact grid, a policy's vectors) they are a [`FactsRecord`], owned,
//! with a canonical JSON form.

use crate::decision::{Ask, Target};
use serde::{Deserialize, Serialize};

/// A task as the database stores it, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskRef<'a> {
    /// The repo, untrimmed; NULL as empty.
    pub repo: &'a str,
    /// The stage, untrimmed; NULL as empty.
    pub stage: &'a str,
}

/// Everything a policy is told about one question, borrowed. Two questions that are
/// equal get the same answer from a policy (which imports nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Question<'a> {
    /// A stamp's target, or a tick.
    pub ask: Ask,
    /// The work item.
    pub work_item: &'a str,
    /// The setter's or the monitor's reason.
    pub caller: Option<&'a str>,
    /// The newest task of the work item, if any.
    pub task: Option<TaskRef<'a>>,
    /// The post-deploy window: ARMED and not DONE; none when unknown or no task.
    pub window_active: Option<bool>,
    /// The sanitised scope.
    pub scope_repos: &'a [String],
    /// The self-hosting repos.
    pub self_hosting_repos: &'a [String],
}

impl Question<'_> {
    /// The question as it is kept.
    pub fn to_record(&self) -> FactsRecord {
        FactsRecord {
            ask: self.ask,
            work_item: self.work_item.to_owned(),
            caller: self.caller.map(str::to_owned),
            task: self.task.map(|t| RecordTask {
                repo: t.repo.to_owned(),
                stage: t.stage.to_owned(),
            }),
            window_active: self.window_active,
            scope_repos: self.scope_repos.to_vec(),
            self_hosting_repos: self.self_hosting_repos.to_vec(),
        }
    }
}

/// The facts of one question in their canonical form, as vectors give them and the
/// decision ledger records them:
///
/// ```json
/// {"target": "monitoring", "task": {"repo": "orchestrator", "stage": "done"},
///  "window_active": false, "scope_repos": [], "self_hosting_repos": ["orchestrator"]}
/// {"op": "tick", "task": {"repo": "orchestrator", "stage": "cancelled"}}
/// ```
///
/// `op` is `decide` (the default, with a `target`) or `tick` (without one).
/// `scope_repos` defaults to `[]`, `self_hosting_repos` to `["orchestrator"]`,
/// `window_active` to null, `work_item` to `"VECTOR-1"`, `caller` to null.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct FactsRecord {
    /// A stamp's target, or a tick.
    pub ask: Ask,
    /// The work item.
    pub work_item: String,
    /// The caller.
    pub caller: Option<String>,
    /// The task, none for no task.
    pub task: Option<RecordTask>,
    /// The window.
    pub window_active: Option<bool>,
    /// The scope.
    pub scope_repos: Vec<String>,
    /// The self-hosting repos.
    pub self_hosting_repos: Vec<String>,
}

/// A task of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordTask {
    /// Repo as stored.
    pub repo: String,
    /// Stage as stored.
    pub stage: String,
}

impl FactsRecord {
    /// The question these facts ask.
    pub fn question(&self) -> Question<'_> {
        Question {
            ask: self.ask,
            work_item: &self.work_item,
            caller: self.caller.as_deref(),
            task: self.task.as_ref().map(|t| TaskRef {
                repo: &t.repo,
                stage: &t.stage,
            }),
            window_active: self.window_active,
            scope_repos: &self.scope_repos,
            self_hosting_repos: &self.self_hosting_repos,
        }
    }
}

/// The JSON form of a [`FactsRecord`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Op::is_decide")]
    op: Op,
    #[serde(default = "default_work_item")]
    work_item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
    #[serde(default)]
    caller: Option<String>,
    #[serde(default)]
    task: Option<RecordTask>,
    #[serde(default)]
    window_active: Option<bool>,
    #[serde(default)]
    scope_repos: Vec<String>,
    #[serde(default = "default_self_hosting")]
    self_hosting_repos: Vec<String>,
}

/// `op` of the JSON form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    #[default]
    Decide,
    Tick,
}

impl Op {
    fn is_decide(&self) -> bool {
        *self == Op::Decide
    }
}

fn default_work_item() -> String {
    "VECTOR-1".to_owned()
}

fn default_self_hosting() -> Vec<String> {
    vec![crate::config::DEFAULT_SELF_HOSTING.to_owned()]
}

impl TryFrom<Wire> for FactsRecord {
    type Error = String;
    fn try_from(wire: Wire) -> Result<FactsRecord, String> {
        let ask = match (wire.op, wire.target) {
            (Op::Decide, Some(target)) => Ask::Decide(target),
            (Op::Decide, None) => return Err("missing field `target` (a decide needs one)".to_owned()),
            (Op::Tick, None) => Ask::Tick,
            (Op::Tick, Some(_)) => return Err("a tick has no `target`".to_owned()),
        };
        Ok(FactsRecord {
            ask,
            work_item: wire.work_item,
            caller: wire.caller,
            task: wire.task,
            window_active: wire.window_active,
            scope_repos: wire.scope_repos,
            self_hosting_repos: wire.self_hosting_repos,
        })
    }
}

impl From<FactsRecord> for Wire {
    fn from(record: FactsRecord) -> Wire {
        Wire {
            op: match record.ask {
                Ask::Decide(_) => Op::Decide,
                Ask::Tick => Op::Tick,
            },
            work_item: record.work_item,
            target: record.ask.target(),
            caller: record.caller,
            task: record.task,
            window_active: record.window_active,
            scope_repos: record.scope_repos,
            self_hosting_repos: record.self_hosting_repos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_a_decide_by_default_and_a_tick_without_a_target() {
        let decide: FactsRecord = serde_json::from_str(r#"{"target": "monitoring"}"#).expect("decide");
        assert_eq!(decide.ask, Ask::Decide(Target::Monitoring));
        assert_eq!(decide.self_hosting_repos, ["orchestrator"]);
        let tick: FactsRecord =
            serde_json::from_str(r#"{"op": "tick", "task": {"repo": "r", "stage": "s"}}"#).expect("tick");
        assert_eq!(tick.ask, Ask::Tick);
        for bad in [
            r#"{}"#,
            r#"{"op": "tick", "target": "awaiting"}"#,
            r#"{"op": "poke", "target": "awaiting"}"#,
        ] {
            assert!(serde_json::from_str::<FactsRecord>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_and_its_question_round_trip() {
        for text in [
            r#"{"work_item":"W","target":"awaiting","caller":"c","task":{"repo":"r","stage":"s"},"window_active":true,"scope_repos":["a"],"self_hosting_repos":["b"]}"#,
            r#"{"op":"tick","work_item":"W","caller":null,"task":null,"window_active":null,"scope_repos":[],"self_hosting_repos":["orchestrator"]}"#,
        ] {
            let record: FactsRecord = serde_json::from_str(text).expect("parse");
            assert_eq!(serde_json::to_string(&record).expect("json"), text);
            assert_eq!(record.question().to_record(), record);
        }
    }
}
