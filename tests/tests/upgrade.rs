//! Upgrade safety: the decision ledger and `replay`, shadow mode, and roll back, with
//! the real reference policy, its next version, and a policy that breaks live.

use deploy_guard::observe::ledger::{Ledger, read_ledger};
use deploy_guard::rollout::slot::{Outcome, previous_path};
use deploy_guard::{Config, Guard, Target, Verdict};
use deploy_guard_e2e::{
    Bounded, CEILING, NEXT, REFERENCE, ServeChild, Workspace, binary, pipe, wait_for, within, write_atomically,
};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_guard_e2e::hostile;

/// Requests: every work item of the story (and one unknown) for every target, `rounds` times.
fn requests(rounds: usize) -> Vec<(String, &'static str)> {
    let items = [
        "ORCH-061", "ORCH-072", "ORCH-055", "ORCH-081", "ORCH-082", "ENDURO-9", "ORCH-404",
    ];
    let mut requests = Vec::new();
    for _ in 0..rounds {
        for item in items {
            for target in ["awaiting", "deploying", "monitoring"] {
                requests.push((item.to_owned(), target));
            }
        }
    }
    requests
}

/// Of those, the ones 1.1.0 answers differently: the failed tasks in scope.
fn changed_by_next(requests: &[(String, &str)]) -> usize {
    requests
        .iter()
        .filter(|(item, _)| item == "ORCH-081" || item == "ORCH-082")
        .count()
}

fn serve(
    ws: &Workspace,
    extra: &[&str],
    env: &[(&str, &std::path::Path)],
    requests: &[(String, &str)],
) -> (Vec<String>, String) {
    let mut input = String::new();
    for (item, target) in requests {
        input.push_str(&format!(
            "{{\"work_item\":\"{item}\",\"target\":\"{target}\",\"caller\":\"upgrade-test\"}}\n"
        ));
    }
    let mut command = ws.command();
    command.arg("serve").args(extra).envs(env.iter().copied());
    let output = pipe(command, input.into_bytes());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    (answers, String::from_utf8(output.stderr).expect("utf-8"))
}

