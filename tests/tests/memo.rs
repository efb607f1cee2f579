//! Remembered answers (issue 22): with the memo, every answer is the one a fresh
//! instance gives, over the whole fact grid and random facts, for the reference, the
//! next policy, a policy that keeps state in its instance and one that fails on
//! demand; a remembered answer passes every observer (the ledger with its fuel, the
//! metrics); and nothing remembered outlives what changes an answer (a swap, the
//! facts, the scope, the limits).

use deploy_guard::admission::grid::fact_grid;
use deploy_guard::decision::Ask;
use deploy_guard::guard::ConfigReload;
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::{LoadedPolicy, Ruling, RunError};
use deploy_guard::sandbox::question::{FactsRecord, Question, RecordTask};
use deploy_guard::{Guard, Limits, Target, Verdict};
use deploy_guard_e2e::{NEXT, PATIENT, REFERENCE, Row, Workspace, hostile, insert_task, wait_for, write_atomically};
use std::sync::Arc;

/// What a run gave, as compared: the verdict, the rule and the fuel it used, or the
/// class of the failure.
fn outcome(result: Result<Ruling, RunError>) -> Result<(Verdict, String, Option<u64>), &'static str> {
    result
        .map(|ruling| (ruling.verdict, ruling.rule, ruling.fuel))
        .map_err(|e| e.class().as_str())
}

/// Random facts (xorshift, seeded): work items whose first letter live-classes.wat
/// fails on ("F", "M", "T", "I") among others, every ask, stage, repo, window and scope.
fn random_facts(count: usize, mut seed: u64) -> Vec<FactsRecord> {
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let asks = [
        Ask::Decide(Target::Awaiting),
        Ask::Decide(Target::Deploying),
        Ask::Decide(Target::Monitoring),
        Ask::Tick,
    ];
    let stages = ["done", "cancelled", "deploy", "failed", "", " Done\n", "review"];
    let repos = ["orchestrator", "svc-a", "enduro-trails", ""];
    let letters = ["F", "M", "T", "I", "O", "ORCH-", "P"];
    (0..count)
        .map(|_| FactsRecord {
            ask: asks[next(asks.len())],
            work_item: format!("{}{}", letters[next(letters.len())], next(40)),
            caller: [None, Some("setter".to_owned()), Some("monitor".to_owned())][next(3)].clone(),
            task: (next(5) != 0).then(|| RecordTask {
                repo: repos[next(repos.len())].to_owned(),
                stage: stages[next(stages.len())].to_owned(),
            }),
            window_active: [None, Some(true), Some(false)][next(3)],
            scope_repos: [vec![], vec!["svc-a".to_owned()]][next(2)].clone(),
            self_hosting_repos: [vec!["orchestrator".to_owned()], vec![]][next(2)].clone(),
        })
        .collect()
}

#[test]
fn remembered_answers_equal_fresh_answers_over_the_grid_and_random_facts() {
    let sandbox = Sandbox::new().expect("sandbox");
    // Fuel enough for every sound answer, little enough that live-classes' endless
    // loop ends in fuel quickly (a deadline of 60 s never comes first).
    let limits = Limits {
        fuel: 2_000_000,
        ..PATIENT
    };
    let policies = [
        ("reference", REFERENCE),
        ("next", NEXT),
        ("remembers (state in its instance)", hostile::REMEMBERS),
        ("live-classes (fails on demand)", hostile::LIVE_CLASSES),
    ];
    // The random facts repeat (40 work items per letter): some questions come again.
    let mut records: Vec<FactsRecord> = fact_grid().into_iter().map(|case| case.facts).collect();
    records.extend(random_facts(600, 0x5eed));
    records.extend(random_facts(300, 0x5eed));
    let questions: Vec<Question<'_>> = records.iter().map(FactsRecord::question).collect();
    for (name, bytes) in policies {
        let policy = LoadedPolicy::load(&sandbox, bytes, limits).expect(name);
        let (mut failures, mut answers) = (0u64, 0u64);
        for question in &questions {
            let fresh = outcome(policy.rule(question));
            let remembered = outcome(policy.rule_remembered(question));
            assert_eq!(remembered, fresh, "{name}: {question:?}");
            // Asked again: from the memo if it was an answer, run again if a failure.
            let again = outcome(policy.rule_remembered(question));
            assert_eq!(again, fresh, "{name}: again: {question:?}");
            if let Ok((_, rule, fuel)) = &fresh {
                answers += 1;
                // Every answer the policy gave in the sandbox used fuel; the host's own
                // answer (a tick of a policy without `monitor`) used none.
                assert_eq!(fuel.is_some(), rule != "tick-not-in-policy", "{name}: {fresh:?}");
            } else {
                failures += 1;
            }
        }
        // In batches too: what the memo does not have runs together, the rest is
        // recalled, in order.
        let fresh: Vec<_> = policy.rule_many(&questions).into_iter().map(outcome).collect();
        let remembered: Vec<_> = policy
            .rule_many_remembered(&questions)
            .into_iter()
            .map(outcome)
            .collect();
        assert_eq!(remembered, fresh, "{name}: batch");
        let stats = policy.memo_stats();
        eprintln!("{name}: {answers} answers, {failures} failures, memo {stats:?}");
        assert!(stats.hits > 0, "{name}: nothing was recalled: {stats:?}");
        // A failure is never kept: live-classes fails, and each failure ran again.
        if name.starts_with("live-classes") {
            assert!(failures > 0, "the random facts reach live-classes' failures");
        }
        assert!(stats.entries as u64 <= answers, "{name}: {stats:?}");
    }
}

