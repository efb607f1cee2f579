//! The seam with the orchestrator: deploy-guard must never lose, lock or create a file
//! of the orchestrator's, whatever the operator misconfigures (issue 11). Each test
//! reproduces one class of the issue against real files and real processes: a Python
//! process as the orchestrator (its own SQLite connection, writing, switching journal
//! modes, checkpointing), `deploy-guard` as a child (as another user where the test
//! runs as root, as in CI; see [`deploy_guard_as_other_user`]), real FIFOs,
//! `/dev/zero`, symlinks and hard links.
//!
//! Run: `cargo test --release -p deploy-guard-e2e --test seam`

use deploy_guard::observe::ledger::Ledger;
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::sandbox::policy::{LoadError, LoadedPolicy, RunError};
use deploy_guard::{Guard, Target, Verdict};
use deploy_guard_e2e::{
    Bounded, CEILING, NEXT, REFERENCE, ServeChild, Workspace, binary, hostile, insert_story, sha256_digest, wait_for,
    write_atomically,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The orchestrator: a Python process with its own SQLite connection to the database,
/// driven one command a line (`open`, `close`, or an SQL statement), answering one JSON
/// line each: `{"ok": rows}` or `{"err": message}`. Its connection never waits for a
/// lock (timeout 0), so a lock held by deploy-guard shows up as an error at once.
struct Orchestrator {
    child: Child,
    stdin: std::process::ChildStdin,
    /// Its answers, read by a thread of its own (each waited for at most [`CEILING`]).
    answers: Receiver<String>,
}

const ORCHESTRATOR_PY: &str = r#"
import json, sqlite3, sys
path = sys.argv[1]
con = None
for line in sys.stdin:
    cmd = line.rstrip("\n")
    try:
        if cmd == "open":
            con = sqlite3.connect(path, timeout=0, isolation_level=None)
            out = None
        elif cmd == "close":
            con.close()
            con = None
            out = None
        else:
            out = [list(r) for r in con.execute(cmd).fetchall()]
        print(json.dumps({"ok": out}), flush=True)
    except Exception as e:
        print(json.dumps({"err": str(e)}), flush=True)
"#;

impl Orchestrator {
    /// Start it on `db` and open its connection.
    fn start(db: &Path) -> Orchestrator {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(ORCHESTRATOR_PY)
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut orchestrator = Orchestrator { child, stdin, answers };
        orchestrator.ok("open");
        orchestrator
    }

    /// Run one command; its rows, or SQLite's error message.
    fn run(&mut self, command: &str) -> Result<Value, String> {
        writeln!(self.stdin, "{command}").expect("write to the orchestrator");
        self.stdin.flush().expect("flush");
        let line = self
            .answers
            .recv_timeout(CEILING)
            .unwrap_or_else(|e| panic!("the orchestrator did not answer {command:?} within {CEILING:?}: {e}"));
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        match answer.get("err") {
            Some(err) => Err(err.as_str().unwrap_or_default().to_owned()),
            None => Ok(answer["ok"].clone()),
        }
    }

    /// Run one command that must succeed.
    fn ok(&mut self, command: &str) -> Value {
        self.run(command)
            .unwrap_or_else(|e| panic!("the orchestrator's {command:?} failed: {e}"))
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `path` with `suffix` appended to its name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `deploy-guard` binary as user and group 65534 (nobody), through `setpriv`, when
/// the tests run as root (as CI does); environment cleared except for the [`PATIENT`]
/// deadline. Otherwise it cannot be another user: the test then says on stderr that
/// it runs deploy-guard as its own user (so the part about another user is not
/// checked), and under `CI=true` it fails instead.
///
/// [`PATIENT`]: deploy_guard_e2e::PATIENT
fn deploy_guard_as_other_user() -> Command {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let setpriv = Path::new("/usr/bin/setpriv");
    let mut command = if root && setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary());
        c
    } else {
        let why = if root {
            "/usr/bin/setpriv is missing"
        } else {
            "the tests do not run as root"
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot run deploy-guard as another user ({why}), which this test is about (CI=true)"
        );
        eprintln!(
            "NOTE: deploy-guard runs as this test's own user, not as another one ({why}): \
             what this test proves about another user is not checked in this run"
        );
        Command::new(binary())
    };
    command
        .env_clear()
        .env("DEPLOY_GUARD_TIMEOUT_MS", deploy_guard_e2e::PATIENT_TIMEOUT_MS);
    command
}

/// A workspace whose directory another user can read and write (so that a file
/// deploy-guard wrongly created there would appear, owned by that user).
fn open_workspace() -> Workspace {
    let ws = Workspace::story();
    std::fs::set_permissions(ws.dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for path in [ws.db(), ws.policy()] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    std::fs::set_permissions(ws.dir.path().join("policies"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    ws
}

/// Run `deploy-guard decide` (stdout and stderr collected), bounded by [`CEILING`].
fn decide(command: Command, work_item: &str, target: &str) -> (Value, String) {
    decide_with(command, &["--work-item", work_item, "--target", target])
}

/// [`decide`] with the arguments given.
fn decide_with(mut command: Command, args: &[&str]) -> (Value, String) {
    let output = command.arg("decide").args(args).bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "decide exits 0: {stderr}");
    let answer = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?} {stderr}"));
    (answer, stderr)
}

// ---------------------------------------------------------------------------------
// 1. The ledger never on a file of the orchestrator's database.

#[test]
fn a_ledger_on_any_file_of_the_database_under_any_spelling_is_refused_and_creates_nothing() {
    let ws = Workspace::story();
    let dir = ws.dir.path();
    let db = ws.db();
    let mut orchestrator = Orchestrator::start(&db);
    assert_eq!(orchestrator.ok("PRAGMA journal_mode=wal"), serde_json::json!([["wal"]]));
    orchestrator.ok("UPDATE tasks SET title = 'x'");
    assert!(with_suffix(&db, "-wal").exists() && with_suffix(&db, "-shm").exists());
    // Spellings: the side files (existing and not yet existing), through `..`, through a
    // symlinked directory, a symlink to a side file, a dangling symlink to one, a hard
    // link to the database, and a ledger whose own -wal would be the database.
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink(dir, dir.join("sub/linked-dir")).expect("symlink");
    std::os::unix::fs::symlink(with_suffix(&db, "-wal"), dir.join("to-wal")).expect("symlink");
    std::os::unix::fs::symlink(with_suffix(&db, "-journal"), dir.join("to-journal")).expect("symlink");
    std::fs::hard_link(&db, dir.join("hard-link.db")).expect("hard link");
    let db_named_like_a_wal = dir.join("other.db-wal");
    std::fs::write(&db_named_like_a_wal, b"").expect("write");
    let cases: Vec<(PathBuf, &Path)> = vec![
        (db.clone(), &db),
        (with_suffix(&db, "-wal"), &db),
        (with_suffix(&db, "-shm"), &db),
        (with_suffix(&db, "-journal"), &db),
        (dir.join("sub/../orchestrator.db-wal"), &db),
        (dir.join("sub/linked-dir/orchestrator.db-journal"), &db),
        (dir.join("to-wal"), &db),
        (dir.join("to-journal"), &db),
        (dir.join("hard-link.db"), &db),
        (dir.join("other.db"), &db_named_like_a_wal),
    ];
    for (ledger, database) in &cases {
        let error = Ledger::open(ledger, database, 1000).expect_err("refused");
        assert!(
            error.to_string().contains("orchestrator's database"),
            "{}: {error}",
            ledger.display()
        );
    }
    assert!(!with_suffix(&db, "-journal").exists(), "no journal was created");
    assert!(!dir.join("other.db").exists());
    // The orchestrator's commits are all there.
    for i in 0..50 {
        orchestrator.ok(&format!(
            "UPDATE tasks SET title = 't{i}' WHERE work_item_id = 'ORCH-061'"
        ));
    }
    orchestrator.ok("close");
    let check = rusqlite::Connection::open(&db).expect("open");
    let title: String = check
        .query_row("SELECT title FROM tasks WHERE work_item_id = 'ORCH-061'", [], |r| {
            r.get(0)
        })
        .expect("read");
    assert_eq!(title, "t49");
    // A ledger of its own beside the database is fine.
    assert!(Ledger::open(&dir.join("ledger.db"), &db, 1000).is_ok());
}

#[test]
fn serve_with_the_ledger_on_the_databases_wal_loses_no_commit_and_goes_on_deciding() {
    // The issue's reproduction: a WAL database checkpointed with TRUNCATE (its -wal is 0
    // bytes), `serve` told to keep its ledger there, the orchestrator committing 200
    // updates meanwhile.
    let ws = Workspace::story();
    let db = ws.db();
    let mut orchestrator = Orchestrator::start(&db);
    orchestrator.ok("PRAGMA journal_mode=wal");
    orchestrator.ok("PRAGMA wal_checkpoint(TRUNCATE)");
    assert_eq!(std::fs::metadata(with_suffix(&db, "-wal")).expect("wal").len(), 0);
    orchestrator.ok("CREATE TABLE counter (n INTEGER)");
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_LEDGER", with_suffix(&db, "-wal"));
    let mut serve = ServeChild::start(command);
    for i in 0..200 {
        orchestrator.ok(&format!("INSERT INTO counter VALUES ({i})"));
        if i % 20 == 0 {
            let answer = serve.ask("ORCH-055", "monitoring");
            assert_eq!(answer["verdict"], "SUPPRESS", "decisions go on: {answer}");
        }
    }
    let (code, log) = serve.finish_with_log();
    assert_eq!(code, Some(0));
    // The refusal is a configuration problem named in the log.
    let log = log.join("\n");
    assert!(
        log.contains("would write over a file of the orchestrator's database") && log.contains("not recorded"),
        "{log}"
    );
    orchestrator.ok("close");
    drop(orchestrator);
    let check = rusqlite::Connection::open(&db).expect("open");
    let count: i64 = check
        .query_row("SELECT COUNT(*) FROM counter", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 200, "the orchestrator's commits are all there");
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
}

#[test]
fn an_empty_ledger_in_the_config_file_is_a_problem_not_a_temporary_database() {
    let ws = Workspace::story();
    let file = ws.dir.path().join("guard.toml");
    std::fs::write(&file, "ledger = \"\"\n").expect("write");
    let path = file.display().to_string();
    let config = deploy_guard::Config::load_from(
        |n| (n == "DEPLOY_GUARD_CONFIG").then(|| path.clone()),
        &deploy_guard::Overrides::default(),
    );
    assert!(
        config
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("`ledger` is empty")),
        "{:?}",
        config.problem
    );
    assert_eq!(config.ledger, None);
    // The decision it makes: a fail-safe naming the problem, and no file created.
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(ws.dir.path());
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_CONFIG", &file);
    let (answer, _) = decide(command, "ORCH-055", "monitoring");
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str()),
        (Some("ALLOW"), Some("fail-safe")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("config: ") && e.contains("`ledger` is empty")),
        "{answer}"
    );
    assert_eq!(listing(ws.dir.path()), before, "a file was created");
}

