//! Issue 23 end to end: the post-deploy monitor's tick (the seed's D4) beside `decide`,
//! and a contract grown from `orchestrator:deploy-guard@1.0.0` to `@1.1.0` on a host that
//! speaks both worlds. Real parts only: the `deploy-guard` binary, SQLite files in the
//! orchestrator's schema, the components as built or as deployed.
//!
//! 1. The two policy files deployed under 1.0.0 (`policies/1.0.0/`), unchanged: their
//!    digests are the README's, each passes the gate with its own vectors, and over the
//!    whole fact grid they decide every stamp as before (the 1.0.0 reference as the 1.2.0
//!    reference and the native predicate do, the next as the built next) while every
//!    tick of theirs is the host's PROCEED `tick-not-in-policy`.
//! 2. Every surface answers the tick: `Guard::tick`, `deploy-guard tick`, `serve`'s
//!    `{"op": "tick"}`, the decision line, the metrics, the ledger with `replay`, and
//!    `serve --shadow`.
//! 3. Hot swaps between the worlds, both ways, while `serve` answers; roll backs across
//!    them (`deploy-guard rollback`, and the automatic one of a policy that starts failing).
//! 4. Policies of another world are refused with the reason: another major version, a
//!    `decide` or a `tick` of another type, a `tick` that loops or answers nonsense
//!    (fixtures in `tests/hostile/`, see its README).
//!
//! Run: `cargo test --release --workspace --test worlds`.
//!
//! Nothing here waits for a wall-clock margin: every wait is for an event (an answer, a
//! log line, the end of a process) under a generous ceiling ([`PATIENCE`]), and every
//! read of an answer has that ceiling.
//!
//! Each test was seen failing once, by breaking what it checks on purpose (the comment
//! above each test says how); none of those breaks is committed.

use deploy_guard::admission::gate::{self, GateError};
use deploy_guard::admission::grid::{DECIDE_CASES, TICK_CASES, fact_grid};
use deploy_guard::decision::{Ask, TICK_FIELDS};
use deploy_guard::guard::native_ruling;
use deploy_guard::observe::ledger::read_ledger;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::{LoadError, LoadedPolicy, Ruling, RunError};
use deploy_guard::sandbox::question::{FactsRecord, RecordTask};
use deploy_guard::{Guard, Limits, Target, Verdict};
use deploy_guard_e2e::{NEXT, REFERENCE, Row, Workspace, hostile, insert_sentinel, insert_task, sha256_digest};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The ceiling of every wait: generous, since the machine is shared and slow at times;
/// an event that comes at all comes far sooner.
const PATIENCE: Duration = Duration::from_secs(60);

/// The digests the two files had when they were deployed under 1.0.0 (as the README
/// of `policies/1.0.0/` has them too).
const DEPLOYED_REFERENCE_SHA256: &str = "813c56486e742b7c4feba571e8bf5404f55108c3dd42e70c2f8ff6a58db3a840";
/// See [`DEPLOYED_REFERENCE_SHA256`].
const DEPLOYED_NEXT_SHA256: &str = "15b21009c3d9cba5563dcfab6876c14d839580e26d9541df193f6abb87cddcd4";

/// The keys of a tick's decision object, in the contract's order (no `target`).
const TICK_KEYS: [&str; 9] = [
    "work_item",
    "caller",
    "db_stage",
    "window_active",
    "verdict",
    "rule",
    "policy",
    "policy_digest",
    "error",
];

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

/// `policies/1.0.0/` of the repository.
fn deployed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/1.0.0")
}

/// The bytes of `policies/1.0.0/<file>`, as they are on disk now.
fn deployed(file: &str) -> Vec<u8> {
    let path = deployed_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The deployed 1.0.0 reference (`deploy-status-guard@1.0.0`, world 1.0.0).
fn deployed_reference() -> Vec<u8> {
    deployed("deploy-status-guard.wasm")
}

/// The deployed next (`deploy-status-guard@1.1.0`, world 1.0.0).
fn deployed_next() -> Vec<u8> {
    deployed("deploy-status-guard-next.wasm")
}

/// One sandbox for the library-level tests of this binary, as in the host process.
fn sandbox() -> &'static Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new().expect("building the sandbox"))
}

fn load(bytes: &[u8]) -> LoadedPolicy {
    LoadedPolicy::load(sandbox(), bytes, Limits::DEFAULT).expect("the policy loads")
}

/// (work item, repo, stage as stored, sentinels) of the tick workspace. ORCH-055 is the
/// zombie: cancelled during its window (ARMED, no DONE).
const TASKS: &[(&str, &str, &str, &[&str])] = &[
    ("ORCH-055", "orchestrator", "cancelled", &["ARMED"]),
    // Cancelled too, with the stage padded as the seed's strip() trims it.
    ("ORCH-056", "orchestrator", " cancelled\n", &["ARMED"]),
    ("ORCH-072", "orchestrator", "deploy", &["ARMED"]),
    ("ORCH-061", "orchestrator", "done", &["ARMED", "DONE"]),
    // Cancelled mid-window too, but out of the default scope.
    ("ENDURO-12", "enduro-trails", "cancelled", &["ARMED"]),
];

/// A tick's expected answer: (work item, verdict, rule, db_stage, window_active).
type TickRow = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<bool>,
);

/// What a tick of each work item gets from the reference policy (1.1.0 world).
const TICKS: &[TickRow] = &[
    ("ORCH-055", "NOOP", "zombie-tick", Some("cancelled"), Some(true)),
    ("ORCH-056", "NOOP", "zombie-tick", Some("cancelled"), Some(true)),
    ("ORCH-072", "PROCEED", "proceed", Some("deploy"), Some(true)),
    ("ORCH-061", "PROCEED", "proceed", Some("done"), Some(false)),
    ("ENDURO-12", "PROCEED", "out-of-scope", Some("cancelled"), Some(true)),
    ("ORCH-404", "PROCEED", "task-not-found", None, None),
];

/// How many of [`TICKS`] are zombies.
const ZOMBIES: usize = 2;

/// A workspace whose database holds [`TASKS`], with `policy` installed (no vectors).
fn tick_workspace(policy: &[u8]) -> Workspace {
    let ws = Workspace::new();
    let db = ws.create_db();
    for &(work_item, repo, stage, sentinels) in TASKS {
        insert_task(
            &db,
            Row {
                work_item,
                repo: Some(repo),
                stage: Some(stage),
            },
        );
        for sentinel in sentinels {
            insert_sentinel(&db, repo, work_item, sentinel);
        }
    }
    deploy_guard_e2e::write_atomically(&ws.policy(), policy);
    ws
}

/// The keys of a JSON object, in the order of the text `line` (one object, whose values
/// hold none of the quoted keys).
fn keys_in_order(line: &str) -> Vec<String> {
    let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let map = object.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
    let mut keys: Vec<(usize, String)> = map
        .keys()
        .map(|key| {
            let at = line
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} not found in {line}"));
            (at, key.clone())
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}

/// The decision lines of a JSON log.
fn decision_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "deploy_guard::decision")
        .collect()
}

