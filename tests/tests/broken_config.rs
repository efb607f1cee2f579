//! Broken configuration, through the built binary (`deploy-guard decide` with the
//! environment a deployment would give it; build it first with
//! `cargo build --release -p deploy-guard`).
//!
//! Whatever is wrong, `decide` exits 0 and prints exactly one JSON object on stdout,
//! and every log line goes to stderr. What is wrong decides the outcome:
//! - an unreadable boolean disables the guard (rule `kill-switch`), with one warning
//!   naming the value;
//! - an unusable limit keeps its default, with one warning naming the variable, and
//!   the decision is the policy's as usual;
//! - an unreadable policy makes the decision a fail-safe `policy-unavailable: ...`;
//! - a config file that cannot be read or parsed makes it a fail-safe naming the file.

use deploy_guard::{Config, Limits, Overrides};
use deploy_guard_e2e::{Bounded, PATIENT_TIMEOUT_MS, Row, Workspace, binary, insert_sentinel, insert_task};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// The story: ORCH-061 done (window closed), ORCH-090 done (window armed).
fn story() -> Workspace {
    let ws = Workspace::new();
    let db = ws.create_db();
    for (work_item, stage) in [("ORCH-061", "done"), ("ORCH-090", "done")] {
        insert_task(
            &db,
            Row {
                work_item,
                repo: Some("orchestrator"),
                stage: Some(stage),
            },
        );
    }
    insert_sentinel(&db, "orchestrator", "ORCH-090", "ARMED");
    ws.install_reference();
    ws
}

/// What one `decide` printed.
struct Run {
    /// The one JSON object on stdout.
    answer: Value,
    /// Every line on stderr.
    stderr: Vec<String>,
}

impl Run {
    /// The log lines on stderr of `level` and `target`, as JSON (with
    /// `DEPLOY_GUARD_LOG=json`).
    fn logged(&self, level: &str, target: &str) -> Vec<Value> {
        self.stderr
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["level"] == level && l["target"] == target)
            .collect()
    }

    /// The one warning of the configuration: its message.
    #[track_caller]
    fn one_config_warning(&self) -> String {
        let warnings = self.logged("WARN", "deploy_guard::config");
        assert_eq!(
            warnings.len(),
            1,
            "exactly one warning expected on stderr:\n{}",
            self.stderr.join("\n")
        );
        warnings[0]["fields"]["message"].as_str().expect("a message").to_owned()
    }
}

/// `deploy-guard decide --work-item WORK_ITEM --target TARGET` in the workspace, with
/// an environment holding only the workspace's paths, JSON logs, the PATIENT deadline
/// (60 s, so that a decision or a case of the gate preempted on a loaded machine does
/// not fail safe) and `env` (over them: a test of an unusable deadline sets its own).
/// Checks exit 0, exactly one JSON object on stdout, and (with JSON logs) only JSON on
/// stderr.
fn decide(ws: &Workspace, work_item: &str, target: &str, env: &[(&str, &str)]) -> Run {
    decide_with(ws, &["--work-item", work_item, "--target", target], env)
}

fn decide_with(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(binary())
        .arg("decide")
        .args(args)
        .current_dir(ws.dir.path())
        .env_clear()
        .env("DEPLOY_GUARD_DB", ws.db())
        .env("DEPLOY_GUARD_POLICY", ws.policy())
        .env("DEPLOY_GUARD_LOG", "json")
        .env("DEPLOY_GUARD_TIMEOUT_MS", PATIENT_TIMEOUT_MS)
        .envs(env.iter().copied())
        .bounded_output();
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{env:?}: decide exits 0 whatever failed inside\n{}",
        stderr.join("\n")
    );
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{env:?}: stdout carries exactly one line: {stdout:?}"
    );
    let answer: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{env:?}: stdout is not one JSON object ({e}): {stdout:?}"));
    assert!(answer.is_object(), "{answer}");
    let json_logs = env.iter().all(|(k, v)| *k != "DEPLOY_GUARD_LOG" || *v == "json");
    if json_logs {
        for line in &stderr {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{env:?}: a stderr line that is not a JSON log line: {line:?}"
            );
        }
    }
    Run { answer, stderr }
}

#[track_caller]
fn assert_verdict(answer: &Value, verdict: &str, rule: &str) {
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str()),
        (Some(verdict), Some(rule)),
        "{answer}"
    );
}

/// A fail-safe ALLOW; its error starts with `prefix` and contains every `names`.
#[track_caller]
fn assert_fail_safe(answer: &Value, prefix: &str, names: &[&str]) {
    assert_verdict(answer, "ALLOW", "fail-safe");
    let error = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(error.starts_with(prefix), "{error:?} should start with {prefix:?}");
    for name in names {
        assert!(error.contains(name), "{error:?} should name {name:?}");
    }
    assert!(answer["policy"].is_null() && answer["db_stage"].is_null(), "{answer}");
}

