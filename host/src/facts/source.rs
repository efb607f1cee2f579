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
//! reopened, since an open connection never notices a rename over its file. A
//! connection idle for [`IDLE_CLOSE`] is closed: an idle reader must not hold the
//! orchestrator's database (in WAL mode it would keep the orchestrator from leaving
//! WAL). Before every read, pooled connection or new, the journal's side files are
//! checked at the path SQLite uses (symlinks resolved), so that no read ever creates
//! a `-wal` or `-shm` file beside the orchestrator's database.

use crate::files::stamp::FileStamp;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The path SQLite uses for the file and its side files (symlinks and `..`
    /// resolved, as SQLite's unix VFS resolves them).
    resolved: PathBuf,
    /// When it was last handed back; the reaper closes it after [`IDLE_CLOSE`].
    last_used: Instant,
    /// The database file's stamp when this connection last found it in WAL mode with
    /// its `-wal` and `-shm` files there. A connection that has read a WAL database
    /// holds a shared lock on it until it is closed, so that SQLite (the orchestrator
    /// closing its last connection, or leaving WAL) cannot remove them meanwhile: while
    /// the file keeps this stamp, the check need not be repeated for this connection.
    wal_checked: Option<FileStamp>,
}

/// How long a connection may sit idle in the pool before it is closed. An open
/// connection, even idle, can keep the orchestrator from changing its journal mode
/// (`PRAGMA journal_mode=delete` needs every other connection gone in WAL mode), so
/// none is kept once decisions stop coming.
pub const IDLE_CLOSE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Pool {
    idle: Vec<PooledConnection>,
    /// Whether a reaper thread is running for this pool.
    reaper: bool,
    /// The last reaper started (joined by [`FactsSource::quiesce`]).
    reaper_thread: Option<std::thread::JoinHandle<()>>,
}

/// What the database's journal looked like the last time its header was read: the
/// file's stamp then, and whether the header said WAL. The header is read again only
/// when the file's stamp changes (a journal-mode switch rewrites it).
#[derive(Default)]
struct JournalState {
    stamp: Option<FileStamp>,
    wal_header: bool,
    /// A descriptor kept open on the database to read its header: closing a descriptor
    /// drops every POSIX lock this process holds on the file (SQLite's own included),
    /// so the host never opens and closes one beside SQLite's; this one lives as long
    /// as the source, for the file it was opened on.
    header_file: Option<((u64, u64), std::fs::File)>,
}

