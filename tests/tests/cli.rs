//! The `deploy-guard` binary as a process: `decide`, `serve`, `check`, `diff`, `demo`
//! and `export-policies`, per CONTRACT.md (stdout answers only, exit codes).

use deploy_guard_e2e::{
    Bounded, CEILING, NEXT, PATIENT_TIMEOUT_MS, REFERENCE, ServeChild, Workspace, binary, pipe, wait_for,
    write_atomically,
};
use serde_json::Value;
use std::process::{Command, Output};

fn decide(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> (Value, Output) {
    let output = ws
        .command()
        .arg("decide")
        .args(args)
        .envs(env.iter().copied())
        .bounded_output();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout carries exactly one answer: {stdout:?}"
    );
    (serde_json::from_str(&stdout).expect("one JSON object"), output)
}

#[test]
fn decide_answers_every_rule_with_one_json_object() {
    let ws = Workspace::story();
    for (work_item, target, verdict, rule) in [
        ("ORCH-404", "awaiting", "ALLOW", "task-not-found"),
        ("", "awaiting", "ALLOW", "task-not-found"),
        ("ENDURO-12", "deploying", "ALLOW", "out-of-scope"),
        ("ORCH-072", "deploying", "ALLOW", "non-terminal"),
        ("ORCH-055", "monitoring", "SUPPRESS", "cancelled"),
        ("ORCH-090", "monitoring", "ALLOW", "monitoring-window-active"),
        ("ORCH-061", "monitoring", "CONVERGE_DONE", "converge-done"),
    ] {
        let (json, output) = decide(
            &ws,
            &["--work-item", work_item, "--target", target, "--caller", "monitor-tick"],
            &[],
        );
        assert_eq!(
            (json["verdict"].as_str(), json["rule"].as_str()),
            (Some(verdict), Some(rule)),
            "{json}"
        );
        assert_eq!(json["caller"], "monitor-tick");
        assert_eq!(json["policy"], "deploy-status-guard@1.2.0");
        // The decision line went to stderr, as JSON, at the seed's level.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line: Value = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["target"] == "deploy_guard::decision")
            .unwrap_or_else(|| panic!("no decision line in {stderr}"));
        assert_eq!(line["level"], if verdict == "ALLOW" { "INFO" } else { "WARN" });
        let fields = &line["fields"];
        for (field, value) in [
            ("verdict", verdict),
            ("rule", rule),
            ("work_item", work_item),
            ("target", target),
            ("caller", "monitor-tick"),
            ("policy", "deploy-status-guard@1.2.0"),
        ] {
            assert_eq!(fields[field], value, "{field} in {line}");
        }
        // Every field as in the answer: a missing value is JSON null (issue 11).
        for field in ["db_stage", "window_active", "policy_digest", "error"] {
            assert_eq!(fields[field], json[field], "{field} in {line}");
        }
        assert!(
            fields["error"].is_null() && fields["policy_digest"].is_string(),
            "{line}"
        );
    }
}

/// A `Write` into shared memory, for a subscriber made in the test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The binary writes the text decision line by a shorter path than
/// tracing-subscriber's default format (see `TextLine` in the CLI); the bytes must be
/// the same. Compared, timestamp aside, with the default format rendering the same
/// decision made by the library: plain values, escapes, quotes, spaces, non-ASCII
/// text, null fields, each level.
#[test]
fn the_text_decision_line_is_the_default_format_byte_for_byte() {
    let ws = Workspace::story();
    let guard = deploy_guard::Guard::new(ws.config()).expect("guard");
    let cases: [(&str, &str, Option<&str>); 4] = [
        ("ORCH-061", "monitoring", Some("monitor-tick")),
        ("ORCH-055", "awaiting", None),
        ("we\u{7}ird\\\"q \u{202e}", "deploying", Some("a b \u{e9} \"c\"")),
        ("", "deploying", Some("")),
    ];
    let after_timestamp = |line: &str| line.split_once(' ').map(|(_, rest)| rest.to_owned());
    for (work_item, target, caller) in cases {
        let mut command = ws.command();
        command
            .env("DEPLOY_GUARD_LOG", "text")
            .args(["decide", "--work-item", work_item, "--target", target]);
        if let Some(caller) = caller {
            command.args(["--caller", caller]);
        }
        let output = command.bounded_output();
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        let ours: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains(" deploy_guard::decision: "))
            .filter_map(after_timestamp)
            .collect();

        let decision = guard.decide_unlogged(deploy_guard::Request::decide(
            work_item,
            target.parse().expect("a target"),
            caller,
        ));
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || decision.log());
        let theirs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        let theirs: Vec<String> = theirs.lines().filter_map(after_timestamp).collect();
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert_eq!(ours, theirs, "work item {work_item:?}");
    }
}

