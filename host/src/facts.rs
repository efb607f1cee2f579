//! The orchestrator's database: the task of a work item and its post-deploy window,
//! read-only, with statements prepared once per connection.
//!
//! The database belongs to the orchestrator. deploy-guard opens it with
//! `SQLITE_OPEN_READ_ONLY` (never CREATE: a missing file is an error and no file
//! appears), waits at most the configured busy timeout for a writer, and never holds a
//! transaction open across decisions: each read is one statement in autocommit, which
//! is one consistent snapshot. WAL is the recommended journal mode for the
//! orchestrator (readers never wait for its writer then); that choice is the
//! orchestrator's, a read-only connection cannot make it.
//!
//! Connections are pooled (a `Connection` is not `Sync`); a connection that saw an
//! error is dropped, and one whose file was replaced (another inode at the path) is
//! reopened, since an open connection never notices a rename over its file.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What a read of the orchestrator's database can fail with. Any of these makes the
/// decision a fail-safe ALLOW.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FactsError {
    /// The file is missing or not a regular file.
    #[error("database: cannot open {path}: {reason}")]
    Missing {
        /// The configured path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// SQLite refused to open or read the file (locked, corrupt, not a database,
    /// tables or columns missing).
    #[error("database: {0}")]
    Sqlite(String),
    /// The read transaction of a batch could not begin.
    #[error("database: cannot begin a read transaction: {0}")]
    Transaction(String),
    /// A column holds a value the seed could not have used as text.
    #[error("database: tasks.{column} of the work item is {found}, not text")]
    WrongType {
        /// The column.
        column: &'static str,
        /// What it holds.
        found: &'static str,
    },
}

impl From<rusqlite::Error> for FactsError {
    fn from(error: rusqlite::Error) -> Self {
        FactsError::Sqlite(error.to_string())
    }
}

/// Result alias of this module.
pub type Result<T, E = FactsError> = std::result::Result<T, E>;

/// The facts read for one work item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFacts {
    /// `tasks.repo` as stored, NULL as empty.
    pub repo: String,
    /// `tasks.stage` as stored, NULL as empty.
    pub stage: String,
    /// The post-deploy window: ARMED and not DONE. None when it could not be read.
    pub window_active: Option<bool>,
    /// Why the window could not be read.
    pub window_error: Option<String>,
}

/// The newest task row of the work item with its window, in one statement.
const TASK_AND_WINDOW: &str = "\
SELECT t.repo, t.stage,
       EXISTS (SELECT 1 FROM post_deploy_sentinels s
               WHERE s.repo IS t.repo AND s.work_item_id = ?1 AND s.sentinel = 'ARMED')
       AND NOT EXISTS (SELECT 1 FROM post_deploy_sentinels s
               WHERE s.repo IS t.repo AND s.work_item_id = ?1 AND s.sentinel = 'DONE')
FROM tasks t WHERE t.work_item_id = ?1 ORDER BY t.rowid DESC LIMIT 1";

/// The task alone: used when the sentinels cannot be read, so that a broken sentinels
/// table changes no verdict the seed would give (it reads them only when needed).
const TASK_ONLY: &str = "\
SELECT t.repo, t.stage, NULL FROM tasks t WHERE t.work_item_id = ?1 ORDER BY t.rowid DESC LIMIT 1";

/// The window alone, to name why the sentinels cannot be read.
const WINDOW_ONLY: &str = "SELECT sentinel FROM post_deploy_sentinels WHERE repo IS ?1 AND work_item_id = ?2 LIMIT 1";

struct PooledConnection {
    connection: Connection,
    /// (device, inode) of the file when it was opened.
    identity: (u64, u64),
}

/// A read-only source of facts over one database file, safe to share between threads.
pub struct FactsSource {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<PooledConnection>>,
}

impl std::fmt::Debug for FactsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactsSource")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy_timeout)
            .finish()
    }
}