#[test]
fn replay_over_a_ledger_written_by_serve_finds_exactly_what_the_next_version_changes() {
    let ws = Workspace::story();
    let ledger = ws.dir.path().join("ledger.db");
    let requests = requests(4);
    let (answers, _) = serve(&ws, &[], &[("DEPLOY_GUARD_LEDGER", &ledger)], &requests);
    assert_eq!(answers.len(), requests.len());
    // Every answered decision is in the ledger, in order, with its facts.
    let recorded = read_ledger(&ledger).expect("the ledger reads");
    assert_eq!(recorded.len(), requests.len());
    for (record, (item, target)) in recorded.iter().zip(&requests) {
        assert_eq!(
            (
                record.decision.work_item.as_str(),
                record.decision.target().map_or("tick", |t| t.as_str())
            ),
            (item.as_str(), *target)
        );
        let facts = record.facts.as_ref().expect("facts recorded");
        assert_eq!(facts.work_item, *item);
        assert_eq!(
            record.decision.policy_digest,
            Some(deploy_guard_e2e::sha256_digest(REFERENCE))
        );
    }
    let next = ws.dir.path().join("next.wasm");
    std::fs::write(&next, NEXT).expect("write");
    let output = Command::new(binary())
        .arg("replay")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--against")
        .arg(&next)
        .bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let expected = changed_by_next(&requests);
    assert!(
        stdout.contains(&format!("ALLOW -> SUPPRESS: {expected} decisions")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "summary: {expected} of {} replayed decisions would change",
            requests.len()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("ORCH-081 at ") && stdout.contains("ALLOW (non-terminal) -> SUPPRESS (failed)"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().filter(|l| l.contains("ENDURO-9")).count(), 0, "{stdout}");
    // Against the policy that wrote it: nothing changes.
    let same = ws.dir.path().join("same.wasm");
    std::fs::write(&same, REFERENCE).expect("write");
    let output = Command::new(binary())
        .arg("replay")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--against")
        .arg(&same)
        .bounded_output();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // Trouble: exit 2.
    let output = Command::new(binary())
        .arg("replay")
        .arg("--ledger")
        .arg(ws.dir.path().join("none.db"))
        .arg("--against")
        .arg(&same)
        .bounded_output();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn shadow_counts_the_disagreements_exactly_and_never_changes_an_answer() {
    let ws = Workspace::story();
    let next = ws.dir.path().join("next.wasm");
    std::fs::write(&next, NEXT).expect("write");
    let requests = requests(3);
    let (answers, stderr) = serve(&ws, &["--shadow", next.to_str().expect("utf-8")], &[], &requests);
    assert_eq!(answers.len(), requests.len());
    for answer in &answers {
        let json: serde_json::Value = serde_json::from_str(answer).expect("json");
        assert_eq!(
            json["policy"], "deploy-status-guard@1.2.0",
            "the shadow answered: {answer}"
        );
    }
    let expected = changed_by_next(&requests);
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("shadow "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(
        summary.contains(&format!(
            "{} decisions compared, {expected} disagreements (ALLOW -> SUPPRESS: {expected})",
            requests.len()
        )),
        "{summary}"
    );
    assert!(summary.contains("0 candidate failures, 0 dropped"), "{summary}");
}

#[test]
fn a_shadow_candidate_that_traps_never_affects_an_answer() {
    let ws = Workspace::story();
    let trap = ws.dir.path().join("live-trap.wasm");
    std::fs::write(&trap, hostile::LIVE_TRAP).expect("write");
    let requests: Vec<(String, &str)> = (0..30).map(|i| (format!("B-{i}"), "awaiting")).collect();
    let (answers, stderr) = serve(&ws, &["--shadow", trap.to_str().expect("utf-8")], &[], &requests);
    for answer in &answers {
        let json: serde_json::Value = serde_json::from_str(answer).expect("json");
        assert_eq!(
            (json["rule"].as_str(), json["policy"].as_str()),
            (Some("task-not-found"), Some("deploy-status-guard@1.2.0"))
        );
    }
    let summary = stderr.lines().find(|l| l.starts_with("shadow ")).expect("summary");
    assert!(
        summary.contains("30 decisions compared, 0 disagreements, 30 candidate failures"),
        "{summary}"
    );
}

#[test]
fn a_shadow_candidate_that_fails_the_gate_is_refused() {
    let ws = Workspace::story();
    let bad = ws.dir.path().join("bad.wasm");
    std::fs::write(&bad, &REFERENCE[..100]).expect("write");
    let output = Command::new(binary())
        .args(["serve", "--shadow"])
        .arg(&bad)
        .env("DEPLOY_GUARD_DB", ws.db())
        .env("DEPLOY_GUARD_POLICY", ws.policy())
        .bounded_output();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the shadow candidate is refused"));
}

fn refresh_until(guard: &Guard, done: impl Fn(&Guard) -> bool) {
    wait_for("the policy file change acted on", || {
        guard.refresh();
        done(guard).then_some(())
    });
}

/// Look at the policy file until a change is acted on; its outcome.
fn refresh_outcome(guard: &Guard) -> Outcome {
    wait_for("a change of the policy file noticed", || guard.refresh_policy())
}

#[test]
fn a_policy_that_starts_failing_after_a_swap_is_rolled_back() {
    let ws = Workspace::story();
    let guard = Guard::new(ws.config()).expect("guard");
    let reference = deploy_guard_e2e::sha256_digest(REFERENCE);
    write_atomically(&ws.policy(), hostile::LIVE_TRAP);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.name == "live-trap"));
    // The previous policy is kept beside the active file for an operator.
    assert_eq!(std::fs::read(previous_path(&ws.policy())).expect("kept"), REFERENCE);
    // Healthy traffic first: the policy answers.
    for _ in 0..5 {
        assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "live-trap");
    }
    // Then it breaks: 9 failures do not roll back, the 10th does.
    for i in 0..9 {
        let d = guard.decide(&format!("B-{i}"), Target::Awaiting, None);
        assert_eq!((d.verdict, d.rule.as_str()), (Verdict::Allow, "fail-safe"));
        assert!(d.error.as_deref().is_some_and(|e| e.starts_with("trap: ")), "{d:?}");
    }
    assert_eq!(guard.policy().map(|p| p.name.clone()).as_deref(), Some("live-trap"));
    guard.decide("B-9", Target::Awaiting, None);
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    assert_eq!(
        d.policy_digest.as_deref(),
        Some(reference.as_str()),
        "not rolled back: {d:?}"
    );
    assert_eq!(d.rule, "converge-done");
    // The rolled-back policy is written back over the active file: a restart loads it.
    assert!(
        std::fs::read(ws.policy()).expect("active file") == REFERENCE,
        "the active file still holds the bad policy"
    );
    // Even the bad file written again is not re-admitted: the look at it refuses it.
    write_atomically(&ws.policy(), hostile::LIVE_TRAP);
    let live_trap = deploy_guard_e2e::sha256_digest(hostile::LIVE_TRAP);
    match refresh_outcome(&guard) {
        Outcome::Refused(reason) => assert_eq!(reason, format!("{live_trap} was refused before")),
        other => panic!("the rolled-back policy was not refused: {other:?}"),
    }
    assert_eq!(guard.policy().map(|p| p.digest.clone()), Some(reference));
}

#[test]
fn a_policy_that_keeps_deciding_passes_its_probation() {
    let ws = Workspace::story();
    let guard = Guard::new(ws.config()).expect("guard");
    write_atomically(&ws.policy(), NEXT);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.1.0"));
    for _ in 0..200 {
        assert_eq!(guard.decide("ORCH-081", Target::Awaiting, None).rule, "failed");
    }
    // Database failures are not the policy's: they never roll it back.
    std::fs::remove_file(ws.db()).expect("remove");
    for _ in 0..50 {
        assert_eq!(guard.decide("ORCH-081", Target::Awaiting, None).rule, "fail-safe");
    }
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.1.0"));
    assert_eq!(
        guard.roll_back("operator"),
        Some(Outcome::RolledBack {
            to: "deploy-status-guard@1.2.0".into(),
            from: "deploy-status-guard@1.1.0".into(),
        })
    );
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.2.0"));
}

#[test]
fn an_operator_rolls_back_with_the_rollback_command() {
    let ws = Workspace::story();
    let policy = ws.policy();
    let run = || {
        Command::new(binary())
            .args(["rollback", "--policy"])
            .arg(&policy)
            .env_clear()
            .bounded_output()
    };
    let output = run();
    assert_eq!(output.status.code(), Some(1), "nothing to roll back to yet");
    // A running guard swaps to the next version and keeps the reference aside.
    let guard = Guard::new(ws.config()).expect("guard");
    write_atomically(&policy, NEXT);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.1.0"));
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("deploy-status-guard@1.2.0"), "{stdout}");
    assert_eq!(std::fs::read(&policy).expect("policy"), REFERENCE);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.2.0"));
}