// ---------------------------------------------------------------------------------
// 2. A journal-mode change between two decisions never makes deploy-guard create the
//    orchestrator's side files.

#[test]
fn a_switch_to_wal_while_serving_creates_no_side_file_and_the_orchestrator_keeps_writing() {
    let ws = open_workspace();
    let db = ws.db();
    let mut command = deploy_guard_as_other_user();
    command
        .env("DEPLOY_GUARD_DB", &db)
        .env("DEPLOY_GUARD_POLICY", ws.policy())
        .env("DEPLOY_GUARD_LOG", "json");
    let mut serve = ServeChild::start(command);
    // Rollback mode: answered.
    assert_eq!(serve.ask("ORCH-055", "monitoring")["verdict"], "SUPPRESS");
    // The orchestrator switches to WAL, writes and closes: SQLite removes -wal and -shm.
    let mut orchestrator = Orchestrator::start(&db);
    assert_eq!(orchestrator.ok("PRAGMA journal_mode=wal"), serde_json::json!([["wal"]]));
    orchestrator.ok("UPDATE tasks SET title = 'switched'");
    orchestrator.ok("close");
    assert!(!with_suffix(&db, "-wal").exists());
    // Asked at once (a pooled connection may still be open) and again later (none is).
    for _ in 0..2 {
        let answer = serve.ask("ORCH-055", "monitoring");
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains("WAL mode")),
            "{answer}"
        );
        assert!(!with_suffix(&db, "-wal").exists(), "deploy-guard created the -wal file");
        assert!(!with_suffix(&db, "-shm").exists(), "deploy-guard created the -shm file");
        std::thread::park_timeout(Duration::from_millis(300));
    }
    // The orchestrator opens its database again and writes: nothing of deploy-guard's
    // is in its way, and its files are its own.
    orchestrator.ok("open");
    orchestrator.ok("UPDATE tasks SET title = 'still writable'");
    for suffix in ["-wal", "-shm"] {
        let meta = std::fs::metadata(with_suffix(&db, suffix)).expect("the orchestrator's side file");
        assert_eq!(meta.uid(), std::fs::metadata(&db).expect("db").uid(), "{suffix}");
    }
    // With the orchestrator's -wal and -shm there, decisions are read again.
    let answer = serve.ask("ORCH-055", "monitoring");
    assert_eq!(answer["verdict"], "SUPPRESS", "{answer}");
    assert_eq!(serve.finish(), Some(0));
}

