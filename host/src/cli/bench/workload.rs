//! The bench's workload: a generated orchestrator database of realistic size, the
//! request mixes over it, and the same workload written out for a comparison made
//! outside this repository (`--export-workload`).

use anyhow::Context;
use deploy_guard::files::write::{Mode, write_atomically};
use deploy_guard::{Request, Target};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// Tasks in the generated database.
pub const TASKS: usize = 10_000;
/// Requests piped through `serve` for the whole-process figure.
pub const SERVE_REQUESTS: usize = 20_000;

/// The request mixes of the bench and of its exported workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Requests drawn uniformly over the work items (one in ten unknown), scope empty
    /// (self-hosting repos only).
    Bench,
    /// 80% of requests for non-terminal tasks in scope, 10% for done tasks, 10% for the
    /// rest (unknown work items, cancelled and out-of-scope tasks), with the scope set.
    InProgress,
    /// As `bench`, but no request repeats in the whole run: each has a caller of its
    /// own, so remembered answers cannot help (the facts read, the sandbox and the
    /// line are paid every time).
    Distinct,
}

impl Mix {
    /// `DEPLOY_STATUS_GUARD_REPOS` for this mix.
    pub fn scope(self) -> &'static str {
        match self {
            Mix::Bench | Mix::Distinct => "",
            Mix::InProgress => IN_PROGRESS_SCOPE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mix::Bench => "bench",
            Mix::InProgress => "in-progress",
            Mix::Distinct => "distinct",
        }
    }
}

/// The scope of the in-progress mix: the self-hosting repo and one service.
pub const IN_PROGRESS_SCOPE: &str = "orchestrator,svc-a";

/// A deterministic generator (xorshift), so two runs measure the same requests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A database of `TASKS` tasks in WAL mode (the recommended mode) with sentinels:
/// 60% self-hosting, 40% other repos; 40% done (half in their window), 10% cancelled.
/// The connection returned plays the orchestrator: keep it open while deciding (the
/// -wal and -shm files of a WAL database exist only while someone has it open).
pub fn create_database(path: &Path) -> anyhow::Result<(rusqlite::Connection, Vec<TaskRow>)> {
    let mut db = rusqlite::Connection::open(path).context("creating the bench database")?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT, title TEXT);
         CREATE INDEX tasks_work_item ON tasks (work_item_id);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
         CREATE INDEX sentinels_work_item ON post_deploy_sentinels (work_item_id, repo);",
    )?;
    let tx = db.transaction()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let work_item = format!("ORCH-{i}");
        let repo = ["orchestrator", "orchestrator", "orchestrator", "svc-a", "enduro-trails"][rng.below(5)];
        let stage = [
            "done",
            "done",
            "done",
            "done",
            "cancelled",
            "deploy",
            "review",
            "build",
            "deploy",
            "failed",
        ][rng.below(10)];
        tx.execute(
            "INSERT INTO tasks (work_item_id, repo, stage, title) VALUES (?1, ?2, ?3, ?4)",
            (&work_item, repo, stage, format!("task {i}")),
        )?;
        rows.push(TaskRow { repo, stage });
        if stage == "done" {
            tx.execute(
                "INSERT INTO post_deploy_sentinels VALUES (?1, ?2, 'ARMED')",
                (repo, &work_item),
            )?;
            if rng.below(2) == 0 {
                tx.execute(
                    "INSERT INTO post_deploy_sentinels VALUES (?1, ?2, 'DONE')",
                    (repo, &work_item),
                )?;
            }
        }
    }
    tx.commit()?;
    Ok((db, rows))
}

/// One generated task, as the request generator needs to know it (`ORCH-<index>`).
#[derive(Debug, Clone, Copy)]
pub struct TaskRow {
    repo: &'static str,
    stage: &'static str,
}

impl TaskRow {
    fn terminal(self) -> bool {
        matches!(self.stage, "done" | "cancelled")
    }

    fn in_scope(self, scope: &str) -> bool {
        scope.split(',').any(|repo| repo == self.repo)
    }
}

/// One stamp of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRequest {
    pub work_item: String,
    pub target: Target,
    pub caller: String,
}

