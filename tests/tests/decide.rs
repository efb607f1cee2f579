//! `Guard::decide` end to end: a real SQLite file in the orchestrator's schema, the real
//! reference component, every rule of the seed, and the facts the seed is subtle about.

use deploy_guard::{Config, Decision, Guard, GuardedSetters, Overrides, Status, Target, Tracker, Verdict};
use deploy_guard_e2e::{Row, Workspace, insert_sentinel, insert_task};
use std::collections::HashMap;

fn guard(ws: &Workspace, config: Config) -> Guard {
    ws.install_reference();
    Guard::new(config).expect("guard")
}

fn verdict_and_rule(d: &Decision) -> (Verdict, &str) {
    (d.verdict, d.rule.as_str())
}

#[test]
fn every_rule_of_the_seed_end_to_end() {
    let ws = Workspace::story();
    let guard = guard(&ws, ws.config());
    let cases = [
        ("ORCH-404", Target::Awaiting, Verdict::Allow, "task-not-found"),
        ("ENDURO-12", Target::Monitoring, Verdict::Allow, "out-of-scope"),
        ("ORCH-072", Target::Deploying, Verdict::Allow, "non-terminal"),
        ("ORCH-055", Target::Monitoring, Verdict::Suppress, "cancelled"),
        (
            "ORCH-090",
            Target::Monitoring,
            Verdict::Allow,
            "monitoring-window-active",
        ),
        ("ORCH-090", Target::Awaiting, Verdict::ConvergeDone, "converge-done"),
        ("ORCH-061", Target::Monitoring, Verdict::ConvergeDone, "converge-done"),
        ("ORCH-061", Target::Awaiting, Verdict::ConvergeDone, "converge-done"),
    ];
    for (work_item, target, verdict, rule) in cases {
        let d = guard.decide(work_item, target, Some("monitor-tick"));
        assert_eq!(verdict_and_rule(&d), (verdict, rule), "{work_item} {target}: {d:?}");
        assert_eq!(d.error, None, "{d:?}");
        assert_eq!(d.caller.as_deref(), Some("monitor-tick"));
        assert_eq!(d.policy.as_deref(), Some("deploy-status-guard@1.2.0"));
        assert_eq!(
            d.policy_digest,
            Some(deploy_guard_e2e::sha256_digest(deploy_guard_e2e::REFERENCE))
        );
    }
    let d = guard.decide("ORCH-061", Target::Monitoring, None);
    assert_eq!((d.db_stage.as_deref(), d.window_active), (Some("done"), Some(false)));
    let d = guard.decide("ORCH-404", Target::Monitoring, None);
    assert_eq!((d.db_stage, d.window_active), (None, None));
}

#[test]
fn the_decision_object_has_the_contract_fields() {
    let ws = Workspace::story();
    let guard = guard(&ws, ws.config());
    let json: serde_json::Value = serde_json::from_str(
        &guard
            .decide("ORCH-061", Target::Monitoring, Some("monitor-tick"))
            .to_json(),
    )
    .expect("json");
    let digest = deploy_guard_e2e::sha256_digest(deploy_guard_e2e::REFERENCE);
    assert_eq!(
        json,
        serde_json::json!({"work_item":"ORCH-061","caller":"monitor-tick","target":"monitoring",
            "db_stage":"done","window_active":false,"verdict":"CONVERGE_DONE","rule":"converge-done",
            "policy":"deploy-status-guard@1.2.0","policy_digest": digest,"error":null})
    );
    assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
}

#[test]
fn the_kill_switch_allows_without_running_the_policy() {
    let ws = Workspace::story();
    let guard = guard(
        &ws,
        Config {
            enabled: false,
            ..ws.config()
        },
    );
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    assert_eq!(verdict_and_rule(&d), (Verdict::Allow, "kill-switch"));
    assert_eq!(
        (d.policy, d.policy_digest, d.db_stage, d.error),
        (None, None, None, None)
    );
}

