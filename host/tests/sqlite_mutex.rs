//! SQLite running on deploy-guard's mutexes (`deploy_guard::facts::sqlite_mutex`): installed
//! before SQLite starts (this test binary opens no database before), and correct under
//! a writer and several readers on connections of both threading modes.

use deploy_guard::facts::source::FactsSource;
use rusqlite::{Connection, OpenFlags};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[test]
fn readers_and_a_writer_keep_every_invariant_on_the_spinning_mutexes() {
    deploy_guard::facts::sqlite_mutex::install();
    assert!(
        deploy_guard::facts::sqlite_mutex::installed(),
        "SQLite was initialised before the mutexes were installed"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("orchestrator.db");
    let db = Connection::open(&path).expect("create");
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER);
         INSERT INTO accounts VALUES (1, 500), (2, 500);
         CREATE TABLE tasks (work_item_id TEXT, repo TEXT, stage TEXT);
         CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT);
         INSERT INTO tasks VALUES ('ORCH-1', 'orchestrator', 'deploy');",
    )
    .expect("schema");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The writer moves money between the accounts and flips the task's stage, one
        // transaction at a time: the total never changes, the stage is always whole.
        scope.spawn(|| {
            let mut writer = Connection::open(&path).expect("writer");
            writer.busy_timeout(Duration::from_secs(5)).expect("timeout");
            for i in 0..2000 {
                let tx = writer.transaction().expect("begin");
                tx.execute("UPDATE accounts SET balance = balance - 7 WHERE id = 1", [])
                    .expect("debit");
                tx.execute("UPDATE accounts SET balance = balance + 7 WHERE id = 2", [])
                    .expect("credit");
                let stage = if i % 2 == 0 { "done" } else { "deploy" };
                tx.execute("UPDATE tasks SET stage = ?1", [stage]).expect("stage");
                tx.commit().expect("commit");
            }
            stop.store(true, Ordering::Relaxed);
        });
        // Readers on serialized connections (recursive mutexes) and on the facts source.
        for flags in [
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_FULL_MUTEX,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ] {
            let path = &path;
            let stop = &stop;
            scope.spawn(move || {
                let reader = Connection::open_with_flags(path, flags).expect("reader");
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let total: i64 = reader
                        .query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))
                        .expect("read");
                    assert_eq!(total, 1000, "a torn read");
                    reads += 1;
                }
            });
        }
        let facts = FactsSource::new(&path, Duration::from_millis(250));
        let stop = &stop;
        scope.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let task = facts.read("ORCH-1").expect("facts").expect("the task");
                assert!(task.stage == "done" || task.stage == "deploy", "{task:?}");
                assert_eq!(task.window_active, Some(false));
            }
        });
    });
    let total: i64 = db
        .query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))
        .expect("read");
    assert_eq!(total, 1000);
}
