//! `deploy-guard demo`: the seed's story on a fresh database; the answers of the policy
//! as deployed (the 1.0.0 world: stamps only); hot swaps while the guard runs, to the
//! reference policy of the 1.1.0 world (the monitor's ticks too: a task cancelled
//! during its window gets NOOP) and back to a policy of the 1.0.0 world, with what each
//! changed; and D3, the order in which the orchestrator must arm its monitor.
//! Everything it needs is built into the binary; it runs from any directory.

use anyhow::Context;
use deploy_guard::files::write::{Mode, write_atomically};
use deploy_guard::sandbox::embedded::{DEPLOY_STATUS_GUARD, DEPLOY_STATUS_GUARD_NEXT, DEPLOYED_1_0_0};
use deploy_guard::{Config, Decision, Guard, LogFormat, Target};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    (
        "ORCH-055",
        "orchestrator",
        "cancelled",
        &["ARMED"],
        "cancelled during its post-deploy window",
    ),
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

/// Every question of the demo: each work item, each target and a tick.
fn table(guard: &Guard) -> Vec<Decision> {
    let mut decisions = Vec::new();
    for (work_item, ..) in STORY {
        for target in Target::ALL {
            decisions.push(guard.decide(work_item, target, Some("demo")));
        }
        decisions.push(guard.tick(work_item, Some("monitor-tick")));
    }
    decisions
}

/// What was asked, for the table: a target, or `tick`.
fn asked(decision: &Decision) -> &'static str {
    decision.target().map_or("tick", Target::as_str)
}

fn print_table(decisions: &[Decision]) {
    println!("work item  stage      asked       verdict        rule                      window");
    for d in decisions {
        println!(
            "{:<10} {:<10} {:<11} {:<14} {:<25} {}",
            d.work_item,
            d.db_stage.as_deref().unwrap_or("-"),
            asked(d),
            d.verdict,
            d.rule,
            d.window_active.map_or("-", |w| if w { "active" } else { "closed" }),
        );
    }
}

/// The questions whose answer changed between two tables, printed.
fn print_changes(before: &[Decision], after: &[Decision]) {
    let changed: Vec<_> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| (b.verdict, &b.rule) != (a.verdict, &a.rule))
        .collect();
    println!("{} of {} answers changed:", changed.len(), after.len());
    for (b, a) in &changed {
        println!(
            "  {:<10} {:<11} {} ({}) -> {} ({})",
            a.work_item,
            asked(a),
            b.verdict,
            b.rule,
            a.verdict,
            a.rule
        );
    }
}

/// Write `bytes` over the active policy while the guard runs, and wait for the swap.
fn swap(guard: &Guard, active: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let before = guard.policy().map(|p| p.digest.clone());
    write_atomically(active, bytes, Mode::Readable)?;
    let started = Instant::now();
    let live = loop {
        match guard.policy() {
            Some(p) if Some(&p.digest) != before.as_ref() => break p,
            _ if started.elapsed() > Duration::from_secs(10) => {
                anyhow::bail!("the swap was not noticed within 10 s")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    println!(
        "policy {} (world {}, {}) went live after {} ms",
        live.identity(),
        live.world(),
        live.digest,
        started.elapsed().as_millis()
    );
    Ok(())
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
    let orchestrator = create_database(&db)?;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)?;
    let active = policies.join("deploy-status-guard.wasm");
    write_atomically(&active, DEPLOYED_1_0_0, Mode::Readable)?;

    println!(
        "deploy-guard demo: a fresh orchestrator database in {}",
        dir.path().display()
    );
    for (work_item, repo, stage, sentinels, story) in STORY {
        println!(
            "  {work_item:<10} {:<14} {:<10} {:<24} {story}",
            if repo.is_empty() { "-" } else { repo },
            if stage.is_empty() { "-" } else { stage },
            format!("sentinels [{}]", sentinels.join(","))
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
    let deployed = guard.policy().context("the deployed 1.0.0 policy did not load")?;
    println!(
        "\n1. policy {} (world {}, {}), as deployed: the monitor's ticks are not in it",
        deployed.identity(),
        deployed.world(),
        deployed.digest
    );
    let first = table(&guard);
    print_table(&first);

    let _watcher = guard.watch()?;
    println!(
        "\n2. hot swap to the reference policy of the 1.1.0 world, while the guard runs: it \
         answers the ticks itself (a task cancelled during its window gets NOOP)"
    );
    swap(&guard, &active, DEPLOY_STATUS_GUARD)?;
    let second = table(&guard);
    print_changes(&first, &second);

    println!(
        "\n3. hot swap back to a policy of the 1.0.0 world, the next version (a failed task \
         held like a cancelled one): the ticks go back to the host"
    );
    swap(&guard, &active, DEPLOY_STATUS_GUARD_NEXT)?;
    let third = table(&guard);
    print_changes(&second, &third);

    println!(
        "\n4. D3, the orchestrator's own order: advance_stage must arm the post-deploy monitor \
         before its terminal sync stamps the first Monitoring"
    );
    swap(&guard, &active, DEPLOY_STATUS_GUARD)?;
    orchestrator.execute(
        "INSERT INTO tasks (work_item_id, repo, stage) VALUES ('ORCH-100', 'orchestrator', 'done')",
        (),
    )?;
    let wrong = guard.decide("ORCH-100", Target::Monitoring, Some("advance_stage"));
    println!(
        "  terminal sync first, monitor not armed yet:  Monitoring -> {} ({})",
        wrong.verdict, wrong.rule
    );
    orchestrator.execute(
        "INSERT INTO post_deploy_sentinels (repo, work_item_id, sentinel) VALUES ('orchestrator', 'ORCH-100', 'ARMED')",
        (),
    )?;
    let right = guard.decide("ORCH-100", Target::Monitoring, Some("advance_stage"));
    println!(
        "  monitor armed first (D3):                    Monitoring -> {} ({})",
        right.verdict, right.rule
    );
    Ok(ExitCode::SUCCESS)
}
