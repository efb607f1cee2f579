//! Who wrote a policy: cosign-compatible key-based signatures, checked before the gate.
//!
//! The gate says a policy is safe; it cannot say who wrote it. Anyone who can write the
//! policy file decides every stamp, so an operator can require that every policy be
//! signed by one of a few keys (`DEPLOY_GUARD_TRUSTED_KEYS`, config `trusted_keys`: a
//! CSV of public-key files). When set, every path that loads a policy checks the
//! signature first; an unsigned or foreign-signed candidate is refused like any other
//! bad candidate.
//!
//! The format is cosign's, not one of our own, so `cosign sign-blob --key` and
//! `cosign verify-blob --key` interoperate with `deploy-guard sign` and `verify`:
//! ECDSA P-256 over the SHA-256 of the bytes, the ASN.1 DER signature base64-encoded in
//! a detached `FILE.sig`; public keys as PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as
//! `cosign generate-key-pair` writes `cosign.pub`. Private keys are unencrypted PKCS#8
//! PEM (`cosign import-key-pair --key PREFIX.key` turns one into cosign's encrypted
//! form). Built on the `p256` crate directly: the `sigstore` crate would bring about 80
//! more crates (OpenID Connect, RSA, protobuf, aws-lc) for the two operations used here.

use crate::files::write::{Mode, PutBack, put_back, write_atomically, write_new};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
/// A private signing key (what [`sign`] takes and [`read_signing_key`] reads).
pub use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use std::path::{Path, PathBuf};

/// A signature file larger than this is not a signature (a DER P-256 signature in
/// base64 is under 100 bytes; cosign may add a newline).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// A key file larger than this is not a key.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// Why a signature or a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A trusted-keys file is missing or is not a public key: a configuration problem.
    #[error("trusted key {path}: {reason}")]
    TrustedKey {
        /// The file.
        path: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The policy has no signature beside it.
    #[error("unsigned: {path} does not exist")]
    Missing {
        /// The signature file expected.
        path: String,
    },
    /// The signature could not be read.
    #[error("cannot read the signature {path}: {reason}")]
    Unreadable {
        /// The signature file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The signature is not a base64 DER ECDSA signature (truncated, garbage).
    #[error("malformed signature{from}: {reason}")]
    Malformed {
        /// ` in <file>` when it came from a file.
        from: String,
        /// Why.
        reason: String,
    },
    /// A well-formed signature that none of the trusted keys made over these bytes.
    #[error(
        "signature not valid for any of the {keys} trusted key(s) ({names}): signed by another key or over other bytes"
    )]
    NotTrusted {
        /// How many keys were tried.
        keys: usize,
        /// Their files.
        names: String,
    },
    /// A private key could not be used.
    #[error("signing key {path}: {reason}")]
    SigningKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A key file could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where the detached signature of `path` is: `path` + `.sig` (cosign's convention for
/// `sign-blob --output-signature`).
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The public keys a policy must be signed by, from `trusted_keys`. Unusable key files
/// are kept as a problem that refuses every policy: a broken trust setting never means
/// "trust everything".
///
/// Built once per configuration load; two are equal when they hold the same keys from
/// the same files (and the same problem), whatever their generation. The generation
/// tells one load's keys from another's: a policy verified under one generation counts
/// as signed only while that generation is in force (see [`crate::rollout::slot`]).
#[derive(Clone, Debug)]
pub struct Trust {
    keys: Vec<(String, VerifyingKey)>,
    problem: Option<String>,
    generation: u64,
}

impl PartialEq for Trust {
    fn eq(&self, other: &Trust) -> bool {
        self.keys == other.keys && self.problem == other.problem
    }
}

impl Eq for Trust {}

/// The generation of the last [`Trust`] read.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Trust {
    /// Read the key files; `None` when no key is configured (signatures not required).
    /// Each call is a new generation.
    pub fn from_files(paths: &[PathBuf]) -> Option<Trust> {
        if paths.is_empty() {
            return None;
        }
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            match read_public_key(path) {
                Ok(key) => keys.push((path.display().to_string(), key)),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Some(Trust {
            keys,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        })
    }

    /// Which load of the keys this is (see the type's documentation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Why this trust setting is unusable (then every policy is refused).
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Check `signature_text` (cosign's base64 DER) over `message`; the key that made
    /// it, by file name.
    pub fn verify(&self, message: &[u8], signature_text: &[u8], from: &str) -> Result<&str, SignatureError> {
        if let Some(problem) = &self.problem {
            return Err(SignatureError::TrustedKey {
                path: "setting".into(),
                reason: problem.clone(),
            });
        }
        let signature = parse_signature(signature_text, from)?;
        self.keys
            .iter()
            .find(|(_, key)| key.verify(message, &signature).is_ok())
            .map(|(name, _)| name.as_str())
            .ok_or_else(|| SignatureError::NotTrusted {
                keys: self.keys.len(),
                names: self.keys.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
            })
    }

    /// Check the detached signature beside the policy file `path`, whose bytes are
    /// `bytes` (read once by the caller, so that what is verified is what is loaded).
    pub fn verify_file(&self, path: &Path, bytes: &[u8]) -> Result<&str, SignatureError> {
        let sig_path = signature_path(path);
        let text = read_signature(&sig_path)?;
        self.verify(bytes, &text, &format!(" in {}", sig_path.display()))
    }
}

/// Put `signature` beside the policy file `policy` (at its [`signature_path`]) after a
/// roll back put the policy back: where no file is there, written atomically; over a
/// signature there, only if it is the one `expected` (its digest), by the same
/// compare-and-swap as the policy ([`put_back`]); never over a symbolic link, and never
/// over a signature nobody expected. The one put-back of a signature, for the host's
/// automatic roll back and `deploy-guard rollback` alike.
pub fn put_back_signature(policy: &Path, expected: Option<&str>, signature: &[u8]) -> Result<(), PutBack> {
    let path = signature_path(policy);
    match (std::fs::symlink_metadata(&path), expected) {
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomically(&path, signature, Mode::Readable).map_err(|e| PutBack::Io(e.to_string()))
        }
        (Err(e), _) => Err(PutBack::Io(format!("{}: {e}", path.display()))),
        (Ok(_), Some(expected)) => put_back(&path, expected, signature),
        (Ok(_), None) => Err(PutBack::Io(format!(
            "{} holds a signature that is not the one the policy taken out had",
            path.display()
        ))),
    }
}

/// Read a signature file, bounded.
pub fn read_signature(sig_path: &Path) -> Result<Vec<u8>, SignatureError> {
    let display = sig_path.display().to_string();
    match bounded_read(sig_path, MAX_SIGNATURE_BYTES) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SignatureError::Missing { path: display }),
        Err(e) => Err(SignatureError::Unreadable {
            path: display,
            reason: e.to_string(),
        }),
    }
}