#[test]
fn the_engine_canonicalises_nans_so_answers_are_exact_to_the_bit() {
    // The setting that makes float results the same on every machine: a wasm module
    // that divides 0 by 0 gives the canonical NaN, whatever the hardware would.
    let sandbox = Sandbox::new().expect("sandbox");
    let engine = sandbox.engine();
    let module = wasmtime::Module::new(
        engine,
        r#"(module (func (export "nan") (result i32)
              (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0)))))"#,
    )
    .expect("compiles");
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(1_000).expect("fuel");
    store.set_epoch_deadline(1_000_000);
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
    let nan = instance
        .get_typed_func::<(), i32>(&mut store, "nan")
        .expect("typed")
        .call(&mut store, ())
        .expect("runs");
    assert_eq!(nan as u32, 0x7fc0_0000, "{:#x}", nan as u32);
}

/// Ask until `guard`'s policy poll acts.
fn refresh_until_outcome(guard: &Guard) -> Outcome {
    wait_for("the policy poll to act", || guard.refresh_policy())
}

#[test]
fn a_remembered_answer_is_recorded_counted_and_logged_like_any_other() {
    let ws = Workspace::story();
    let ledger = ws.dir.path().join("ledger.db");
    let guard = Guard::new(deploy_guard::Config {
        ledger: Some(ledger.clone()),
        ..ws.config()
    })
    .expect("guard");
    let first = guard.decide("ORCH-061", Target::Monitoring, Some("setter"));
    let second = guard.decide("ORCH-061", Target::Monitoring, Some("setter"));
    assert_eq!(first, second);
    assert_eq!(
        (first.verdict, first.rule.as_str()),
        (Verdict::ConvergeDone, "converge-done")
    );
    let stats = guard.policy().expect("live").memo_stats();
    assert_eq!((stats.hits, stats.misses), (1, 1), "{stats:?}");
    // Both decisions are in the metrics.
    let metrics = guard.metrics();
    assert!(
        metrics.lines().any(|l| l.starts_with("deploy_guard_decisions_total{")
            && l.contains("converge-done")
            && l.ends_with(" 2")),
        "{metrics}"
    );
    // And in the ledger, each with its facts and the same fuel, the one the run used.
    drop(guard);
    let rows = deploy_guard::observe::ledger::read_ledger(&ledger).expect("ledger");
    assert_eq!(rows.len(), 2);
    let fuel = rows[0].fuel.expect("the fuel of the run");
    assert!(fuel > 0);
    for row in &rows {
        assert_eq!(row.fuel, Some(fuel));
        assert_eq!(row.decision, first);
        assert!(row.facts.is_some());
    }
}

#[test]
fn nothing_remembered_outlives_what_changes_an_answer() {
    let ws = Workspace::story();
    let file = ws.dir.path().join("guard.toml");
    let write_config = |scope: &str, fuel: u64| {
        write_atomically(
            &file,
            format!(
                "db = {:?}\npolicy = {:?}\ntimeout_ms = 60000\nrepos = {scope:?}\nfuel = {fuel}\n",
                ws.db(),
                ws.policy()
            )
            .as_bytes(),
        );
    };
    write_config("", 100_000_000);
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    assert_eq!(config.problem, None);
    let guard = Guard::new(config).expect("guard");
    let ask = |work_item: &str| {
        let decision = guard.decide(work_item, Target::Monitoring, None);
        (decision.verdict, decision.rule)
    };
    let rule = |verdict, rule: &str| (verdict, rule.to_owned());

    // The facts: a stage written by the orchestrator is a new question.
    let db = rusqlite::Connection::open(ws.db()).expect("db");
    insert_task(
        &db,
        Row {
            work_item: "ORCH-100",
            repo: Some("orchestrator"),
            stage: Some("deploy"),
        },
    );
    assert_eq!(ask("ORCH-100"), rule(Verdict::Allow, "non-terminal"));
    assert_eq!(ask("ORCH-100"), rule(Verdict::Allow, "non-terminal"));
    insert_task(
        &db,
        Row {
            work_item: "ORCH-100",
            repo: Some("orchestrator"),
            stage: Some("done"),
        },
    );
    assert_eq!(ask("ORCH-100"), rule(Verdict::ConvergeDone, "converge-done"));

    // A swap: the 1.0.0 reference holds `failed` non-terminal, the next policy holds it.
    assert_eq!(ask("ORCH-081"), rule(Verdict::Allow, "non-terminal"));
    write_atomically(&ws.policy(), NEXT);
    assert!(matches!(refresh_until_outcome(&guard), Outcome::Activated { .. }));
    let next = ask("ORCH-081");
    assert_ne!(next, rule(Verdict::Allow, "non-terminal"), "the next policy answers");
    assert_eq!(ask("ORCH-081"), next);

    // The scope: a task out of scope, then in it after a reload.
    assert_eq!(ask("SVC-1"), rule(Verdict::Allow, "out-of-scope"));
    write_config("svc-a", 100_000_000);
    assert_eq!(
        wait_for("the reload", || guard.refresh_config()),
        ConfigReload::Reloaded
    );
    let in_scope = ask("SVC-1");
    assert_ne!(in_scope, rule(Verdict::Allow, "out-of-scope"));

    // The limits: other fuel, another policy value, an empty memo.
    let before: Arc<LoadedPolicy> = guard.policy().expect("live");
    assert!(before.memo_stats().entries > 0);
    write_config("svc-a", 50_000_000);
    assert_eq!(
        wait_for("the reload", || guard.refresh_config()),
        ConfigReload::Reloaded
    );
    let after = guard.policy().expect("live");
    assert_eq!(
        (after.digest.as_str(), after.limits().fuel),
        (before.digest.as_str(), 50_000_000)
    );
    assert_eq!(after.memo_stats().entries, 0);
    assert_eq!(ask("SVC-1"), in_scope);
    assert_eq!(after.memo_stats().misses, 1);
}