#[test]
fn the_ledger_keeps_a_prefix_of_the_decisions_through_a_kill() {
    let ws = Workspace::story();
    let ledger = ws.dir.path().join("ledger.db");
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_LEDGER", &ledger);
    let mut serve = ServeChild::start(command);
    let requests = requests(20);
    let half = requests.len() / 2;
    for (item, target) in &requests[..half] {
        serve.ask(item, target);
    }
    // The writer commits what waits without being asked: the first half lands on disk.
    let count = || -> usize {
        rusqlite::Connection::open_with_flags(&ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|db| db.query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get::<_, i64>(0)))
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    };
    wait_for("the answered half of the decisions in the ledger", || {
        (count() == half).then_some(())
    });
    for (item, target) in &requests[half..] {
        serve.ask(item, target);
    }
    // Killed the hard way right after its last answer.
    serve.kill();
    let integrity: String = rusqlite::Connection::open(&ledger)
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(integrity, "ok");
    let recorded = read_ledger(&ledger).expect("reads");
    // What was committed stayed; what was lost is a suffix: the ledger is a prefix, in order.
    assert!(
        (half..=requests.len()).contains(&recorded.len()),
        "{} recorded",
        recorded.len()
    );
    for (record, (item, target)) in recorded.iter().zip(&requests) {
        assert_eq!(
            (
                record.decision.work_item.as_str(),
                record.decision.target().map_or("tick", |t| t.as_str())
            ),
            (item.as_str(), *target)
        );
    }
}