#[test]
fn an_unreadable_boolean_disables_the_guard() {
    let ws = Workspace::story();
    let vars: HashMap<&str, String> = [
        ("DEPLOY_GUARD_DB", ws.db().display().to_string()),
        ("DEPLOY_GUARD_POLICY", ws.policy().display().to_string()),
        ("DEPLOY_STATUS_GUARD_ENABLED", "perhaps".to_owned()),
    ]
    .into();
    let config = Config::load_from(|n| vars.get(n).cloned(), &Overrides::default());
    let guard = guard(&ws, config);
    assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "kill-switch");
}

#[test]
fn the_scope_is_sanitised_and_replaces_the_self_hosting_repos() {
    let ws = Workspace::story();
    let vars: HashMap<&str, String> = [
        ("DEPLOY_GUARD_DB", ws.db().display().to_string()),
        ("DEPLOY_GUARD_POLICY", ws.policy().display().to_string()),
        (
            "DEPLOY_STATUS_GUARD_REPOS",
            " svc-a , orchestrator x,bad/token".to_owned(),
        ),
    ]
    .into();
    let config = Config::load_from(|n| vars.get(n).cloned(), &Overrides::default());
    assert_eq!(config.scope_repos, ["svc-a"]);
    assert_eq!(config.warnings.len(), 2);
    let guard = guard(&ws, config);
    assert_eq!(
        guard.decide("SVC-1", Target::Awaiting, None).verdict,
        Verdict::ConvergeDone
    );
    assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "out-of-scope");
    // Sanitised to nothing: self-hosting only, as in the seed.
    let guard = Guard::new(Config {
        scope_repos: Vec::new(),
        ..guard.config().as_ref().clone()
    })
    .expect("guard");
    assert_eq!(guard.decide("SVC-1", Target::Awaiting, None).rule, "out-of-scope");
    assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "converge-done");
}

