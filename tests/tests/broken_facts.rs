//! Broken facts: whatever is wrong with the orchestrator's database, every decision is
//! a fail-safe ALLOW naming the cause (or, for the sentinels alone, a decision with the
//! window unknown), nothing panics, and the guard creates or changes no file.
//!
//! Each case checks, as far as it applies:
//! - the decision: verdict ALLOW, rule `fail-safe`, no policy identity, the error
//!   naming the cause (an exact substring of SQLite's or the host's message);
//! - the disk: a snapshot of the workspace (every entry, every file's length, digest
//!   and mtime) before the decisions equals the one after: no `-journal`, `-wal` or
//!   `-shm` appears, the database is not touched. For a WAL database, where a reader
//!   needs the wal-index, the main file and the WAL must be unchanged and only the
//!   `-shm` may change; with no other connection open, SQLite's read-only reader also
//!   leaves an empty `-wal` and a `-shm` behind (see
//!   `a_wal_database_is_read_without_changing_it`);
//! - recovery: once the database is sound again, the next decision is right, with no
//!   restart.
//!
//! The `serve_*` cases drive the built binary as a child process (build it first with
//! `cargo build --release -p deploy-guard`).
//!
//! A trap for whoever extends this file: POSIX drops every lock a process holds on a
//! file when the process closes *any* descriptor of that file. A snapshot that reads
//! the database while a writer of this process holds its lock silently releases that
//! lock for other processes (the `serve` child would then read straight through it);
//! hence [`stat_snapshot`] there, and never reading a `-shm`.

use deploy_guard::{Config, Decision, Guard, Target, Verdict};
use deploy_guard_e2e::{CEILING, ServeChild, Workspace, noise, within};
use rusqlite::Connection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------
// Fixtures: the story database
// ---------------------------------------------------------------------------------

/// The orchestrator's schema (the tables the guard reads, and one more column).
const SCHEMA: &str = "
    CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, stage TEXT, title TEXT);
    CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);";

/// Rows of filler tasks, so that the file has many pages (a cut in half lands inside
/// the tasks table).
const FILLER: &str = "
    INSERT INTO tasks (work_item_id, repo, stage)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
    SELECT 'FILL-' || i, 'orchestrator', 'deploy' FROM n;";

/// The journal mode of a database the tests build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Journal {
    /// The SQLite default (`DELETE`): readers take a shared lock on the file.
    Rollback,
    /// Write-ahead log: readers never wait for the writer.
    Wal,
}

/// Build the story database at `path` (which must not exist) and close it:
/// - ORCH-061: orchestrator, `stage_061`, window armed and done (closed);
/// - ORCH-072: orchestrator, deploy;
/// - ORCH-055: orchestrator, cancelled;
/// - ORCH-090: orchestrator, done, window armed (active);
/// - 2000 filler tasks.
fn build_story(path: &Path, stage_061: &str, journal: Journal) {
    let db = Connection::open(path).expect("creating a database");
    if journal == Journal::Wal {
        let mode: String = db
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .expect("switching to WAL");
        assert_eq!(mode, "wal");
    }
    db.execute_batch(SCHEMA).expect("creating the schema");
    db.execute_batch(&format!("BEGIN; {FILLER} COMMIT;"))
        .expect("inserting the filler");
    for (work_item, stage) in [
        ("ORCH-061", stage_061),
        ("ORCH-072", "deploy"),
        ("ORCH-055", "cancelled"),
        ("ORCH-090", "done"),
    ] {
        db.execute(
            "INSERT INTO tasks (work_item_id, repo, stage) VALUES (?1, 'orchestrator', ?2)",
            (work_item, stage),
        )
        .expect("inserting a task");
    }
    for (work_item, sentinel) in [("ORCH-061", "ARMED"), ("ORCH-061", "DONE"), ("ORCH-090", "ARMED")] {
        db.execute(
            "INSERT INTO post_deploy_sentinels (repo, work_item_id, sentinel) VALUES ('orchestrator', ?1, ?2)",
            (work_item, sentinel),
        )
        .expect("inserting a sentinel");
    }
    // Closing the last connection checkpoints a WAL database and removes its -wal and
    // -shm: the file stands alone, as the orchestrator leaves it when it stops.
    db.close().expect("closing the database");
}

/// Build the story database beside `path` and rename it over `path` (a new inode).
fn replace_with_story(path: &Path, stage_061: &str) {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    build_story(&tmp, stage_061, Journal::Rollback);
    std::fs::rename(&tmp, path).expect("renaming the new database over the old one");
}

/// A workspace holding the reference policy and nothing else.
fn bare_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.install_reference();
    ws
}

/// A workspace with the story database (ORCH-061 done) and the reference policy.
fn story(journal: Journal) -> Workspace {
    let ws = bare_workspace();
    build_story(&ws.db(), "done", journal);
    ws
}

/// A workspace whose database is created by `schema` (SQL run on a fresh file).
fn with_schema(schema: &str) -> Workspace {
    let ws = bare_workspace();
    let db = Connection::open(ws.db()).expect("creating the database");
    db.execute_batch(schema).expect("creating the schema");
    db.close().expect("closing the database");
    ws
}

fn guard_with(config: Config) -> Guard {
    let guard = Guard::new(config).expect("starting a guard");
    assert!(guard.policy().is_some(), "the reference policy did not load");
    guard
}

fn guard(ws: &Workspace) -> Guard {
    guard_with(ws.config())
}

// ---------------------------------------------------------------------------------
// Fixtures: the disk, before and after
// ---------------------------------------------------------------------------------

/// One entry of a directory tree, as far as the guard could change it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    Symlink(PathBuf),
    File {
        len: u64,
        inode: u64,
        modified: SystemTime,
        /// The digest of the bytes; `None` in a [`stat_snapshot`], and for a `-shm`.
        digest: Option<String>,
    },
}

