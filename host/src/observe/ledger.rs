//! The decision ledger: every decision with the canonical facts it was made on, kept in
//! an SQLite file of deploy-guard's own (never the orchestrator's database), so that a
//! candidate policy can be replayed against real history (`deploy-guard replay`).
//!
//! Off the decision path: a decision hands its record to a bounded queue and goes on;
//! a writer thread takes whatever is waiting and commits it in one transaction. A full
//! queue drops the record (counted, and said once per 1,000), it never blocks or fails
//! a decision. Retention: the newest `max_rows` decisions are kept.
//!
//! What a crash can lose: the records still in the queue and the transaction being
//! written, that is the decisions of the last moments (the writer commits as soon as
//! anything waits, so in steady state a few milliseconds' worth). What was committed
//! stays: the file is in WAL mode, and a process crash (even `kill -9`) loses no
//! committed transaction and never corrupts the file; the ledger always holds a prefix
//! of the decisions, in order.
//!
//! A monitor tick is recorded like a stamp: its `target` column reads `tick` (the
//! column says what was asked), and its facts say `"op": "tick"`, so that a ledger
//! written before ticks existed reads as it always did.

use crate::decision::{Ask, Decision};
use crate::sandbox::question::FactsRecord;
use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Records that may wait for the writer before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;
/// The most bytes of records that may wait for the writer: the queue is bounded in
/// bytes as well as in count, so that records of huge facts cannot grow the host while
/// the ledger's disk stalls.
pub const QUEUE_BYTES: usize = 64 << 20;
/// The most records committed in one transaction.
const BATCH: usize = 1024;

/// Why the ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused.
    #[error("ledger: {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The ledger (or one of its side files) would be the orchestrator's database or
    /// one of its side files.
    #[error(
        "ledger: {path} would write over a file of the orchestrator's database ({why}); the ledger needs a file of its own"
    )]
    IsTheOrchestratorsDatabase {
        /// The ledger as configured.
        path: PathBuf,
        /// Which file it would touch.
        why: String,
    },
}

/// One decision as recorded.
#[derive(Debug)]
struct Entry {
    time_ms: i64,
    facts: Option<FactsRecord>,
    decision: Decision,
    fuel: Option<u64>,
}

impl Entry {
    /// About how many bytes the record holds (its strings; the rest is small).
    fn size(&self) -> usize {
        let d = &self.decision;
        let facts = self.facts.as_ref().map_or(0, |f| {
            f.work_item.len()
                + f.caller.as_ref().map_or(0, String::len)
                + f.task.as_ref().map_or(0, |t| t.repo.len() + t.stage.len())
                + f.scope_repos
                    .iter()
                    .chain(&f.self_hosting_repos)
                    .map(String::len)
                    .sum::<usize>()
        });
        256 + facts
            + d.work_item.len()
            + d.caller.as_ref().map_or(0, String::len)
            + d.db_stage.as_ref().map_or(0, String::len)
            + d.rule.len()
            + d.error.as_ref().map_or(0, String::len)
    }
}

enum Message {
    Record(Box<Entry>),
    Flush(SyncSender<()>),
}

/// The ledger writer. Dropping it commits what waits and stops the thread.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    sender: Option<SyncSender<Message>>,
    /// Records committed and dropped (shared with the writer and the metrics).
    counters: crate::observe::metrics::LedgerCounters,
    /// Bytes of the records waiting for the writer (shared with it).
    queued_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    work_item TEXT NOT NULL,
    caller TEXT,
    target TEXT NOT NULL,
    facts TEXT,
    db_stage TEXT,
    window_active INTEGER,
    verdict TEXT NOT NULL,
    rule TEXT NOT NULL,
    policy TEXT,
    policy_digest TEXT,
    error TEXT,
    fuel INTEGER
);";

