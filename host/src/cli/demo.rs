//! `deploy-guard demo`: the seed's story on a fresh database, the decision table, then a
//! hot swap to the next policy while running, and what it changed. Everything it needs
//! is built into the binary; it runs from any directory.

use anyhow::Context;
use deploy_guard::files::write::{Mode, write_atomically};
use deploy_guard::sandbox::embedded::{DEPLOY_STATUS_GUARD, DEPLOY_STATUS_GUARD_NEXT};
use deploy_guard::{Config, Decision, Guard, LogFormat, Target};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const REFERENCE_VECTORS: &str = include_str!("../../../policies/deploy-status-guard.vectors.json");

/// (work item, repo, stage, sentinels, what it shows)
const STORY: &[(&str, &str, &str, &[&str], &str)] = &[
    (
        "ORCH-061",
        "orchestrator",
        "done",
        &["ARMED", "DONE"],
        "done, window over: must hold Done",
    ),
    ("ORCH-072", "orchestrator", "deploy", &["ARMED"], "mid-deploy"),
    ("ORCH-055", "orchestrator", "cancelled", &[], "cancelled"),
    (
        "ORCH-090",
        "orchestrator",
        "done",
        &["ARMED"],
        "done, inside its monitoring window",
    ),
    ("ORCH-081", "orchestrator", "failed", &[], "deployment given up"),
    ("ENDURO-12", "enduro-trails", "done", &[], "a repo out of scope"),
    ("ORCH-404", "", "", &[], "no task in the database"),
];

/// Create the demo database and return the connection that plays the orchestrator: it
/// stays open while the guard decides, as the orchestrator's does (the database is in
/// WAL mode, whose -wal and -shm files exist only while someone has it open).
fn create_database(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path).context("creating the demo database")?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);",
    )?;
    for (work_item, repo, stage, sentinels, _) in STORY {
        if repo.is_empty() {
            continue;
        }
        db.execute(
            "INSERT INTO tasks (work_item_id, repo, stage) VALUES (?1, ?2, ?3)",
            (work_item, repo, stage),
        )?;
        for sentinel in *sentinels {
            db.execute(
                "INSERT INTO post_deploy_sentinels (repo, work_item_id, sentinel) VALUES (?1, ?2, ?3)",
                (repo, work_item, sentinel),
            )?;
        }
    }
    Ok(db)
}

fn table(guard: &Guard) -> Vec<Decision> {
    let mut decisions = Vec::new();
    for (work_item, ..) in STORY {
        for target in Target::ALL {
            decisions.push(guard.decide(work_item, target, Some("demo")));
        }
    }
    decisions
}

fn print_table(decisions: &[Decision]) {
    println!("work item  stage      target      verdict        rule                      window");
    for d in decisions {
        println!(
            "{:<10} {:<10} {:<11} {:<14} {:<25} {}",
            d.work_item,
            d.db_stage.as_deref().unwrap_or("-"),
            d.target,
            d.verdict,
            d.rule,
            d.window_active.map_or("-", |w| if w { "active" } else { "closed" }),
        );
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    let config = Config::load(&deploy_guard::Overrides::default());
    // The table is the demo's output; decision lines would drown it. RUST_LOG shows them.
    super::init_logging(
        LogFormat::Text,
        "deploy_guard::policy=info,deploy_guard::decision=off,warn",
    );
    let dir = tempfile::tempdir().context("creating a directory for the demo")?;
    let db = dir.path().join("orchestrator.db");
    let _orchestrator = create_database(&db)?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    let active = policies.join("deploy-status-guard.wasm");
    write_atomically(
        &policies.join("deploy-status-guard.vectors.json"),
        REFERENCE_VECTORS.as_bytes(),
        Mode::Readable,
    )?;
    write_atomically(&active, DEPLOY_STATUS_GUARD, Mode::Readable)?;

    println!(
        "deploy-guard demo: a fresh orchestrator database in {}",
        dir.path().display()
    );
    for (work_item, repo, stage, sentinels, story) in STORY {
        println!(
            "  {work_item:<10} {:<14} {:<10} sentinels [{}]  {story}",
            if repo.is_empty() { "-" } else { repo },
            if stage.is_empty() { "-" } else { stage },
            sentinels.join(",")
        );
    }
    let guard = Guard::new(Config {
        db: db.clone(),
        policy: active.clone(),
        scope_repos: Vec::new(),
        self_hosting_repos: vec!["orchestrator".into()],
        enabled: true,
        problem: None,
        file: None,
        warnings: Vec::new(),
        ..config
    })?;
    let before_policy = guard.policy().context("the embedded reference policy did not load")?;
    println!("\npolicy {} ({})", before_policy.identity(), before_policy.digest);
    let before = table(&guard);
    print_table(&before);

    let _watcher = guard.watch()?;
    println!(
        "\nhot swap: writing the next policy over {} while the guard runs",
        active.display()
    );
    write_atomically(&active, DEPLOY_STATUS_GUARD_NEXT, Mode::Readable)?;
    let started = Instant::now();
    let after_policy = loop {
        match guard.policy() {
            Some(p) if p.digest != before_policy.digest => break p,
            _ if started.elapsed() > Duration::from_secs(10) => {
                anyhow::bail!("the swap was not noticed within 10 s")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    println!(
        "policy {} ({}) went live after {} ms",
        after_policy.identity(),
        after_policy.digest,
        started.elapsed().as_millis()
    );
    let after = table(&guard);
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| (b.verdict, &b.rule) != (a.verdict, &a.rule))
        .collect();
    println!("\n{} of {} decisions changed:", changed.len(), after.len());
    for (b, a) in &changed {
        println!(
            "  {:<10} {:<11} {} ({}) -> {} ({})",
            a.work_item, a.target, b.verdict, b.rule, a.verdict, a.rule
        );
    }
    Ok(ExitCode::SUCCESS)
}