/// Every entry under a directory, by path relative to it.
type Snapshot = BTreeMap<PathBuf, Entry>;

/// The directory listing of `root` (recursively) with every file's length, inode,
/// mtime and the digest of its bytes; symlinks are not followed. (Not the ctime: as
/// root, SQLite `fchown`s a `-wal` to its database's owner whenever it opens it, a
/// no-op that only moves the ctime.)
///
/// A `-shm` file is never opened: closing any descriptor of a file drops every POSIX
/// lock the process holds on it, and a WAL connection holds its locks on the `-shm`
/// (and on the database) for as long as it is open.
fn snapshot(root: &Path) -> Snapshot {
    walk(root, true)
}

/// [`snapshot`] from metadata alone, opening no file: what may be taken while a
/// writer of this process holds its lock (reading the database, and closing the
/// descriptor, would silently release that lock for every other process).
fn stat_snapshot(root: &Path) -> Snapshot {
    walk(root, false)
}

fn walk(root: &Path, read_bytes: bool) -> Snapshot {
    fn walk_into(root: &Path, dir: &Path, read_bytes: bool, into: &mut Snapshot) {
        for entry in std::fs::read_dir(dir).expect("listing a directory") {
            let path = entry.expect("a directory entry").path();
            let relative = path.strip_prefix(root).expect("under the root").to_owned();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let entry = if meta.file_type().is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).expect("reading a symlink"))
            } else if meta.is_dir() {
                walk_into(root, &path, read_bytes, into);
                Entry::Dir
            } else {
                let shm = path.to_string_lossy().ends_with("-shm");
                Entry::File {
                    len: meta.len(),
                    inode: meta.ino(),
                    modified: meta.modified().expect("mtime"),
                    digest: (read_bytes && !shm)
                        .then(|| deploy_guard_e2e::sha256_digest(&std::fs::read(&path).expect("reading"))),
                }
            };
            into.insert(relative, entry);
        }
    }
    let mut snapshot = Snapshot::new();
    walk_into(root, root, read_bytes, &mut snapshot);
    snapshot
}

/// What differs between two snapshots, one line per path.
fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, entry) in before {
        match after.get(path) {
            None => lines.push(format!("removed {}", path.display())),
            Some(now) if now != entry => {
                lines.push(format!("changed {}: {entry:?} -> {now:?}", path.display()));
            }
            Some(_) => {}
        }
    }
    for (path, entry) in after {
        if !before.contains_key(path) {
            lines.push(format!("created {}: {entry:?}", path.display()));
        }
    }
    lines
}

/// Nothing under `root` was created, removed or changed since `before`.
#[track_caller]
fn assert_untouched(root: &Path, before: &Snapshot) {
    let changes = differences(before, &snapshot(root));
    assert!(
        changes.is_empty(),
        "the guard touched the disk:\n{}",
        changes.join("\n")
    );
}

/// As [`assert_untouched`], for a `before` taken with [`stat_snapshot`].
#[track_caller]
fn assert_untouched_stat(root: &Path, before: &Snapshot) {
    let changes = differences(before, &stat_snapshot(root));
    assert!(
        changes.is_empty(),
        "the guard touched the disk:\n{}",
        changes.join("\n")
    );
}

/// The names in `root` (not recursive), sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The workspace holds the database, the policies and nothing else: no `-journal`,
/// `-wal` or `-shm` was left behind.
#[track_caller]
fn assert_no_side_files(ws: &Workspace) {
    assert_eq!(listing(ws.dir.path()), ["orchestrator.db", "policies"]);
}

// ---------------------------------------------------------------------------------
// Fixtures: decisions
// ---------------------------------------------------------------------------------

/// A fail-safe ALLOW whose error contains `cause`, made before any policy ran.
#[track_caller]
fn assert_fail_safe(decision: &Decision, cause: &str) {
    assert_eq!(
        (decision.verdict, decision.rule.as_str()),
        (Verdict::Allow, "fail-safe"),
        "{decision:?}"
    );
    let error = decision
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("a fail-safe without its cause: {decision:?}"));
    assert!(error.contains(cause), "{error:?} should name {cause:?}");
    assert_eq!(
        (&decision.policy, &decision.db_stage, decision.window_active),
        (&None, &None, None),
        "{decision:?}"
    );
}

/// A decision of the policy, with no error.
#[track_caller]
fn assert_decides(decision: &Decision, verdict: Verdict, rule: &str) {
    assert_eq!(
        (decision.verdict, decision.rule.as_str(), decision.error.as_deref()),
        (verdict, rule, None),
        "{decision:?}"
    );
    assert_eq!(decision.policy.as_deref(), Some("deploy-status-guard@1.2.0"));
}

/// Every target of every story work item fails safe naming `cause`.
#[track_caller]
fn assert_all_fail_safe(guard: &Guard, cause: &str) {
    for work_item in ["ORCH-061", "ORCH-072", "ORCH-055", "ORCH-090", "ORCH-404", ""] {
        for target in Target::ALL {
            assert_fail_safe(&guard.decide(work_item, target, Some("test")), cause);
        }
    }
}

/// The story answers right (ORCH-061 done): the database is sound.
#[track_caller]
fn assert_story(guard: &Guard) {
    for (work_item, target, verdict, rule) in [
        ("ORCH-061", Target::Awaiting, Verdict::ConvergeDone, "converge-done"),
        ("ORCH-061", Target::Monitoring, Verdict::ConvergeDone, "converge-done"),
        ("ORCH-072", Target::Deploying, Verdict::Allow, "non-terminal"),
        ("ORCH-055", Target::Monitoring, Verdict::Suppress, "cancelled"),
        (
            "ORCH-090",
            Target::Monitoring,
            Verdict::Allow,
            "monitoring-window-active",
        ),
        ("ORCH-404", Target::Awaiting, Verdict::Allow, "task-not-found"),
    ] {
        assert_decides(&guard.decide(work_item, target, None), verdict, rule);
    }
}