#[test]
fn decide_honours_the_kill_switch_and_the_flags() {
    let ws = Workspace::story();
    let (json, _) = decide(
        &ws,
        &["--work-item", "ORCH-061", "--target", "awaiting"],
        &[("DEPLOY_STATUS_GUARD_ENABLED", "OFF")],
    );
    assert_eq!(
        (json["verdict"].as_str(), json["rule"].as_str()),
        (Some("ALLOW"), Some("kill-switch"))
    );
    assert!(json["policy"].is_null() && json["db_stage"].is_null());
    // --db overrides the environment.
    let missing = ws.dir.path().join("nowhere.db");
    let (json, _) = decide(
        &ws,
        &[
            "--work-item",
            "ORCH-061",
            "--target",
            "awaiting",
            "--db",
            missing.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(json["rule"], "fail-safe");
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("nowhere.db")),
        "{json}"
    );
    assert!(!missing.exists());
}

#[test]
fn decide_fails_safe_with_exit_0_when_everything_is_broken() {
    let ws = Workspace::new();
    std::fs::write(ws.policy(), b"garbage").expect("write");
    let (json, _) = decide(&ws, &["--work-item", "X", "--target", "monitoring"], &[]);
    assert_eq!(
        (json["verdict"].as_str(), json["rule"].as_str()),
        (Some("ALLOW"), Some("fail-safe"))
    );
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("policy-unavailable: ")),
        "{json}"
    );
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let ws = Workspace::story();
    for args in [
        &["decide", "--work-item", "X", "--target", "done"][..],
        &["decide", "--target", "awaiting"][..],
        &["decide", "--work-item", "X"][..],
        &["frobnicate"][..],
    ] {
        let output = ws.command().args(args).bounded_output();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error:"), "{stderr}");
    }
}