/// A read-only source of facts over one database file, safe to share between threads.
pub struct FactsSource {
    path: PathBuf,
    busy_timeout: Duration,
    pool: Arc<Mutex<Pool>>,
    journal: Mutex<JournalState>,
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
        crate::facts::sqlite_mutex::install();
        FactsSource {
            path: path.into(),
            busy_timeout,
            pool: Arc::new(Mutex::new(Pool::default())),
            journal: Mutex::new(JournalState::default()),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many connections sit idle in the pool now (they are closed after
    /// [`IDLE_CLOSE`]).
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().map_or(0, |pool| pool.idle.len())
    }

    /// The task of `work_item` and its window; `None` when no task row has it.
    pub fn read(&self, work_item: &str) -> Result<Option<TaskFacts>> {
        let pooled = self.checkout()?;
        let result = read_task(&pooled.connection, work_item);
        if result.is_ok() {
            // A connection that failed is not trusted again: the next read reopens.
            self.give_back(pooled);
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
        let pooled = match self.checkout() {
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
        if ended && results.iter().all(Result::is_ok) {
            self.give_back(pooled);
        }
        results
    }

    /// A connection to the file now at the path, checked against the journal state
    /// first: on every use, pooled or new, so that a journal-mode change between two
    /// decisions is seen before SQLite would act on it.
    fn checkout(&self) -> Result<PooledConnection> {
        let stamp = file_stamp(&self.path)?;
        let identity = stamp.identity();
        let pooled = match self.pool.lock() {
            Ok(mut pool) => {
                // Connections to a replaced file are dropped here.
                pool.idle.retain(|c| c.identity == identity);
                pool.idle.pop()
            }
            Err(_) => None,
        };
        if let Some(mut pooled) = pooled {
            if pooled.wal_checked != Some(stamp) {
                pooled.wal_checked = self.refuse_side_files_we_would_create(&pooled.resolved, stamp)?;
            }
            return Ok(pooled);
        }
        let resolved = std::fs::canonicalize(&self.path).map_err(|e| FactsError::Missing {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let wal_checked = self.refuse_side_files_we_would_create(&resolved, stamp)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&resolved, flags)?;
        connection.busy_timeout(self.busy_timeout)?;
        Ok(PooledConnection {
            connection,
            identity,
            resolved,
            last_used: Instant::now(),
            wal_checked,
        })
    }

    /// Before `fork()`: close every idle connection on this thread and wait for the
    /// reaper to end, so that no thread of ours is inside SQLite (holding its mutexes
    /// or the allocator's) when the process forks: the child would inherit them locked.
    /// The next connection handed back starts a new reaper.
    pub fn quiesce(&self) {
        let (idle, reaper) = match self.pool.lock() {
            Ok(mut pool) => (std::mem::take(&mut pool.idle), pool.reaper_thread.take()),
            Err(_) => return,
        };
        drop(idle);
        if let Some(reaper) = reaper {
            // Woken, it finds the pool empty and ends.
            reaper.thread().unpark();
            let _ = reaper.join();
        }
    }

    fn give_back(&self, mut pooled: PooledConnection) {
        pooled.last_used = Instant::now();
        let Ok(mut pool) = self.pool.lock() else { return };
        pool.idle.push(pooled);
        if !pool.reaper {
            let weak = Arc::downgrade(&self.pool);
            let spawned = std::thread::Builder::new()
                .name("deploy-guard-facts-reaper".into())
                .spawn(move || reap_idle(&weak));
            // Without a reaper no connection may stay: close it now.
            match spawned {
                Ok(thread) => {
                    pool.reaper = true;
                    pool.reaper_thread = Some(thread);
                }
                Err(_) => pool.idle.clear(),
            }
        }
    }

    /// SQLite, even read-only, creates the `-wal` and `-shm` files of a database in WAL
    /// mode whose orchestrator has closed it (SQLite removed them then), and the `-shm`
    /// of a database whose `-wal` is there without it. Created by deploy-guard's user,
    /// they can leave the orchestrator unable to write its own database. So the
    /// database is not read then: the decision fails safe, naming why. Checked from
    /// the resolved path (the one SQLite uses), before every read. (Bytes 18 and 19 of
    /// the header are 2 in WAL mode.)
    ///
    /// What remains: the orchestrator closing its database between this check and the
    /// read (microseconds). Idle connections are closed after [`IDLE_CLOSE`], so none
    /// holds the database while the orchestrator changes its journal mode.
    ///
    /// Returns the stamp when the database is in WAL mode with both side files there.
    fn refuse_side_files_we_would_create(&self, resolved: &Path, stamp: FileStamp) -> Result<Option<FileStamp>> {
        let side = |suffix: &str| {
            let mut name = resolved.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let refuse = |reason: &str| {
            Err(FactsError::Missing {
                path: self.path.clone(),
                reason: reason.to_owned(),
            })
        };
        if side("-wal").exists() {
            if side("-shm").exists() {
                return Ok(self.wal_header(resolved, stamp)?.then_some(stamp));
            }
            return refuse("its -wal file is there without its -shm file; reading it would create the -shm file");
        }
        if self.wal_header(resolved, stamp)? {
            return refuse(
                "the database is in WAL mode and its -wal file is absent (the orchestrator has it \
                 closed); reading it would create the -wal and -shm files",
            );
        }
        Ok(None)
    }

    /// Whether the database's header says WAL; read again when the file's stamp changed.
    fn wal_header(&self, resolved: &Path, stamp: FileStamp) -> Result<bool> {
        let Ok(mut journal) = self.journal.lock() else {
            return Ok(false);
        };
        if journal.stamp == Some(stamp) {
            return Ok(journal.wal_header);
        }
        let identity = stamp.identity();
        if journal.header_file.as_ref().is_none_or(|(id, _)| *id != identity) {
            let file = crate::files::read::open_regular(resolved).map_err(|e| FactsError::Missing {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            journal.header_file = Some((identity, file));
        }
        let mut header = [0u8; 20];
        let wal = journal
            .header_file
            .as_ref()
            .is_some_and(|(_, file)| std::os::unix::fs::FileExt::read_exact_at(file, &mut header, 0).is_ok())
            && header[18] == 2
            && header[19] == 2;
        journal.stamp = Some(stamp);
        journal.wal_header = wal;
        Ok(wal)
    }
}

/// The reaper of one pool: closes connections idle for [`IDLE_CLOSE`], and ends when
/// the pool is empty (the next connection handed back starts another) or gone.
fn reap_idle(pool: &std::sync::Weak<Mutex<Pool>>) {
    loop {
        std::thread::park_timeout(IDLE_CLOSE / 2);
        let Some(pool) = pool.upgrade() else { return };
        let Ok(mut pool) = pool.lock() else { return };
        let closing: Vec<PooledConnection> = {
            let (stale, fresh) = std::mem::take(&mut pool.idle)
                .into_iter()
                .partition(|c| c.last_used.elapsed() >= IDLE_CLOSE);
            pool.idle = fresh;
            stale
        };
        if pool.idle.is_empty() {
            pool.reaper = false;
            drop(pool);
            drop(closing);
            return;
        }
        drop(pool);
        drop(closing);
    }
}

fn file_stamp(path: &Path) -> Result<FileStamp> {
    let missing = |reason: String| FactsError::Missing {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| missing(e.to_string()))?;
    if !meta.is_file() {
        return Err(missing("not a regular file".to_owned()));
    }
    // A change of the stamp means the header may have changed.
    Ok(FileStamp::of(&meta))
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
