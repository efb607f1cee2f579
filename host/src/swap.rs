//! The live policy and how it changes: the slot holding it (arc-swapped, so a decision
//! that started on the old policy finishes on it and every later one sees the new),
//! the poll that notices a new file, and the rule that only a candidate that passed
//! the gate goes live. The last good policy stays live through any bad candidate.
//!
//! Noticing a change: the file's metadata (size, mtime, inode) is polled every
//! [`POLL_INTERVAL`]; a change is acted on once the metadata has held still for one
//! interval, so a file being copied in place is read when the copy is done. Atomic
//! renames and in-place copies look the same to this, and a rename over the file
//! cannot kill the watch as it kills an inotify watch on the file. A stat costs about
//! a microsecond; the poll is on its own thread, never on a decision's path.

use crate::gate::{self, GateError};
use crate::policy::LoadedPolicy;
use arc_swap::ArcSwapOption;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the policy and config files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the metadata of a watched file says; equal stamps mean "unchanged".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

/// The stamp of `path`, or `None` if it cannot be stat'ed.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

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

/// The live policy, and why there is none when there is none.
#[derive(Debug, Default)]
pub struct PolicySlot {
    live: ArcSwapOption<LoadedPolicy>,
    /// Why no policy is live (start-up with a bad or missing file).
    problem: ArcSwapOption<String>,
    refused: Mutex<Refused>,
}

#[derive(Debug, Default)]
struct Refused {
    /// Digests of candidates refused (each logged once).
    digests: HashSet<String>,
    /// The last read error logged (each distinct one logged once).
    last_read_error: Option<String>,
}

/// What a look at the policy file did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new policy went live (its identity and digest).
    Activated {
        /// `name@version`.
        identity: String,
        /// Its digest.
        digest: String,
    },
    /// The file holds the live policy already.
    Unchanged,
    /// The candidate was refused (the reason).
    Refused(String),
}

impl PolicySlot {
    /// The live policy, if any.
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        self.live.load_full()
    }

    /// Why no policy is live.
    pub fn problem(&self) -> Option<Arc<String>> {
        self.problem.load_full()
    }

    /// Replace the live policy (already admitted) and say so.
    pub fn activate(&self, policy: LoadedPolicy, path: &Path) -> Outcome {
        let identity = policy.identity();
        let digest = policy.digest.clone();
        let previous = self.live.swap(Some(Arc::new(policy)));
        self.problem.store(None);
        match previous {
            Some(old) => tracing::warn!(
                target: "deploy_guard::policy",
                from = %old.identity(), from_digest = %old.digest, to = %identity, to_digest = %digest,
                path = %path.display(),
                "policy swapped: {} -> {identity}", old.identity()
            ),
            None => tracing::info!(
                target: "deploy_guard::policy",
                to = %identity, to_digest = %digest, path = %path.display(),
                "policy live: {identity}"
            ),
        }
        Outcome::Activated { identity, digest }
    }

    /// Keep the same policy under new limits (a configuration reload).
    pub fn relimit(&self, limits: crate::config::Limits) {
        if let Some(live) = self.current()
            && live.limits() != limits
        {
            self.live.store(Some(Arc::new(live.with_limits(limits))));
        }
    }

    /// Read the file at `path` and, if it holds a new candidate that passes the gate,
    /// make it live. A refused candidate leaves the live policy in place; each distinct
    /// refusal is logged once.
    pub fn load_from(
        &self,
        sandbox: &Arc<crate::engine::Sandbox>,
        path: &Path,
        limits: crate::config::Limits,
    ) -> Outcome {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = GateError::Unreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
                .to_string();
                return self.refuse(None, reason);
            }
        };
        let digest = crate::policy::digest(&bytes);
        if self.current().is_some_and(|live| live.digest == digest) {
            return Outcome::Unchanged;
        }
        if let Ok(refused) = self.refused.lock()
            && refused.digests.contains(&digest)
        {
            return Outcome::Refused(format!("{digest} was refused before"));
        }
        let vectors = crate::vectors::vectors_path(path);
        match gate::admit(sandbox, &bytes, limits, Some(&vectors)) {
            Ok(admitted) => self.activate(admitted.policy, path),
            Err(e) => self.refuse(
                Some(digest),
                format!("policy refused: {}: {e}", path.display()),
            ),
        }
    }

    fn refuse(&self, digest: Option<String>, reason: String) -> Outcome {
        let first_time = match self.refused.lock() {
            Ok(mut refused) => match digest {
                Some(digest) => refused.digests.insert(digest),
                None => {
                    let new = refused.last_read_error.as_deref() != Some(reason.as_str());
                    refused.last_read_error = Some(reason.clone());
                    new
                }
            },
            Err(_) => true,
        };
        let live = self.current();
        if first_time {
            match &live {
                Some(live) => tracing::error!(
                    target: "deploy_guard::policy",
                    keeping = %live.identity(), keeping_digest = %live.digest,
                    "{reason}; keeping {}", live.identity()
                ),
                None => {
                    tracing::error!(target: "deploy_guard::policy", "{reason}; no policy is live: every decision fails safe")
                }
            }
        }
        if live.is_none() {
            self.problem
                .store(Some(Arc::new(format!("policy-unavailable: {reason}"))));
        }
        Outcome::Refused(reason)
    }
}

/// A background thread that calls `refresh` every [`POLL_INTERVAL`] until dropped.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Start polling.
    pub fn spawn(mut refresh: impl FnMut() + Send + 'static) -> std::io::Result<Watcher> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("deploy-guard-watch".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(POLL_INTERVAL);
                    refresh();
                }
            })?;
        Ok(Watcher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The paths being watched (they change when the configuration does).
#[derive(Debug, Default)]
pub(crate) struct WatchState {
    pub(crate) policy: ChangeDetector,
    pub(crate) policy_path: PathBuf,
    pub(crate) config: ChangeDetector,
}