/// A process that ran to its end: exit code, stdout, stderr.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `command` with `input` on its stdin to its end, under [`PATIENCE`]: killed and
/// failed past it. The input is written from a thread of its own, and both outputs are
/// read by threads of their own, so that no pipe can fill up and stall the child.
fn run(mut command: Command, input: &[u8]) -> Ran {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        // A child that exits without reading all of it is not this helper's concern.
        let _ = stdin.write_all(&input);
    });
    let (sender, outputs) = channel();
    let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for (which, mut pipe) in [(0, stdout), (1, stderr)] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send((which, bytes));
        });
    }
    let deadline = Instant::now() + PATIENCE;
    let mut texts = [String::new(), String::new()];
    for _ in 0..2 {
        match outputs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((which, bytes)) => texts[which] = String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not end within {PATIENCE:?} ({e})");
            }
        }
    }
    // Both pipes are closed: the child has ended (or is ending) by itself.
    let status = child.wait().expect("wait");
    let [stdout, stderr] = texts;
    Ran {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// A `deploy-guard serve` child: every answer and every log line read by a thread of
/// its own into a channel, so that each read has a ceiling ([`PATIENCE`]).
struct Served {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
    log: Receiver<String>,
    /// The log lines read so far (for messages).
    seen: Vec<String>,
}

impl Served {
    /// `serve` with `command` (a [`Workspace::command`]: JSON logs) and `args`.
    fn start(mut command: Command, args: &[&str]) -> Served {
        let mut child = command
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stdin = child.stdin.take();
        let lines = |pipe: Box<dyn Read + Send>| {
            let (sender, receiver) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
            receiver
        };
        let answers = lines(Box::new(child.stdout.take().expect("stdout")));
        let log = lines(Box::new(child.stderr.take().expect("stderr")));
        Served {
            child,
            stdin,
            answers,
            log,
            seen: Vec::new(),
        }
    }

    /// Send one request and read its answer.
    fn ask(&mut self, request: &Value) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{request}").expect("write a request");
        stdin.flush().expect("flush");
        match self.answers.recv_timeout(PATIENCE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")),
            Err(e) => {
                self.drain_log();
                panic!(
                    "no answer to {request} within {PATIENCE:?} ({e}); log:\n{}",
                    self.seen.join("\n")
                )
            }
        }
    }

    fn tick(&mut self, work_item: &str) -> Value {
        self.ask(&json!({"op": "tick", "work_item": work_item, "caller": "monitor-tick"}))
    }

    fn decide(&mut self, work_item: &str, target: &str) -> Value {
        self.ask(&json!({"work_item": work_item, "target": target, "caller": "worlds-test"}))
    }

    /// Wait for the next JSON log line that `wanted` accepts (the lines before it are
    /// passed over); fail at [`PATIENCE`] with every line seen.
    fn wait_for_log(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(json) = serde_json::from_str::<Value>(&line)
                        && wanted(&json)
                    {
                        return json;
                    }
                }
                Err(e) => panic!(
                    "no log line of {what} within {PATIENCE:?} ({e}); seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the policy `digest` to go live: the line of its swap, or of the roll
    /// back to it.
    fn wait_for_live(&mut self, digest: &str) -> Value {
        self.wait_for_log(&format!("{digest} going live"), |line| {
            line["target"] == "deploy_guard::policy" && line["fields"]["to_digest"] == digest
        })
    }

    /// Wait for the policy `digest` to pass its probation (its first 100 decisions).
    fn wait_for_probation_passed(&mut self, digest: &str) {
        self.wait_for_log(&format!("{digest} passing its probation"), |line| {
            line["fields"]["message"] == "policy passed its probation" && line["fields"]["digest"] == digest
        });
    }

    /// The log lines that arrived so far, into `seen`.
    fn drain_log(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
    }

    /// Close stdin, wait for the end (under [`PATIENCE`]) and return the exit code and
    /// every log line, those seen before included.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        // The log's channel closes when the child's stderr does, at its end.
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("serve did not end within {PATIENCE:?} ({e})"),
            }
        }
        let code = self.child.wait().expect("wait").code();
        (code, std::mem::take(&mut self.seen))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// 1. The policies deployed under 1.0.0, unchanged, on the new host
// ---------------------------------------------------------------------------------

/// The sha256 of `file` as the table of `policies/1.0.0/README.md` gives it.
fn readme_sha256(file: &str) -> String {
    let readme = std::fs::read_to_string(deployed_dir().join("README.md")).expect("the README of policies/1.0.0");
    let row = readme
        .lines()
        .find(|l| l.starts_with(&format!("| `{file}` |")))
        .unwrap_or_else(|| panic!("no row for {file} in the README:\n{readme}"));
    let cell = row
        .split('|')
        .map(|c| c.trim().trim_matches('`'))
        .rfind(|c| !c.is_empty())
        .expect("a last cell");
    assert!(cell.len() == 64 && cell.bytes().all(|b| b.is_ascii_hexdigit()), "{row}");
    format!("sha256:{cell}")
}

// Checked by flipping the last byte of policies/1.0.0/deploy-status-guard-next.wasm
// (restored from git): its digest is no longer the README's.
#[test]
fn the_deployed_policy_files_are_byte_for_byte_those_of_the_readme() {
    for (file, deployed_with) in [
        ("deploy-status-guard.wasm", DEPLOYED_REFERENCE_SHA256),
        ("deploy-status-guard-next.wasm", DEPLOYED_NEXT_SHA256),
    ] {
        let digest = sha256_digest(&deployed(file));
        assert_eq!(digest, readme_sha256(file), "{file}: the bytes are not the README's");
        assert_eq!(digest, format!("sha256:{deployed_with}"), "{file}");
    }
    // They are not what this host builds: the built ones are of the 1.1.0 world, or
    // built again since.
    assert_ne!(sha256_digest(REFERENCE), format!("sha256:{DEPLOYED_REFERENCE_SHA256}"));
}

