//! Following a tag: `DEPLOY_GUARD_POLICY=oci://HOST[:PORT]/REPOSITORY:TAG` (issue 13).
//!
//! Where a policy file is polled for a change, a tag is resolved every `poll_ms`. A
//! new manifest is pulled by digest and checked ([`crate::rollout::oci::client::Registry::pull_policy`]:
//! one wasm layer, its size bound, its digest, a trusted signature when keys are
//! trusted), kept atomically in a private local directory with the signature that was
//! verified, and then goes through the same gate, swap and probation as a file
//! ([`crate::rollout::slot::PolicySlot::load_pulled`]).
//!
//! The registry is never on a decision's path: this runs on the watcher's thread (or
//! once in `Guard::new`), each call bounded by the registry timeout. A registry that is
//! down, slow or answers garbage leaves the live policy in place; retries back off
//! (the poll interval doubled per failure, up to 16 times it). At start-up the last
//! good local copy is loaded first (its signature checked again, offline), so a host
//! restarted while the registry is down decides on it, and says so.

use crate::admission::signature::Trust;
use crate::config::Config;
use crate::files::write::{Mode, write_atomically};
use crate::rollout::oci::client::{Pulled, Registry};
use crate::rollout::oci::cosign::StoredSignature;
use crate::rollout::oci::error::OciError;
use crate::rollout::oci::reference::PolicyRef;
use crate::rollout::slot::{Outcome, PolicySlot};
use crate::sandbox::engine::Sandbox;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most the poll interval is multiplied by while the registry keeps failing.
const MAX_BACKOFF_FACTOR: u32 = 16;

/// What is kept beside the local copy: enough to trust it again offline.
#[derive(Debug, Serialize, Deserialize)]
struct LocalRecord {
    reference: String,
    manifest_digest: String,
    /// The digest of the local `policy.wasm`.
    layer_digest: String,
    signature: Option<StoredSignature>,
}

/// The state of one followed reference.
#[derive(Debug, Default)]
pub struct Follower {
    following: Option<String>,
    registry: Option<Registry>,
    next_poll: Option<Instant>,
    failures: u32,
    live_manifest: Option<String>,
    /// Manifests the gate or the artifact checks refused (not pulled again).
    refused: HashSet<String>,
    /// The plain-HTTP allowance the registry client was made with: a reload that changes
    /// it makes a new client.
    connected_insecure: Vec<String>,
    /// Manifests refused for want of a trusted signature: pulled again at each poll (a
    /// signature may come), but counted as a refusal once.
    unsigned: HashSet<String>,
}

impl Follower {
    /// The registry client as a poll gets it (see `poll_registry`).
    #[cfg(test)]
    fn client(&mut self, config: &Config, reference: &PolicyRef) -> Result<&Registry, OciError> {
        forget_client_on_new_allowance(&mut self.registry, &mut self.connected_insecure, config);
        connect_once(&mut self.registry, config, reference)
    }

    /// After a fork, in the child: the registry client (its runtime, its connections)
    /// is the parent's; leak it, and connect afresh at the next poll, which is now.
    pub fn forget_connection(&mut self) {
        std::mem::forget(self.registry.take());
        self.next_poll = None;
    }
}