/// The configuration the library loads from exactly these variables.
fn load(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::load_from(|name| vars.get(name).cloned(), &Overrides::default())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------
// Booleans and limits
// ---------------------------------------------------------------------------------

#[test]
fn an_unreadable_boolean_is_the_kill_switch_with_one_warning_naming_it() {
    let ws = story();
    for value in ["maybe", "2", "enabled", "tru e"] {
        let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_STATUS_GUARD_ENABLED", value)]);
        assert_verdict(&run.answer, "ALLOW", "kill-switch");
        assert_eq!(
            (&run.answer["policy"], &run.answer["db_stage"], &run.answer["error"]),
            (&Value::Null, &Value::Null, &Value::Null),
            "{}",
            run.answer
        );
        let warning = run.one_config_warning();
        assert!(
            warning.contains("DEPLOY_STATUS_GUARD_ENABLED")
                && warning.contains(&format!("{value:?}"))
                && warning.contains("disabled"),
            "{warning}"
        );
    }
    // The same word in the config file: the warning names the key.
    let file = ws.dir.path().join("guard.toml");
    std::fs::write(&file, "enabled = \"maybe\"\n").expect("write");
    let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_CONFIG", &display(&file))]);
    assert_verdict(&run.answer, "ALLOW", "kill-switch");
    let warning = run.one_config_warning();
    assert!(
        warning.contains("config file key `enabled`") && warning.contains("\"maybe\""),
        "{warning}"
    );
}

#[test]
fn an_unusable_limit_keeps_its_default_with_one_warning_and_the_policy_decides() {
    let ws = story();
    for (variable, value) in [
        ("DEPLOY_GUARD_TIMEOUT_MS", "abc"),
        ("DEPLOY_GUARD_TIMEOUT_MS", "0"),
        ("DEPLOY_GUARD_TIMEOUT_MS", "999999999999"),
        ("DEPLOY_GUARD_TIMEOUT_MS", "-5"),
        ("DEPLOY_GUARD_MEMORY_MIB", "0"),
        ("DEPLOY_GUARD_MEMORY_MIB", "1e3"),
        ("DEPLOY_GUARD_MEMORY_MIB", "18446744073709551616"),
        ("DEPLOY_GUARD_FUEL", "-1"),
        ("DEPLOY_GUARD_FUEL", "1.5"),
        ("DEPLOY_GUARD_FUEL", "1"),
        ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "soon"),
        ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "60001"),
    ] {
        // The library: the default, exactly, and nothing else disturbed.
        let config = load(&[(variable, value)]);
        assert_eq!(config.limits, Limits::DEFAULT, "{variable}={value:?}");
        assert_eq!(
            config.busy_timeout,
            Config::default().busy_timeout,
            "{variable}={value:?}"
        );
        assert!(config.enabled && config.problem.is_none(), "{variable}={value:?}");
        assert_eq!(config.warnings.len(), 1, "{variable}={value:?}");

        // The binary: one warning naming the variable and the value, and the policy's
        // verdicts as with no setting at all.
        for (work_item, target, verdict, rule) in [
            ("ORCH-061", "monitoring", "CONVERGE_DONE", "converge-done"),
            ("ORCH-090", "monitoring", "ALLOW", "monitoring-window-active"),
        ] {
            let run = decide(&ws, work_item, target, &[(variable, value)]);
            assert_verdict(&run.answer, verdict, rule);
            assert_eq!(run.answer["error"], Value::Null, "{}", run.answer);
            assert_eq!(run.answer["policy"], "deploy-status-guard@1.2.0");
            let warning = run.one_config_warning();
            assert!(
                warning.contains(variable)
                    && warning.contains(&format!("{value:?}"))
                    && warning.contains("keeping the default"),
                "{warning}"
            );
        }
    }
}

#[test]
fn an_unusable_limit_in_the_config_file_keeps_its_default_and_names_the_key() {
    let ws = story();
    let file = ws.dir.path().join("guard.toml");
    std::fs::write(&file, "timeout_ms = 0\nfuel = \"lots\"\n").expect("write");
    let path = display(&file);
    let config = load(&[("DEPLOY_GUARD_CONFIG", &path)]);
    assert_eq!(config.limits, Limits::DEFAULT);
    assert!(config.problem.is_none(), "{:?}", config.problem);

    let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_CONFIG", &path)]);
    assert_verdict(&run.answer, "CONVERGE_DONE", "converge-done");
    let warnings = run.logged("WARN", "deploy_guard::config");
    let messages: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w["fields"]["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].contains("config file key `timeout_ms`") && messages[0].contains("\"0\""),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("config file key `fuel`") && messages[1].contains("\"lots\""),
        "{messages:?}"
    );
}