// ---------------------------------------------------------------------------------
// 3. The side files are looked for where SQLite looks: beside the resolved path.

#[test]
fn a_symlinked_database_path_is_checked_where_sqlite_resolves_it() {
    let ws = open_workspace();
    let db = ws.db();
    let links = tempfile::tempdir().expect("tempdir");
    let link = links.path().join("linked.db");
    std::os::unix::fs::symlink(&db, &link).expect("symlink");
    let command = || {
        let mut command = deploy_guard_as_other_user();
        command
            .env("DEPLOY_GUARD_DB", &link)
            .env("DEPLOY_GUARD_POLICY", ws.policy())
            .env("DEPLOY_GUARD_LOG", "json");
        command
    };
    // The real database open in WAL mode by the orchestrator: decided right, not a
    // fail-safe with a false reason.
    let mut orchestrator = Orchestrator::start(&db);
    orchestrator.ok("PRAGMA journal_mode=wal");
    orchestrator.ok("UPDATE tasks SET title = 'x'");
    let (answer, _) = decide(command(), "ORCH-055", "monitoring");
    assert_eq!(answer["verdict"], "SUPPRESS", "{answer}");
    // The orchestrator closes it; a stray -wal beside the link must not fool the check.
    orchestrator.ok("close");
    assert!(!with_suffix(&db, "-wal").exists());
    std::fs::write(with_suffix(&link, "-wal"), b"").expect("stray -wal");
    let (answer, _) = decide(command(), "ORCH-055", "monitoring");
    assert_eq!(answer["rule"], "fail-safe", "{answer}");
    assert!(
        !with_suffix(&db, "-wal").exists(),
        "the real database's -wal was created"
    );
    assert!(
        !with_suffix(&db, "-shm").exists(),
        "the real database's -shm was created"
    );
}