// ---------------------------------------------------------------------------------
// Missing, a directory, not a database, truncated
// ---------------------------------------------------------------------------------

#[test]
fn a_missing_database_fails_safe_creates_nothing_and_recovers_when_it_appears() {
    let ws = bare_workspace();
    let guard = guard(&ws);
    let before = snapshot(ws.dir.path());
    assert_all_fail_safe(&guard, "database: cannot open");
    let d = guard.decide("ORCH-061", Target::Awaiting, None);
    let error = d.error.expect("a cause");
    assert!(
        error.contains(&ws.db().display().to_string()) && error.contains("No such file"),
        "the error names the path and why: {error}"
    );
    assert_untouched(ws.dir.path(), &before);
    assert!(!ws.db().exists(), "the guard created the database");

    build_story(&ws.db(), "done", Journal::Rollback);
    assert_story(&guard);
    assert_no_side_files(&ws);
}

#[test]
fn a_directory_in_place_of_the_database_fails_safe_and_recovers() {
    let ws = bare_workspace();
    std::fs::create_dir(ws.db()).expect("a directory where the database should be");
    let guard = guard(&ws);
    let before = snapshot(ws.dir.path());
    assert_all_fail_safe(&guard, "database: cannot open");
    assert_fail_safe(
        &guard.decide("ORCH-061", Target::Monitoring, None),
        "not a regular file",
    );
    assert_untouched(ws.dir.path(), &before);

    std::fs::remove_dir(ws.db()).expect("removing the directory");
    build_story(&ws.db(), "done", Journal::Rollback);
    assert_story(&guard);
    assert_no_side_files(&ws);
}

#[test]
fn a_file_that_is_not_a_database_fails_safe_and_recovers() {
    let mut with_header = b"SQLite format 3\0".to_vec();
    with_header.extend(noise(8192, 7));
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("text", b"tasks: ORCH-061 done\n".repeat(500), "file is not a database"),
        ("random bytes", noise(16384, 42), "file is not a database"),
        (
            "random bytes after a SQLite header",
            with_header,
            "file is not a database",
        ),
        // SQLite reads an empty file, or one shorter than its header, as an empty
        // database: then the tables are missing.
        ("one byte", b"\n".to_vec(), "no such table: tasks"),
        ("empty", Vec::new(), "no such table: tasks"),
    ];
    for (i, (what, bytes, cause)) in cases.into_iter().enumerate() {
        let ws = bare_workspace();
        std::fs::write(ws.db(), &bytes).expect("writing the file");
        let guard = guard(&ws);
        let before = snapshot(ws.dir.path());
        for target in Target::ALL {
            let d = guard.decide("ORCH-061", target, None);
            assert_fail_safe(&d, cause);
            assert!(
                d.error.as_deref().is_some_and(|e| e.starts_with("database: ")),
                "{what}: {d:?}"
            );
        }
        assert_untouched(ws.dir.path(), &before);
        assert_eq!(std::fs::read(ws.db()).expect("read"), bytes, "{what}");

        // Recovery, by a rename over it (a new inode) or by writing the same file in
        // place (the same inode: the connection that failed was not kept).
        let good = ws.dir.path().join("good.db");
        build_story(&good, "done", Journal::Rollback);
        if i % 2 == 0 {
            std::fs::rename(&good, ws.db()).expect("rename");
        } else {
            std::fs::write(ws.db(), std::fs::read(&good).expect("read")).expect("write");
            std::fs::remove_file(&good).expect("remove");
        }
        assert_story(&guard);
        assert_no_side_files(&ws);
    }
}