// Checked by changing an expected rule in policies/1.0.0/deploy-status-guard.vectors.json
// (restored from git): the gate refuses the policy, naming the vector.
#[test]
fn the_deployed_policies_pass_the_gate_with_their_own_vectors() {
    for (file, identity, vectors) in [
        ("deploy-status-guard.wasm", "deploy-status-guard@1.0.0", 15),
        ("deploy-status-guard-next.wasm", "deploy-status-guard@1.1.0", 19),
    ] {
        let path = deployed_dir().join(file);
        // Through the library's gate, with the vectors beside the file.
        let admitted = gate::admit_file(sandbox(), &path, Limits::DEFAULT)
            .unwrap_or_else(|e| panic!("{file} is refused by the gate: {e}"));
        assert_eq!(admitted.policy.identity(), identity);
        assert_eq!(admitted.policy.world(), "1.0.0");
        assert!(!admitted.policy.has_monitor());
        assert_eq!(admitted.vectors_passed, Some(vectors), "{file}");
        assert_eq!(admitted.vectors_not_applicable, 0, "{file}");
        assert_eq!(admitted.grid.len(), DECIDE_CASES + TICK_CASES);

        // Through `deploy-guard check`, on the files where they are.
        let mut command = Command::new(deploy_guard_e2e::binary());
        command.env_clear().arg("check").arg(&path);
        let ran = run(command, b"");
        assert_eq!(ran.code, Some(0), "{file}: {}\n{}", ran.stdout, ran.stderr);
        let out = &ran.stdout;
        assert!(
            out.starts_with(&format!("ok: {} is {identity} (sha256:", path.display())),
            "{out}"
        );
        assert!(
            out.contains(
                "a component of orchestrator:deploy-guard/guard-policy@1.0.0 that imports nothing (no monitor: \
                 its ticks are the host's, PROCEED tick-not-in-policy)"
            ),
            "{out}"
        );
        assert!(out.contains("fact grid: 456 of 456 cases decided"), "{out}");
        let vectors_path = deployed_dir().join(file.replace(".wasm", ".vectors.json"));
        assert!(
            out.contains(&format!(
                "vectors: {vectors} of {vectors} passed ({})\n",
                vectors_path.display()
            )),
            "{out}"
        );
    }
}

/// The native predicates' answer to `facts`.
fn native(facts: &FactsRecord) -> Ruling {
    native_ruling(&facts.question())
}

// Checked by loading the deployed next in place of the deployed reference (the 18
// `failed` stamps differ from the native predicate), and by making the host answer every
// policy's ticks `tick-not-in-policy` (the 1.2.0 reference's ticks differ from native).
#[test]
fn the_deployed_policies_decide_the_whole_grid_as_before() {
    let deployed_reference = load(&deployed_reference());
    let deployed_next = load(&deployed_next());
    let reference = load(REFERENCE);
    let next = load(NEXT);
    assert_eq!(
        (deployed_reference.identity(), reference.identity()),
        ("deploy-status-guard@1.0.0", "deploy-status-guard@1.2.0")
    );
    assert_eq!(
        (deployed_next.identity(), next.identity()),
        ("deploy-status-guard@1.1.0", "deploy-status-guard@1.1.0")
    );
    assert_eq!((reference.world(), next.world()), ("1.1.0", "1.0.0"));
    let host_tick = Ruling {
        verdict: Verdict::Proceed,
        rule: "tick-not-in-policy".to_owned(),
        fuel: None,
    };
    let (mut stamps, mut ticks, mut next_differs) = (0, 0, 0);
    for case in fact_grid() {
        let question = case.facts.question();
        let rule = |policy: &LoadedPolicy| {
            policy
                .rule(&question)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", policy.identity(), case.label))
        };
        let label = &case.label;
        match case.facts.ask {
            Ask::Decide(_) => {
                stamps += 1;
                let native = native(&case.facts);
                assert_eq!(rule(&deployed_reference), native, "1.0.0 vs native: {label}");
                assert_eq!(rule(&reference), native, "1.2.0 vs native: {label}");
                assert_eq!(rule(&deployed_next), rule(&next), "deployed vs built next: {label}");
                next_differs += usize::from(rule(&deployed_next) != native);
            }
            Ask::Tick => {
                ticks += 1;
                for policy in [&deployed_reference, &deployed_next, &next] {
                    assert_eq!(rule(policy), host_tick, "{}: {label}", policy.identity());
                }
                // The new reference answers its ticks itself, as the native predicate.
                assert_eq!(rule(&reference), native(&case.facts), "1.2.0 tick: {label}");
            }
        }
    }
    assert_eq!((stamps, ticks), (DECIDE_CASES, TICK_CASES));
    // The comparisons can tell policies apart: the next holds `failed` terminal.
    assert_eq!(next_differs, 18);
}

// ---------------------------------------------------------------------------------
// 2. Every surface answers the tick
// ---------------------------------------------------------------------------------

/// The value of the sample `series` (`name{labels}`) in an OpenMetrics text; 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// The sum of a family's samples.
fn family_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// Checked by counting ticks in `deploy_guard_decisions_total` (the ticks' series read 0),
// and by making the host answer every policy's ticks (the zombie's is PROCEED).
#[test]
fn guard_tick_answers_every_rule_and_the_metrics_count_the_ticks() {
    let ws = tick_workspace(REFERENCE);
    let guard = Guard::new(ws.config()).expect("a guard");
    let digest = sha256_digest(REFERENCE);
    for &(work_item, verdict, rule, db_stage, window_active) in TICKS {
        let decision = guard.tick(work_item, Some("monitor-tick"));
        assert_eq!(
            (decision.verdict.as_str(), decision.rule.as_str()),
            (verdict, rule),
            "{decision:?}"
        );
        assert_eq!(decision.ask, Ask::Tick);
        assert_eq!(decision.target(), None);
        assert_eq!(decision.work_item, work_item);
        assert_eq!(decision.caller.as_deref(), Some("monitor-tick"));
        assert_eq!(decision.db_stage.as_deref(), db_stage, "{decision:?}");
        assert_eq!(decision.window_active, window_active, "{decision:?}");
        assert_eq!(decision.policy.as_deref(), Some("deploy-status-guard@1.2.0"));
        assert_eq!(decision.policy_digest.as_deref(), Some(digest.as_str()));
        assert_eq!(decision.error, None);
        assert_eq!(keys_in_order(&decision.to_json()), TICK_KEYS);
        assert_eq!(TICK_FIELDS, TICK_KEYS);
    }
    // A stamp beside them, for the metrics.
    let stamp = guard.decide("ORCH-055", Target::Monitoring, Some("worlds-test"));
    assert_eq!((stamp.verdict, stamp.rule.as_str()), (Verdict::Suppress, "cancelled"));
    let metrics = guard.metrics();
    for (verdict, rule, count) in [
        ("NOOP", "zombie-tick", ZOMBIES),
        ("PROCEED", "proceed", 2),
        ("PROCEED", "out-of-scope", 1),
        ("PROCEED", "task-not-found", 1),
    ] {
        let series = format!("deploy_guard_ticks_total{{verdict=\"{verdict}\",rule=\"{rule}\"}}");
        assert_eq!(sample(&metrics, &series), count as f64, "{series} in\n{metrics}");
    }
    assert_eq!(
        family_total(&metrics, "deploy_guard_ticks_total"),
        TICKS.len() as f64,
        "{metrics}"
    );
    assert_eq!(
        family_total(&metrics, "deploy_guard_decisions_total"),
        1.0,
        "ticks counted as stamps:\n{metrics}"
    );

    // A guard on the deployed 1.0.0 reference: every tick is the host's.
    let ws = tick_workspace(&deployed_reference());
    let guard = Guard::new(ws.config()).expect("a guard");
    for &(work_item, ..) in TICKS {
        let decision = guard.tick(work_item, None);
        assert_eq!(
            (decision.verdict, decision.rule.as_str(), decision.error.as_deref()),
            (Verdict::Proceed, "tick-not-in-policy", None),
            "{decision:?}"
        );
        assert_eq!(decision.policy.as_deref(), Some("deploy-status-guard@1.0.0"));
    }
    let metrics = guard.metrics();
    assert_eq!(
        sample(
            &metrics,
            "deploy_guard_ticks_total{verdict=\"PROCEED\",rule=\"tick-not-in-policy\"}"
        ),
        TICKS.len() as f64,
        "{metrics}"
    );
}

