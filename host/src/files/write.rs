//! Writing the files the host keeps, one way: a temporary file beside the target,
//! written and flushed to the disk (`fsync`), renamed into place, and the directory
//! flushed too, so that after a crash the target holds either the old bytes or the new
//! ones, never a torn or empty file, and the rename itself is not lost. Every writer of
//! the host goes through [`write_atomically`] (or [`write_new`], which never replaces,
//! or [`put_back`], which replaces only what it expects).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Who may read a file the host writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only this user (0600): private keys, the precompiled cache, a registry's local copy.
    Private,
    /// Everyone (0644): policy files and their signatures, which an operator's
    /// `deploy-guard rollback` or another user's host reads.
    Readable,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Mode::Private => 0o600,
            Mode::Readable => 0o644,
        }
    }
}

/// The directory a file at `path` lives in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary file in `dir` holding `bytes` with `mode`, flushed to the disk.
fn stage(dir: &Path, bytes: &[u8], mode: Mode) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode.bits()))?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// Flush a directory's entries (a rename into it) to the disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Put `bytes` at `path` atomically: staged beside it and flushed, renamed over it, the
/// directory flushed. A reader sees the old file or the new one, whole.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: Mode) -> std::io::Result<()> {
    let staged = stage(parent(path), bytes, mode)?;
    staged.persist(path).map_err(|e| e.error)?;
    sync_dir(parent(path))
}

/// [`write_atomically`] for a file that must not exist yet (a private key): the staged
/// file is linked in under its name, which fails if anything is there, and is never
/// renamed over an existing file.
pub fn write_new(path: &Path, bytes: &[u8], mode: Mode) -> std::io::Result<()> {
    let staged = stage(parent(path), bytes, mode)?;
    std::fs::hard_link(staged.path(), path)?;
    drop(staged);
    sync_dir(parent(path))
}

/// Why a policy file was not put back.
#[derive(Debug, thiserror::Error)]
pub enum PutBack {
    /// The file no longer holds the policy being replaced (its digest now).
    #[error("the file changed since: it holds {0}")]
    Changed(String),
    /// The path is a symbolic link: replacing it would cut it from its target for good
    /// (a Kubernetes ConfigMap mount is links into a read-only directory).
    #[error("{0} is a symbolic link, which is never replaced")]
    Symlink(PathBuf),
    /// The file could not be read, written or renamed.
    #[error("{0}")]
    Io(String),
}

/// Put `bytes` at `path` only if the file there still holds the policy `expected`
/// (a digest): a compare-and-swap, so that a file someone put in place meanwhile is
/// never lost. The new file is renamed in by exchanging it with the old one
/// (`renameat2(RENAME_EXCHANGE)`), and the file taken out is checked: if it is not the
/// expected one after all, it is exchanged back. A symbolic link is never replaced.
pub fn put_back(path: &Path, expected: &str, bytes: &[u8]) -> Result<(), PutBack> {
    let io = |e: &dyn std::fmt::Display| PutBack::Io(format!("{}: {e}", path.display()));
    let holds = |p: &Path| -> Result<String, PutBack> {
        crate::files::read::read_bounded(p, crate::files::read::MAX_POLICY_BYTES)
            .map(|b| crate::decision::digest(&b))
            .map_err(|e| io(&e))
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| io(&e))?;
    if meta.file_type().is_symlink() {
        return Err(PutBack::Symlink(path.to_owned()));
    }
    let now = holds(path)?;
    if now != expected {
        return Err(PutBack::Changed(now));
    }
    let staged = stage(parent(path), bytes, Mode::Readable).map_err(|e| io(&e))?;
    match exchange(staged.path(), path) {
        Ok(()) => {
            // `staged` now names what was at `path` a moment ago.
            let taken_out = holds(staged.path())?;
            if taken_out == expected {
                return sync_dir(parent(path)).map_err(|e| io(&e));
            }
            // Someone renamed a file in between the check and the exchange: theirs goes
            // back (and ours, now at the temporary name, is removed with it).
            exchange(staged.path(), path).map_err(|e| io(&e))?;
            Err(PutBack::Changed(taken_out))
        }
        // No exchange on this file system: the check above is the compare, narrowly.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            staged.persist(path).map_err(|e| io(&e.error))?;
            sync_dir(parent(path)).map_err(|e| io(&e))
        }
        Err(e) => Err(io(&e)),
    }
}

/// Exchange the files at `a` and `b` atomically.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_write_replaces_the_file_whole_with_the_mode_asked_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.wasm");
        std::fs::write(&path, b"old").expect("write");
        write_atomically(&path, b"new bytes", Mode::Readable).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new bytes");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o644);
        write_atomically(&path, b"private", Mode::Private).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["policy.wasm"], "no temporary file is left beside it");
    }

    #[test]
    fn a_new_file_is_never_written_over_an_existing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write_new(&path, b"first", Mode::Private).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        let again = write_new(&path, b"second", Mode::Private).expect_err("exists");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["k.key"], "the refused write leaves no temporary file");
    }

    #[test]
    fn put_back_replaces_only_what_it_expects_and_never_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.wasm");
        std::fs::write(&path, b"bad").expect("write");
        let bad = crate::decision::digest(b"bad");
        assert!(
            matches!(put_back(&path, &crate::decision::digest(b"other"), b"good"), Err(PutBack::Changed(now)) if now == bad)
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"bad");
        put_back(&path, &bad, b"good").expect("put back");
        assert_eq!(std::fs::read(&path).expect("read"), b"good");
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let good = crate::decision::digest(b"good");
        assert!(matches!(put_back(&link, &good, b"x"), Err(PutBack::Symlink(_))));
        assert!(std::fs::symlink_metadata(&link).expect("stat").file_type().is_symlink());
    }
}