#[test]
fn the_ledger_keeps_the_newest_rows_and_refuses_the_orchestrators_database() {
    let ws = Workspace::story();
    let path = ws.dir.path().join("ledger.db");
    let ledger = Ledger::open(&path, &ws.db(), 1000).expect("opens");
    let guard = Guard::new(Config {
        ledger: Some(path.clone()),
        ledger_max_rows: 1000,
        ..ws.config()
    })
    .expect("guard");
    drop(ledger);
    for i in 0..5000 {
        guard.decide(&format!("W-{i}"), Target::Awaiting, None);
    }
    let guard_ledger = guard.ledger().expect("ledger in use");
    guard_ledger.flush();
    assert_eq!(guard_ledger.dropped(), 0);
    let recorded = read_ledger(&path).expect("reads");
    assert!((1000..2024).contains(&recorded.len()), "{} rows kept", recorded.len());
    assert_eq!(recorded.last().map(|r| r.decision.work_item.as_str()), Some("W-4999"));
    let error = Ledger::open(&ws.db(), &ws.db(), 1000).expect_err("refused");
    assert!(error.to_string().contains("orchestrator's database"), "{error}");
}

#[test]
fn the_ledger_records_every_decision_even_those_no_policy_made() {
    let ws = Workspace::story();
    let path = ws.dir.path().join("ledger.db");
    let guard = Guard::new(Config {
        ledger: Some(path.clone()),
        enabled: false,
        ..ws.config()
    })
    .expect("guard");
    guard.decide("ORCH-061", Target::Awaiting, Some("kill"));
    let guard_ledger = guard.ledger().expect("ledger in use");
    guard_ledger.flush();
    let recorded = read_ledger(&path).expect("reads");
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].decision.rule.as_str(), recorded[0].facts.is_none()),
        ("kill-switch", true)
    );
    assert_eq!(recorded[0].decision.caller.as_deref(), Some("kill"));
}

/// The ledger writer's busy timeout (`host/src/observe/ledger.rs`): how long it waits
/// on a lock held by another process before its batch fails (and is counted dropped).
const WRITER_BUSY: Duration = Duration::from_secs(5);

