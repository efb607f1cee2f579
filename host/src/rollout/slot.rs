//! The live policy and how it changes: the slot holding it (arc-swapped, so a decision
//! that started on the old policy finishes on it and every later one sees the new),
//! and the rule that only a candidate that passed the gate goes live. The last good
//! policy stays live through any bad candidate; a policy that fails on probation is
//! rolled back.

use crate::admission::gate::{self, GateError};
use crate::files::write::{Mode, PutBack, put_back, write_atomically};
use crate::sandbox::policy::LoadedPolicy;
use arc_swap::ArcSwapOption;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The live policy, and why there is none when there is none.
#[derive(Debug, Default)]
pub struct PolicySlot {
    live: ArcSwapOption<LoadedPolicy>,
    /// The policy live before the current one: what a roll back returns to.
    previous: ArcSwapOption<LoadedPolicy>,
    /// Serialises the writers of `live` and `previous` (activate, roll back, relimit);
    /// readers never take it. Holds the path of the live policy's file.
    swapping: Mutex<Option<PathBuf>>,
    /// Set while the decisions right after a swap are watched.
    on_probation: AtomicBool,
    probation: Mutex<Option<Probation>>,
    /// Why no policy is live (start-up with a bad or missing file).
    problem: ArcSwapOption<String>,
    refused: Mutex<Refused>,
    /// Swaps, roll backs and refusals, for the metrics.
    counters: crate::observe::metrics::SwapCounters,
    /// The keys a candidate must be signed by, checked before the gate (issue 13).
    trust: ArcSwapOption<crate::admission::signature::Trust>,
    /// Set when the trusted keys changed while a policy was live: the live policy was
    /// admitted under other keys (or none), so its file is verified again at the next
    /// look, and it stops deciding if its signature does not hold.
    recheck_live: AtomicBool,
    /// Bumped whenever the trusted keys are set: a policy counts as signed by the keys
    /// in force only if it was verified under the current generation.
    trust_generation: std::sync::atomic::AtomicU64,
    /// The generation of the trusted keys each policy (by digest) was last verified
    /// under, as a file (its `.sig`) or as a pulled artifact (by the follower).
    verified: Mutex<std::collections::HashMap<String, u64>>,
    /// The verified detached signature of each policy that went live from a file, by
    /// digest: a roll back writes it back beside the file with the policy.
    signatures: Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

/// The decisions after a swap are watched: if [`ROLLBACK_FAILURES`] of the first
/// [`PROBATION_DECISIONS`] fail safe because of the policy (a trap, a limit, an invalid
/// result; not a database error), the host returns to the previous policy by itself.
pub const PROBATION_DECISIONS: u32 = 100;
/// See [`PROBATION_DECISIONS`].
pub const ROLLBACK_FAILURES: u32 = 10;
/// Refused digests remembered (so that each is said once); forgotten all at once
/// beyond this, after which a refused content may be said once more.
const MAX_REFUSED_REMEMBERED: usize = 1024;

#[derive(Debug)]
struct Probation {
    digest: String,
    decisions: u32,
    failures: u32,
}

#[derive(Debug, Default)]
struct Refused {
    /// Digests of candidates refused (each logged once).
    digests: HashSet<String>,
    /// The last read error logged (each distinct one logged once).
    last_read_error: Option<String>,
}

/// Who checks a candidate's signature.
#[derive(Clone, Copy, Debug)]
enum Verify {
    /// The slot, with the `.sig` beside the file, when keys are trusted.
    File,
    /// The caller did (true) or there were no keys to check with (false).
    Done(bool),
}

/// What a look at the policy file did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The live policy failed too often after its swap, or an operator asked: the
    /// previous policy is live again.
    RolledBack {
        /// The policy that was put back.
        to: String,
        /// The policy that was taken out (its digest is refused from now on).
        from: String,
    },
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
    /// An empty slot whose swaps, roll backs and refusals are counted in `counters`.
    pub fn counted(counters: crate::observe::metrics::SwapCounters) -> PolicySlot {
        PolicySlot {
            counters,
            ..PolicySlot::default()
        }
    }