// ---------------------------------------------------------------------------------
// 4. An idle deploy-guard never keeps the orchestrator from leaving WAL mode.

#[test]
fn the_orchestrator_leaves_wal_mode_while_serve_sits_idle() {
    let ws = Workspace::story();
    let db = ws.db();
    let mut orchestrator = Orchestrator::start(&db);
    orchestrator.ok("PRAGMA journal_mode=wal");
    orchestrator.ok("UPDATE tasks SET title = 'x'");
    let mut serve = ServeChild::start(ws.command());
    assert_eq!(serve.ask("ORCH-055", "monitoring")["verdict"], "SUPPRESS");
    // serve sits idle. The orchestrator's switch (which never waits for a lock) must
    // succeed once the idle connection is closed; without that it fails for ever.
    let start = Instant::now();
    let mut last;
    loop {
        match orchestrator.run("PRAGMA journal_mode=delete") {
            Ok(rows) if rows == serde_json::json!([["delete"]]) => break,
            Ok(rows) => last = rows.to_string(),
            Err(e) => last = e,
        }
        assert!(
            start.elapsed() < CEILING,
            "the orchestrator could not leave WAL mode while serve sat idle: {last}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
    // A checkpoint-and-write cycle goes on, and serve still answers.
    orchestrator.ok("UPDATE tasks SET stage = 'done' WHERE work_item_id = 'ORCH-055'");
    assert_eq!(serve.ask("ORCH-055", "monitoring")["verdict"], "CONVERGE_DONE");
    assert_eq!(serve.finish(), Some(0));
}

/// How many descriptors of this process are open on `path`.
fn descriptors_on(path: &Path) -> usize {
    let path = std::fs::canonicalize(path).expect("canonical path");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| *target == path)
        .count()
}

/// The reaper closes a connection once it has been idle for `IDLE_CLOSE` (100 ms),
/// never sooner. How much later depends on the machine's load (the reaper is a thread
/// that must get a core), so that is not bounded here: the close is waited for.
#[test]
fn an_idle_connection_is_closed_after_the_idle_time() {
    use deploy_guard::facts::source::{FactsSource, IDLE_CLOSE};
    let ws = Workspace::story();
    let facts = FactsSource::new(ws.db(), Duration::from_millis(250));
    // A read hands its connection back to the pool, idle. Seeing it there races the
    // reaper (a test thread preempted for 100 ms finds it closed already): the read is
    // repeated until the connection is seen idle. Finding it closed sooner than
    // IDLE_CLOSE after the read began fails at once: no load makes the reaper early.
    let read_began = wait_for("a connection seen idle after a read", || {
        let began = Instant::now();
        assert!(facts.read("ORCH-061").expect("read").is_some());
        if facts.idle_connections() == 1 {
            return Some(began);
        }
        let looked = began.elapsed();
        assert!(
            looked >= IDLE_CLOSE,
            "the idle connection was closed {looked:?} after its read began, before {IDLE_CLOSE:?}"
        );
        None
    });
    wait_for("the idle connection closed", || {
        (facts.idle_connections() == 0).then_some(())
    });
    let closed_within = read_began.elapsed();
    eprintln!("closed within {closed_within:?} of the read");
    assert!(
        closed_within >= IDLE_CLOSE,
        "closed {closed_within:?} after the read began, before {IDLE_CLOSE:?}"
    );
    // Closed, not only forgotten: SQLite's descriptor of the database is gone; what
    // remains open is the one the source keeps to read the header (`facts/source.rs`).
    wait_for("SQLite's descriptor of the database closed", || {
        (descriptors_on(&ws.db()) == 1).then_some(())
    });
}

// ---------------------------------------------------------------------------------
// 5 and 6. Roll back: a compare-and-swap, never over a symlink.

fn refresh_until(guard: &Guard, done: impl Fn(&Guard) -> bool) {
    wait_for("the policy file change acted on", || {
        if done(guard) {
            return Some(());
        }
        guard.refresh();
        None
    });
}

/// The log lines (text) written on this thread while `work` runs.
fn logged_while(work: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }
    let sink = Sink::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, work);
    let bytes = sink.0.lock().expect("sink").clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Make the live-trap policy fail until probation rolls it back.