impl FactsSource {
    /// A source over `path`. Opens nothing yet: the first read does.
    pub fn new(path: impl Into<PathBuf>, busy_timeout: Duration) -> FactsSource {
        crate::sqlite_mutex::install();
        FactsSource {
            path: path.into(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The task of `work_item` and its window; `None` when no task row has it.
    pub fn read(&self, work_item: &str) -> Result<Option<TaskFacts>> {
        let identity = file_identity(&self.path)?;
        let pooled = self.checkout(identity)?;
        let result = read_task(&pooled.connection, work_item);
        if result.is_ok() {
            // A connection that failed is not trusted again: the next read reopens.
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(pooled);
            }
        }
        result
    }

    /// The tasks of several work items read in one read transaction: one snapshot,
    /// one lock acquisition, for requests that are already waiting together. The
    /// transaction ends before this returns, so no later read sees a stale snapshot.
    pub fn read_many(&self, work_items: &[&str]) -> Vec<Result<Option<TaskFacts>>> {
        if work_items.len() == 1 {
            return vec![self.read(work_items[0])];
        }
        let pooled = match file_identity(&self.path).and_then(|identity| self.checkout(identity)) {
            Ok(pooled) => pooled,
            Err(e) => return work_items.iter().map(|_| Err(e.clone())).collect(),
        };
        let begun = pooled.connection.execute_batch("BEGIN DEFERRED");
        // Once one read of the batch fails (a writer's lock that outlasted the busy
        // timeout, a broken file), the others fail with it instead of waiting again.
        let mut failed: Option<FactsError> = begun.as_ref().err().map(|e| FactsError::Transaction(e.to_string()));
        let results: Vec<Result<Option<TaskFacts>>> = work_items
            .iter()
            .map(|work_item| {
                if let Some(error) = &failed {
                    return Err(error.clone());
                }
                let result = read_task(&pooled.connection, work_item);
                if let Err(error) = &result
                    && !matches!(error, FactsError::WrongType { .. })
                {
                    failed = Some(error.clone());
                }
                result
            })
            .collect();
        let ended = begun.is_ok() && pooled.connection.execute_batch("COMMIT").is_ok();
        if ended
            && results.iter().all(Result::is_ok)
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(pooled);
        }
        results
    }

    fn checkout(&self, identity: (u64, u64)) -> Result<PooledConnection> {
        if let Ok(mut idle) = self.idle.lock() {
            // Connections to a replaced file are dropped here.
            idle.retain(|c| c.identity == identity);
            if let Some(pooled) = idle.pop() {
                return Ok(pooled);
            }
        }
        refuse_closed_wal(&self.path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)?;
        connection.busy_timeout(self.busy_timeout)?;
        Ok(PooledConnection { connection, identity })
    }
}

/// A database in WAL mode is read through its `-wal` and `-shm` files. While the
/// orchestrator has it open they exist; when it has closed it, SQLite removed them, and
/// even a read-only connection would create them again: owned by deploy-guard's user,
/// they could leave the orchestrator unable to write its own database. So such a
/// database is not opened: the decision fails safe, naming why. (Bytes 18 and 19 of
/// the header are 2 in WAL mode.)
fn refuse_closed_wal(path: &Path) -> Result<()> {
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header));
    if read.is_err() || header[18] != 2 || header[19] != 2 {
        // Not WAL, or too short to tell: SQLite opens it without side files.
        return Ok(());
    }
    let side = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name).exists()
    };
    // The -wal file is there while the orchestrator has the database open (in its
    // exclusive locking mode there is no -shm, and SQLite refuses the lock instead).
    if side("-wal") {
        return Ok(());
    }
    Err(FactsError::Missing {
        path: path.to_owned(),
        reason: "the database is in WAL mode and its -wal file is absent (the orchestrator has it \
                 closed); reading it would create the -wal and -shm files"
            .to_owned(),
    })
}

fn file_identity(path: &Path) -> Result<(u64, u64)> {
    let missing = |reason: String| FactsError::Missing {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| missing(e.to_string()))?;
    if !meta.is_file() {
        return Err(missing("not a regular file".to_owned()));
    }
    Ok((meta.dev(), meta.ino()))
}

/// A row as read: repo, stage (each text or the reason it is not), window.
type RawRow = (Result<String>, Result<String>, Option<bool>);

fn query(connection: &Connection, sql: &str, work_item: &str) -> rusqlite::Result<Option<RawRow>> {
    connection
        .prepare_cached(sql)?
        .query_row([work_item], |row| {
            Ok((
                text(row.get_ref(0)?, "repo"),
                text(row.get_ref(1)?, "stage"),
                match row.get_ref(2)? {
                    ValueRef::Integer(n) => Some(n != 0),
                    _ => None,
                },
            ))
        })
        .optional()
}

/// Whether SQLite gave up waiting for a lock: the same wait would fail again, so
/// there is no second attempt (one decision waits one busy timeout, not two).
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn read_task(connection: &Connection, work_item: &str) -> Result<Option<TaskFacts>> {
    let (row, window_error) = match query(connection, TASK_AND_WINDOW, work_item) {
        Ok(row) => (row, None),
        Err(e) if is_busy(&e) => return Err(e.into()),
        Err(combined) => {
            // The tasks or the sentinels cannot be read (missing, malformed). The seed
            // reads the sentinels only when it needs them: the task alone decides, and
            // the window is unknown. If the task cannot be read either, that fails.
            let row = query(connection, TASK_ONLY, work_item)?;
            let why = match connection.prepare(WINDOW_ONLY) {
                Err(e) => e,
                Ok(_) => combined,
            };
            (row, Some(format!("database: post-deploy window unreadable: {why}")))
        }
    };
    let Some((repo, stage, window_active)) = row else {
        return Ok(None);
    };
    Ok(Some(TaskFacts {
        repo: repo?,
        stage: stage?,
        window_active: if window_error.is_some() { None } else { window_active },
        window_error,
    }))
}

/// A column as the seed would have used it: text, NULL as empty; anything else (an
/// integer, a blob, text that is not UTF-8) is an error, as `.strip()` on it raised.
fn text(value: ValueRef<'_>, column: &'static str) -> Result<String> {
    let wrong = |found| FactsError::WrongType { column, found };
    match value {
        ValueRef::Null => Ok(String::new()),
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| wrong("text that is not UTF-8")),
        ValueRef::Integer(_) => Err(wrong("an integer")),
        ValueRef::Real(_) => Err(wrong("a real")),
        ValueRef::Blob(_) => Err(wrong("a blob")),
    }
}