/// The private directory of `reference`'s local copy: `<cache>/oci/<reference>` (mode
/// 0700), the cache being `DEPLOY_GUARD_CACHE`'s directory or, without one, a
/// `deploy-guard-oci` directory in the system's temporary directory.
pub fn local_dir(config: &Config, reference: &PolicyRef) -> PathBuf {
    let base = config
        .cache
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("deploy-guard-cache"));
    base.join("oci").join(reference.directory_name())
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl Follower {
    /// Look at the registry if the poll interval has passed (always when `now` is
    /// set), and act on a new manifest. `None` when nothing was looked at.
    pub fn refresh(
        &mut self,
        slot: &PolicySlot,
        sandbox: &Arc<Sandbox>,
        config: &Config,
        now: bool,
    ) -> Option<Outcome> {
        let text = config.policy.to_string_lossy().into_owned();
        let reference = match PolicyRef::parse(&text) {
            Ok(reference) => reference,
            Err(e) => return Some(slot.report_problem(None, e.to_string())),
        };
        // The keys in force, read once when the configuration was loaded.
        let trust = slot.trust();
        if slot.needs_recheck()
            && self.following.as_deref() == Some(text.as_str())
            && let Some(outcome) = self.recheck_live(slot, config, &reference, trust.as_deref())
        {
            return Some(outcome);
        }
        if self.following.as_deref() != Some(text.as_str()) {
            // A new reference (start-up, or the configuration changed): its local copy first.
            *self = Follower {
                following: Some(text.clone()),
                ..Follower::default()
            };
            self.load_local_copy(slot, sandbox, config, &reference, trust.as_deref());
        } else if !now && self.next_poll.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let outcome = self.poll_registry(slot, sandbox, config, &reference, trust.as_deref());
        self.failures = match outcome {
            Err(_) => self.failures.saturating_add(1),
            Ok(_) => 0,
        };
        let delay = backoff(config.poll, self.failures);
        self.next_poll = Some(Instant::now() + delay);
        Some(match outcome {
            Ok(outcome) => outcome,
            Err(e) => slot.report_problem(None, format!("policy not updated from {reference}: {e}")),
        })
    }

    fn poll_registry(
        &mut self,
        slot: &PolicySlot,
        sandbox: &Arc<Sandbox>,
        config: &Config,
        reference: &PolicyRef,
        trust: Option<&Trust>,
    ) -> Result<Outcome, OciError> {
        forget_client_on_new_allowance(&mut self.registry, &mut self.connected_insecure, config);
        let registry = connect_once(&mut self.registry, config, reference)?;
        let digest = registry.resolve(reference)?;
        // A change of the trusted keys was dealt with before the poll (recheck_live).
        if self.live_manifest.as_deref() == Some(digest.as_str()) {
            return Ok(Outcome::Unchanged);
        }
        if self.refused.contains(&digest) {
            // Counted when it was refused; the tag still pointing at it is no new refusal.
            return Ok(slot.report_problem(None, format!("{digest} was refused before")));
        }
        let pulled = match registry.pull_policy(reference, &digest, trust) {
            Ok(pulled) => pulled,
            Err(e @ OciError::Artifact { .. }) => {
                // The artifact is wrong, not the registry: not pulled again.
                self.refused.insert(digest);
                return Ok(slot.report_problem(Some("artifact"), format!("policy refused: {e}")));
            }
            Err(e @ OciError::Signature { .. }) => {
                // Not signed (yet) by a trusted key: refused, and looked at again next
                // poll without backing off, so that a signature pushed later is seen;
                // counted once per manifest, not once per poll.
                let class = self.unsigned.insert(digest.clone()).then_some("signature");
                return Ok(slot.report_problem(class, format!("policy refused: {e}")));
            }
            Err(e) => return Err(e),
        };
        let dir = local_dir(config, reference);
        let path = keep_local_copy(&dir, reference, &pulled)
            .map_err(|e| OciError::Local(format!("cannot keep the local copy in {}: {e}", dir.display())))?;
        let outcome = slot.load_pulled(sandbox, &path, config.limits, trust.is_some());
        match &outcome {
            Outcome::Activated { .. } | Outcome::Unchanged => {
                tracing::info!(target: "deploy_guard::oci", reference = %reference, manifest = %digest, signed_by = pulled.signed_by.as_deref().unwrap_or("-"), "following {reference}: {digest}");
                self.live_manifest = Some(digest);
            }
            Outcome::Refused(_) => {
                self.refused.insert(digest);
            }
            Outcome::RolledBack { .. } => {}
        }
        Ok(outcome)
    }
}

/// How long to wait before the next look at the registry after `failures` failures
/// in a row: the poll interval, doubled per failure, at most [`MAX_BACKOFF_FACTOR`]
/// times it (and never under 100 ms).
pub fn backoff(poll: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(8)).min(MAX_BACKOFF_FACTOR);
    (poll * factor).max(Duration::from_millis(100))
}

/// The registry client, connected on first use and kept.
/// Drop the registry client when the configuration's plain-HTTP allowance is not the
/// one it was made with (a reload changed it): the next poll connects afresh.
fn forget_client_on_new_allowance(client: &mut Option<Registry>, connected: &mut Vec<String>, config: &Config) {
    if *connected != config.registry_insecure {
        *client = None;
        connected.clone_from(&config.registry_insecure);
    }
}