#[test]
fn everything_unusable_at_once_gives_one_warning_each_and_still_decides() {
    let ws = story();
    let run = decide(
        &ws,
        "ORCH-061",
        "deploying",
        &[
            ("DEPLOY_GUARD_TIMEOUT_MS", "abc"),
            ("DEPLOY_GUARD_MEMORY_MIB", "0"),
            ("DEPLOY_GUARD_FUEL", "-1"),
            ("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "-1"),
            ("DEPLOY_STATUS_GUARD_REPOS", "orchestrator, bad repo"),
        ],
    );
    assert_verdict(&run.answer, "CONVERGE_DONE", "converge-done");
    let warnings = run.logged("WARN", "deploy_guard::config");
    let messages: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w["fields"]["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 5, "{messages:?}");
    for name in [
        "DEPLOY_GUARD_TIMEOUT_MS",
        "DEPLOY_GUARD_MEMORY_MIB",
        "DEPLOY_GUARD_FUEL",
        "DEPLOY_GUARD_BUSY_TIMEOUT_MS",
        "\"bad repo\"",
    ] {
        assert_eq!(
            messages.iter().filter(|m| m.contains(name)).count(),
            1,
            "{name}: {messages:?}"
        );
    }
}

/// An unknown log format is a warning; the logs fall back to text (still on stderr),
/// and stdout is still exactly the answer.
#[test]
fn an_unknown_log_format_falls_back_to_text_on_stderr() {
    let ws = story();
    let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_LOG", "yaml")]);
    assert_verdict(&run.answer, "CONVERGE_DONE", "converge-done");
    let warnings: Vec<&String> = run
        .stderr
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("deploy_guard::config"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", run.stderr);
    assert!(warnings[0].contains("\"yaml\""), "{}", warnings[0]);
    assert!(
        run.stderr
            .iter()
            .any(|l| l.contains("deploy_guard::decision") && l.contains("converge-done")),
        "the decision line is on stderr, as text: {:?}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------

#[test]
fn an_unreadable_policy_path_fails_safe_as_policy_unavailable() {
    let ws = story();
    let directory = ws.dir.path().join("a-directory.wasm");
    std::fs::create_dir(&directory).expect("mkdir");
    let dangling = ws.dir.path().join("dangling.wasm");
    std::os::unix::fs::symlink(ws.dir.path().join("nowhere.wasm"), &dangling).expect("symlink");
    let empty = ws.dir.path().join("empty.wasm");
    std::fs::write(&empty, b"").expect("write");
    let through_a_file = ws.policy().join("x.wasm");
    // (path, the error's class, the part of the message that names the cause)
    for (path, prefix, why) in [
        (&directory, "policy-unavailable: cannot read ", "Is a directory"),
        (
            &dangling,
            "policy-unavailable: cannot read ",
            "No such file or directory",
        ),
        (&through_a_file, "policy-unavailable: cannot read ", "Not a directory"),
        (
            &empty,
            "policy-unavailable: policy refused: ",
            "not a component: the file is empty",
        ),
    ] {
        let path = display(path);
        for target in ["awaiting", "deploying", "monitoring"] {
            let run = decide(&ws, "ORCH-061", target, &[("DEPLOY_GUARD_POLICY", &path)]);
            assert_fail_safe(&run.answer, prefix, &[&path, why]);
            assert!(run.answer["policy_digest"].is_null(), "{}", run.answer);
        }
        // The flag overrides a good environment with the same bad path.
        let run = decide_with(
            &ws,
            &["--work-item", "ORCH-061", "--target", "awaiting", "--policy", &path],
            &[],
        );
        assert_fail_safe(&run.answer, prefix, &[&path, why]);
    }
    // The good path still decides (the fixture is sound).
    assert_verdict(
        &decide(&ws, "ORCH-061", "awaiting", &[]).answer,
        "CONVERGE_DONE",
        "converge-done",
    );
}

#[test]
fn an_unusable_database_path_fails_safe_naming_it() {
    let ws = story();
    let directory = ws.dir.path().join("a-directory.db");
    std::fs::create_dir(&directory).expect("mkdir");
    let dangling = ws.dir.path().join("dangling.db");
    std::os::unix::fs::symlink(ws.dir.path().join("nowhere.db"), &dangling).expect("symlink");
    for (path, why) in [
        (&directory, "not a regular file"),
        (&dangling, "No such file or directory"),
    ] {
        let path = display(path);
        let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_DB", &path)]);
        assert_fail_safe(&run.answer, "database: cannot open", &[&path, why]);
    }
    assert!(!ws.dir.path().join("nowhere.db").exists());
}

// ---------------------------------------------------------------------------------
// The config file
// ---------------------------------------------------------------------------------

#[test]
fn a_config_file_that_cannot_be_read_fails_safe_naming_it() {
    let ws = story();
    let missing = ws.dir.path().join("missing.toml");
    let directory = ws.dir.path().join("conf.d");
    std::fs::create_dir(&directory).expect("mkdir");
    for (file, why) in [(&missing, "No such file or directory"), (&directory, "Is a directory")] {
        let path = display(file);
        for target in ["awaiting", "monitoring"] {
            let run = decide(&ws, "ORCH-061", target, &[("DEPLOY_GUARD_CONFIG", &path)]);
            assert_fail_safe(&run.answer, "config: cannot read the config file ", &[&path, why]);
            // Logged once, as an error naming the file.
            let errors = run.logged("ERROR", "deploy_guard::config");
            assert_eq!(errors.len(), 1, "{:?}", run.stderr);
            assert!(
                errors[0]["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&path)),
                "{}",
                errors[0]
            );
        }
    }
    assert!(!missing.exists(), "the guard created the config file");
}

#[test]
fn a_config_file_that_does_not_parse_fails_safe_naming_it() {
    let ws = story();
    for (text, detail) in [
        ("enabled = = true\n", "TOML parse error at line 1"),
        ("[guard\nenabled = true\n", "TOML parse error at line 1"),
        ("enabld = true\n", "unknown field `enabld`"),
        ("db = 5\n", "invalid type: integer `5`"),
        ("log = [\"json\"]\n", "invalid type: sequence"),
        ("enabled = true\n\0\u{1}binary\u{ff}\n", "TOML parse error at line 2"),
    ] {
        let file = ws.dir.path().join("guard.toml");
        std::fs::write(&file, text).expect("write");
        let path = display(&file);
        let run = decide(
            &ws,
            "ORCH-061",
            "awaiting",
            &[
                ("DEPLOY_GUARD_CONFIG", &path),
                // A sound environment does not rescue a broken file.
                ("DEPLOY_STATUS_GUARD_ENABLED", "true"),
            ],
        );
        assert_fail_safe(&run.answer, "config: cannot parse the config file ", &[&path, detail]);
        // The cause stays on one line (one JSON string, no raw newline in the log).
        assert!(
            !run.answer["error"].as_str().unwrap_or("").contains('\n'),
            "{}",
            run.answer
        );
    }
    // Not UTF-8 at all: unreadable as text.
    let file = ws.dir.path().join("latin1.toml");
    std::fs::write(&file, b"enabled = \"\xe9t\xe9\"\n").expect("write");
    let path = display(&file);
    let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_CONFIG", &path)]);
    assert_fail_safe(&run.answer, "config: cannot read the config file ", &[&path]);
}

#[test]
fn an_empty_config_file_is_the_defaults_and_a_blank_variable_is_none() {
    let ws = story();
    let file = ws.dir.path().join("empty.toml");
    std::fs::write(&file, "").expect("write");
    for config in [display(&file), String::new(), "   ".to_owned()] {
        let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_CONFIG", &config)]);
        assert_verdict(&run.answer, "CONVERGE_DONE", "converge-done");
        assert_eq!(run.answer["error"], Value::Null);
        assert!(
            run.logged("WARN", "deploy_guard::config").is_empty()
                && run.logged("ERROR", "deploy_guard::config").is_empty(),
            "{config:?}: {:?}",
            run.stderr
        );
    }
}

/// The compiled-policy cache is an optimisation: a cache path that cannot be a
/// directory is one warning naming it, and the decision is made as without a cache.
#[test]
fn an_unusable_cache_directory_warns_and_still_decides() {
    let ws = story();
    let file = ws.dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    for cache in [file.clone(), file.join("below")] {
        let cache = display(&cache);
        let run = decide(&ws, "ORCH-061", "awaiting", &[("DEPLOY_GUARD_CACHE", &cache)]);
        assert_verdict(&run.answer, "CONVERGE_DONE", "converge-done");
        assert_eq!(run.answer["error"], Value::Null, "{}", run.answer);
        let warnings = run.logged("WARN", "deploy_guard::cache");
        assert_eq!(warnings.len(), 1, "{:?}", run.stderr);
        assert!(
            warnings[0]["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&cache)),
            "{}",
            warnings[0]
        );
    }
    assert_eq!(
        std::fs::read(&file).expect("read"),
        b"not a directory",
        "the guard wrote over the file"
    );
}