/// A ledger written before the `fuel` column gets it. Two processes may open such a
/// ledger at once: the check is made again under the write lock, so that the second
/// finds the column the first added instead of failing to add it twice.
fn add_fuel_column(connection: &Connection) -> rusqlite::Result<()> {
    if has_fuel_column(connection)? {
        return Ok(());
    }
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let added = match has_fuel_column(connection) {
        Ok(true) => Ok(()),
        Ok(false) => connection.execute_batch("ALTER TABLE decisions ADD COLUMN fuel INTEGER"),
        Err(e) => Err(e),
    };
    match added {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(e) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Whether the ledger's table has the `fuel` column (ledgers made before it was added
/// do not; [`Ledger::open`] adds it).
fn has_fuel_column(connection: &Connection) -> rusqlite::Result<bool> {
    connection
        .prepare("SELECT 1 FROM pragma_table_info('decisions') WHERE name = 'fuel'")?
        .exists([])
}

/// The suffixes of the files SQLite keeps beside a database: the file itself, its WAL
/// and shared-memory index, its rollback journal.
const SQLITE_FILES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `path` as the file system resolves it: symlinks (also a dangling one, followed to
/// where it points) and `..` resolved in its directory; the name itself kept when it
/// does not exist yet. None when its directory cannot be resolved.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut path = path.to_owned();
    // As the kernel does, a bounded number of links is followed.
    for _ in 0..40 {
        if let Ok(resolved) = std::fs::canonicalize(&path) {
            return Some(resolved);
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(dir).ok()?;
        let name = path.file_name()?;
        let joined = dir.join(name);
        match std::fs::read_link(&joined) {
            // A dangling link: the file it would create is where it points.
            Ok(target) => path = dir.join(target),
            Err(_) => return Some(joined),
        }
    }
    None
}

/// Every name under which SQLite could reach a file of the database at `db`: the
/// file and its side files, beside the path as given and beside the resolved path
/// (SQLite resolves symlinks before it names the side files).
fn sqlite_file_names(db: &Path) -> Vec<PathBuf> {
    let mut bases = vec![db.to_owned()];
    bases.extend(resolve(db));
    let mut names = Vec::new();
    for base in &bases {
        for suffix in SQLITE_FILES {
            let name = with_suffix(base, suffix);
            names.extend(resolve(&name));
            names.push(name);
        }
    }
    names
}

/// Why the ledger at `ledger` would touch a file of the orchestrator's database at
/// `db`, if it would: the ledger and its own side files are compared with the
/// database and its side files by resolved path (symlinks, `..`, files that do not
/// exist yet) and, for files that exist, by (device, inode) (hard links).
pub fn conflicts_with_database(ledger: &Path, db: &Path) -> Option<String> {
    let identity = |path: &Path| crate::files::stamp::stamp(path).map(|stamp| stamp.identity());
    let theirs = sqlite_file_names(db);
    let their_inodes: Vec<(u64, u64)> = theirs.iter().filter_map(|p| identity(p)).collect();
    for ours in sqlite_file_names(ledger) {
        if let Some(same) = theirs.iter().find(|theirs| **theirs == ours) {
            return Some(format!("{} is {}", ours.display(), same.display()));
        }
        if let Some(inode) = identity(&ours)
            && their_inodes.contains(&inode)
        {
            return Some(format!("{} is a link to a file of the database", ours.display()));
        }
    }
    None
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Ledger {
    /// Open (or create) the ledger at `path`, refusing the orchestrator's `db`.
    pub fn open(path: &Path, db: &Path, max_rows: u64) -> Result<Ledger, LedgerError> {
        Ledger::open_counted(path, db, max_rows, crate::observe::metrics::LedgerCounters::default())
    }

    /// [`Ledger::open`], counting records committed and dropped in `counters`.
    pub fn open_counted(
        path: &Path,
        db: &Path,
        max_rows: u64,
        counters: crate::observe::metrics::LedgerCounters,
    ) -> Result<Ledger, LedgerError> {
        crate::facts::sqlite_mutex::install();
        if let Some(why) = conflicts_with_database(path, db) {
            return Err(LedgerError::IsTheOrchestratorsDatabase {
                path: path.to_owned(),
                why,
            });
        }
        let connection = Connection::open(path).map_err(|e| open_error(path, e))?;
        // A lock held for a moment by a reader of the ledger (replay) is waited out
        // rather than losing a batch; the decisions never wait for it.
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| open_error(path, e))?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .and_then(|()| connection.execute_batch(SCHEMA))
            .and_then(|()| add_fuel_column(&connection))
            .map_err(|e| open_error(path, e))?;
        let (sender, receiver) = sync_channel(QUEUE_CAPACITY);
        let queued_bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("deploy-guard-ledger".into())
            .spawn({
                let queued_bytes = std::sync::Arc::clone(&queued_bytes);
                let counters = counters.clone();
                move || write_loop(connection, receiver, max_rows, &queued_bytes, &counters)
            })
            .map_err(|e| open_error(path, e))?;
        Ok(Ledger {
            path: path.to_owned(),
            sender: Some(sender),
            counters,
            queued_bytes,
            thread: Some(thread),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.get()
    }

    /// Hand a decision to the writer, with the facts its policy was asked and the fuel
    /// the policy used (remembered with the answer when it came from the memo); never
    /// blocks.
    pub fn record(&self, decision: &Decision, facts: Option<FactsRecord>, fuel: Option<u64>) {
        let Some(sender) = &self.sender else { return };
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let entry = Box::new(Entry {
            time_ms,
            facts,
            decision: decision.clone(),
            fuel,
        });
        let size = entry.size();
        let within_budget = self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size <= QUEUE_BYTES;
        let sent = within_budget && sender.try_send(Message::Record(entry)).is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            let dropped = self.counters.dropped.inc() + 1;
            if dropped % 1000 == 1 {
                tracing::warn!(target: "deploy_guard::ledger", dropped, "ledger queue full: decisions not recorded");
            }
        }
    }

    /// Wait until everything recorded so far is committed.
    pub fn flush(&self) {
        if let Some(sender) = &self.sender {
            let (done, wait) = sync_channel(1);
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(
    mut connection: Connection,
    receiver: Receiver<Message>,
    max_rows: u64,
    queued_bytes: &std::sync::atomic::AtomicUsize,
    counters: &crate::observe::metrics::LedgerCounters,
) {
    let mut batch: Vec<Box<Entry>> = Vec::with_capacity(BATCH);
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    let mut since_trim = 0usize;
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(entry) => batch.push(entry),
                Message::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            since_trim += batch.len();
            match commit(&mut connection, &batch) {
                Ok(()) => {
                    counters.records.inc_by(batch.len() as u64);
                }
                Err(e) => {
                    counters.dropped.inc_by(batch.len() as u64);
                    tracing::error!(target: "deploy_guard::ledger", "cannot write {} decisions to the ledger: {e}", batch.len());
                }
            }
            queued_bytes.fetch_sub(batch.iter().map(|entry| entry.size()).sum(), Ordering::Relaxed);
            batch.clear();
            if since_trim >= 1000 {
                since_trim = 0;
                if let Err(e) = connection.execute(
                    "DELETE FROM decisions WHERE id <= (SELECT MAX(id) FROM decisions) - ?1",
                    [i64::try_from(max_rows).unwrap_or(i64::MAX)],
                ) {
                    tracing::error!(target: "deploy_guard::ledger", "cannot trim the ledger: {e}");
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn commit(connection: &mut Connection, batch: &[Box<Entry>]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO decisions (time_ms, work_item, caller, target, facts, db_stage, window_active,
                                    verdict, rule, policy, policy_digest, error, fuel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for entry in batch {
            let d = &entry.decision;
            let facts = entry.facts.as_ref().and_then(|f| serde_json::to_string(f).ok());
            insert.execute(params![
                entry.time_ms,
                d.work_item,
                d.caller,
                asked(d.ask),
                facts,
                d.db_stage,
                d.window_active,
                d.verdict.as_str(),
                d.rule,
                d.policy,
                d.policy_digest,
                d.error,
                entry.fuel.map(|fuel| i64::try_from(fuel).unwrap_or(i64::MAX)),
            ])?;
        }
    }
    tx.commit()
}

/// What the `target` column says was asked: the target of a stamp, or `tick`.
fn asked(ask: Ask) -> &'static str {
    match ask {
        Ask::Decide(target) => target.as_str(),
        Ask::Tick => "tick",
    }
}

/// A recorded decision, read back.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Row id (order of recording).
    pub id: i64,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The facts the policy was given; none when no policy ran.
    pub facts: Option<FactsRecord>,
    /// The decision as it was made.
    pub decision: Decision,
    /// The fuel its policy used; none when no policy ran (or a ledger older than the
    /// column).
    pub fuel: Option<u64>,
}

/// Read a ledger (read-only), oldest first.
pub fn read_ledger(path: &Path) -> Result<Vec<Recorded>, LedgerError> {
    let connection =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| open_error(path, e))?;
    let fuel = match has_fuel_column(&connection).map_err(|e| open_error(path, e))? {
        true => "fuel",
        false => "NULL",
    };
    let mut statement = connection
        .prepare(&format!(
            "SELECT id, time_ms, work_item, caller, target, facts, db_stage, window_active, verdict, rule,
                    policy, policy_digest, error, {fuel} FROM decisions ORDER BY id"
        ))
        .map_err(|e| open_error(path, e))?;
    let rows = statement
        .query_map([], |row| {
            let target: String = row.get(4)?;
            let verdict: String = row.get(8)?;
            let facts: Option<String> = row.get(5)?;
            Ok((
                (row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(13)?),
                row.get::<_, i64>(1)?,
                facts,
                target,
                verdict,
                Decision {
                    work_item: row.get(2)?,
                    caller: row.get(3)?,
                    ask: Ask::Tick,
                    db_stage: row.get(6)?,
                    window_active: row.get(7)?,
                    verdict: crate::Verdict::Allow,
                    rule: row.get(9)?,
                    policy: row.get(10)?,
                    policy_digest: row.get(11)?,
                    error: row.get(12)?,
                },
            ))
        })
        .map_err(|e| open_error(path, e))?;
    let mut recorded = Vec::new();
    for row in rows {
        let ((id, fuel), time_ms, facts, target, verdict, mut decision) = row.map_err(|e| open_error(path, e))?;
        decision.ask = match target.as_str() {
            "tick" => Ask::Tick,
            target => Ask::Decide(
                target
                    .parse()
                    .map_err(|e: String| open_error(path, format!("row {id}: {e}")))?,
            ),
        };
        decision.verdict = serde_json::from_value(serde_json::Value::String(verdict))
            .map_err(|e| open_error(path, format!("row {id}: {e}")))?;
        let facts = match facts {
            Some(json) => Some(serde_json::from_str(&json).map_err(|e| open_error(path, format!("row {id}: {e}")))?),
            None => None,
        };
        recorded.push(Recorded {
            id,
            time_ms,
            facts,
            decision,
            fuel: fuel.and_then(|fuel| u64::try_from(fuel).ok()),
        });
    }
    Ok(recorded)
}
