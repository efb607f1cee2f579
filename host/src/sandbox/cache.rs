//! The precompiled cache: each policy's compiled artifact, kept so that a start (or a
//! swap back to a known policy) deserializes in tens of microseconds instead of
//! compiling for milliseconds.
//!
//! `Component::deserialize` runs whatever machine code the bytes hold: it is only
//! safe on bytes this process's own code wrote. So:
//! - the directory is created 0700 and used only if it is owned by this user and
//!   writable by no one else; each entry is checked the same way;
//! - an entry is keyed by the sha256 of the component and the engine's compatibility
//!   hash (another wasmtime version or configuration misses, and compiles);
//! - an entry is a header (magic, then the sha256 of the artifact) and the artifact,
//!   written to a temporary file and renamed into place: a torn or damaged entry fails
//!   its digest and is recompiled, never deserialized;
//! - any failure (unreadable, damaged, refused by wasmtime) falls back to compiling.

use crate::files::write::{Mode, write_atomically};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"DGCACHE1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory could not be created or read.
    #[error("cache: {path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory is not private to this user.
    #[error(
        "cache: {path} must be a directory owned by uid {uid} and writable by no one else \
         (it is owned by uid {owner}, mode {mode:o}): not using it"
    )]
    NotPrivate {
        /// The path.
        path: PathBuf,
        /// This process's user.
        uid: u32,
        /// The directory's owner.
        owner: u32,
        /// Its mode.
        mode: u32,
    },
}

/// A cache directory that passed its checks.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    uid: u32,
}

/// This process's effective user: the owner of `/proc/self`.
fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

impl ArtifactCache {
    /// Open (creating it 0700 if needed) the cache at `dir`, if it is private.
    pub fn open(dir: &Path) -> Result<ArtifactCache, CacheError> {
        let io = |e: std::io::Error| CacheError::Io {
            path: dir.to_owned(),
            reason: e.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let meta = std::fs::symlink_metadata(dir).map_err(io)?;
        let uid = current_uid().unwrap_or(u32::MAX);
        let mode = meta.permissions().mode() & 0o777;
        // Only write access matters: whoever can write here can plant machine code.
        if !meta.is_dir() || meta.uid() != uid || mode & 0o022 != 0 {
            return Err(CacheError::NotPrivate {
                path: dir.to_owned(),
                uid,
                owner: meta.uid(),
                mode,
            });
        }
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            uid,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the component whose sha256 is `digest` (`sha256:<hex>`), compiled by
    /// `engine`.
    pub fn entry_path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish()))
    }

    /// The compiled component for `digest`, if a sound entry exists.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry_path(engine, digest);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.uid() != self.uid || meta.permissions().mode() & 0o022 != 0 {
            tracing::warn!(target: "deploy_guard::cache", path = %path.display(), "cache entry not written by deploy-guard: ignored");
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        let sound = bytes.len() > HEADER_LEN
            && &bytes[..MAGIC.len()] == MAGIC
            && bytes[MAGIC.len()..HEADER_LEN] == Sha256::digest(&bytes[HEADER_LEN..])[..];
        if !sound {
            tracing::warn!(target: "deploy_guard::cache", path = %path.display(), "damaged cache entry: recompiling");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the bytes are a `Component::serialize` output written by `store` below,
        // in a directory only this user can write, and they match the digest recorded
        // when they were written. wasmtime checks its own version and configuration
        // header and refuses an artifact of another engine with an error.
        match unsafe { Component::deserialize(engine, &bytes[HEADER_LEN..]) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(target: "deploy_guard::cache", path = %path.display(), "stale cache entry ({e}): recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keep the compiled `component` for `digest`. Failures are logged, not returned:
    /// a cache that cannot be written only costs the next start a compile.
    pub fn store(&self, engine: &Engine, digest: &str, component: &Component) {
        let path = self.entry_path(engine, digest);
        let result = (|| -> Result<(), String> {
            let artifact = component.serialize().map_err(|e| e.to_string())?;
            let entry = [MAGIC.as_slice(), &Sha256::digest(&artifact), &artifact].concat();
            write_atomically(&path, &entry, Mode::Private).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!(target: "deploy_guard::cache", path = %path.display(), "cannot write the cache entry: {e}");
        }
    }
}