fn fail_until_rolled_back(guard: &Guard) {
    for i in 0..deploy_guard::rollout::slot::ROLLBACK_FAILURES {
        let d = guard.decide(&format!("B-{i}"), Target::Awaiting, None);
        assert_eq!(d.rule, "fail-safe");
    }
    assert_eq!(
        guard.policy().map(|p| p.name.clone()).as_deref(),
        Some("deploy-status-guard"),
        "rolled back"
    );
}

#[test]
fn a_roll_back_never_writes_over_a_fix_the_operator_put_in_place() {
    let ws = Workspace::story();
    let guard = Guard::new(ws.config()).expect("guard");
    write_atomically(&ws.policy(), hostile::LIVE_TRAP);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.name == "live-trap"));
    // The operator renames a fixed policy into place; the failures come before the
    // watcher has looked.
    write_atomically(&ws.policy(), NEXT);
    fail_until_rolled_back(&guard);
    assert!(
        std::fs::read(ws.policy()).expect("policy") == NEXT,
        "the operator's fix was overwritten"
    );
    // The fix goes through the gate as any candidate and goes live.
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.1.0"));
    // The control: with the bad policy still in the file, the good one is written back.
    write_atomically(&ws.policy(), REFERENCE);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.2.0"));
    let ws2 = Workspace::story();
    let guard2 = Guard::new(ws2.config()).expect("guard");
    write_atomically(&ws2.policy(), hostile::LIVE_TRAP);
    refresh_until(&guard2, |g| g.policy().is_some_and(|p| p.name == "live-trap"));
    fail_until_rolled_back(&guard2);
    assert!(
        std::fs::read(ws2.policy()).expect("policy") == REFERENCE,
        "written back"
    );
}

#[test]
fn a_roll_back_never_replaces_a_symlinked_policy_and_the_link_keeps_being_followed() {
    // A Kubernetes ConfigMap mount: the policy path is a link into a data directory.
    let ws = Workspace::story();
    let data = ws.dir.path().join("..data");
    std::fs::create_dir(&data).expect("mkdir");
    let target = data.join("deploy-status-guard.wasm");
    write_atomically(&target, REFERENCE);
    std::fs::remove_file(ws.policy()).expect("remove");
    std::os::unix::fs::symlink(&target, ws.policy()).expect("symlink");
    let guard = Guard::new(ws.config()).expect("guard");
    write_atomically(&target, hostile::LIVE_TRAP);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.name == "live-trap"));
    let log = logged_while(|| fail_until_rolled_back(&guard));
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    assert!(is_link(&ws.policy()), "the link was replaced");
    assert!(
        std::fs::read(&target).expect("target") == hostile::LIVE_TRAP,
        "the file still holds the bad policy (it was not safe to put back)"
    );
    // The log says so: the roll back holds in memory, the file still holds the bad
    // policy, which stays refused.
    let bad = sha256_digest(hostile::LIVE_TRAP);
    assert!(
        log.lines()
            .any(|line| line.contains("the roll back holds in memory only")
                && line.contains("the file still holds live-trap@")
                && line.contains(&bad)
                && line.contains("which stays refused")),
        "{log}"
    );
    // Nothing to act on (the roll back left the file alone), and the bad policy stays
    // refused while the file holds it: its bytes written again are refused as before.
    for _ in 0..3 {
        assert_eq!(guard.refresh_policy(), None);
    }
    write_atomically(&target, hostile::LIVE_TRAP);
    match wait_for("the rewritten file acted on", || guard.refresh_policy()) {
        Outcome::Refused(why) => assert_eq!(why, format!("{bad} was refused before")),
        other => panic!("the bad policy was not refused again: {other:?}"),
    }
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.2.0"));
    // An update of the link's target is still followed.
    write_atomically(&target, NEXT);
    refresh_until(&guard, |g| g.policy().is_some_and(|p| p.version == "1.1.0"));
    // `deploy-guard rollback` follows the same rule.
    let output = Command::new(binary())
        .args(["rollback", "--policy"])
        .arg(ws.policy())
        .env_clear()
        .bounded_output();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("symbolic link"), "{stdout}");
    assert!(is_link(&ws.policy()), "the rollback command replaced the link");
    assert!(std::fs::read(&target).expect("target") == NEXT);
}

// ---------------------------------------------------------------------------------
// 7. A FIFO, /dev/zero or an oversized file where a file should be.

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo");
}