impl BenchRequest {
    pub fn request(&self) -> Request<'_> {
        Request::decide(&self.work_item, self.target, Some(&self.caller))
    }

    /// The same stamp asked again: in the `distinct` mix, by a caller never seen before
    /// in this run (`distinct-again-<n>`), so that it is not a repeat.
    pub fn again(&self, mix: Mix) -> BenchRequest {
        static ASKED_AGAIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut again = self.clone();
        if mix == Mix::Distinct {
            let n = ASKED_AGAIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            again.caller = format!("distinct-again-{n}");
        }
        again
    }
}

/// `n` requests of the mix over the generated tasks, the same for every run. A run
/// asks for several passes (one per figure); in the `distinct` mix each pass has
/// callers of its own (`distinct-<pass>-<i>`), so no request repeats across them.
pub fn requests(n: usize, mix: Mix, tasks: &[TaskRow], pass: usize) -> Vec<BenchRequest> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let pick = |rng: &mut Rng, pool: &[usize]| pool[rng.below(pool.len())];
    let pools = |keep: &dyn Fn(TaskRow) -> bool| -> Vec<usize> {
        tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| keep(**t))
            .map(|(i, _)| i)
            .collect()
    };
    let working = pools(&|t| !t.terminal() && t.in_scope(IN_PROGRESS_SCOPE));
    let done = pools(&|t| t.stage == "done");
    let other = pools(&|t| t.stage == "cancelled" || !t.in_scope(IN_PROGRESS_SCOPE));
    (0..n)
        .map(|_| {
            let id = match mix {
                // One request in ten is for a work item the database does not have.
                Mix::Bench | Mix::Distinct => rng.below(TASKS + TASKS / 10),
                Mix::InProgress => match rng.below(10) {
                    0 => pick(&mut rng, &done),
                    // Half of the rest unknown, half cancelled or out of scope.
                    1 if rng.below(2) == 0 => TASKS + rng.below(TASKS / 10),
                    1 => pick(&mut rng, &other),
                    _ => pick(&mut rng, &working),
                },
            };
            (format!("ORCH-{id}"), Target::ALL[rng.below(3)])
        })
        .enumerate()
        .map(|(i, (work_item, target))| BenchRequest {
            work_item,
            target,
            caller: match mix {
                Mix::Distinct => format!("distinct-{pass}-{i}"),
                Mix::Bench | Mix::InProgress => "bench".to_owned(),
            },
        })
        .collect()
}

/// `--export-workload DIR`: the generated database (`orchestrator.db`), the `serve`
/// requests of the mix (`requests.jsonl`) and the settings both sides run with
/// (`workload.env`), written to `dir`.
pub fn export(dir: &Path, mix: Mix) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = dir.join("orchestrator.db");
    if db.exists() {
        anyhow::bail!("{} exists already", db.display());
    }
    // Left in rollback-journal mode: whoever reads it next needs no open connection.
    let (connection, tasks) = create_database(&db)?;
    connection.execute_batch("PRAGMA journal_mode = DELETE;")?;
    write_atomically(
        &dir.join("requests.jsonl"),
        serve_input(&requests(SERVE_REQUESTS, mix, &tasks, 0)).as_bytes(),
        Mode::Readable,
    )?;
    // The settings both sides run with (seed_loop.py and serve read the same names).
    let env = format!("DEPLOY_STATUS_GUARD_REPOS={}\n", mix.scope());
    write_atomically(&dir.join("workload.env"), env.as_bytes(), Mode::Readable)?;
    println!(
        "{}, {} and {} (mix {}; run both sides with: env $(cat {}) ...)",
        db.display(),
        dir.join("requests.jsonl").display(),
        dir.join("workload.env").display(),
        mix.name(),
        dir.join("workload.env").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The requests as `serve` reads them, one JSON object per line.
pub fn serve_input(reqs: &[BenchRequest]) -> String {
    let mut input = String::with_capacity(reqs.len() * 80);
    for request in reqs {
        // A BenchRequest is strings and a Target: serialising it cannot fail.
        input.push_str(&serde_json::to_string(request).unwrap_or_default());
        input.push('\n');
    }
    input
}