/// `deploy-guard tick` in `ws` with `args` (and `env`): its answer, checked to be one
/// tick object on one line with exit 0, and its decision line.
fn tick_command(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> (Value, Value, Ran) {
    let mut command = ws.command();
    command.arg("tick").args(args).envs(env.iter().copied());
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(0), "{args:?}: {}\n{}", ran.stdout, ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout carries exactly one answer: {:?}", ran.stdout);
    assert_eq!(keys_in_order(lines[0]), TICK_KEYS, "{}", lines[0]);
    let answer: Value = serde_json::from_str(lines[0]).expect("JSON");
    let decision_lines = decision_lines(&ran.stderr);
    assert_eq!(decision_lines.len(), 1, "one decision line: {}", ran.stderr);
    let line = decision_lines.into_iter().next().expect("one");
    (answer, line, ran)
}

/// The decision line of a tick says what its answer says, at its level, without a target.
fn assert_tick_line(line: &Value, answer: &Value) {
    let level = if answer["verdict"] == "NOOP" { "WARN" } else { "INFO" };
    assert_eq!(line["level"], level, "{line}");
    let fields = line["fields"].as_object().expect("fields");
    assert_eq!(fields["message"], "deploy_status_guard tick", "{line}");
    for key in TICK_KEYS {
        assert_eq!(fields.get(key), Some(&answer[key]), "{key} in {line}");
    }
    assert!(!fields.contains_key("target"), "a tick's line has a target: {line}");
}

// Seen failing against the host as it was: a tick's JSON line carried `"target": null`
// (fixed in the commit before this file's); and with every policy's ticks answered by
// the host (the table fails).
#[test]
fn the_tick_command_prints_one_tick_object_and_its_decision_line() {
    let ws = tick_workspace(REFERENCE);
    let digest = sha256_digest(REFERENCE);
    for &(work_item, verdict, rule, db_stage, window_active) in TICKS {
        let (answer, line, _) = tick_command(&ws, &["--work-item", work_item, "--caller", "monitor-tick"], &[]);
        assert_eq!(
            answer,
            json!({
                "work_item": work_item, "caller": "monitor-tick", "db_stage": db_stage,
                "window_active": window_active, "verdict": verdict, "rule": rule,
                "policy": "deploy-status-guard@1.2.0", "policy_digest": digest, "error": null,
            })
        );
        assert_tick_line(&line, &answer);
    }
    // Without a caller: null.
    let (answer, line, _) = tick_command(&ws, &["--work-item", "ORCH-055"], &[]);
    assert_eq!(
        (&answer["caller"], &answer["verdict"], &answer["rule"]),
        (&Value::Null, &json!("NOOP"), &json!("zombie-tick"))
    );
    assert_tick_line(&line, &answer);
    // The text decision line: WARN, the tick's message, no target.
    let mut command = ws.command();
    command
        .env("DEPLOY_GUARD_LOG", "text")
        .args(["tick", "--work-item", "ORCH-055"]);
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let line = ran
        .stderr
        .lines()
        .find(|l| l.contains("deploy_guard::decision"))
        .unwrap_or_else(|| panic!("no decision line: {}", ran.stderr));
    assert!(
        line.contains(" WARN ") && line.contains("deploy_status_guard tick") && line.contains("zombie-tick"),
        "{line}"
    );
    assert!(!line.contains("target="), "{line}");
}

// Checked by making `answer_one` exit 1 on a fail-safe: the first case fails.
#[test]
fn the_tick_command_exits_0_whatever_is_broken() {
    let ws = tick_workspace(REFERENCE);
    let missing = ws.dir.path().join("missing");
    let missing_db = missing.join("orchestrator.db");
    let missing_policy = missing.join("policy.wasm");
    let garbage = ws.dir.path().join("garbage.wasm");
    std::fs::write(&garbage, deploy_guard_e2e::noise(512, 7)).expect("write");
    let config = ws.dir.path().join("broken.toml");
    std::fs::write(&config, "enabled = [\n").expect("write");
    let (db, policy, garbage, config) = (
        missing_db.to_str().expect("utf-8"),
        missing_policy.to_str().expect("utf-8"),
        garbage.to_str().expect("utf-8"),
        config.to_str().expect("utf-8"),
    );
    for (args, env, names) in [
        (vec!["--db", db], vec![], "database"),
        (vec!["--policy", policy], vec![], "policy-unavailable"),
        (vec!["--db", db, "--policy", policy], vec![], "policy-unavailable"),
        (vec!["--policy", garbage], vec![], "not a component"),
        (vec![], vec![("DEPLOY_GUARD_CONFIG", config)], "broken.toml"),
    ] {
        let mut all = vec!["--work-item", "ORCH-055", "--caller", "monitor-tick"];
        all.extend(args);
        let (answer, line, _) = tick_command(&ws, &all, &env);
        assert_eq!(
            (answer["verdict"].as_str(), answer["rule"].as_str()),
            (Some("PROCEED"), Some("fail-safe")),
            "{all:?}: {answer}"
        );
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(names),
            "{all:?} {env:?}: the error does not name {names:?}: {answer}"
        );
        assert_eq!(answer["work_item"], "ORCH-055");
        assert_tick_line(&line, &answer);
    }
}

// Checked by letting `tick` accept a hidden `--target`: that case exits 0 with an answer.
#[test]
fn the_tick_command_refuses_a_usage_error_with_exit_2() {
    let ws = tick_workspace(REFERENCE);
    for args in [
        vec!["tick"],
        vec!["tick", "--caller", "monitor-tick"],
        vec!["tick", "--work-item", "ORCH-055", "--target", "monitoring"],
        vec!["tick", "--target", "monitoring"],
        vec!["tick", "--work-item"],
    ] {
        let mut command = ws.command();
        command.args(&args);
        let ran = run(command, b"");
        assert_eq!(ran.code, Some(2), "{args:?}: {}\n{}", ran.stdout, ran.stderr);
        assert_eq!(ran.stdout, "", "{args:?}: a usage error prints no answer");
        assert!(!ran.stderr.is_empty(), "{args:?}: a usage error says why");
        assert!(decision_lines(&ran.stderr).is_empty(), "{args:?}: {}", ran.stderr);
    }
    let mut command = ws.command();
    command.args(["tick", "--work-item", "ORCH-055", "--target", "monitoring"]);
    let ran = run(command, b"");
    assert!(ran.stderr.contains("--target"), "{}", ran.stderr);
}