#[test]
fn a_stalled_ledger_drops_records_beyond_its_byte_budget_and_never_blocks() {
    let ws = Workspace::story();
    let huge = "W".repeat(1 << 20);
    let decision = deploy_guard::Decision::kill_switch(deploy_guard::Request::decide(&huge, Target::Awaiting, None));
    // While another process holds the ledger's write lock, the writer waits on it and
    // drops nothing until its busy timeout (5 s) runs out; so until then every record
    // counted dropped was dropped by `record` itself, with the queue full. An attempt
    // in which the records took longer than that (a loaded machine) cannot tell those
    // apart from the writer's, and proves nothing either way: it is made again. A
    // `record` that waited for the writer would wait out that timeout every time, and
    // no attempt would ever end sooner: the test fails at CEILING.
    let started = Instant::now();
    for attempt in 1.. {
        let path = ws.dir.path().join(format!("ledger-{attempt}.db"));
        let ledger = Ledger::open(&path, &ws.db(), 1_000_000).expect("opens");
        let holder = rusqlite::Connection::open(&path).expect("open");
        holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let (ledger, dropped, began) = within("100 records to a stalled ledger", {
            let decision = decision.clone();
            move || {
                let began = Instant::now();
                for _ in 0..100 {
                    ledger.record(&decision, None, None);
                }
                let dropped = ledger.dropped();
                (ledger, dropped, began)
            }
        });
        let took = began.elapsed();
        if took >= WRITER_BUSY {
            eprintln!("attempt {attempt}: 100 records took {took:?}, past the writer's busy timeout: again");
            assert!(
                started.elapsed() < CEILING,
                "100 records never took less than the writer's busy timeout ({WRITER_BUSY:?}): \
                 recording waits for the stalled writer"
            );
            holder.execute_batch("COMMIT").expect("unlock");
            continue;
        }
        eprintln!("100 records of 1 MiB to a stalled ledger in {took:?}, {dropped} dropped");
        // 100 records of just over 1 MiB against a 64 MiB budget: the byte budget, not
        // the count, is what stops them (63 fit), and the excess is dropped and counted.
        let budget_in_records = (deploy_guard::observe::ledger::QUEUE_BYTES >> 20) as u64;
        assert!(
            (budget_in_records - 1..=budget_in_records).contains(&(100 - dropped)),
            "{dropped} dropped: the byte budget of {budget_in_records} MiB did not decide"
        );
        holder.execute_batch("COMMIT").expect("unlock");
        let unlocked_before_the_writer_gave_up = began.elapsed() < WRITER_BUSY;
        ledger.flush();
        // Every record is committed or counted dropped; and when the lock went before
        // the writer's timeout ran out, the writer dropped none: all that was queued is
        // committed.
        let recorded = read_ledger(&path).expect("reads");
        assert_eq!(recorded.len() as u64 + ledger.dropped(), 100);
        if unlocked_before_the_writer_gave_up {
            assert_eq!(ledger.dropped(), dropped, "the writer dropped a batch");
        }
        return;
    }
}

#[test]
fn a_ledger_written_before_the_fuel_column_gains_it_and_keeps_its_rows() {
    let ws = Workspace::story();
    let path = ws.dir.path().join("ledger.db");
    // A ledger of the first schema, without `fuel`, with a row of its own.
    let old = rusqlite::Connection::open(&path).expect("open");
    old.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE decisions (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
             work_item TEXT NOT NULL, caller TEXT, target TEXT NOT NULL, facts TEXT, db_stage TEXT,
             window_active INTEGER, verdict TEXT NOT NULL, rule TEXT NOT NULL, policy TEXT,
             policy_digest TEXT, error TEXT);
         INSERT INTO decisions (time_ms, work_item, target, verdict, rule)
             VALUES (1, 'OLD-1', 'awaiting', 'ALLOW', 'non-terminal');",
    )
    .expect("an old ledger");
    let before = read_ledger(&path).expect("an old ledger reads");
    assert_eq!(
        before
            .iter()
            .map(|r| (r.decision.work_item.as_str(), r.fuel))
            .collect::<Vec<_>>(),
        [("OLD-1", None)]
    );
    // Two writers open it at once, as two processes starting together would: both
    // open, and the column is there once.
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| Ledger::open(&path, &ws.db(), 1000));
        let second = s.spawn(|| Ledger::open(&path, &ws.db(), 1000));
        (first.join().expect("first"), second.join().expect("second"))
    });
    drop((first.expect("the first opens"), second.expect("the second opens")));
    let columns: i64 = old
        .query_row(
            "SELECT count(*) FROM pragma_table_info('decisions') WHERE name = 'fuel'",
            [],
            |row| row.get(0),
        )
        .expect("columns");
    assert_eq!(columns, 1);
    // A guard records into it, with the fuel its policy used; the old row stays.
    let guard = Guard::new(Config {
        ledger: Some(path.clone()),
        ..ws.config()
    })
    .expect("guard");
    guard.decide("ORCH-072", Target::Awaiting, None);
    guard.ledger().expect("ledger in use").flush();
    let after = read_ledger(&path).expect("reads");
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!((after[0].decision.work_item.as_str(), after[0].fuel), ("OLD-1", None));
    assert_eq!(after[1].decision.work_item, "ORCH-072");
    assert!(after[1].fuel.is_some_and(|fuel| fuel > 0), "{:?}", after[1]);
}
