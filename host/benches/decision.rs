//! The decision paths under criterion: `cargo bench --workspace --bench decision`.
//!
//! The same paths as `deploy-guard bench` (native reference end to end, sandboxed end
//! to end, the facts read alone, the sandbox alone), with criterion's statistics and its
//! comparison against the previous run, for tuning one path at a time. `deploy-guard
//! bench` stays the figure of record: it also measures threads, start-up and `serve`.

use criterion::{Criterion, criterion_group, criterion_main};
use deploy_guard::facts::source::FactsSource;
use deploy_guard::{Config, Guard, Request, Target};
use std::hint::black_box;
use std::time::Duration;

fn decision_paths(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("orchestrator.db");
    let db = rusqlite::Connection::open(&db_path).expect("db");
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE tasks (work_item_id TEXT, repo TEXT, stage TEXT);
         CREATE INDEX tasks_work_item ON tasks (work_item_id);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
         CREATE INDEX sentinels_work_item ON post_deploy_sentinels (work_item_id, repo);",
    )
    .expect("schema");
    for i in 0..10_000 {
        let stage = ["done", "deploy", "cancelled", "review"][i % 4];
        db.execute(
            "INSERT INTO tasks VALUES (?1, 'orchestrator', ?2)",
            (format!("ORCH-{i}"), stage),
        )
        .expect("task");
        if stage == "done" {
            db.execute(
                "INSERT INTO post_deploy_sentinels VALUES ('orchestrator', ?1, 'ARMED')",
                [format!("ORCH-{i}")],
            )
            .expect("sentinel");
        }
    }
    let policy_path = dir.path().join("policy.wasm");
    std::fs::write(&policy_path, deploy_guard::sandbox::embedded::DEPLOY_STATUS_GUARD).expect("policy");
    let guard = Guard::new(Config {
        db: db_path.clone(),
        policy: policy_path,
        ..Config::default()
    })
    .expect("guard");
    let policy = guard.policy().expect("the reference policy loads");
    let facts_source = FactsSource::new(&db_path, Duration::from_millis(250));
    let request = Request::decide("ORCH-4000", Target::Monitoring, Some("bench"));
    // What the policy is asked for the request, read through the guard's own path.
    let facts = guard.facts_record(request).expect("the facts read");

    let mut group = c.benchmark_group("decision");
    group.bench_function("native reference, end to end", |b| {
        b.iter(|| black_box(guard.decide_native_unlogged(request)))
    });
    group.bench_function("sandboxed, end to end", |b| {
        b.iter(|| black_box(guard.decide_unlogged(request)))
    });
    // The same request by a new caller each time, so that no answer is remembered:
    // the memo holds a few thousand answers, and a caller comes back only after 65,536
    // others (the `distinct` mix of `deploy-guard bench`).
    let callers: Vec<String> = (0..1 << 16).map(|i| format!("bench-{i}")).collect();
    let mut next_caller = 0;
    group.bench_function("sandboxed, end to end, no request repeats", |b| {
        b.iter(|| {
            next_caller = (next_caller + 1) % callers.len();
            let request = Request::decide("ORCH-4000", Target::Monitoring, Some(&callers[next_caller]));
            black_box(guard.decide_unlogged(request))
        })
    });
    let batch: Vec<Request<'_>> = (0..16)
        .map(|i| {
            Request::decide(
                ["ORCH-4000", "ORCH-4001", "ORCH-4002", "ORCH-4003"][i % 4],
                Target::Monitoring,
                Some("bench"),
            )
        })
        .collect();
    group.bench_function("sandboxed, 16 in one read transaction (per batch)", |b| {
        b.iter(|| black_box(guard.decide_batch(&batch)))
    });
    group.bench_function("facts read once", |b| {
        b.iter(|| black_box(facts_source.read("ORCH-4000")))
    });
    group.bench_function("sandbox alone", |b| {
        b.iter(|| black_box(policy.rule(&facts.question())))
    });
    // What the metrics add to a decision: the clock read twice, the (verdict, rule)
    // counter, the histogram. The end-to-end cases above include it already.
    let metrics = deploy_guard::observe::metrics::Metrics::new();
    let decided = guard.decide_unlogged(request);
    group.bench_function("metrics hook alone", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            metrics.observe(black_box(&decided), None, started.elapsed());
        })
    });
    group.bench_function("metrics hook alone, without the clock", |b| {
        b.iter(|| metrics.observe(black_box(&decided), None, black_box(Duration::from_micros(8))))
    });
    group.finish();
}

criterion_group!(benches, decision_paths);
criterion_main!(benches);