#[test]
fn decide_never_blocks_or_grows_on_a_fifo_a_device_or_an_oversized_file() {
    let ws = Workspace::story();
    let fifo = ws.dir.path().join("fifo");
    mkfifo(&fifo);
    let oversized = ws.dir.path().join("oversized.wasm");
    let file = std::fs::File::create(&oversized).expect("create");
    file.set_len(deploy_guard::files::read::MAX_POLICY_BYTES + 1)
        .expect("sparse file");
    let zero = PathBuf::from("/dev/zero");
    // The policy.
    for (path, cause) in [
        (&fifo, "not a regular file (a FIFO)"),
        (&zero, "not a regular file (a character device)"),
        (&oversized, "larger than 67108864 bytes"),
    ] {
        let mut command = ws.command();
        command.env("DEPLOY_GUARD_POLICY", path);
        let (answer, _) = decide(command, "ORCH-055", "monitoring");
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains(cause)), "{answer}");
    }
    // The config file: a FIFO, /dev/zero, one byte over its bound (4 MiB); and, the
    // other side of the bound, a file of exactly 4 MiB is read.
    let max_config = deploy_guard::files::read::MAX_CONFIG_BYTES;
    let config_over = ws.dir.path().join("over.toml");
    std::fs::write(&config_over, padded("enabled = true\n", '#', max_config + 1)).expect("write");
    let config_at = ws.dir.path().join("at.toml");
    std::fs::write(&config_at, padded("enabled = true\n", '#', max_config)).expect("write");
    let config_too_large = format!("larger than {max_config} bytes");
    for (path, cause) in [
        (&fifo, "a FIFO"),
        (&zero, "a character device"),
        (&config_over, config_too_large.as_str()),
    ] {
        let mut command = ws.command();
        command.env("DEPLOY_GUARD_CONFIG", path);
        let (answer, _) = decide(command, "ORCH-055", "monitoring");
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("config") && e.contains(cause)),
            "{answer}"
        );
    }
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_CONFIG", &config_at);
    let (answer, _) = decide(command, "ORCH-055", "monitoring");
    assert_eq!(
        (answer["rule"].as_str(), &answer["error"]),
        (Some("cancelled"), &Value::Null),
        "{answer}"
    );
    // The vectors beside the policy: a FIFO, /dev/zero (through a symlink: the path is
    // fixed), one byte over their bound (4 MiB); and a file of exactly 4 MiB (the
    // reference's own vectors, padded with spaces) is read, and they pass.
    let vectors = deploy_guard::admission::vectors::vectors_path(&ws.policy());
    let max_vectors = deploy_guard::files::read::MAX_VECTORS_BYTES;
    let own_vectors = include_str!("../../policies/deploy-status-guard.vectors.json");
    let vectors_too_large = format!("larger than {max_vectors} bytes");
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(Make<'_>, &str); 3] = [
        (&|path| mkfifo(path), "not a regular file (a FIFO)"),
        (
            &|path| std::os::unix::fs::symlink(&zero, path).expect("symlink"),
            "not a regular file (a character device)",
        ),
        (
            &|path| std::fs::write(path, padded(own_vectors, ' ', max_vectors + 1)).expect("write"),
            vectors_too_large.as_str(),
        ),
    ];
    for (make, cause) in cases {
        make(&vectors);
        let (answer, _) = decide(ws.command(), "ORCH-055", "monitoring");
        assert_eq!(answer["rule"], "fail-safe", "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("vectors") && e.contains(cause)),
            "{answer}"
        );
        std::fs::remove_file(&vectors).expect("remove");
    }
    std::fs::write(&vectors, padded(own_vectors, ' ', max_vectors)).expect("write");
    let (answer, _) = decide(ws.command(), "ORCH-055", "monitoring");
    assert_eq!(
        (answer["rule"].as_str(), &answer["error"]),
        (Some("cancelled"), &Value::Null),
        "{answer}"
    );
}

/// `text` followed by `pad` up to `len` bytes in all (a comment line in TOML, blanks
/// in JSON), ending with a newline.
fn padded(text: &str, pad: char, len: u64) -> Vec<u8> {
    let len = usize::try_from(len).expect("a length");
    let mut bytes = text.as_bytes().to_vec();
    assert!(bytes.len() + 2 <= len);
    bytes.resize(len - 1, pad as u8);
    bytes.push(b'\n');
    bytes
}

