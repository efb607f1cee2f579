//! The fact grid: every combination of facts that can change a guard's verdict, as
//! CONTRACT.md lists them for `diff`, for stamps and for monitor ticks. The gate runs a
//! candidate over it (it must decide every case within the limits), `diff` compares two
//! policies over it, and its verdicts hashed are a policy's fingerprint.

use crate::decision::{Ask, Target};
use crate::sandbox::question::{FactsRecord, RecordTask};

/// The repo in scope when the scope is not empty.
pub const SCOPED_REPO: &str = "svc-a";
/// The self-hosting repo of the grid.
pub const SELF_HOSTING_REPO: &str = "orchestrator";
/// A repo that is never in scope.
pub const OUTSIDE_REPO: &str = "enduro-trails";

/// One case of the grid.
#[derive(Clone, Debug)]
pub struct GridCase {
    /// A readable description of the facts.
    pub label: String,
    /// The facts.
    pub facts: FactsRecord,
}

/// The decide cases: 3 targets x (no task + 6 stages x 3 repos) x 2 scopes x 3 windows.
pub const DECIDE_CASES: usize = 3 * (1 + 6 * 3) * 2 * 3;
/// The tick cases: (no task + 6 stages x 3 repos) x 2 scopes x 3 windows.
pub const TICK_CASES: usize = (1 + 6 * 3) * 2 * 3;
/// The number of cases.
pub const GRID_CASES: usize = DECIDE_CASES + TICK_CASES;

/// The grid: the 342 decide cases (every target; no task, or 6 stages x 3 repos; 2
/// scopes; 3 windows), then the 114 tick cases (the same facts without a target).
/// The stages: the two terminal ones, two non-terminal ones (`deploy`, and `failed`,
/// which a next version of the policy may hold terminal), empty, and padded.
pub fn fact_grid() -> Vec<GridCase> {
    let asks = [
        Ask::Decide(Target::Awaiting),
        Ask::Decide(Target::Deploying),
        Ask::Decide(Target::Monitoring),
        Ask::Tick,
    ];
    let stages = ["done", "cancelled", "deploy", "failed", "", "  done \t"];
    let repos = [SELF_HOSTING_REPO, SCOPED_REPO, OUTSIDE_REPO];
    let scopes: [&[&str]; 2] = [&[], &[SCOPED_REPO]];
    let windows = [Some(true), Some(false), None];
    let mut tasks: Vec<Option<RecordTask>> = vec![None];
    for repo in repos {
        for stage in stages {
            tasks.push(Some(RecordTask {
                repo: repo.to_owned(),
                stage: stage.to_owned(),
            }));
        }
    }
    let mut grid = Vec::with_capacity(GRID_CASES);
    for ask in asks {
        for task in &tasks {
            for scope in scopes {
                for window in windows {
                    let asked = match ask {
                        Ask::Decide(target) => format!("target={target}"),
                        Ask::Tick => "tick".to_owned(),
                    };
                    let label = format!(
                        "{asked} task={} scope=[{}] window={}",
                        task.as_ref()
                            .map_or_else(|| "none".to_owned(), |t| format!("{}/{:?}", t.repo, t.stage)),
                        scope.join(","),
                        match window {
                            Some(true) => "on",
                            Some(false) => "off",
                            None => "unknown",
                        }
                    );
                    grid.push(GridCase {
                        label,
                        facts: FactsRecord {
                            ask,
                            work_item: "GRID-1".to_owned(),
                            caller: Some("deploy-guard-grid".to_owned()),
                            task: task.clone(),
                            window_active: window,
                            scope_repos: scope.iter().map(|s| (*s).to_owned()).collect(),
                            self_hosting_repos: vec![SELF_HOSTING_REPO.to_owned()],
                        },
                    });
                }
            }
        }
    }
    grid
}