    /// The live policy, if any.
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        self.live.load_full()
    }

    /// Why no policy is live.
    pub fn problem(&self) -> Option<Arc<String>> {
        self.problem.load_full()
    }

    /// Require candidates to be signed by these keys from now on (`None`: no signature
    /// required). The live policy is verified again at the next look (see
    /// [`PolicySlot::recheck_live_file`]); the policy a roll back would return to is
    /// kept only if its kept signature holds under the new keys.
    pub fn set_trust(&self, trust: Option<crate::admission::signature::Trust>) {
        let swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.trust_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let required = trust.is_some();
        self.trust.store(trust.map(Arc::new));
        if required {
            // Whether or not a policy is live now: a candidate verified under the old
            // keys may be on its way through the gate.
            self.recheck_live.store(true, Ordering::Release);
        }
        if let (Some(trust), Some(previous)) = (self.trust.load_full(), self.previous.load_full()) {
            let signature = self
                .signatures
                .lock()
                .ok()
                .and_then(|s| s.get(&previous.digest).cloned());
            let holds = signature.is_some_and(|sig| trust.verify(previous.bytes(), &sig, " (kept)").is_ok());
            if holds {
                self.mark_verified(&previous.digest, generation);
            } else {
                self.previous.store(None);
                tracing::warn!(
                    target: "deploy_guard::policy",
                    previous = %previous.identity(), previous_digest = %previous.digest,
                    "the trusted keys changed and the previous policy is not signed by them: no roll back to it"
                );
            }
        }
        drop(swapping);
    }

    /// Whether the live policy must be verified again (the trusted keys changed since
    /// it was): the watcher then does it before anything else.
    pub fn needs_recheck(&self) -> bool {
        self.recheck_live.load(Ordering::Acquire)
    }

    /// Say that `digest` was verified under the trusted keys of `generation`.
    fn mark_verified(&self, digest: &str, generation: u64) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_REFUSED_REMEMBERED {
                verified.clear();
            }
            verified.insert(digest.to_owned(), generation);
        }
    }

    /// Say that the live policy `digest` was verified (by the follower, against its
    /// registry signature) under the trusted keys in force now.
    pub fn mark_live_verified(&self, digest: &str) {
        self.mark_verified(digest, self.trust_generation.load(Ordering::Acquire));
    }

    /// Whether `digest` may decide under the trusted keys in force: none are, or it was
    /// verified under them.
    fn signed_by_trusted_keys(&self, digest: &str) -> bool {
        self.trust.load().is_none()
            || self
                .verified
                .lock()
                .is_ok_and(|verified| verified.get(digest) == Some(&self.trust_generation.load(Ordering::Acquire)))
    }

    /// Take the request to verify the live policy again, if there is one (for a policy
    /// followed from a registry, which [`crate::rollout::follow`] verifies).
    pub fn take_recheck(&self) -> Option<()> {
        self.recheck_live.swap(false, Ordering::AcqRel).then_some(())
    }

    /// If the trusted keys changed since the live policy was verified, verify it now
    /// from its own bytes: with the signature kept when it went live, or the `.sig`
    /// beside `path` (the policy file), whatever the file holds now. Signed by the
    /// keys, nothing happens (`None`); not signed, it is withdrawn ([`PolicySlot::withdraw`]).
    pub fn recheck_live_file(&self, path: &Path) -> Option<Outcome> {
        if !self.recheck_live.swap(false, Ordering::AcqRel) {
            return None;
        }
        let trust = self.trust.load_full()?;
        let generation = self.trust_generation.load(Ordering::Acquire);
        let live = self.current()?;
        let kept = self.signatures.lock().ok().and_then(|s| s.get(&live.digest).cloned());
        let beside = crate::admission::signature::read_signature(&crate::admission::signature::signature_path(path));
        let mut why = String::new();
        for (signature, from) in [
            (kept, " (kept)".to_owned()),
            (
                beside.ok(),
                format!(" in {}", crate::admission::signature::signature_path(path).display()),
            ),
        ] {
            let Some(signature) = signature else { continue };
            match trust.verify(live.bytes(), &signature, &from) {
                Ok(_) => {
                    self.mark_verified(&live.digest, generation);
                    if let Ok(mut kept) = self.signatures.lock() {
                        kept.insert(live.digest.clone(), signature);
                    }
                    return None;
                }
                Err(e) => why = e.to_string(),
            }
        }
        if why.is_empty() {
            why = format!("no signature for it ({} has none)", path.display());
        }
        Some(self.withdraw(&live.digest, &why))
    }

    /// Replace the live policy (already admitted) and say so.
    pub fn activate(&self, policy: LoadedPolicy, path: &Path) -> Outcome {
        let identity = policy.identity().to_owned();
        let digest = policy.digest.clone();
        let mut swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *swapping = Some(path.to_owned());
        let previous = self.live.swap(Some(Arc::new(policy)));
        self.problem.store(None);
        if !self.signed_by_trusted_keys(&digest) {
            // Verified under keys that changed while it went through the gate (or not
            // verified at all): the watcher verifies it again at its next look.
            self.recheck_live.store(true, Ordering::Release);
        }
        if let Some(old) = &previous {
            self.counters.swaps.inc();
            if let Ok(mut probation) = self.probation.lock() {
                // Return to the last policy that proved itself: one swapped out while
                // still on probation is not it (unless there is no other).
                let old_unproven = probation.as_ref().is_some_and(|p| p.digest == old.digest);
                // Under trusted keys, only a policy verified under the keys in force
                // may be returned to.
                if !self.signed_by_trusted_keys(&old.digest) {
                    if self.previous.load().is_none() {
                        tracing::warn!(
                            target: "deploy_guard::policy",
                            previous = %old.identity(), previous_digest = %old.digest,
                            "the policy swapped out is not signed by the trusted keys in force: no roll back to it"
                        );
                    }
                } else if !old_unproven || self.previous.load().is_none() {
                    self.previous.store(Some(Arc::clone(old)));
                }
                *probation = Some(Probation {
                    digest: digest.clone(),
                    decisions: 0,
                    failures: 0,
                });
                self.on_probation.store(true, Ordering::Release);
            }
            if let Some(kept) = self.previous.load_full() {
                save_previous(path, kept.bytes());
                // With its verified signature, so that `deploy-guard rollback` can put
                // a signed policy back under trusted keys (or none: a stale one is
                // never left beside it).
                let signature = self.signatures.lock().ok().and_then(|s| s.get(&kept.digest).cloned());
                let kept_signature = crate::admission::signature::signature_path(&previous_path(path));
                let _ = match signature {
                    Some(signature) => write_atomically(&kept_signature, &signature, Mode::Readable),
                    None => std::fs::remove_file(&kept_signature),
                };
            }
        }
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

    /// Count one decision of the policy `digest`; roll back if it is on probation and
    /// has failed too often. Cheap when no probation runs (one atomic load).
    pub fn observe(&self, digest: &str, policy_failed: bool) {
        if !self.on_probation.load(Ordering::Acquire) {
            return;
        }
        let verdict = {
            let Ok(mut probation) = self.probation.lock() else {
                return;
            };
            let Some(watched) = probation.as_mut().filter(|p| p.digest == digest) else {
                return;
            };
            watched.decisions += 1;
            watched.failures += u32::from(policy_failed);
            let verdict = if watched.failures >= ROLLBACK_FAILURES {
                Some(format!(
                    "{} of its first {} decisions failed safe",
                    watched.failures, watched.decisions
                ))
            } else if watched.decisions >= PROBATION_DECISIONS {
                tracing::info!(target: "deploy_guard::policy", digest, failures = watched.failures, "policy passed its probation");
                None
            } else {
                return;
            };
            *probation = None;
            self.on_probation.store(false, Ordering::Release);
            verdict
        };
        if let Some(why) = verdict {
            self.roll_back_from(Some(digest), &why);
        }
    }

    /// Put the previous policy back in place of the live one, whose digest is refused
    /// from then on. The previous policy's bytes are written back over the active file,
    /// so that a restart does not load the bad one again, but only where that is safe
    /// ([`put_back`]): when the file still holds the bad policy and is not a symbolic
    /// link. Otherwise the roll back holds in memory, and the log says what the file
    /// holds.
    pub fn roll_back(&self, why: &str) -> Option<Outcome> {
        self.roll_back_from(None, why)
    }

    /// [`PolicySlot::roll_back`], only if the live policy is still `expected` (a swap
    /// that happened since wins).
    fn roll_back_from(&self, expected: Option<&str>, why: &str) -> Option<Outcome> {
        let swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bad = self.live.load_full()?;
        if expected.is_some_and(|digest| digest != bad.digest) {
            return None;
        }
        let previous = self.previous.swap(None)?;
        if !self.signed_by_trusted_keys(&previous.digest) {
            tracing::warn!(
                target: "deploy_guard::policy",
                previous = %previous.identity(), previous_digest = %previous.digest,
                "no roll back: the previous policy is not signed by the trusted keys in force"
            );
            return None;
        }
        self.live.store(Some(Arc::clone(&previous)));
        self.counters.rollbacks.inc();
        if let Ok(mut refused) = self.refused.lock() {
            refused.digests.insert(bad.digest.clone());
        }
        if let Ok(mut probation) = self.probation.lock() {
            *probation = None;
            self.on_probation.store(false, Ordering::Release);
        }
        if let Some(path) = swapping.as_deref() {
            match put_back(path, &bad.digest, previous.bytes()) {
                Ok(()) => self.put_back_signature(path, &bad.digest, &previous.digest),
                // Someone put another file in place since (an operator's fix): it is
                // theirs, and it goes through the gate as any candidate does.
                Err(PutBack::Changed(now)) => tracing::warn!(
                    target: "deploy_guard::policy", path = %path.display(), holds = %now,
                    "the policy file changed since {} went live: not writing over it; it is judged as a candidate",
                    bad.identity()
                ),
                Err(e) => tracing::error!(
                    target: "deploy_guard::policy", path = %path.display(), still_holds = %bad.digest,
                    "the roll back holds in memory only: {e}; the file still holds {} ({}), which stays refused",
                    bad.identity(), bad.digest
                ),
            }
        }
        tracing::error!(
            target: "deploy_guard::policy",
            from = %bad.identity(), from_digest = %bad.digest, to = %previous.identity(), to_digest = %previous.digest,
            "policy rolled back: {} -> {}: {why}", bad.identity(), previous.identity()
        );
        Some(Outcome::RolledBack {
            to: previous.identity().to_owned(),
            from: bad.identity().to_owned(),
        })
    }

    /// After the policy file was put back: its detached signature too, when one was
    /// verified for the policy put back, so that a restart accepts what is back. By the
    /// same rule as the policy file ([`put_back`]): only over the bad policy's own
    /// signature (or where none is), never over a symbolic link.
    fn put_back_signature(&self, path: &Path, bad: &str, previous: &str) {
        let Ok(kept) = self.signatures.lock() else { return };
        let Some(signature) = kept.get(previous) else { return };
        let sig_path = crate::admission::signature::signature_path(path);
        let result = match std::fs::symlink_metadata(&sig_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&sig_path, signature, Mode::Readable).map_err(|e| PutBack::Io(e.to_string()))
            }
            Err(e) => Err(PutBack::Io(e.to_string())),
            Ok(_) => match kept.get(bad) {
                Some(bad_signature) => put_back(&sig_path, &crate::decision::digest(bad_signature), signature),
                None => Err(PutBack::Io("the bad policy's own signature is not known".to_owned())),
            },
        };
        if let Err(e) = result {
            tracing::error!(
                target: "deploy_guard::policy", path = %sig_path.display(),
                "the rolled-back policy's signature is not written back: {e}; a restart under trusted keys refuses the file until it is signed"
            );
        }
    }

    /// Keep the same policy under new limits (a configuration reload).
    pub fn relimit(&self, limits: crate::config::Limits) {
        let _swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in [&self.live, &self.previous] {
            if let Some(policy) = slot.load_full()
                && policy.limits() != limits
            {
                slot.store(Some(Arc::new(policy.with_limits(limits))));
            }
        }
    }

    /// Read the file at `path` and, if it holds a new candidate that passes the gate,
    /// make it live. A refused candidate leaves the live policy in place; each distinct
    /// refusal is logged once.
    pub fn load_from(
        &self,
        sandbox: &Arc<crate::sandbox::engine::Sandbox>,
        path: &Path,
        limits: crate::config::Limits,
    ) -> Outcome {
        self.load(sandbox, path, limits, Verify::File)
    }

    /// [`PolicySlot::load_from`] for the local copy of a policy pulled from a registry,
    /// whose signature [`crate::rollout::follow`] has verified already (cosign's registry
    /// signature is over the manifest, not over the file).
    /// `verified`: its signature was verified by trusted keys (there were some).
    pub fn load_pulled(
        &self,
        sandbox: &Arc<crate::sandbox::engine::Sandbox>,
        path: &Path,
        limits: crate::config::Limits,
        verified: bool,
    ) -> Outcome {
        self.load(sandbox, path, limits, Verify::Done(verified))
    }

    /// Say once why the policy could not be updated (no policy live: every decision
    /// fails safe with it).
    pub fn report_problem(&self, class: Option<&'static str>, reason: String) -> Outcome {
        self.refuse(None, class, reason)
    }

    fn load(
        &self,
        sandbox: &Arc<crate::sandbox::engine::Sandbox>,
        path: &Path,
        limits: crate::config::Limits,
        verify: Verify,
    ) -> Outcome {
        let check_signature = matches!(verify, Verify::File);
        let bytes = match crate::files::read::read_bounded(path, crate::files::read::MAX_POLICY_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = GateError::Unreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
                .to_string();
                return self.refuse(None, Some("unreadable"), reason);
            }
        };
        let digest = crate::sandbox::policy::digest(&bytes);
        if self.current().is_some_and(|live| live.digest == digest) {
            return Outcome::Unchanged;
        }
        // A refusal is remembered for this content judged with these vectors: fixing the
        // vectors (or the limits) gets the same module judged again. A digest refused on
        // its own (rolled back after going live) stays refused whatever the vectors.
        let vectors = crate::admission::vectors::vectors_path(path);
        let judged_with = crate::files::read::read_bounded(&vectors, crate::files::read::MAX_VECTORS_BYTES)
            .map_or_else(|_| "none".to_owned(), |v| crate::sandbox::policy::digest(&v));
        let mut key = format!("{digest} vectors={judged_with} limits={limits:?}");
        let generation = self.trust_generation.load(Ordering::Acquire);
        if let Verify::Done(true) = verify {
            self.mark_verified(&digest, generation);
        }
        let trust = self.trust.load_full().filter(|_| check_signature);
        if trust.is_some() {
            key.push_str(&format!(" sig={}", crate::admission::signature::signature_stamp(path)));
        }
        if let Ok(refused) = self.refused.lock()
            && (refused.digests.contains(&key) || refused.digests.contains(&digest))
        {
            self.counters.refused("refused-before");
            return Outcome::Refused(format!("{digest} was refused before"));
        }
        if let Some(trust) = trust {
            if let Err(e) = trust.verify_file(path, &bytes) {
                return self.refuse(
                    Some(key),
                    Some("signature"),
                    format!("policy refused: {}: {e}", path.display()),
                );
            }
            if let (Ok(signature), Ok(mut kept)) = (
                crate::admission::signature::read_signature(&crate::admission::signature::signature_path(path)),
                self.signatures.lock(),
            ) {
                if kept.len() >= MAX_REFUSED_REMEMBERED {
                    kept.clear();
                }
                kept.insert(digest.clone(), signature);
            }
            self.mark_verified(&digest, generation);
        }
        match gate::admit(sandbox, &bytes, limits, Some(&vectors)) {
            Ok(admitted) => self.activate(admitted.policy, path),
            Err(e) => self.refuse(
                Some(key),
                Some(e.reason()),
                format!("policy refused: {}: {e}", path.display()),
            ),
        }
    }

    /// The live policy `digest` is not signed by the trusted keys any more (they
    /// changed since it went live): it stops deciding, and every decision fails safe
    /// naming why, until a policy signed by them lands. Nothing happens if another
    /// policy went live meanwhile.
    pub fn withdraw(&self, digest: &str, why: &str) -> Outcome {
        let swapping = self.swapping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(live) = self.live.load_full().filter(|live| live.digest == digest) else {
            return Outcome::Unchanged;
        };
        let reason = format!(
            "policy-unavailable: the trusted keys changed and the live policy {} ({digest}) is not signed by them: {why}",
            live.identity()
        );
        self.live.store(None);
        self.problem.store(Some(Arc::new(reason.clone())));
        self.counters.refused("signature");
        drop(swapping);
        tracing::error!(target: "deploy_guard::policy", "{reason}: every decision fails safe until a signed policy lands");
        Outcome::Refused(reason)
    }

    /// Refuse a candidate (`class`: the metrics' reason label; none when what failed
    /// was not a candidate, such as an unreachable registry, which is not counted).
    fn refuse(&self, digest: Option<String>, class: Option<&'static str>, reason: String) -> Outcome {
        if let Some(class) = class {
            self.counters.refused(class);
        }
        let first_time = match self.refused.lock() {
            Ok(mut refused) => match digest {
                Some(digest) => {
                    // Bounded: a stream of distinct bad files must not grow the host.
                    if refused.digests.len() >= MAX_REFUSED_REMEMBERED {
                        refused.digests.clear();
                    }
                    refused.digests.insert(digest)
                }
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

/// Where the policy swapped out of `path` is kept, for an operator's roll back
/// (`deploy-guard rollback`): `.<file name>.previous` beside it.
pub fn previous_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.previous"))
}

fn save_previous(path: &Path, bytes: &[u8]) {
    let target = previous_path(path);
    if let Err(e) = write_atomically(&target, bytes, Mode::Readable) {
        tracing::warn!(target: "deploy_guard::policy", path = %target.display(), "cannot keep the previous policy: {e}");
    }
}