#[test]
fn a_truncated_database_fails_safe_and_recovers() {
    for cut in ["half", "100 bytes"] {
        for warm in [false, true] {
            let ws = story(Journal::Rollback);
            let whole = std::fs::read(ws.db()).expect("read");
            assert!(whole.len() > 64 * 1024, "the story spans many pages");
            let len = if cut == "half" { whole.len() / 2 } else { 100 };
            let guard = guard(&ws);
            if warm {
                // A pooled connection that has read the whole file, with its cache.
                assert_story(&guard);
            }
            // Truncate in place: the same inode, the same header.
            std::fs::OpenOptions::new()
                .write(true)
                .open(ws.db())
                .expect("open")
                .set_len(len as u64)
                .expect("truncate");
            let before = snapshot(ws.dir.path());
            assert_all_fail_safe(&guard, "database disk image is malformed");
            assert_untouched(ws.dir.path(), &before);

            std::fs::write(ws.db(), &whole).expect("restoring the file in place");
            assert_story(&guard);
            assert_no_side_files(&ws);
            assert_eq!(std::fs::read(ws.db()).expect("read"), whole, "{cut}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Tables, columns, values
// ---------------------------------------------------------------------------------

#[test]
fn missing_tasks_fail_safe() {
    for schema in [
        "CREATE TABLE unrelated (x);",
        "CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);",
        "CREATE TABLE task (work_item_id TEXT, repo TEXT, stage TEXT);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);",
    ] {
        let ws = with_schema(schema);
        let guard = guard(&ws);
        let before = snapshot(ws.dir.path());
        assert_all_fail_safe(&guard, "no such table: tasks");
        assert_untouched(ws.dir.path(), &before);

        // The orchestrator migrates: the next decision is right.
        let db = Connection::open(ws.db()).expect("open");
        db.execute_batch(
            "DROP TABLE IF EXISTS post_deploy_sentinels;
             CREATE TABLE tasks (work_item_id TEXT, repo TEXT, stage TEXT);
             CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
             INSERT INTO tasks VALUES ('ORCH-061', 'orchestrator', 'done');",
        )
        .expect("migrating");
        drop(db);
        assert_decides(
            &guard.decide("ORCH-061", Target::Monitoring, None),
            Verdict::ConvergeDone,
            "converge-done",
        );
        assert_no_side_files(&ws);
    }
}

#[test]
fn tasks_without_a_column_fail_safe() {
    for (columns, missing) in [
        ("work_item_id TEXT, repo TEXT, title TEXT", "no such column: t.stage"),
        ("work_item_id TEXT, stage TEXT", "no such column: t.repo"),
        ("repo TEXT, stage TEXT", "no such column: t.work_item_id"),
    ] {
        let ws = with_schema(&format!(
            "CREATE TABLE tasks ({columns});
             CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);"
        ));
        let guard = guard(&ws);
        let before = snapshot(ws.dir.path());
        assert_all_fail_safe(&guard, missing);
        assert_untouched(ws.dir.path(), &before);
    }
}

/// CONTRACT.md: "a failed window read is not a fail-safe: the policy gets
/// window-active: none, and the cause goes into error". The seed reads the sentinels
/// only for monitoring a done task; everywhere else its verdict does not depend on them.
#[track_caller]
fn assert_window_unknown(guard: &Guard, cause: &str) {
    let named = |d: &Decision| {
        let error = d.error.as_deref().unwrap_or("");
        assert!(
            error.contains("post-deploy window unreadable") && error.contains(cause),
            "{error:?} should name the window and {cause:?}"
        );
        assert_eq!(d.window_active, None, "{d:?}");
        assert_eq!(d.policy.as_deref(), Some("deploy-status-guard@1.2.0"));
    };
    for (work_item, target, verdict, rule, stage) in [
        ("ORCH-061", Target::Monitoring, Verdict::Allow, "window-unknown", "done"),
        (
            "ORCH-061",
            Target::Awaiting,
            Verdict::ConvergeDone,
            "converge-done",
            "done",
        ),
        (
            "ORCH-061",
            Target::Deploying,
            Verdict::ConvergeDone,
            "converge-done",
            "done",
        ),
        ("ORCH-072", Target::Monitoring, Verdict::Allow, "non-terminal", "deploy"),
        (
            "ORCH-055",
            Target::Monitoring,
            Verdict::Suppress,
            "cancelled",
            "cancelled",
        ),
    ] {
        let d = guard.decide(work_item, target, None);
        assert_eq!(
            (d.verdict, d.rule.as_str(), d.db_stage.as_deref()),
            (verdict, rule, Some(stage)),
            "{work_item} {target}: {d:?}"
        );
        named(&d);
    }
    // No task: no window to read, and nothing to say about it.
    assert_eq!(
        guard.decide("ORCH-404", Target::Monitoring, None).rule,
        "task-not-found"
    );
}

/// The three tasks of [`assert_window_unknown`].
const WINDOW_TASKS: &str = "
    CREATE TABLE tasks (work_item_id TEXT, repo TEXT, stage TEXT);
    INSERT INTO tasks VALUES ('ORCH-061', 'orchestrator', 'done'),
                             ('ORCH-072', 'orchestrator', 'deploy'),
                             ('ORCH-055', 'orchestrator', 'cancelled');";

#[test]
fn sentinels_without_a_column_or_table_give_the_window_unknown_not_a_fail_safe() {
    for (sentinels, cause) in [
        (
            "CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT);",
            "no such column: sentinel",
        ),
        (
            "CREATE TABLE post_deploy_sentinels (work_item_id TEXT, sentinel TEXT);",
            "no such column: repo",
        ),
        (
            "CREATE TABLE post_deploy_sentinels (repo TEXT, sentinel TEXT);",
            "no such column: work_item_id",
        ),
        ("", "no such table: post_deploy_sentinels"),
    ] {
        let ws = with_schema(&format!("{WINDOW_TASKS} {sentinels}"));
        let guard = guard(&ws);
        let before = snapshot(ws.dir.path());
        assert_window_unknown(&guard, cause);
        assert_untouched(ws.dir.path(), &before);

        // The orchestrator repairs the table: the window is read again.
        let db = Connection::open(ws.db()).expect("open");
        db.execute_batch(
            "DROP TABLE IF EXISTS post_deploy_sentinels;
             CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
             INSERT INTO post_deploy_sentinels VALUES ('orchestrator', 'ORCH-061', 'ARMED');",
        )
        .expect("repairing");
        drop(db);
        let d = guard.decide("ORCH-061", Target::Monitoring, None);
        assert_decides(&d, Verdict::Allow, "monitoring-window-active");
        assert_eq!(d.window_active, Some(true));
    }
}

/// The pages of the sentinels table are garbage while the tasks table is sound: the
/// statement prepares (the schema is intact) and fails while stepping. That is a
/// failed window read too, and must not turn the seed's verdicts into fail-safes.
#[test]
fn a_corrupt_sentinels_table_gives_the_window_unknown_not_a_fail_safe() {
    let ws = with_schema(&format!(
        "{WINDOW_TASKS}
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
         INSERT INTO post_deploy_sentinels VALUES ('orchestrator', 'ORCH-061', 'DONE');"
    ));
    let db = Connection::open(ws.db()).expect("open");
    let page_size: u64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page size");
    let root: u64 = db
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'post_deploy_sentinels'",
            [],
            |r| r.get(0),
        )
        .expect("root page");
    let tasks_root: u64 = db
        .query_row("SELECT rootpage FROM sqlite_master WHERE name = 'tasks'", [], |r| {
            r.get(0)
        })
        .expect("root page");
    db.close().expect("close");
    assert_ne!(root, tasks_root);
    let mut bytes = std::fs::read(ws.db()).expect("read");
    let start = usize::try_from((root - 1) * page_size).expect("offset");
    let end = start + usize::try_from(page_size).expect("page size");
    bytes[start..end].copy_from_slice(&noise(end - start, 3));
    std::fs::write(ws.db(), &bytes).expect("corrupting the sentinels page");

    let guard = guard(&ws);
    let before = snapshot(ws.dir.path());
    assert_window_unknown(&guard, "database disk image is malformed");
    assert_untouched(ws.dir.path(), &before);
}

#[test]
fn nulls_are_empty_text_and_values_of_another_type_fail_safe() {
    // Columns without a declared type keep the value as given (a TEXT column would
    // turn 42 into '42').
    let ws = with_schema(
        "CREATE TABLE tasks (work_item_id, repo, stage);
         CREATE TABLE post_deploy_sentinels (repo, work_item_id, sentinel);
         INSERT INTO tasks VALUES
            ('NULL-STAGE', 'orchestrator', NULL),
            ('NULL-REPO', NULL, 'done'),
            ('NULL-BOTH', NULL, NULL),
            (NULL, 'orchestrator', 'done'),
            ('', 'orchestrator', 'cancelled'),
            (42, 'orchestrator', 'done'),
            ('INT-STAGE', 'orchestrator', 42),
            ('REAL-STAGE', 'orchestrator', 4.5),
            ('BLOB-STAGE', 'orchestrator', x'646f6e65'),
            ('BAD-UTF8-STAGE', 'orchestrator', CAST(x'646f6ee9' AS TEXT)),
            ('INT-REPO', 7, 'done'),
            ('BLOB-REPO', x'00ff', 'done'),
            ('BAD-UTF8-REPO', CAST(x'ff' AS TEXT), 'done'),
            ('SENTINELS', 'orchestrator', 'done'),
            ('NULL-SENTINEL', 'orchestrator', 'done'),
            -- the newest row counts, even when an older one is sound
            ('NEWEST-BAD', 'orchestrator', 'done'),
            ('NEWEST-BAD', 'orchestrator', 1);
         INSERT INTO post_deploy_sentinels VALUES
            ('orchestrator', 'SENTINELS', 1),
            ('orchestrator', 'SENTINELS', 'armed'),
            ('orchestrator', 'SENTINELS', x'41524d4544'),
            ('orchestrator', 'NULL-SENTINEL', NULL),
            (NULL, 'NULL-REPO', 'ARMED');",
    );
    let guard = guard(&ws);
    let before = snapshot(ws.dir.path());
    // (work item, target, verdict, rule, db_stage)
    for (work_item, target, verdict, rule, stage) in [
        ("NULL-STAGE", Target::Awaiting, Verdict::Allow, "non-terminal", Some("")),
        (
            "NULL-REPO",
            Target::Monitoring,
            Verdict::Allow,
            "out-of-scope",
            Some("done"),
        ),
        ("NULL-BOTH", Target::Awaiting, Verdict::Allow, "out-of-scope", Some("")),
        // A NULL work item matches no request, not even the empty one...
        ("", Target::Awaiting, Verdict::Suppress, "cancelled", Some("cancelled")),
        // ...and an integer work item is not the text of its digits.
        ("42", Target::Awaiting, Verdict::Allow, "task-not-found", None),
        // Sentinels that are not the text 'ARMED' do not arm the window.
        (
            "SENTINELS",
            Target::Monitoring,
            Verdict::ConvergeDone,
            "converge-done",
            Some("done"),
        ),
        (
            "NULL-SENTINEL",
            Target::Monitoring,
            Verdict::ConvergeDone,
            "converge-done",
            Some("done"),
        ),
    ] {
        let d = guard.decide(work_item, target, None);
        assert_eq!(
            (d.verdict, d.rule.as_str(), d.db_stage.as_deref(), d.error.as_deref()),
            (verdict, rule, stage, None),
            "{work_item:?}: {d:?}"
        );
    }
    for (work_item, cause) in [
        ("INT-STAGE", "tasks.stage of the work item is an integer, not text"),
        ("REAL-STAGE", "tasks.stage of the work item is a real, not text"),
        ("BLOB-STAGE", "tasks.stage of the work item is a blob, not text"),
        (
            "BAD-UTF8-STAGE",
            "tasks.stage of the work item is text that is not UTF-8, not text",
        ),
        ("INT-REPO", "tasks.repo of the work item is an integer, not text"),
        ("BLOB-REPO", "tasks.repo of the work item is a blob, not text"),
        (
            "BAD-UTF8-REPO",
            "tasks.repo of the work item is text that is not UTF-8, not text",
        ),
        ("NEWEST-BAD", "tasks.stage of the work item is an integer"),
    ] {
        for target in Target::ALL {
            assert_fail_safe(&guard.decide(work_item, target, None), cause);
        }
    }
    assert_untouched(ws.dir.path(), &before);

    // A bad value does not poison the connection: a sound row still decides.
    assert_decides(
        &guard.decide("NULL-STAGE", Target::Deploying, None),
        Verdict::Allow,
        "non-terminal",
    );
    // The orchestrator fixes the row: the next decision is right.
    let db = Connection::open(ws.db()).expect("open");
    db.execute(
        "UPDATE tasks SET stage = 'cancelled' WHERE work_item_id = 'INT-STAGE'",
        [],
    )
    .expect("update");
    drop(db);
    assert_decides(
        &guard.decide("INT-STAGE", Target::Awaiting, None),
        Verdict::Suppress,
        "cancelled",
    );
    assert_no_side_files(&ws);
}

// ---------------------------------------------------------------------------------
// A writer's lock
// ---------------------------------------------------------------------------------

const BUSY: Duration = Duration::from_millis(100);

/// SQLite's own busy timeout, which a connection has unless it is given another: a read
/// under a held lock that takes this long waited SQLite's timeout, not the configured
/// one. The upper bounds of the busy-timeout tests stay below it, so that they tell the
/// two apart, and as far above the configured timeout as that allows: past the
/// timeout, only the scheduler adds time (the deciding thread, or `serve`, must get a
/// core), which on a loaded two-core machine can be seconds.
const SQLITE_DEFAULT_BUSY: Duration = Duration::from_secs(5);

fn locking_guard(ws: &Workspace, busy_timeout: Duration) -> Guard {
    guard_with(Config {
        busy_timeout,
        ..ws.config()
    })
}

/// The orchestrator's writer: an exclusive transaction that has changed ORCH-061 to
/// cancelled and not committed yet.
fn hold_exclusive(ws: &Workspace) -> Connection {
    let writer = Connection::open(ws.db()).expect("the writer opens");
    writer
        .execute_batch(
            "BEGIN EXCLUSIVE;
             UPDATE tasks SET stage = 'cancelled' WHERE work_item_id = 'ORCH-061';",
        )
        .expect("the writer takes its lock");
    writer
}

/// Decide ORCH-061 awaiting, timed; on a thread of its own, waited for at most
/// [`CEILING`] (the writer's lock is held by this thread: a read that waited for it
/// would wait for ever, and fails the test instead).
fn timed(guard: &Guard) -> (Decision, Duration) {
    let guard = guard.clone();
    within("a decision under a writer's lock", move || {
        let started = Instant::now();
        let decision = guard.decide("ORCH-061", Target::Awaiting, None);
        (decision, started.elapsed())
    })
}

/// Rollback journal: an exclusive lock blocks readers. The guard waits the busy
/// timeout, fails safe naming the lock, and reads the committed data once it is gone.
#[test]
fn a_writers_exclusive_lock_fails_safe_within_a_bounded_time_then_the_commit_is_seen() {
    let ws = story(Journal::Rollback);
    let warm = locking_guard(&ws, BUSY);
    assert_story(&warm);
    let writer = hold_exclusive(&ws);
    assert!(
        ws.dir.path().join("orchestrator.db-journal").exists(),
        "the writer has its journal"
    );
    let before = snapshot(ws.dir.path());
    let cold = locking_guard(&ws, BUSY);
    for (which, guard) in [("warm", &warm), ("cold", &cold), ("warm again", &warm)] {
        // The writer holds its lock throughout: a read that waited for it would never
        // end (timed() fails the test after CEILING).
        let (d, took) = timed(guard);
        eprintln!("{which}: failed safe after {took:?} (busy timeout {BUSY:?})");
        assert_fail_safe(&d, "database is locked");
        assert!(
            took >= BUSY - Duration::from_millis(5),
            "{which}: failed after {took:?}, before the busy timeout {BUSY:?}"
        );
        assert!(
            took < SQLITE_DEFAULT_BUSY,
            "{which}: a locked read took {took:?}: the configured busy timeout ({BUSY:?}) did not bound it"
        );
    }
    // The writer's journal is the writer's: the guard neither removed nor changed it
    // (a reader that rolled it back as a hot journal would have).
    assert_untouched(ws.dir.path(), &before);

    writer.execute_batch("COMMIT").expect("commit");
    drop(writer);
    for guard in [&warm, &cold] {
        assert_decides(&timed(guard).0, Verdict::Suppress, "cancelled");
    }
    assert_no_side_files(&ws);
}

/// README: `DEPLOY_GUARD_BUSY_TIMEOUT_MS` is "how long a read waits for the
/// orchestrator's write lock before failing safe"; facts/source.rs: a read "waits at most the
/// configured busy timeout for a writer". Under a held lock every decision should
/// cost one busy timeout, not a multiple of it.
#[test]
fn a_locked_read_waits_one_busy_timeout_not_two() {
    // What the contract promises: one busy timeout per read. A second wait would take
    // another whole timeout, so a locked decision must end before twice the timeout;
    // the time it takes past one timeout is the scheduler's. Two seconds: as long as
    // twice it stays below SQLite's default (5 s, which an ignored setting would give),
    // and leaving two seconds of scheduling to a loaded machine.
    let busy = Duration::from_secs(2);
    assert!(busy * 2 < SQLITE_DEFAULT_BUSY);
    let ws = story(Journal::Rollback);
    let guard = locking_guard(&ws, busy);
    assert_story(&guard);
    let writer = hold_exclusive(&ws);
    let mut took = Vec::new();
    for _ in 0..3 {
        let (d, t) = timed(&guard);
        assert_fail_safe(&d, "database is locked");
        took.push(t);
    }
    writer.execute_batch("ROLLBACK").expect("rollback");
    assert!(
        took.iter()
            .all(|t| *t >= busy - Duration::from_millis(5) && *t < busy * 2),
        "with a busy timeout of {busy:?}, locked decisions took {took:?} (each must wait one, not two)"
    );
}

/// WAL: the writer's exclusive transaction does not block readers. The guard decides
/// at once on the last committed snapshot (not the uncommitted change), and sees the
/// change as soon as it commits. The reader needs the wal-index: only the `-shm`
/// changes; the database file and the WAL are untouched by the guard.
#[test]
fn in_wal_mode_a_writers_exclusive_transaction_does_not_block_the_guard() {
    let ws = story(Journal::Wal);
    // A long busy timeout: a read that waited for the writer would take it, and then
    // fail safe (the writer never lets go during the loop). Deciding right, well before
    // it, is not being blocked.
    let busy = Duration::from_secs(10);
    let guard = locking_guard(&ws, busy);
    let writer = hold_exclusive(&ws);
    let before = snapshot(ws.dir.path());
    for _ in 0..3 {
        let (d, took) = timed(&guard);
        assert_decides(&d, Verdict::ConvergeDone, "converge-done");
        assert!(took < busy / 2, "a WAL read waited {took:?}");
    }
    let mut changes = differences(&before, &snapshot(ws.dir.path()));
    changes.retain(|c| !c.starts_with("changed orchestrator.db-shm"));
    assert!(changes.is_empty(), "{changes:?}");

    writer.execute_batch("COMMIT").expect("commit");
    assert_decides(&timed(&guard).0, Verdict::Suppress, "cancelled");
}

/// WAL with `PRAGMA locking_mode = EXCLUSIVE`: the writer keeps the file to itself
/// (no wal-index in shared memory, so no `-shm` file). A `-wal` without its `-shm` is
/// not read (issue 11: where no lock stopped it, as after a crash of such a writer,
/// SQLite would create the `-shm`): fail-safe at once, nothing touched.
#[test]
fn in_wal_mode_an_exclusive_locking_writer_blocks_the_guard_and_it_fails_safe() {
    let ws = story(Journal::Wal);
    let writer = Connection::open(ws.db()).expect("the writer opens");
    let mode: String = writer
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .expect("locking mode");
    assert_eq!(mode, "exclusive");
    writer
        .execute_batch("UPDATE tasks SET stage = 'cancelled' WHERE work_item_id = 'ORCH-061'")
        .expect("the writer writes and keeps its lock");
    let guard = locking_guard(&ws, BUSY);
    let before = snapshot(ws.dir.path());
    for _ in 0..2 {
        // At once: the cause says the file was never read (the check comes before
        // SQLite), so no busy wait happened; timed() bounds it by CEILING.
        let (d, took) = timed(&guard);
        eprintln!("failed safe after {took:?}");
        assert_fail_safe(&d, "its -wal file is there without its -shm file");
    }
    assert_untouched(ws.dir.path(), &before);
    writer.close().expect("the writer closes");
    // Closed, the WAL database is not opened (that would create its -wal and -shm)...
    assert_fail_safe(&timed(&guard).0, "in WAL mode and its -wal file is absent");
    // ...until the orchestrator has it open again.
    let orchestrator = Connection::open(ws.db()).expect("the orchestrator opens it");
    let _: i64 = orchestrator
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .expect("the orchestrator reads");
    assert_decides(&timed(&guard).0, Verdict::Suppress, "cancelled");
}

/// A WAL database with no other connection: SQLite's read-only reader would create the
/// wal-index (`-shm`) and an empty `-wal` to read it, owned by the guard's user, which
/// can leave the orchestrator (another user) unable to write. The guard does not open
/// it: fail-safe, nothing created. With the orchestrator's connection open, the guard
/// reads it and changes neither the database nor the WAL.
#[test]
fn a_wal_database_is_read_without_changing_it() {
    let ws = story(Journal::Wal);
    assert_no_side_files(&ws);
    // Closed by the orchestrator: opening it, even read-only, would create its -wal and
    // -shm files (owned by deploy-guard's user). It is not opened: fail-safe, nothing made.
    let before = snapshot(ws.dir.path());
    let guard = guard(&ws);
    assert_all_fail_safe(&guard, "in WAL mode and its -wal file is absent");
    assert_untouched(ws.dir.path(), &before);
    // Open in the orchestrator (its connection holds the -wal and -shm): read, unchanged.
    let orchestrator = Connection::open(ws.db()).expect("the orchestrator opens it");
    let _: i64 = orchestrator
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .expect("the orchestrator reads");
    let db_before = snapshot(ws.dir.path())
        .remove(Path::new("orchestrator.db"))
        .expect("the database");
    assert_story(&guard);
    drop(guard);
    let after = snapshot(ws.dir.path());
    assert_eq!(
        after.get(Path::new("orchestrator.db")),
        Some(&db_before),
        "the guard changed the database file"
    );
    if let Some(Entry::File { len, .. }) = after.get(Path::new("orchestrator.db-wal")) {
        assert_eq!(*len, 0, "the guard wrote to the WAL");
    }
    let n: i64 = orchestrator
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 2004);
}

// ---------------------------------------------------------------------------------
// The file replaced
// ---------------------------------------------------------------------------------

#[test]
fn a_database_renamed_over_is_seen_on_the_next_decision() {
    let ws = story(Journal::Rollback);
    let guard = guard(&ws);
    assert_story(&guard);
    for (stage, verdict, rule) in [
        ("cancelled", Verdict::Suppress, "cancelled"),
        ("deploy", Verdict::Allow, "non-terminal"),
        ("done", Verdict::ConvergeDone, "converge-done"),
    ] {
        replace_with_story(&ws.db(), stage);
        // No poll, no wait: the very next decision reads the new file.
        assert_decides(&guard.decide("ORCH-061", Target::Awaiting, None), verdict, rule);
    }
    assert_no_side_files(&ws);
}

/// Decisions run on two threads while the file is renamed over again and again: each
/// one is an answer of the old file or of the new one, never a failure, and once the
/// renames stop the last file is the one read.
#[test]
fn a_database_replaced_while_deciding_is_never_a_failure() {
    let ws = story(Journal::Rollback);
    let guard = guard(&ws);
    assert_story(&guard);
    let stop = AtomicBool::new(false);
    let so_far = AtomicU32::new(0);
    let (decided, renames) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let d = guard.decide("ORCH-061", Target::Awaiting, None);
                        let answer = (d.verdict, d.rule.as_str(), d.error.as_deref());
                        assert!(
                            answer == (Verdict::ConvergeDone, "converge-done", None)
                                || answer == (Verdict::Suppress, "cancelled", None),
                            "decision {n}: {d:?}"
                        );
                        n += 1;
                        so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    n
                })
            })
            .collect();
        // Twenty renames at least, and on until the deciders (threads that must get a
        // core) have made more than twenty decisions meanwhile, or a decider failed, or
        // CEILING passed.
        let started = Instant::now();
        let mut renames = 0;
        while (renames < 20 || so_far.load(Ordering::Relaxed) <= 20)
            && started.elapsed() < CEILING
            && workers.iter().all(|w| !w.is_finished())
        {
            replace_with_story(&ws.db(), if renames % 2 == 0 { "cancelled" } else { "done" });
            renames += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        replace_with_story(&ws.db(), "cancelled");
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let decided = workers
            .into_iter()
            .map(|w| w.join().expect("a decider panicked"))
            .sum::<u32>();
        (decided, renames)
    });
    eprintln!("{decided} decisions during {renames} renames");
    assert!(decided > 20, "only {decided} decisions were made in {CEILING:?}");
    assert_decides(
        &guard.decide("ORCH-061", Target::Awaiting, None),
        Verdict::Suppress,
        "cancelled",
    );
    assert_no_side_files(&ws);
}