/// The digest of the signature beside `path` (or `none`), so that a refusal for a
/// missing or bad signature is judged again when the signature changes.
pub fn signature_stamp(path: &Path) -> String {
    bounded_read(&signature_path(path), MAX_SIGNATURE_BYTES)
        .map_or_else(|_| "none".to_owned(), |b| crate::decision::digest(&b))
}

fn parse_signature(text: &[u8], from: &str) -> Result<Signature, SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed {
        from: from.to_owned(),
        reason,
    };
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() {
        return Err(malformed("empty".into()));
    }
    let der = BASE64
        .decode(trimmed)
        .map_err(|e| malformed(format!("not base64: {e}")))?;
    Signature::from_der(&der).map_err(|_| malformed(format!("not an ECDSA P-256 DER signature ({} bytes)", der.len())))
}

/// Sign `message` with `key`: cosign's base64 DER text (no newline).
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    let signature: Signature = key.sign(message);
    let der: DerSignature = signature.to_der();
    BASE64.encode(der.as_bytes())
}

/// Read a public key file (PEM `PUBLIC KEY`, P-256).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, SignatureError> {
    let key_error = |reason: String| SignatureError::TrustedKey {
        path: path.display().to_string(),
        reason,
    };
    let bytes = bounded_read(path, MAX_KEY_BYTES).map_err(|e| key_error(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| key_error("not a PEM text file".into()))?;
    VerifyingKey::from_public_key_pem(text.trim())
        .map_err(|e| key_error(format!("not an ECDSA P-256 public key in PEM ({e})")))
}