fn connect_once<'a>(
    client: &'a mut Option<Registry>,
    config: &Config,
    reference: &PolicyRef,
) -> Result<&'a Registry, OciError> {
    if client.is_none() {
        *client = Some(Registry::connect(
            reference,
            &config.registry_insecure,
            crate::rollout::oci::client::DEFAULT_TIMEOUT,
            &|name| std::env::var(name).ok(),
        )?);
    }
    client
        .as_ref()
        .ok_or_else(|| OciError::Local("no registry client".into()))
}

/// Write the pulled policy and its record into `dir`, each atomically; the policy's path.
fn keep_local_copy(dir: &Path, reference: &PolicyRef, pulled: &Pulled) -> std::io::Result<PathBuf> {
    private_dir(dir)?;
    let record = LocalRecord {
        reference: reference.to_string(),
        manifest_digest: pulled.manifest_digest.clone(),
        layer_digest: crate::sandbox::policy::digest(&pulled.bytes),
        signature: pulled.signature.clone(),
    };
    let path = dir.join("policy.wasm");
    // The record names the policy's digest: a crash between the two renames leaves
    // a pair that does not match, which start-up refuses rather than trusts.
    write_atomically(&path, &pulled.bytes, Mode::Private)?;
    write_atomically(
        &dir.join("policy.json"),
        &serde_json::to_vec_pretty(&record).unwrap_or_default(),
        Mode::Private,
    )?;
    Ok(path)
}

/// The local record `record` (policy.json), if it describes the policy of digest
/// `layer_digest` and, when keys are trusted, holds a registry signature by one of them.
fn checked_record(record: &[u8], layer_digest: &str, trust: Option<&Trust>) -> Result<LocalRecord, String> {
    let record =
        serde_json::from_slice::<LocalRecord>(record).map_err(|e| format!("its record does not parse: {e}"))?;
    if record.layer_digest != layer_digest {
        return Err("it does not match its record".to_owned());
    }
    if let Some(trust) = trust {
        let stored = record.signature.as_ref().ok_or("it was kept unsigned")?;
        crate::rollout::oci::cosign::verify_stored(trust, stored, &record.manifest_digest)
            .map_err(|e| e.to_string())?;
    }
    Ok(record)
}

impl Follower {
    /// The trusted keys changed since the live policy was verified: verify it again
    /// now, offline, against the signature kept in its local record (the live policy
    /// must be the record's). Signed by the keys: nothing to say (`None`). Not: it is
    /// withdrawn, until a manifest signed by them is pulled.
    fn recheck_live(
        &mut self,
        slot: &PolicySlot,
        config: &Config,
        reference: &PolicyRef,
        trust: Option<&Trust>,
    ) -> Option<Outcome> {
        slot.take_recheck()?;
        let trust = trust?;
        let live = slot.current()?;
        let dir = local_dir(config, reference);
        let checked = crate::files::read::read_bounded(&dir.join("policy.json"), crate::files::read::MAX_VECTORS_BYTES)
            .map_err(|e| format!("its local record cannot be read: {e}"))
            .and_then(|record| checked_record(&record, &live.digest, Some(trust)));
        match checked {
            Ok(_) => {
                slot.mark_live_verified(&live.digest);
                None
            }
            Err(why) => {
                self.live_manifest = None;
                Some(slot.withdraw(&live.digest, &format!("{reference}: {why}")))
            }
        }
    }