#[test]
fn the_newest_row_of_a_work_item_counts() {
    let ws = Workspace::new();
    let db = ws.create_db();
    insert_task(
        &db,
        Row {
            work_item: "ORCH-1",
            repo: Some("orchestrator"),
            stage: Some("done"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "ORCH-1",
            repo: Some("orchestrator"),
            stage: Some("deploy"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "ORCH-2",
            repo: Some("orchestrator"),
            stage: Some("deploy"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "ORCH-2",
            repo: Some("orchestrator"),
            stage: Some("cancelled"),
        },
    );
    let guard = guard(&ws, ws.config());
    assert_eq!(guard.decide("ORCH-1", Target::Awaiting, None).rule, "non-terminal");
    assert_eq!(guard.decide("ORCH-2", Target::Awaiting, None).rule, "cancelled");
}

#[test]
fn padded_upper_case_and_null_stages_are_read_as_the_seed_reads_them() {
    let ws = Workspace::new();
    let db = ws.create_db();
    insert_task(
        &db,
        Row {
            work_item: "PAD",
            repo: Some(" orchestrator\n"),
            stage: Some("\t done \r\n"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "UPPER",
            repo: Some("orchestrator"),
            stage: Some("DONE"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "NULL-STAGE",
            repo: Some("orchestrator"),
            stage: None,
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "NULL-REPO",
            repo: None,
            stage: Some("done"),
        },
    );
    let guard = guard(&ws, ws.config());
    let d = guard.decide("PAD", Target::Awaiting, None);
    assert_eq!(
        (verdict_and_rule(&d), d.db_stage.as_deref()),
        ((Verdict::ConvergeDone, "converge-done"), Some("done"))
    );
    assert_eq!(guard.decide("UPPER", Target::Awaiting, None).rule, "non-terminal");
    let d = guard.decide("NULL-STAGE", Target::Awaiting, None);
    assert_eq!((d.rule.as_str(), d.db_stage.as_deref()), ("non-terminal", Some("")));
    assert_eq!(guard.decide("NULL-REPO", Target::Awaiting, None).rule, "out-of-scope");
}

#[test]
fn the_window_is_read_for_the_repo_as_stored() {
    let ws = Workspace::new();
    let db = ws.create_db();
    insert_task(
        &db,
        Row {
            work_item: "W-1",
            repo: Some("orchestrator"),
            stage: Some("done"),
        },
    );
    // A sentinel of another repo, and one of another work item, do not count.
    insert_sentinel(&db, "other", "W-1", "ARMED");
    insert_sentinel(&db, "orchestrator", "W-2", "ARMED");
    let guard = guard(&ws, ws.config());
    let d = guard.decide("W-1", Target::Monitoring, None);
    assert_eq!((d.rule.as_str(), d.window_active), ("converge-done", Some(false)));
    insert_sentinel(&db, "orchestrator", "W-1", "ARMED");
    let d = guard.decide("W-1", Target::Monitoring, None);
    assert_eq!(
        (d.rule.as_str(), d.window_active),
        ("monitoring-window-active", Some(true))
    );
    insert_sentinel(&db, "orchestrator", "W-1", "DONE");
    let d = guard.decide("W-1", Target::Monitoring, None);
    assert_eq!((d.rule.as_str(), d.window_active), ("converge-done", Some(false)));
}

#[test]
fn a_missing_database_fails_safe_and_no_file_appears() {
    let ws = Workspace::new();
    let guard = guard(&ws, ws.config());
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    assert_eq!(verdict_and_rule(&d), (Verdict::Allow, "fail-safe"));
    let error = d.error.expect("a cause");
    assert!(error.starts_with("database: cannot open"), "{error}");
    assert!(!ws.db().exists(), "the guard created the database");
    // The database appears: the guard recovers by itself.
    let db = ws.create_db();
    insert_task(
        &db,
        Row {
            work_item: "ORCH-061",
            repo: Some("orchestrator"),
            stage: Some("done"),
        },
    );
    assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "converge-done");
}

#[test]
fn a_database_without_the_tables_fails_safe() {
    let ws = Workspace::new();
    rusqlite::Connection::open(ws.db())
        .expect("db")
        .execute_batch("CREATE TABLE other (x);")
        .expect("schema");
    let guard = guard(&ws, ws.config());
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    assert_eq!(d.rule, "fail-safe");
    assert!(
        d.error.as_deref().is_some_and(|e| e.contains("no such table: tasks")),
        "{d:?}"
    );
}

#[test]
fn a_database_without_the_sentinels_table_decides_as_the_seed_would() {
    let ws = Workspace::new();
    let db = rusqlite::Connection::open(ws.db()).expect("db");
    db.execute_batch("CREATE TABLE tasks (work_item_id TEXT, repo TEXT, stage TEXT);")
        .expect("schema");
    insert_task(
        &db,
        Row {
            work_item: "DONE-1",
            repo: Some("orchestrator"),
            stage: Some("done"),
        },
    );
    insert_task(
        &db,
        Row {
            work_item: "LIVE-1",
            repo: Some("orchestrator"),
            stage: Some("deploy"),
        },
    );
    let guard = guard(&ws, ws.config());
    // The seed reads the window only for monitoring a done task; there it raises -> ALLOW.
    let d = guard.decide("DONE-1", Target::Monitoring, None);
    assert_eq!(verdict_and_rule(&d), (Verdict::Allow, "window-unknown"));
    assert_eq!(d.window_active, None);
    assert!(
        d.error.as_deref().is_some_and(|e| e.contains("post_deploy_sentinels")),
        "{d:?}"
    );
    // Elsewhere the seed never reads it: the verdicts are the ordinary ones.
    assert_eq!(
        verdict_and_rule(&guard.decide("DONE-1", Target::Awaiting, None)),
        (Verdict::ConvergeDone, "converge-done")
    );
    assert_eq!(guard.decide("LIVE-1", Target::Monitoring, None).rule, "non-terminal");
}

#[test]
fn values_of_the_wrong_type_fail_safe() {
    let ws = Workspace::new();
    let db = rusqlite::Connection::open(ws.db()).expect("db");
    // Columns without a declared type keep what is stored (a TEXT column would turn 42 into '42').
    db.execute_batch("CREATE TABLE tasks (work_item_id, repo, stage); CREATE TABLE post_deploy_sentinels (repo, work_item_id, sentinel);")
        .expect("schema");
    db.execute(
        "INSERT INTO tasks (work_item_id, repo, stage) VALUES ('INT', 'orchestrator', 42)",
        [],
    )
    .expect("insert");
    db.execute(
        "INSERT INTO tasks (work_item_id, repo, stage) VALUES ('BLOB', x'00ff', 'done')",
        [],
    )
    .expect("insert");
    let guard = guard(&ws, ws.config());
    let d = guard.decide("INT", Target::Awaiting, None);
    assert_eq!(d.rule, "fail-safe");
    assert!(
        d.error
            .as_deref()
            .is_some_and(|e| e.contains("tasks.stage") && e.contains("integer")),
        "{d:?}"
    );
    let d = guard.decide("BLOB", Target::Awaiting, None);
    assert!(
        d.error
            .as_deref()
            .is_some_and(|e| e.contains("tasks.repo") && e.contains("blob")),
        "{d:?}"
    );
}

#[test]
fn a_missing_policy_fails_safe_and_recovers_when_a_good_file_lands() {
    let ws = Workspace::story();
    std::fs::remove_file(ws.policy()).expect("no policy yet");
    let guard = Guard::new(ws.config()).expect("guard");
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    assert_eq!(d.rule, "fail-safe");
    assert!(
        d.error
            .as_deref()
            .is_some_and(|e| e.starts_with("policy-unavailable: cannot read")),
        "{d:?}"
    );
    assert_eq!((d.policy, d.policy_digest), (None, None));
    ws.install_reference();
    // The file's arrival is acted on (the second look that finds it held still).
    let outcome = deploy_guard_e2e::wait_for("the good policy noticed", || guard.refresh());
    assert!(
        matches!(&outcome, deploy_guard::rollout::slot::Outcome::Activated { identity, .. } if identity == "deploy-status-guard@1.2.0"),
        "{outcome:?}"
    );
    assert_eq!(guard.decide("ORCH-061", Target::Awaiting, None).rule, "converge-done");
}

#[derive(Default)]
struct Recorder(Vec<(String, Status)>);

impl Tracker for Recorder {
    type Error = std::convert::Infallible;
    fn stamp(&mut self, work_item: &str, status: Status) -> Result<(), Self::Error> {
        self.0.push((work_item.to_owned(), status));
        Ok(())
    }
}

#[test]
fn the_guarded_setters_act_on_the_verdict() {
    let ws = Workspace::story();
    let guard = guard(&ws, ws.config());
    let mut setters = GuardedSetters::new(&guard, Recorder::default());
    let d = setters
        .set_issue_awaiting_deploy("ORCH-061", Some("stale-retry"))
        .expect("infallible");
    assert_eq!(
        (d.verdict, d.caller.as_deref()),
        (Verdict::ConvergeDone, Some("stale-retry"))
    );
    setters.set_issue_deploying("ORCH-072", None).expect("infallible");
    setters.set_issue_monitoring("ORCH-055", None).expect("infallible");
    setters
        .set_issue_monitoring("ORCH-090", Some("post-deploy"))
        .expect("infallible");
    let stamped = setters.into_tracker().0;
    assert_eq!(
        stamped,
        [
            ("ORCH-061".to_owned(), Status::Done),
            ("ORCH-072".to_owned(), Status::Deploying),
            ("ORCH-090".to_owned(), Status::MonitoringAfterDeploy),
        ]
    );
}

#[test]
fn many_threads_decide_at_once() {
    let ws = Workspace::story();
    let guard = guard(&ws, ws.config());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(guard.decide("ORCH-061", Target::Monitoring, None).rule, "converge-done");
                    assert_eq!(
                        guard.decide("ORCH-090", Target::Monitoring, None).rule,
                        "monitoring-window-active"
                    );
                }
            });
        }
    });
}
