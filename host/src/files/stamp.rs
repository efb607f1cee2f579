//! What the metadata of a file says, to tell that it changed: its size, its times, its
//! inode and its device. Equal stamps mean "unchanged". The one stamp of the host:
//! the watcher compares them to notice a new policy or config file, the facts source
//! to notice a database replaced or rewritten.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the metadata of a file says; equal stamps mean "unchanged".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }

    /// (device, inode): which file it is, whatever it holds.
    pub fn identity(&self) -> (u64, u64) {
        (self.device, self.inode)
    }
}

/// The stamp of `path`, or `None` if it cannot be stat'ed.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path).ok().map(|meta| FileStamp::of(&meta))
}
