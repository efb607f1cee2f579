//! Noticing that a file changed, and the threads that keep looking.
//!
//! Noticing a change: the file's metadata (size, mtime, inode) is polled every
//! [`POLL_INTERVAL`]; a change is acted on once the metadata has held still for one
//! interval, so a file being copied in place is read when the copy is done. Atomic
//! renames and in-place copies look the same to this, and a rename over the file
//! cannot kill the watch as it kills an inotify watch on the file. A stat costs about
//! a microsecond; the poll is on its own thread, never on a decision's path.

use crate::files::stamp::{FileStamp, stamp};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the policy and config files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Tracks one watched file: acts once per settled change.
#[derive(Debug, Default)]
pub struct ChangeDetector {
    last_seen: Option<Option<FileStamp>>,
    settled: Option<Option<FileStamp>>,
}

impl ChangeDetector {
    /// Mark the current state of `path` as handled (after a synchronous load).
    pub fn settle(&mut self, path: &Path) {
        let now = stamp(path);
        self.last_seen = Some(now);
        self.settled = Some(now);
    }

    /// True when `path` changed and then held still since the previous poll.
    pub fn poll(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        if self.last_seen != Some(now) {
            self.last_seen = Some(now);
            return false;
        }
        if self.settled == Some(now) {
            return false;
        }
        self.settled = Some(now);
        true
    }
}

/// Several files watched as one: a settled change of any of them is a change. The
/// configuration is such a set: its file and every trusted key file, so that a key
/// rewritten in place is seen as the config file is, whatever the policy is (a file or
/// a followed tag).
#[derive(Debug, Default)]
pub struct FileSet {
    files: Vec<(PathBuf, ChangeDetector)>,
}

impl FileSet {
    /// Watch `paths` from their state now.
    pub fn settled(paths: Vec<PathBuf>) -> FileSet {
        let mut set = FileSet::default();
        set.rewatch(paths);
        set
    }

    /// Watch `paths` from now on: a file watched already keeps its detector (a change
    /// it has seen and not yet reported is still reported); a new one is watched from
    /// its state now.
    pub fn rewatch(&mut self, paths: Vec<PathBuf>) {
        if self.files.len() == paths.len()
            && self
                .files
                .iter()
                .zip(&paths)
                .all(|((watched, _), path)| watched == path)
        {
            return;
        }
        let mut old = std::mem::take(&mut self.files);
        self.files = paths
            .into_iter()
            .map(|path| match old.iter().position(|(watched, _)| *watched == path) {
                Some(at) => old.swap_remove(at),
                None => {
                    let mut detector = ChangeDetector::default();
                    detector.settle(&path);
                    (path, detector)
                }
            })
            .collect();
    }

    /// True when any file changed and then held still (every file is looked at).
    pub fn poll(&mut self) -> bool {
        self.files
            .iter_mut()
            .fold(false, |changed, (path, detector)| detector.poll(path) || changed)
    }
}

/// Background threads, each calling its `refresh` every [`POLL_INTERVAL`], until dropped.
#[derive(Debug)]
pub struct Watcher {
    threads: Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Watcher {
    /// Start polling with one thread.
    pub fn spawn(mut refresh: impl FnMut() + Send + 'static) -> std::io::Result<Watcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("deploy-guard-watch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    // Parked, not asleep: dropping the watcher unparks it at once.
                    std::thread::park_timeout(POLL_INTERVAL);
                    if !stopped.load(Ordering::Relaxed) {
                        refresh();
                    }
                }
            })?;
        Ok(Watcher {
            threads: vec![(stop, thread)],
        })
    }

    /// One watcher owning the threads of both.
    pub fn and(mut self, mut other: Watcher) -> Watcher {
        self.threads.append(&mut other.threads);
        self
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for (stop, thread) in &self.threads {
            stop.store(true, Ordering::Relaxed);
            thread.thread().unpark();
        }
        for (_, thread) in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The paths being watched (they change when the configuration does).
#[derive(Debug, Default)]
pub(crate) struct WatchState {
    pub(crate) policy: ChangeDetector,
    pub(crate) vectors: ChangeDetector,
    pub(crate) signature: ChangeDetector,
    pub(crate) policy_path: PathBuf,
}