/// The requests of a mixed run of `serve`: every tick of [`TICKS`] and a stamp of each
/// work item, `rounds` times.
fn mixed_requests(rounds: usize) -> String {
    let mut input = String::new();
    for _ in 0..rounds {
        for &(work_item, ..) in TICKS {
            input.push_str(&format!(
                "{}\n",
                json!({"op": "tick", "work_item": work_item, "caller": "monitor-tick"})
            ));
            input.push_str(&format!(
                "{}\n",
                json!({"work_item": work_item, "target": "monitoring", "caller": "worlds-test"})
            ));
        }
    }
    input
}

// Checked by accepting `{"op": "tick", "target": ...}` as a tick (answered instead of
// refused), and against the host's tick line with `"target": null`, as it was.
#[test]
fn serve_answers_ticks_beside_stamps_and_errors_and_goes_on() {
    let ws = tick_workspace(REFERENCE);
    let lines = [
        json!({"op": "tick", "work_item": "ORCH-055", "caller": "monitor-tick"}),
        json!({"work_item": "ORCH-055", "target": "monitoring", "caller": "setter"}),
        json!({"op": "decide", "work_item": "ORCH-061", "target": "monitoring"}),
        json!({"op": "poke", "work_item": "ORCH-055"}),
        json!({"op": "tick", "work_item": "ORCH-055", "target": "monitoring"}),
        json!({"op": "decide", "work_item": "ORCH-055"}),
        json!({"op": "tick", "work_item": "ORCH-404"}),
        json!({"op": "tick", "work_item": "ENDURO-12", "caller": "monitor-tick"}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut command = ws.command();
    command.arg("serve");
    let ran = run(command, input.as_bytes());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let answers: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(answers.len(), lines.len(), "{}", ran.stdout);
    let json = |i: usize| -> Value { serde_json::from_str(answers[i]).expect("JSON") };
    let digest = sha256_digest(REFERENCE);
    // A tick: the tick object.
    assert_eq!(keys_in_order(answers[0]), TICK_KEYS);
    assert_eq!(
        json(0),
        json!({"work_item": "ORCH-055", "caller": "monitor-tick", "db_stage": "cancelled",
               "window_active": true, "verdict": "NOOP", "rule": "zombie-tick",
               "policy": "deploy-status-guard@1.2.0", "policy_digest": digest, "error": null})
    );
    // No op, or "decide": a stamp, with its target.
    for (i, target, verdict, rule) in [
        (1, "monitoring", "SUPPRESS", "cancelled"),
        (2, "monitoring", "CONVERGE_DONE", "converge-done"),
    ] {
        let answer = json(i);
        assert_eq!(
            (
                answer["target"].as_str(),
                answer["verdict"].as_str(),
                answer["rule"].as_str()
            ),
            (Some(target), Some(verdict), Some(rule)),
            "{answer}"
        );
        assert_eq!(answer.as_object().map(|o| o.len()), Some(10), "{answer}");
    }
    // An unknown op, a tick with a target, a stamp without one: an error, and on.
    for (i, names) in [(3, "unknown op"), (4, "a tick has no `target`"), (5, "`target`")] {
        let answer = json(i);
        assert_eq!(answer.as_object().map(|o| o.len()), Some(1), "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(names), "{i}: {answer}");
    }
    assert_eq!(
        (
            json(6)["verdict"].as_str(),
            json(6)["rule"].as_str(),
            &json(6)["caller"]
        ),
        (Some("PROCEED"), Some("task-not-found"), &Value::Null)
    );
    assert_eq!(
        (json(7)["verdict"].as_str(), json(7)["rule"].as_str()),
        (Some("PROCEED"), Some("out-of-scope"))
    );
    // One decision line per answer that is a decision, in order; the ticks' without a
    // target, at their level.
    let decided: Vec<Value> = [0, 1, 2, 6, 7].into_iter().map(json).collect();
    let logged = decision_lines(&ran.stderr);
    assert_eq!(logged.len(), decided.len(), "{}", ran.stderr);
    for (line, answer) in logged.iter().zip(&decided) {
        if answer.get("target").is_some() {
            assert_eq!(line["fields"]["target"], answer["target"], "{line}");
            assert_eq!(line["fields"]["message"], "deploy_status_guard decision", "{line}");
        } else {
            assert_tick_line(line, answer);
        }
    }
}

// Checked by writing a tick as `target=none` in replay's examples (no example matches),
// and by making the host answer every policy's ticks (the ledger's verdicts differ).
#[test]
fn the_ledger_records_ticks_and_replay_against_next_finds_the_zombies() {
    let ws = tick_workspace(REFERENCE);
    let ledger = ws.dir.path().join("ledger.db");
    let rounds = 2;
    let mut command = ws.command();
    command.arg("serve").env("DEPLOY_GUARD_LEDGER", &ledger);
    let ran = run(command, mixed_requests(rounds).as_bytes());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let requests = rounds * TICKS.len() * 2;
    assert_eq!(ran.stdout.lines().count(), requests);

    let recorded = read_ledger(&ledger).expect("the ledger reads");
    assert_eq!(recorded.len(), requests);
    let ticks: Vec<_> = recorded.iter().filter(|r| r.decision.ask == Ask::Tick).collect();
    assert_eq!(ticks.len(), rounds * TICKS.len());
    for record in &ticks {
        let facts = record.facts.as_ref().expect("a tick's facts are recorded");
        assert_eq!(facts.ask, Ask::Tick);
        assert_eq!(facts.work_item, record.decision.work_item);
        let expected = TICKS
            .iter()
            .find(|t| t.0 == record.decision.work_item)
            .expect("a tick of the table");
        assert_eq!(
            (record.decision.verdict.as_str(), record.decision.rule.as_str()),
            (expected.1, expected.2)
        );
    }

    let candidate = ws.dir.path().join("next.wasm");
    std::fs::write(&candidate, NEXT).expect("write");
    let mut command = ws.command();
    command
        .arg("replay")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--against")
        .arg(&candidate);
    let ran = run(command, b"");
    let out = &ran.stdout;
    assert_eq!(ran.code, Some(1), "{out}\n{}", ran.stderr);
    // Every zombie tick would change its verdict; every other tick its rule (the next
    // policy has no monitor: its ticks are the host's); no stamp changes here.
    let zombies = rounds * ZOMBIES;
    let others = rounds * (TICKS.len() - ZOMBIES);
    assert!(
        out.contains(&format!("NOOP -> PROCEED: {zombies} decisions\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("PROCEED -> PROCEED: {others} decisions\n")),
        "{out}"
    );
    let examples: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with(" tick: NOOP (zombie-tick) -> PROCEED (tick-not-in-policy)"))
        .collect();
    assert_eq!(examples.len(), zombies, "{out}");
    assert!(
        examples
            .iter()
            .all(|l| l.starts_with("  ORCH-055 at ") || l.starts_with("  ORCH-056 at ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "summary: {} of {requests} replayed decisions would change; 0 not replayable",
            zombies + others
        )),
        "{out}"
    );
    // Against the policy that made them: the recorded facts give the same answers.
    let same = ws.dir.path().join("same.wasm");
    std::fs::write(&same, REFERENCE).expect("write");
    let mut command = ws.command();
    command
        .arg("replay")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--against")
        .arg(&same);
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
}

// Checked by not queueing ticks in the shadow: the summary counts the stamps alone.
#[test]
fn serve_shadow_next_counts_the_tick_disagreements() {
    let ws = tick_workspace(REFERENCE);
    let candidate = ws.dir.path().join("next.wasm");
    std::fs::write(&candidate, NEXT).expect("write");
    let rounds = 3;
    let mut command = ws.command();
    command
        .arg("serve")
        .arg("--shadow")
        .arg(&candidate)
        .env("DEPLOY_GUARD_LOG", "text");
    let ran = run(command, mixed_requests(rounds).as_bytes());
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for answer in ran.stdout.lines() {
        let answer: Value = serde_json::from_str(answer).expect("JSON");
        assert_eq!(answer["policy"], "deploy-status-guard@1.2.0", "{answer}");
    }
    let summary = ran
        .stderr
        .lines()
        .find(|l| l.starts_with("shadow "))
        .unwrap_or_else(|| panic!("no summary in {}", ran.stderr));
    // No stamp here differs between the two (no failed task); every tick does.
    let compared = rounds * TICKS.len() * 2;
    let zombies = rounds * ZOMBIES;
    let others = rounds * (TICKS.len() - ZOMBIES);
    assert!(
        summary.contains(&format!(
            ": {compared} decisions compared, {} disagreements (NOOP -> PROCEED: {zombies}, PROCEED -> PROCEED: {others}), \
             0 candidate failures, 0 dropped",
            zombies + others
        )),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------
// 3. Swaps and roll backs across the worlds while serve answers
// ---------------------------------------------------------------------------------

/// The stamps every stage of a swap answers alike: every work item, every target.
fn stamps() -> Vec<(&'static str, &'static str)> {
    TICKS
        .iter()
        .flat_map(|&(work_item, ..)| ["awaiting", "deploying", "monitoring"].map(|t| (work_item, t)))
        .collect()
}

/// What a stamp's answer says: (verdict, rule).
fn ruled(answer: &Value) -> (String, String) {
    (
        answer["verdict"].as_str().unwrap_or_default().to_owned(),
        answer["rule"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A tick of the zombie as the policy `digest` answers it: `world_1_1` for a policy
/// of the 1.1.0 world.
fn assert_zombie_tick(answer: &Value, digest: &str, world_1_1: bool) {
    let expected = if world_1_1 {
        ("NOOP", "zombie-tick")
    } else {
        ("PROCEED", "tick-not-in-policy")
    };
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str()),
        (Some(expected.0), Some(expected.1)),
        "{answer}"
    );
    assert_eq!(answer["policy_digest"], digest, "{answer}");
    assert_eq!(answer["error"], Value::Null, "{answer}");
    assert_eq!(answer.get("target"), None, "{answer}");
}

/// Ask until the answers come from the policy `to` (a tick of the zombie and a stamp
/// each time, at most every 20 ms, under [`PATIENCE`]). Every answer on the way is
/// wholly the old policy's or the new one's: never a fail-safe, never a mix.
fn ask_until_live(served: &mut Served, from: (&str, bool), to: (&str, bool), stamped: &[(String, String)]) {
    let at = stamps()
        .iter()
        .position(|s| *s == ("ORCH-061", "monitoring"))
        .expect("a stamp of the table");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tick = served.tick("ORCH-055");
        let digest = tick["policy_digest"].as_str().unwrap_or_default().to_owned();
        let world_1_1 = if digest == to.0 {
            to.1
        } else {
            assert_eq!(digest, from.0, "an answer of neither policy: {tick}");
            from.1
        };
        assert_zombie_tick(&tick, &digest, world_1_1);
        let stamp = served.decide("ORCH-061", "monitoring");
        assert!(
            stamp["policy_digest"] == from.0 || stamp["policy_digest"] == to.0,
            "{stamp}"
        );
        assert_eq!(ruled(&stamp), stamped[at], "{stamp}");
        if digest == to.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the answers did not come from {} within {PATIENCE:?}",
            to.0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A round of every stamp and every tick against the live policy `digest`; `rounds`
/// rounds of 24 requests (5 of them are more than a probation's 100 decisions).
fn answer_rounds(served: &mut Served, digest: &str, world_1_1: bool, stamped: &[(String, String)], rounds: usize) {
    for _ in 0..rounds {
        for ((work_item, target), expected) in stamps().into_iter().zip(stamped) {
            let answer = served.decide(work_item, target);
            assert_eq!(&ruled(&answer), expected, "{work_item} {target}: {answer}");
            assert_eq!(answer["policy_digest"], digest, "{answer}");
            assert_eq!(answer["error"], Value::Null, "{answer}");
        }
        for &(work_item, verdict, rule, ..) in TICKS {
            let answer = served.tick(work_item);
            assert_eq!(answer["policy_digest"], digest, "{answer}");
            let expected = if world_1_1 {
                (verdict, rule)
            } else {
                ("PROCEED", "tick-not-in-policy")
            };
            assert_eq!(
                (answer["verdict"].as_str(), answer["rule"].as_str()),
                (Some(expected.0), Some(expected.1)),
                "{answer}"
            );
        }
    }
}

/// `deploy-guard rollback` in `ws`: exit 0, and the policy it says it put back.
fn rollback(ws: &Workspace, identity: &str, digest: &str) {
    let mut command = ws.command();
    command.arg("rollback");
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.stdout,
        format!(
            "rolled back: {} is {identity} ({digest}) again\n",
            ws.policy().display()
        )
    );
}

// Checked by making the host answer every policy's ticks (a 1.1.0 one's too): after the
// first swap the zombie's tick is PROCEED, not NOOP.
#[test]
fn serve_swaps_between_the_worlds_both_ways_and_rolls_back_across_them() {
    let old = deployed_reference();
    let ws = tick_workspace(&old);
    // The vectors deployed with it: they fit the 1.2.0 reference too (same stamps).
    std::fs::write(
        ws.dir.path().join("policies/deploy-status-guard.vectors.json"),
        deployed("deploy-status-guard.vectors.json"),
    )
    .expect("write the vectors");
    let (d0, d1) = (sha256_digest(&old), sha256_digest(REFERENCE));
    let mut served = Served::start(ws.command(), &[]);

    // On the deployed 1.0.0 reference: the host answers the ticks.
    let first = served.tick("ORCH-055");
    assert_zombie_tick(&first, &d0, false);
    assert_eq!(first["policy"], "deploy-status-guard@1.0.0");
    let stamped: Vec<(String, String)> = stamps()
        .into_iter()
        .map(|(work_item, target)| ruled(&served.decide(work_item, target)))
        .collect();
    // The stamps the seed's guard gives (the 1.0.0 reference decides as the native
    // predicate, above): the zombie's stamps suppressed, the finished task converging.
    for (stamp, expected) in [
        (("ORCH-055", "monitoring"), ("SUPPRESS", "cancelled")),
        (("ORCH-061", "monitoring"), ("CONVERGE_DONE", "converge-done")),
    ] {
        let at = stamps().iter().position(|s| *s == stamp).expect("a stamp of the table");
        assert_eq!(stamped[at], (expected.0.to_owned(), expected.1.to_owned()));
    }
    answer_rounds(&mut served, &d0, false, &stamped, 1);

    // Each policy is given its probation's 100 decisions before the next change: the
    // host keeps, for a roll back, only a policy that proved itself (one swapped out
    // while still on probation is not kept as the previous one).

    // 1.0.0 -> 1.1.0: the reference of the 1.1.0 world renamed over the file.
    deploy_guard_e2e::write_atomically(&ws.policy(), REFERENCE);
    ask_until_live(&mut served, (&d0, false), (&d1, true), &stamped);
    answer_rounds(&mut served, &d1, true, &stamped, 5);
    served.wait_for_probation_passed(&d1);

    // 1.1.0 -> 1.0.0: the deployed 1.0.0 reference renamed back.
    deploy_guard_e2e::write_atomically(&ws.policy(), &old);
    ask_until_live(&mut served, (&d1, true), (&d0, false), &stamped);
    answer_rounds(&mut served, &d0, false, &stamped, 5);
    served.wait_for_probation_passed(&d0);

    // Roll back, 1.0.0 -> 1.1.0: the policy live before the last swap.
    assert!(std::fs::read(deploy_guard::rollout::slot::previous_path(&ws.policy())).expect("kept") == REFERENCE);
    rollback(&ws, "deploy-status-guard@1.2.0", &d1);
    ask_until_live(&mut served, (&d0, false), (&d1, true), &stamped);
    answer_rounds(&mut served, &d1, true, &stamped, 5);
    served.wait_for_probation_passed(&d1);

    // Roll back, 1.1.0 -> 1.0.0.
    rollback(&ws, "deploy-status-guard@1.0.0", &d0);
    ask_until_live(&mut served, (&d1, true), (&d0, false), &stamped);
    answer_rounds(&mut served, &d0, false, &stamped, 1);
    assert!(std::fs::read(ws.policy()).expect("the policy file") == old);

    let (code, log) = served.finish();
    assert_eq!(code, Some(0));
    // Four swaps, each said once, none refused.
    let swaps = log.iter().filter(|l| l.contains("policy swapped: ")).count();
    assert_eq!(swaps, 4, "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("refused")), "{}", log.join("\n"));
}

/// The automatic roll back across worlds: `serve` on `start`, `trap` renamed over the
/// policy file, then requests that make `trap` fail (`failing`) until probation puts
/// `start` back; `tick_before`/`tick_after` are the zombie's ticks before and after.
fn rolls_back_by_itself(
    start: &[u8],
    start_world_1_1: bool,
    trap: &[u8],
    trap_world_1_1: bool,
    failing: impl Fn(&mut Served, usize) -> Value,
) {
    let ws = tick_workspace(start);
    let (good, bad) = (sha256_digest(start), sha256_digest(trap));
    let mut served = Served::start(ws.command(), &[]);
    assert_zombie_tick(&served.tick("ORCH-055"), &good, start_world_1_1);
    deploy_guard_e2e::write_atomically(&ws.policy(), trap);
    served.wait_for_live(&bad);
    let tick = served.tick("ORCH-055");
    assert_eq!(tick["policy_digest"], bad, "{tick}");
    assert_eq!(
        tick["rule"],
        if trap_world_1_1 {
            "tick-live-trap"
        } else {
            "tick-not-in-policy"
        },
        "{tick}"
    );
    // Ten failures of the first decisions after the swap: the tenth rolls back.
    for i in 0..10 {
        let answer = failing(&mut served, i);
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert_eq!(answer["policy_digest"], bad, "{answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.starts_with("trap: ")),
            "{answer}"
        );
    }
    let line = served.wait_for_live(&good);
    assert_eq!(line["fields"]["from_digest"], bad, "{line}");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_zombie_tick(&served.tick("ORCH-055"), &good, start_world_1_1);
    // Written back over the file: a restart loads the good one.
    assert!(std::fs::read(ws.policy()).expect("the policy file") == start);
    let (code, _) = served.finish();
    assert_eq!(code, Some(0));
}

// Checked by not counting a failing tick against a policy on probation: the first case
// never rolls back (no line of the roll back within the ceiling).
#[test]
fn a_policy_that_starts_failing_is_rolled_back_across_the_worlds() {
    // From a 1.1.0-world policy whose ticks trap, back to the deployed 1.0.0 reference.
    rolls_back_by_itself(&deployed_reference(), false, hostile::TICK_LIVE_TRAP, true, |s, i| {
        let answer = s.tick(&format!("B-{i}"));
        assert_eq!(answer["verdict"], "PROCEED", "{answer}");
        answer
    });
    // From a 1.0.0-world policy whose stamps trap, back to the 1.2.0 reference.
    rolls_back_by_itself(REFERENCE, true, hostile::LIVE_TRAP, false, |s, i| {
        let answer = s.decide(&format!("B-{i}"), "awaiting");
        assert_eq!(answer["verdict"], "ALLOW", "{answer}");
        answer
    });
}

// ---------------------------------------------------------------------------------
// 4. Policies of another world: refused with the reason
// ---------------------------------------------------------------------------------

/// `deploy-guard check` of `bytes` (written to a file of `ws`): exit 1, and the reason.
fn check_refuses(bytes: &[u8], name: &str) -> String {
    let ws = Workspace::new();
    let path = ws.dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write");
    let mut command = ws.command();
    command.arg("check").arg(&path);
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(1), "{name}: {}\n{}", ran.stdout, ran.stderr);
    let prefix = format!("refused: {}: ", path.display());
    ran.stdout
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{name}: {}", ran.stdout))
        .trim_end()
        .to_owned()
}

/// The gate refuses `bytes` at load with `WrongWorld`; its reason.
fn wrong_world(bytes: &[u8]) -> String {
    match gate::admit(sandbox(), bytes, Limits::DEFAULT, None) {
        Err(GateError::Load(LoadError::WrongWorld(reason))) => reason,
        other => panic!("not refused as of another world: {other:?}"),
    }
}

// Checked by dropping `decide` and `tick` from the host's shape check: the refusal then
// comes later, from the typed lookup, and does not give the signatures.
#[test]
fn a_decide_of_another_type_is_refused_naming_decide() {
    let reason = wrong_world(hostile::WRONG_SIGNATURE);
    assert!(
        reason.starts_with(
            "`decide` takes (work-item-id: string) and returns (record); the guard-policy world's takes (record)"
        ),
        "{reason}"
    );
    let refused = check_refuses(hostile::WRONG_SIGNATURE, "wrong-signature");
    assert_eq!(refused, format!("not a component of the guard-policy world: {reason}"));
}

// Checked by accepting any major version in the shape check: the host then instantiates
// it, its start function traps (`info: trap: ...`), and the test fails.
#[test]
fn a_policy_of_another_major_version_is_refused_and_never_called() {
    let reason = wrong_world(hostile::OTHER_MAJOR);
    assert!(
        reason.contains("`orchestrator:deploy-guard/policy@2.0.0`") && reason.contains("another version line"),
        "{reason}"
    );
    // Every way into it traps: a refusal of another class would say it was run.
    match LoadedPolicy::load(sandbox(), hostile::OTHER_MAJOR, Limits::DEFAULT) {
        Err(LoadError::WrongWorld(again)) => assert_eq!(again, reason),
        other => panic!("{other:?}"),
    }
    let refused = check_refuses(hostile::OTHER_MAJOR, "other-major");
    assert_eq!(refused, format!("not a component of the guard-policy world: {reason}"));
    // A guard started with it answers nothing of it: both questions fail safe, naming it.
    let ws = tick_workspace(hostile::OTHER_MAJOR);
    let guard = Guard::new(ws.config()).expect("a guard");
    assert!(guard.policy().is_none());
    for decision in [
        guard.tick("ORCH-055", None),
        guard.decide("ORCH-055", Target::Monitoring, None),
    ] {
        assert_eq!(decision.rule, "fail-safe", "{decision:?}");
        assert_eq!(decision.policy, None, "{decision:?}");
        let error = decision.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("policy-unavailable: ") && error.contains("policy@2.0.0"),
            "{error}"
        );
    }
}

// Checked by dropping `decide` and `tick` from the host's shape check: the refusal then
// comes later, from the typed lookup, and does not give the signatures.
#[test]
fn a_tick_of_another_type_is_refused_naming_tick() {
    let reason = wrong_world(hostile::TICK_WRONG_SIGNATURE);
    assert!(
        reason.starts_with(
            "`tick` takes (work-item-id: string) and returns (record); the guard-policy world's takes (record)"
        ),
        "{reason}"
    );
    let refused = check_refuses(hostile::TICK_WRONG_SIGNATURE, "tick-wrong-signature");
    assert_eq!(refused, format!("not a component of the guard-policy world: {reason}"));
}

/// A tick question: the zombie, in scope.
fn tick_facts() -> FactsRecord {
    FactsRecord {
        ask: Ask::Tick,
        work_item: "ORCH-055".to_owned(),
        caller: Some("monitor-tick".to_owned()),
        task: Some(RecordTask {
            repo: "orchestrator".to_owned(),
            stage: "cancelled".to_owned(),
        }),
        window_active: Some(true),
        scope_repos: Vec::new(),
        self_hosting_repos: vec!["orchestrator".to_owned()],
    }
}

/// The same facts, as a stamp.
fn stamp_facts() -> FactsRecord {
    FactsRecord {
        ask: Ask::Decide(Target::Monitoring),
        ..tick_facts()
    }
}

/// The gate refuses `bytes` on the grid's first tick case; the inner error.
fn refused_on_the_first_tick(bytes: &[u8]) -> RunError {
    match gate::admit(sandbox(), bytes, Limits::DEFAULT, None) {
        Err(GateError::Grid { case, error }) => {
            // Every stamp passed: the first tick case is the first after them.
            let first_tick = fact_grid().into_iter().nth(DECIDE_CASES).expect("a tick case");
            assert_eq!(case, first_tick.label);
            assert!(case.starts_with("tick "), "{case}");
            error
        }
        other => panic!("not refused on the grid: {other:?}"),
    }
}

// Checked by making the host answer every policy's ticks: the loop is never called.
#[test]
fn a_tick_that_loops_forever_is_stopped_and_refused_on_the_grid() {
    let policy = load(hostile::TICK_LOOP);
    assert_eq!((policy.world(), policy.has_monitor()), ("1.1.0", true));
    // Its stamps are answered.
    let stamp = policy.rule(&stamp_facts().question()).expect("a stamp is answered");
    assert_eq!(stamp.rule, "tick-loop");
    // Its ticks run out of fuel (or time) with the default limits, within a second.
    let started = Instant::now();
    let error = policy.rule(&tick_facts().question()).expect_err("an endless tick");
    assert!(matches!(error, RunError::Fuel(_) | RunError::Deadline(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // With fuel to spare, the deadline stops it.
    let limits = Limits {
        timeout: Duration::from_millis(50),
        fuel: 1 << 50,
        ..Limits::DEFAULT
    };
    let patient = LoadedPolicy::load(sandbox(), hostile::TICK_LOOP, limits).expect("it loads");
    let error = patient.rule(&tick_facts().question()).expect_err("an endless tick");
    assert!(matches!(error, RunError::Deadline(50)), "{error:?}");
    // The gate refuses it on the grid's first tick, naming the class.
    let error = refused_on_the_first_tick(hostile::TICK_LOOP);
    assert!(matches!(error, RunError::Fuel(_) | RunError::Deadline(_)), "{error:?}");
    let refused = check_refuses(hostile::TICK_LOOP, "tick-loop");
    assert!(
        refused.starts_with("fact grid: tick task=none ")
            && (refused.contains(": fuel: ") || refused.contains(": deadline: ")),
        "{refused}"
    );
}

// Checked by making the host answer every policy's ticks: the verdict is never read.
#[test]
fn a_tick_verdict_out_of_range_is_an_invalid_result() {
    let policy = load(hostile::TICK_BAD_VERDICT);
    let stamp = policy.rule(&stamp_facts().question()).expect("a stamp is answered");
    assert_eq!(stamp.rule, "tick-bad-verdict");
    let error = policy.rule(&tick_facts().question()).expect_err("no such verdict");
    assert!(matches!(error, RunError::InvalidResult(_)), "{error:?}");
    let error = refused_on_the_first_tick(hostile::TICK_BAD_VERDICT);
    assert!(matches!(error, RunError::InvalidResult(_)), "{error:?}");
    let refused = check_refuses(hostile::TICK_BAD_VERDICT, "tick-bad-verdict");
    assert!(
        refused.starts_with("fact grid: tick task=none ") && refused.contains(": invalid-result: "),
        "{refused}"
    );
}

// Checked by making the host answer every policy's ticks: the "B" tick answers.
#[test]
fn a_tick_that_traps_only_live_passes_the_gate() {
    let admitted = gate::admit(sandbox(), hostile::TICK_LIVE_TRAP, Limits::DEFAULT, None).expect("admitted");
    assert_eq!(admitted.policy.identity(), "tick-live-trap@1.1.0");
    assert_eq!(admitted.grid.len(), DECIDE_CASES + TICK_CASES);
    let live = FactsRecord {
        work_item: "B-1".to_owned(),
        ..tick_facts()
    };
    let error = admitted.policy.rule(&live.question()).expect_err("a trap");
    assert!(matches!(error, RunError::Trap(_)), "{error:?}");
}
