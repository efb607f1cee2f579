//! Writing the files the host keeps: atomically (a temporary file renamed into place),
//! and putting a policy file back only where nothing else was put meanwhile.

use std::path::{Path, PathBuf};

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
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged = write_temporary(dir, bytes).map_err(|e| io(&e))?;
    match exchange(staged.path(), path) {
        Ok(()) => {
            // `staged` now names what was at `path` a moment ago.
            let taken_out = holds(staged.path())?;
            if taken_out == expected {
                return Ok(());
            }
            // Someone renamed a file in between the check and the exchange: theirs goes
            // back (and ours, now at the temporary name, is removed with it).
            exchange(staged.path(), path).map_err(|e| io(&e))?;
            Err(PutBack::Changed(taken_out))
        }
        // No exchange on this file system: the check above is the compare, narrowly.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            staged.persist(path).map_err(|e| io(&e.error))?;
            Ok(())
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

/// A temporary file in `dir` holding `bytes`, readable by all (0644).
fn write_temporary(dir: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))?;
    Ok(file)
}

/// Write a policy file atomically (temporary file, then rename), readable by all (0644)
/// so that an operator's `deploy-guard rollback` can read it.
pub fn write_policy_file(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))?;
    file.persist(target).map_err(|e| e.error)?;
    Ok(())
}
