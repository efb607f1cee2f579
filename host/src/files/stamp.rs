//! What the metadata of a file says, to tell that it changed: its size, times, inode
//! and device. Equal stamps mean "unchanged".

use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