/// Read a private key file (PEM PKCS#8, P-256).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, SignatureError> {
    let key_error = |reason: String| SignatureError::SigningKey {
        path: path.display().to_string(),
        reason,
    };
    let bytes = bounded_read(path, MAX_KEY_BYTES).map_err(|e| key_error(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| key_error("not a PEM text file".into()))?;
    if text.contains("ENCRYPTED") {
        return Err(key_error(
            "an encrypted key (cosign's own format): export it unencrypted as PKCS#8 PEM".into(),
        ));
    }
    SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| key_error(format!("not an unencrypted PKCS#8 P-256 key ({e})")))
}

/// Write a new key pair: `PREFIX.key` (PKCS#8 PEM, mode 0600, never overwritten) and
/// `PREFIX.pub` (PEM public key). Returns both paths.
pub fn generate_key_pair(prefix: &Path) -> Result<(PathBuf, PathBuf), SignatureError> {
    let mut private_path = prefix.as_os_str().to_owned();
    private_path.push(".key");
    let mut public_path = prefix.as_os_str().to_owned();
    public_path.push(".pub");
    let (private_path, public_path) = (PathBuf::from(private_path), PathBuf::from(public_path));
    let write_error = |path: &Path, reason: String| SignatureError::Write {
        path: path.display().to_string(),
        reason,
    };
    let key = SigningKey::random(&mut rand_core::OsRng);
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| write_error(&private_path, e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| write_error(&public_path, e.to_string()))?;
    write_new(&private_path, private_pem.as_bytes(), Mode::Private)
        .map_err(|e| write_error(&private_path, e.to_string()))?;
    write_atomically(&public_path, public_pem.as_bytes(), Mode::Readable)
        .map_err(|e| write_error(&public_path, e.to_string()))?;
    Ok((private_path, public_path))
}

/// Read at most `limit` bytes of a regular file; larger is an error.
fn bounded_read(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    // The host's one way of reading a given file (issue 11): without blocking on a
    // FIFO, regular files only, bounded.
    crate::files::read::read_bounded(path, limit).map_err(|e| match e {
        crate::files::read::ReadError::Io(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        generate_key_pair(&dir.join(name)).expect("keygen")
    }

    #[test]
    fn a_signature_verifies_with_its_key_and_not_with_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ours_key, ours_pub) = pair(dir.path(), "ours");
        let (_, theirs_pub) = pair(dir.path(), "theirs");
        let key = read_signing_key(&ours_key).expect("read key");
        let text = sign(&key, b"policy bytes");
        let ours = Trust::from_files(std::slice::from_ref(&ours_pub)).expect("trust");
        assert_eq!(
            ours.verify(b"policy bytes", text.as_bytes(), "").expect("valid"),
            ours_pub.display().to_string()
        );
        assert!(matches!(
            ours.verify(b"other bytes", text.as_bytes(), ""),
            Err(SignatureError::NotTrusted { .. })
        ));
        let theirs = Trust::from_files(&[theirs_pub]).expect("trust");
        assert!(matches!(
            theirs.verify(b"policy bytes", text.as_bytes(), ""),
            Err(SignatureError::NotTrusted { .. })
        ));
    }

    #[test]
    fn the_private_key_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _) = pair(dir.path(), "k");
        let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            generate_key_pair(&dir.path().join("k")),
            Err(SignatureError::Write { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_signatures_are_malformed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = pair(dir.path(), "k");
        let text = sign(&read_signing_key(&key).expect("key"), b"m");
        let trust = Trust::from_files(&[public]).expect("trust");
        let truncated = &text.as_bytes()[..text.len() / 2];
        assert!(matches!(
            trust.verify(b"m", truncated, ""),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            trust.verify(b"m", b"", ""),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            trust.verify(b"m", b"%%%", ""),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn a_missing_or_non_key_trusted_file_refuses_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, public) = pair(dir.path(), "k");
        let text = sign(&read_signing_key(&key).expect("key"), b"m");
        let not_a_key = dir.path().join("not-a-key.pub");
        std::fs::write(&not_a_key, "hello").expect("write");
        for broken in [dir.path().join("missing.pub"), not_a_key, key.clone()] {
            let trust = Trust::from_files(&[public.clone(), broken.clone()]).expect("trust");
            assert!(
                trust
                    .problem()
                    .is_some_and(|p| p.contains(&broken.display().to_string()))
            );
            assert!(matches!(
                trust.verify(b"m", text.as_bytes(), ""),
                Err(SignatureError::TrustedKey { .. })
            ));
        }
        assert!(Trust::from_files(&[]).is_none());
    }
}