#[test]
fn a_fifo_renamed_over_the_policy_never_wedges_the_watcher() {
    let ws = Workspace::story();
    let mut serve = ServeChild::start(ws.command());
    assert_eq!(serve.ask("ORCH-055", "monitoring")["verdict"], "SUPPRESS");
    let fifo = ws.dir.path().join("policies/incoming");
    mkfifo(&fifo);
    std::fs::rename(&fifo, ws.policy()).expect("rename the FIFO over the policy");
    // The watcher looks at the FIFO (its refusal is logged) and goes on: the running
    // policy keeps answering.
    let refusal = serve.wait_for_log(CEILING, |line| line.contains("not a regular file (a FIFO)"));
    assert!(refusal.contains("keeping deploy-status-guard@1.2.0"), "{refusal}");
    let answer = serve.ask("ORCH-081", "awaiting");
    assert_eq!(
        (answer["policy"].as_str(), answer["rule"].as_str()),
        (Some("deploy-status-guard@1.2.0"), Some("non-terminal")),
        "{answer}"
    );
    // A good policy renamed over it later goes live.
    write_atomically(&ws.policy(), NEXT);
    let answer = wait_for("the next policy live", || {
        let answer = serve.ask("ORCH-081", "awaiting");
        (answer["policy"] == "deploy-status-guard@1.1.0").then_some(answer)
    });
    assert_eq!(answer["rule"], "failed");
    // And at end of input serve exits.
    assert_eq!(serve.finish(), Some(0));
}

// ---------------------------------------------------------------------------------
// 8. No field of the text decision line can forge a line or move a terminal.

#[test]
fn the_text_decision_line_escapes_every_field() {
    let ws = Workspace::story();
    let db = rusqlite::Connection::open(ws.db()).expect("open");
    let work_item = "EVIL-1\n2026-01-01T00:00:00Z  WARN deploy_guard::decision: verdict=SUPPRESS\u{1b}[31m";
    db.execute(
        "INSERT INTO tasks (work_item_id, repo, stage) VALUES (?1, 'orchestrator', ?2)",
        [work_item, "done\n2026-01-01T00:00:00Z  WARN forged stage\u{1b}[2J"],
    )
    .expect("insert");
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_LOG", "text").env("RUST_LOG", "info");
    let caller = "tick\r\nforged caller\u{202e}";
    let (answer, stderr) = decide_with(
        command,
        &["--work-item", work_item, "--target", "monitoring", "--caller", caller],
    );
    // The answer keeps the values as they are; the line escapes them.
    assert_eq!(answer["work_item"], work_item);
    // The forged text names the decision target too: were it not escaped, two lines
    // would.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("deploy_guard::decision"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line per decision: {stderr:?}");
    assert!(lines[0].contains("deploy_status_guard decision"), "{stderr:?}");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\r') && !stderr.contains('\u{202e}'));
    for escaped in [
        "EVIL-1\\u{a}2026",
        "\\u{1b}[31m",
        "tick\\u{d}\\u{a}forged",
        "\\u{202e}",
        "done\\u{a}",
    ] {
        assert!(lines[0].contains(escaped), "{escaped} missing in {:?}", lines[0]);
    }
}

#[test]
fn a_rule_with_control_characters_is_an_invalid_result_and_refused_by_the_gate() {
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let limits = deploy_guard::Limits::DEFAULT;
    let policy = LoadedPolicy::load(&sandbox, hostile::FORGED_LINE_RULE, limits).expect("loads");
    let facts = deploy_guard::admission::grid::fact_grid()
        .into_iter()
        .next()
        .expect("a grid case")
        .facts;
    match policy.rule(&facts.question()) {
        Err(RunError::InvalidResult(message)) => {
            assert!(message.contains("control or format characters"), "{message}");
            assert!(!message.contains('\n') && !message.contains('\u{1b}'), "{message:?}");
        }
        other => panic!("expected an invalid result, got {other:?}"),
    }
    let refused =
        deploy_guard::admission::gate::admit(&sandbox, hostile::FORGED_LINE_RULE, limits, None).expect_err("refused");
    assert!(refused.to_string().contains("control or format"), "{refused}");
}

#[test]
fn a_policy_name_with_a_format_character_is_refused_at_the_gate() {
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    match LoadedPolicy::load(&sandbox, hostile::LOOK_ALIKE_NAME, deploy_guard::Limits::DEFAULT) {
        Err(LoadError::Info(message)) => {
            assert!(message.contains("format characters"), "{message}");
            assert!(message.contains("\\u{200b}"), "the message shows it: {message}");
        }
        other => panic!(
            "expected a refusal of the name, got {:?}",
            other.map(|p| p.identity().to_owned())
        ),
    }
    for c in [
        '\u{202e}',
        '\u{2066}',
        '\u{200b}',
        '\u{feff}',
        '\u{ad}',
        '\u{e0041}',
        '\n',
        '\u{7f}',
    ] {
        assert!(deploy_guard::decision::is_control_or_format(c), "{c:?}");
    }
    for c in ['a', 'é', '-', '@', '\u{2028}', ' '] {
        assert!(!deploy_guard::decision::is_control_or_format(c), "{c:?}");
    }
}

// ---------------------------------------------------------------------------------
// Minor items.