// ---------------------------------------------------------------------------------
// The same through `serve`
// ---------------------------------------------------------------------------------

#[track_caller]
fn assert_answer(answer: &Value, verdict: &str, rule: &str) {
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str(), &answer["error"]),
        (Some(verdict), Some(rule), &Value::Null),
        "{answer}"
    );
}

#[track_caller]
fn assert_answer_fails_safe(answer: &Value, cause: &str) {
    assert_eq!(
        (answer["verdict"].as_str(), answer["rule"].as_str()),
        (Some("ALLOW"), Some("fail-safe")),
        "{answer}"
    );
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains(cause)),
        "{answer} should name {cause:?}"
    );
}

#[test]
fn serve_fails_safe_while_the_database_is_missing_and_recovers_when_it_appears() {
    let ws = bare_workspace();
    let mut serve = ServeChild::start(ws.command());
    let before = snapshot(ws.dir.path());
    for _ in 0..3 {
        assert_answer_fails_safe(&serve.ask("ORCH-061", "awaiting"), "database: cannot open");
    }
    assert_untouched(ws.dir.path(), &before);
    replace_with_story(&ws.db(), "done");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    assert_answer(
        &serve.ask("ORCH-090", "monitoring"),
        "ALLOW",
        "monitoring-window-active",
    );
    assert_eq!(serve.finish(), Some(0));
    assert_no_side_files(&ws);
}