/// `serve` writes a batch's decision lines to stderr in one write when it flushes the
/// batch's answers: each line must be out by the time its answer is, not held until
/// end of input. And a request whose strings carry JSON escapes (parsed into owned
/// text, where plain ones are borrowed from the line) decides the same as plain text.
#[test]
fn serve_writes_each_decision_line_with_its_answer_and_reads_escaped_strings() {
    let ws = Workspace::story();
    let mut serve = ServeChild::start(ws.command());
    for (line, work_item, caller) in [
        (
            &br#"{"work_item": "ORCH-061", "target": "monitoring", "caller": "tick-1"}"#[..],
            "ORCH-061",
            "tick-1",
        ),
        (
            br#"{"work_item": "ORCH-\u0030\u0036\u0031", "target": "monitoring", "caller": "tick\u002d2"}"#,
            "ORCH-061",
            "tick-2",
        ),
        (
            br#"{"work_item": "ORCH-055", "target": "awaiting", "caller": "tick-3"}"#,
            "ORCH-055",
            "tick-3",
        ),
    ] {
        let answer = serve.ask_line(line);
        assert_eq!(
            (answer["work_item"].as_str(), answer["caller"].as_str()),
            (Some(work_item), Some(caller))
        );
        // The answer is in; its decision line must follow while serve waits for more.
        // (The workspace's serve logs JSON lines.)
        let logged = serve.wait_for_log(CEILING, |l| {
            let line: Value = serde_json::from_str(l).unwrap_or_default();
            line["target"] == "deploy_guard::decision" && line["fields"]["caller"] == caller
        });
        let fields = serde_json::from_str::<Value>(&logged).expect("a JSON line")["fields"].clone();
        assert_eq!(
            (&fields["work_item"], &fields["rule"]),
            (&answer["work_item"], &answer["rule"]),
            "{logged}"
        );
    }
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn serve_answers_in_order_and_survives_malformed_lines() {
    let ws = Workspace::story();
    let mut serve = ServeChild::start(ws.command());
    let good = br#"{"work_item": "ORCH-061", "target": "monitoring", "caller": "monitor-tick"}"#;
    assert_eq!(serve.ask_line(good)["verdict"], "CONVERGE_DONE");
    let huge = format!(
        "{{\"work_item\": \"{}\", \"target\": \"awaiting\"}}",
        "x".repeat(3 << 20)
    );
    let malformed: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not a valid JSON request"),
        (br#"{"work_item": "ORCH-061", "target": "done"}"#, "unknown target"),
        (br#"{"target": "awaiting"}"#, "missing field `work_item`"),
        (br#"{"work_item": "ORCH-061"}"#, "missing field `target`"),
        (b"", "empty request line"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (huge.as_bytes(), "more than"),
        (br#"[1, 2]"#, "not a valid JSON request"),
        (br#"["ORCH-061", "awaiting", null]"#, "expected a JSON object"),
        (br#"{"work_item": 5, "target": "awaiting"}"#, "not a valid JSON request"),
    ];
    for (line, expected) in malformed {
        let answer = serve.ask_line(line);
        let error = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        // The loop goes on.
        assert_eq!(serve.ask_line(good)["rule"], "converge-done");
    }
    let answer = serve.ask_line(br#"{"work_item": "ORCH-055", "target": "awaiting", "caller": null}"#);
    assert_eq!(
        (answer["verdict"].as_str(), answer["caller"].is_null()),
        (Some("SUPPRESS"), true)
    );
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn serve_answers_a_batch_in_order() {
    let ws = Workspace::story();
    let items = ["ORCH-061", "ORCH-072", "ORCH-055", "ORCH-090", "bad", "ENDURO-12"];
    let mut input = String::new();
    for _ in 0..50 {
        for item in items {
            if item == "bad" {
                input.push_str("{oops\n");
            } else {
                input.push_str(&format!("{{\"work_item\":\"{item}\",\"target\":\"monitoring\"}}\n"));
            }
        }
    }
    let mut command = ws.command();
    command.arg("serve");
    let output = pipe(command, input.into_bytes());
    assert_eq!(output.status.code(), Some(0));
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(answers.len(), 50 * items.len());
    for (i, answer) in answers.iter().enumerate() {
        let item = items[i % items.len()];
        if item == "bad" {
            assert!(answer["error"].is_string());
        } else {
            assert_eq!(answer["work_item"], item, "answer {i} out of order");
        }
    }
}

#[test]
fn serve_swaps_the_policy_when_its_file_is_replaced() {
    let ws = Workspace::story();
    let mut serve = ServeChild::start(ws.command());
    let ask = br#"{"work_item": "ORCH-081", "target": "awaiting"}"#;
    assert_eq!(serve.ask_line(ask)["rule"], "non-terminal");
    write_atomically(&ws.policy(), NEXT);
    // Swapped: waited for (the watcher looks every 100 ms; the measured swap time is a
    // benchmark's business, not this test's).
    let swapped = wait_for("the swap to 1.1.0", || {
        let answer = serve.ask_line(ask);
        if answer["policy"] == "deploy-status-guard@1.1.0" {
            return Some(answer);
        }
        assert_eq!(answer["policy"], "deploy-status-guard@1.2.0");
        None
    });
    assert_eq!(
        (swapped["verdict"].as_str(), swapped["rule"].as_str()),
        (Some("SUPPRESS"), Some("failed"))
    );
    // A bad file never goes live: the child logs its refusal, and answers stay on 1.1.0.
    write_atomically(&ws.policy(), b"\0asm\x0d\0\x01\0 truncated");
    let refusal = serve.wait_for_log(CEILING, |line| line.contains("policy refused: "));
    let refusal: Value = serde_json::from_str(&refusal).expect("a JSON log line");
    assert_eq!(refusal["level"], "ERROR", "{refusal}");
    let message = refusal["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not a component: ") && message.ends_with("keeping deploy-status-guard@1.1.0"),
        "{refusal}"
    );
    assert_eq!(serve.ask_line(ask)["policy"], "deploy-status-guard@1.1.0");
    assert_eq!(serve.finish(), Some(0));
}

#[test]
fn check_passes_the_reference_and_refuses_garbage() {
    let ws = Workspace::new();
    let good = ws.dir.path().join("policies/deploy-status-guard.wasm");
    std::fs::write(&good, REFERENCE).expect("write");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/deploy-status-guard.vectors.json"
        ),
        ws.dir.path().join("policies/deploy-status-guard.vectors.json"),
    )
    .expect("copy vectors");
    let output = ws.command().arg("check").arg(&good).bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("deploy-status-guard@1.2.0"), "{stdout}");
    assert!(
        stdout.contains("a component of orchestrator:deploy-guard/guard-policy@1.1.0 that imports nothing\n"),
        "{stdout}"
    );
    // 342 stamps and 114 ticks.
    assert!(stdout.contains("456 of 456"), "{stdout}");
    assert!(stdout.contains("vectors: 20 of 20 passed"), "{stdout}");
    assert!(stdout.contains("fingerprint: grid:"), "{stdout}");

    let bad = ws.dir.path().join("bad.wasm");
    std::fs::write(&bad, &REFERENCE[..REFERENCE.len() / 2]).expect("write");
    let output = ws.command().arg("check").arg(&bad).bounded_output();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("refused: "));
}

#[test]
fn diff_lists_exactly_the_failed_cases_between_the_versions() {
    let ws = Workspace::new();
    let old = ws.dir.path().join("old.wasm");
    let new = ws.dir.path().join("new.wasm");
    std::fs::write(&old, REFERENCE).expect("write");
    std::fs::write(&new, NEXT).expect("write");
    let output = ws.command().arg("diff").arg(&old).arg(&new).bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    // failed x (orchestrator with empty scope, svc-a in scope) x 3 targets x 3 windows.
    assert!(stdout.contains("ALLOW -> SUPPRESS: 18 cases"), "{stdout}");
    // The next policy is of the 1.0.0 world: every tick is the host's PROCEED. The
    // reference's zombie ticks (cancelled, in scope, 3 windows, 2 scopes) change their
    // verdict; its 108 other ticks their rule only.
    assert!(stdout.contains("NOOP -> PROCEED: 6 cases"), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("  tick ") && l.contains("NOOP (zombie-tick) -> PROCEED (tick-not-in-policy)"))
            .count(),
        6,
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: 24 of 456 cases differ, 108 more in their rule only"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("ALLOW (non-terminal) -> SUPPRESS (failed)"))
            .count(),
        18
    );
    let output = ws.command().arg("diff").arg(&old).arg(&old).bounded_output();
    assert_eq!(output.status.code(), Some(0));
    let output = ws
        .command()
        .arg("diff")
        .arg(&old)
        .arg(ws.dir.path().join("missing.wasm"))
        .bounded_output();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn demo_prints_the_table_and_the_swap_from_any_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(binary())
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        .env("DEPLOY_GUARD_TIMEOUT_MS", PATIENT_TIMEOUT_MS)
        .bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ORCH-061   done       monitoring  CONVERGE_DONE  converge-done"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ORCH-090   done       monitoring  ALLOW          monitoring-window-active"),
        "{stdout}"
    );
    // Deployed 1.0.0: the ticks are the host's; the reference of the 1.1.0 world answers
    // them itself (the task cancelled mid-window gets NOOP); back to a 1.0.0-world policy.
    assert!(
        stdout.contains("ORCH-055   cancelled  tick        PROCEED        tick-not-in-policy"),
        "{stdout}"
    );
    assert!(stdout.contains("7 of 28 answers changed"), "{stdout}");
    assert!(
        stdout.contains("ORCH-055   tick        PROCEED (tick-not-in-policy) -> NOOP (zombie-tick)"),
        "{stdout}"
    );
    assert!(stdout.contains("deploy-status-guard@1.1.0 (world 1.0.0"), "{stdout}");
    assert!(stdout.contains("10 of 28 answers changed"), "{stdout}");
    assert!(
        stdout.contains("ORCH-055   tick        NOOP (zombie-tick) -> PROCEED (tick-not-in-policy)"),
        "{stdout}"
    );
    // D3: the first Monitoring of a task just done, before and after its monitor is armed.
    assert!(
        stdout.contains("monitor not armed yet:  Monitoring -> CONVERGE_DONE (converge-done)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("monitor armed first (D3):                    Monitoring -> ALLOW (monitoring-window-active)"),
        "{stdout}"
    );
}

#[test]
fn export_policies_writes_the_deployable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(binary())
        .args(["export-policies", "--out"])
        .arg(dir.path())
        .bounded_output();
    assert_eq!(output.status.code(), Some(0));
    // Compared without printing the bytes of a mismatch.
    let written = std::fs::read(dir.path().join("deploy-status-guard.wasm")).expect("written");
    assert!(written == REFERENCE, "deploy-status-guard.wasm is not the reference");
    let written = std::fs::read(dir.path().join("deploy-status-guard-next.wasm")).expect("written");
    assert!(written == NEXT, "deploy-status-guard-next.wasm is not the next policy");
}

#[test]
fn serve_answers_fail_safe_when_the_sandbox_cannot_be_built() {
    // Under a 4 GB address-space limit the pooling allocator cannot reserve its slots.
    let ws = Workspace::story();
    let program = binary();
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$0\" serve")
        .arg(program)
        .current_dir(ws.dir.path())
        .env_clear()
        .env("DEPLOY_GUARD_DB", ws.db())
        .env("DEPLOY_GUARD_POLICY", ws.policy());
    let output = pipe(
        shell,
        b"{\"work_item\": \"ORCH-061\", \"target\": \"awaiting\"}\n{oops\n".to_vec(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(answers.len(), 2, "{stdout}");
    assert_eq!(
        (answers[0]["verdict"].as_str(), answers[0]["rule"].as_str()),
        (Some("ALLOW"), Some("fail-safe"))
    );
    assert!(
        answers[0]["error"].as_str().is_some_and(|e| e.starts_with("engine: ")),
        "{}",
        answers[0]
    );
    assert!(answers[1]["error"].is_string());
}
