//! The one way deploy-guard reads a file it is given (a policy, its vectors, the config
//! file, a kept previous policy): without blocking, only a regular file, and bounded.
//!
//! Whoever controls a path can put anything there. A FIFO would block a plain `open`
//! (and with it `decide`, or the watcher thread for good); `/dev/zero` or an endless
//! file would grow memory until the host dies. So the file is opened with
//! `O_NONBLOCK` (a FIFO opens at once, and is then refused), checked with `fstat` on
//! the open descriptor (the file that was opened, not whatever the path names a moment
//! later), and read with a bound: one byte past it is an error naming the bound.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest policy component read, in bytes (64 MiB: the reference is ~100 KiB);
/// also the largest policy layer pulled from a registry.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;
/// The largest vectors file read, in bytes.
pub const MAX_VECTORS_BYTES: u64 = 4 << 20;
/// The largest config file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be opened or read (missing, no permission, an I/O error).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    /// It holds more than the bound.
    #[error("larger than {max} bytes")]
    TooLarge {
        /// The bound.
        max: u64,
    },
}

impl ReadError {
    /// True when the file does not exist (as opposed to existing and being refused).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What kind of file the metadata describes, for messages.
fn kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Open `path` without blocking and without becoming its controlling terminal, and
/// make sure it is a regular file.
pub fn open_regular(path: &Path) -> Result<std::fs::File, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let file_type = file.metadata()?.file_type();
    if file_type.is_dir() {
        // As reading it would have said.
        return Err(ReadError::Io(std::io::Error::from_raw_os_error(libc::EISDIR)));
    }
    if !file_type.is_file() {
        return Err(ReadError::NotRegular(kind(file_type)));
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, at most `max_bytes` of them.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max_bytes {
        return Err(ReadError::TooLarge { max: max_bytes });
    }
    // The size can change under us: the bound holds whatever the file does meanwhile.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { max: max_bytes });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_and_one_byte_past_the_bound_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").expect("write");
        assert_eq!(read_bounded(&path, 5).expect("read"), b"12345");
        assert!(matches!(read_bounded(&path, 4), Err(ReadError::TooLarge { max: 4 })));
        assert!(read_bounded(&dir.path().join("absent"), 5).is_err_and(|e| e.is_not_found()));
        assert!(read_bounded(dir.path(), 5).is_err_and(|e| e.to_string().starts_with("Is a directory")));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 5),
            Err(ReadError::NotRegular("character device"))
        ));
    }
}