#[test]
fn json_logs_write_a_missing_caller_as_null() {
    let ws = Workspace::story();
    let mut command = ws.command();
    command.env("RUST_LOG", "info");
    let (answer, stderr) = decide(command, "ORCH-061", "monitoring");
    assert_eq!(answer["caller"], Value::Null);
    let line: Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "deploy_guard::decision")
        .unwrap_or_else(|| panic!("no decision line: {stderr}"));
    assert_eq!(line["fields"]["caller"], Value::Null, "{line}");
    assert_eq!(line["fields"]["error"], Value::Null, "{line}");
    assert_eq!(line["fields"]["window_active"], false, "{line}");
    assert_eq!(line["fields"]["verdict"], "CONVERGE_DONE", "{line}");
}

#[test]
fn a_scope_that_is_a_number_is_a_warning_not_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, "repos = 5\nself_hosting_repos = [\"orchestrator\", 7]\n").expect("write");
    let path = file.display().to_string();
    let config = deploy_guard::Config::load_from(
        |n| (n == "DEPLOY_GUARD_CONFIG").then(|| path.clone()),
        &deploy_guard::Overrides::default(),
    );
    assert!(config.scope_repos.is_empty(), "{:?}", config.scope_repos);
    assert_eq!(config.self_hosting_repos, ["orchestrator"]);
    assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("`repos`") && config.warnings[0].contains("integer"));
    assert!(config.warnings[1].contains("`self_hosting_repos`"));
}

/// Keeps `insert_story` and `Verdict` in use for the fixtures above (and documents
/// that the story's verdicts are what these tests rely on).
#[test]
fn the_story_decides_as_the_tests_above_expect() {
    let ws = Workspace::new();
    insert_story(&ws.create_db());
    ws.install_reference();
    let guard = Guard::new(ws.config()).expect("guard");
    assert_eq!(
        guard.decide("ORCH-055", Target::Monitoring, None).verdict,
        Verdict::Suppress
    );
}

#[test]
#[ignore = "a measurement for the README, not a guarantee"]
fn measure_whitespace_limit() {
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let policy = LoadedPolicy::load(&sandbox, REFERENCE, deploy_guard::Limits::DEFAULT).expect("loads");
    let facts = |stage: String| deploy_guard::sandbox::question::FactsRecord {
        work_item: "W".into(),
        ask: deploy_guard::decision::Ask::Decide(Target::Monitoring),
        caller: None,
        task: Some(deploy_guard::sandbox::question::RecordTask {
            repo: "orchestrator".into(),
            stage,
        }),
        window_active: Some(false),
        scope_repos: vec![],
        self_hosting_repos: vec!["orchestrator".into()],
    };
    for (name, unit) in [
        ("uniform", " "),
        ("mixed", " \t\n\r\u{b}\u{c}\u{a0}\u{2003}\u{3000}\u{1c}"),
    ] {
        let pad = |bytes: usize| unit.repeat(bytes / unit.len() / 2 + 1);
        let (mut lo, mut hi) = (1usize, 64 << 20);
        while hi - lo > 4096 {
            let mid = lo + (hi - lo) / 2;
            let p = pad(mid);
            let stage = format!("{p}done{p}");
            match policy.rule(&facts(stage).question()) {
                Ok(r) => {
                    assert_eq!(r.rule, "converge-done");
                    lo = mid;
                }
                Err(e) => {
                    eprintln!("{name} {mid}: {e}");
                    hi = mid;
                }
            }
        }
        eprintln!("{name}: judged up to about {lo} bytes of padding");
    }
}

#[test]
fn a_config_reload_that_points_the_database_at_the_ledger_closes_the_ledger() {
    let ws = Workspace::story();
    let ledger = ws.dir.path().join("ledger.db");
    let config = ws.dir.path().join("guard.toml");
    let write_config = |db: &Path| {
        write_atomically(
            &config,
            format!(
                "db = {:?}\nledger = {:?}\n",
                db.display().to_string(),
                ledger.display().to_string()
            )
            .as_bytes(),
        );
    };
    write_config(&ws.db());
    let mut command = ws.command();
    command.env("DEPLOY_GUARD_CONFIG", &config);
    let mut serve = ServeChild::start(command);
    assert_eq!(serve.ask("ORCH-055", "monitoring")["verdict"], "SUPPRESS");
    // The operator points the database at the ledger's own WAL.
    write_config(&with_suffix(&ledger, "-wal"));
    wait_for("the ledger closed", || {
        // Decisions go on meanwhile (whatever they read).
        serve.ask("ORCH-055", "monitoring");
        serve.logged(|line| line.contains("the ledger is closed"))
    });
    let recorded = deploy_guard::observe::ledger::read_ledger(&ledger)
        .expect("the ledger reads")
        .len();
    for _ in 0..20 {
        serve.ask("ORCH-055", "monitoring");
    }
    assert_eq!(serve.finish(), Some(0));
    assert_eq!(
        deploy_guard::observe::ledger::read_ledger(&ledger)
            .expect("the ledger reads")
            .len(),
        recorded,
        "the ledger went on writing"
    );
}
