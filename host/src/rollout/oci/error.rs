//! What can go wrong with a registry or an artifact in it.

use crate::admission::signature::SignatureError;

/// What went wrong with a registry or an artifact in it.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not `HOST[:PORT]/REPOSITORY(:TAG|@sha256:...)`.
    #[error("not a registry reference {reference:?}: {reason}")]
    Reference {
        /// What was given.
        reference: String,
        /// Why it is not one.
        reason: String,
    },
    /// The registry answered that what was asked for is not there: HTTP 404, or only
    /// the "unknown" error codes of the distribution spec (`MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN`, `BLOB_UNKNOWN`, `NOT_FOUND`). Told apart from every other
    /// failure (a 5xx, a reset, a timeout, a refusal), which says nothing about what
    /// is stored.
    #[error("registry {registry}: {during}: {reference} not found ({answer})")]
    NotFound {
        /// Which registry.
        registry: String,
        /// What was asked for.
        reference: String,
        /// What was being done.
        during: String,
        /// What the registry answered (its error codes, or the HTTP status).
        answer: String,
    },
    /// The registry could not be reached or answered an error other than "not found".
    #[error("registry {registry}: {reason}")]
    Registry {
        /// Which registry.
        registry: String,
        /// What happened (credentials never appear here).
        reason: String,
    },
    /// The registry did not answer in time.
    #[error("registry {registry}: no answer within {seconds} s ({during})")]
    Timeout {
        /// Which registry.
        registry: String,
        /// The bound.
        seconds: u64,
        /// What was being done.
        during: String,
    },
    /// The docker configuration names a credential helper for the registry, and it
    /// gave no credentials: missing, failed, too slow, or answered something else.
    /// Never holds what the helper printed (it may hold the secret).
    #[error("registry {registry}: credential helper docker-credential-{helper}: {reason}")]
    Credentials {
        /// Which registry.
        registry: String,
        /// The helper's name (`docker-credential-<name>`).
        helper: String,
        /// What went wrong.
        reason: String,
    },
    /// The artifact is not a policy this host takes.
    #[error("artifact {reference}: {reason}")]
    Artifact {
        /// The artifact.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The artifact's signature is missing or not trusted.
    #[error("artifact {reference}: {error}")]
    Signature {
        /// The artifact.
        reference: String,
        /// Why.
        error: SignatureError,
    },
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}