#[test]
fn serve_reads_a_database_renamed_over_it_on_the_next_request() {
    let ws = story(Journal::Rollback);
    let mut serve = ServeChild::start(ws.command());
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    for (stage, verdict, rule) in [
        ("cancelled", "SUPPRESS", "cancelled"),
        ("done", "CONVERGE_DONE", "converge-done"),
        ("deploy", "ALLOW", "non-terminal"),
    ] {
        replace_with_story(&ws.db(), stage);
        assert_answer(&serve.ask("ORCH-061", "awaiting"), verdict, rule);
    }
    // Replaced by garbage, then by a sound file again.
    deploy_guard_e2e::write_atomically(&ws.db(), b"not a database at all");
    assert_answer_fails_safe(&serve.ask("ORCH-061", "awaiting"), "file is not a database");
    replace_with_story(&ws.db(), "cancelled");
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "SUPPRESS", "cancelled");
    assert_eq!(serve.finish(), Some(0));
    assert_no_side_files(&ws);
}

/// Under a writer's lock, a batch of waiting requests fails safe as one read: the
/// batch shares one read transaction ("one snapshot, one lock acquisition"), so it
/// must not wait one busy timeout per request.
#[test]
fn serve_fails_safe_under_a_writers_lock_and_a_waiting_batch_waits_once() {
    let busy = Duration::from_secs(1);
    let ws = story(Journal::Rollback);
    let mut serve = ServeChild::start({
        let mut command = ws.command();
        // One second: one wait of it and twenty stay far apart on a loaded machine.
        command.env("DEPLOY_GUARD_BUSY_TIMEOUT_MS", "1000");
        command
    });
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "CONVERGE_DONE", "converge-done");
    let writer = hold_exclusive(&ws);
    // Metadata only: reading the database here would drop the writer's lock for the
    // serve process (POSIX locks go with any closed descriptor of the file).
    let before = stat_snapshot(ws.dir.path());
    let (answer, took) = {
        let started = Instant::now();
        let answer = serve.ask("ORCH-061", "awaiting");
        (answer, started.elapsed())
    };
    eprintln!("one locked request failed safe after {took:?} (busy timeout {busy:?})");
    assert_answer_fails_safe(&answer, "database is locked");
    // One busy timeout, and less than SQLite's own (see SQLITE_DEFAULT_BUSY): the
    // configured timeout bounded it; the rest is the scheduler's (two processes here).
    assert!(
        took >= busy - Duration::from_millis(5) && took < SQLITE_DEFAULT_BUSY,
        "{took:?}"
    );

    // Twenty requests in one write (< PIPE_BUF: they arrive together, one batch).
    let batch: String = (0..20)
        .map(|_| "{\"work_item\": \"ORCH-061\", \"target\": \"awaiting\"}\n")
        .collect();
    let started = Instant::now();
    serve.send(batch.as_bytes());
    for _ in 0..20 {
        assert_answer_fails_safe(&serve.answer(), "database is locked");
    }
    let took = started.elapsed();
    eprintln!("a batch of 20 locked requests failed safe after {took:?}");
    assert_untouched_stat(ws.dir.path(), &before);
    writer.execute_batch("COMMIT").expect("commit");
    drop(writer);
    assert_answer(&serve.ask("ORCH-061", "awaiting"), "SUPPRESS", "cancelled");
    assert_eq!(serve.finish(), Some(0));
    assert_no_side_files(&ws);
    // One wait per request would be 20 s; one for the batch is 1 s (a few, should
    // serve read the twenty lines in more than one batch). 10 s is half the wrong
    // answer, and leaves nine seconds to the scheduler of a loaded machine.
    assert!(
        took < busy * 10,
        "a waiting batch of 20 took {took:?} to fail safe with a busy timeout of {busy:?}"
    );
}