    /// Start on the last good local copy, if there is one and it is still trusted.
    fn load_local_copy(
        &mut self,
        slot: &PolicySlot,
        sandbox: &Arc<Sandbox>,
        config: &Config,
        reference: &PolicyRef,
        trust: Option<&Trust>,
    ) {
        let dir = local_dir(config, reference);
        let path = dir.join("policy.wasm");
        // The directory must be our own and private: a local copy planted by another
        // user (the default lives under the shared temporary directory) is never used.
        if let Err(why) = owned_and_private(&dir) {
            tracing::warn!(target: "deploy_guard::oci", dir = %dir.display(), "not using the local copy: {why}");
            return;
        }
        let Ok(record) =
            crate::files::read::read_bounded(&dir.join("policy.json"), crate::files::read::MAX_VECTORS_BYTES)
        else {
            return;
        };
        let checked = crate::files::read::read_bounded(&path, crate::files::read::MAX_POLICY_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|bytes| checked_record(&record, &crate::sandbox::policy::digest(&bytes), trust));
        match checked {
            Ok(record) => {
                tracing::warn!(target: "deploy_guard::oci", reference = %reference, manifest = %record.manifest_digest, path = %path.display(), "starting on the last good local copy of {reference} ({}) before asking the registry", record.manifest_digest);
                if matches!(
                    slot.load_pulled(sandbox, &path, config.limits, trust.is_some()),
                    Outcome::Activated { .. }
                ) {
                    self.live_manifest = Some(record.manifest_digest);
                }
            }
            Err(why) => {
                tracing::error!(target: "deploy_guard::oci", path = %path.display(), "the local copy of {reference} is not used: {why}");
            }
        }
    }
}

/// Why a candidate named on the command line (`check`, `diff`, `replay --against`,
/// `serve --shadow`) was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    /// It could not be pulled, or the artifact is wrong.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// Its signature is missing or not trusted.
    #[error(transparent)]
    Signature(#[from] crate::admission::signature::SignatureError),
    /// The gate refused it.
    #[error(transparent)]
    Gate(#[from] crate::admission::gate::GateError),
}

/// Admit the candidate `policy` (a file, or `oci://...` pulled now), requiring a
/// trusted signature first when `config` trusts keys; then the gate.
pub fn admit_candidate(
    sandbox: &Arc<Sandbox>,
    policy: &Path,
    config: &Config,
) -> Result<crate::admission::gate::Admitted, CandidateError> {
    let trust = config.trust.as_deref();
    if crate::rollout::oci::reference::is_oci(policy) {
        let reference = PolicyRef::parse(&policy.to_string_lossy())?;
        let registry = Registry::connect(
            &reference,
            &config.registry_insecure,
            crate::rollout::oci::client::DEFAULT_TIMEOUT,
            &|name| std::env::var(name).ok(),
        )?;
        let digest = registry.resolve(&reference)?;
        let pulled = registry.pull_policy(&reference, &digest, trust)?;
        return Ok(crate::admission::gate::admit(
            sandbox,
            &pulled.bytes,
            config.limits,
            None,
        )?);
    }
    // Read once (bounded, never blocking): the bytes whose signature is checked are the
    // bytes the gate judges, whatever happens to the file meanwhile.
    let bytes = crate::admission::gate::read_candidate(policy)?;
    if let Some(trust) = trust {
        trust.verify_file(policy, &bytes)?;
    }
    Ok(crate::admission::gate::admit(
        sandbox,
        &bytes,
        config.limits,
        Some(&crate::admission::vectors::vectors_path(policy)),
    )?)
}

/// Whether `dir` is a directory of this user's, closed to everyone else (0700).
fn owned_and_private(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".to_owned());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not by this process's ({me})", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("mode {:o}: open to other users", meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_that_changes_the_plain_http_allowance_makes_a_new_client() {
        let reference = PolicyRef::parse("registry.example:5000/policies/guard:live").expect("reference");
        let mut config = Config::default();
        let mut follower = Follower::default();
        // Not loopback, not allowed: HTTPS only.
        assert!(!follower.client(&config, &reference).expect("client").plain_http());
        // A reload allows it: the next poll's client may use plain HTTP.
        config.registry_insecure = vec!["registry.example:5000".to_owned()];
        assert!(follower.client(&config, &reference).expect("client").plain_http());
        // And taken back: HTTPS only again.
        config.registry_insecure.clear();
        assert!(!follower.client(&config, &reference).expect("client").plain_http());
    }

    #[test]
    fn retries_back_off_to_sixteen_polls_and_reset_on_success() {
        let poll = Duration::from_millis(200);
        let delays: Vec<u64> = (0..7).map(|f| backoff(poll, f).as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 3200, 3200]);
        assert_eq!(backoff(poll, u32::MAX), Duration::from_millis(3200));
        assert_eq!(backoff(Duration::from_millis(1), 0), Duration::from_millis(100));
    }
}
