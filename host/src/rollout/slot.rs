//! The live policy and how it changes: the slot holding it (arc-swapped, so a decision
//! that started on the old policy finishes on it and every later one sees the new),
//! and the rule that only a candidate that passed the gate goes live. The last good
//! policy stays live through any bad candidate; a policy that fails on probation is
//! rolled back.

use crate::admission::gate;
use crate::admission::signature::{Trust, put_back_signature, read_signature, signature_path};
use crate::files::write::{Mode, PutBack, put_back, write_atomically};
use crate::sandbox::policy::LoadedPolicy;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The live policy, and why there is none when there is none.
///
/// Decisions read `live` (lock-free) and, while a probation runs (`on_probation`, one
/// atomic load otherwise), count themselves. Everything else is the writers' (a swap, a
/// roll back, a refusal, new limits, new trusted keys), under one lock that no decision
/// takes outside a probation; the gate never runs under it.
#[derive(Debug, Default)]
pub struct PolicySlot {
    live: ArcSwapOption<LoadedPolicy>,
    /// Set while the decisions right after a swap are watched.
    on_probation: AtomicBool,
    state: Mutex<SlotState>,
    /// Swaps, roll backs and refusals, for the metrics.
    counters: crate::observe::metrics::SwapCounters,
}

/// What the writers of the slot share.
#[derive(Debug, Default)]
struct SlotState {
    /// The path of the live policy's file.
    path: Option<PathBuf>,
    /// The policy live before the current one: what a roll back returns to.
    previous: Option<Arc<LoadedPolicy>>,
    /// Why no policy is live (start-up with a bad or missing file, a withdrawn policy).
    problem: Option<Arc<String>>,
    probation: Option<Probation>,
    /// Refusals (by digest, or digest with what it was judged with), each said once.
    refused: Remembered<String, ()>,
    /// The last read error said (each distinct one said once).
    last_read_error: Option<String>,
    /// The keys a candidate must be signed by, checked before the gate (issue 13).
    trust: Option<Arc<Trust>>,
    /// Set when the trusted keys changed while a policy was live: the live policy was
    /// admitted under other keys (or none), so it is verified again at the watcher's
    /// next look, and it stops deciding if its signature does not hold.
    recheck_live: bool,
    /// The generation of the trusted keys each policy (by digest) was last verified
    /// under, as a file (its `.sig`) or as a pulled artifact (by the follower): a policy
    /// counts as signed only under the generation in force.
    verified: Remembered<String, u64>,
    /// The verified detached signature of each policy that went live from a file, by
    /// digest: a roll back writes it back beside the file with the policy.
    signatures: Remembered<String, Vec<u8>>,
    /// The limits of the last configuration reload, if one came: a candidate admitted
    /// under the limits before it (its gate ran while the configuration was reloaded)
    /// goes live under these.
    limits: Option<crate::config::Limits>,
}

impl SlotState {
    /// Whether `digest` may decide under the trusted keys in force: none are, or it was
    /// verified under them.
    fn signed_by_trusted_keys(&self, digest: &str) -> bool {
        self.trust
            .as_ref()
            .is_none_or(|trust| self.verified.get(digest) == Some(&trust.generation()))
    }

    /// Say that `digest` was verified under the trusted keys in force.
    fn mark_verified(&mut self, digest: &str) {
        if let Some(generation) = self.trust.as_ref().map(|trust| trust.generation()) {
            self.verified.insert(digest.to_owned(), generation);
        }
    }
}

/// A map that forgets everything at once when it is full: what the slot remembers
/// (refusals, verifications, signatures) is bounded, so that a stream of distinct
/// candidates cannot grow the host; forgetting costs at most a second look (and a
/// refusal said once more).
#[derive(Debug)]
struct Remembered<K, V>(HashMap<K, V>);

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Remembered(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq, V> Remembered<K, V> {
    /// Remember `value` for `key`; whether `key` was new.
    fn insert(&mut self, key: K, value: V) -> bool {
        if self.0.len() >= MAX_REMEMBERED && !self.0.contains_key(&key) {
            self.0.clear();
        }
        self.0.insert(key, value).is_none()
    }

    fn get<Q: std::hash::Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.get(key)
    }

    fn contains<Q: std::hash::Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.contains_key(key)
    }
}

/// The decisions after a swap are watched: if [`ROLLBACK_FAILURES`] of the first
/// [`PROBATION_DECISIONS`] fail safe because of the policy (a trap, a limit, an invalid
/// result; not a database error), the host returns to the previous policy by itself.
pub const PROBATION_DECISIONS: u32 = 100;
/// See [`PROBATION_DECISIONS`].
pub const ROLLBACK_FAILURES: u32 = 10;
/// How many refusals, verifications and signatures the slot remembers (see
/// [`Remembered`]).
const MAX_REMEMBERED: usize = 1024;

#[derive(Debug)]
struct Probation {
    digest: String,
    decisions: u32,
    failures: u32,
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
        self.state.lock().problem.clone()
    }

    /// The trusted keys in force (none: signatures not required).
    pub fn trust(&self) -> Option<Arc<Trust>> {
        self.state.lock().trust.clone()
    }

    /// Require candidates to be signed by these keys from now on (`None`: no signature
    /// required). The live policy is verified again at the next look (see
    /// [`PolicySlot::recheck_live_file`]); the policy a roll back would return to is
    /// kept only if its kept signature holds under the new keys.
    pub fn set_trust(&self, trust: Option<Arc<Trust>>) {
        let mut state = self.state.lock();
        state.trust = trust;
        let Some(trust) = state.trust.clone() else {
            return;
        };
        // Whether or not a policy is live now: a candidate verified under the old keys
        // may be on its way through the gate.
        state.recheck_live = true;
        if let Some(previous) = state.previous.clone() {
            let holds = state
                .signatures
                .get(&previous.digest)
                .is_some_and(|sig| trust.verify(previous.bytes(), sig, " (kept)").is_ok());
            if holds {
                state.mark_verified(&previous.digest);
            } else {
                state.previous = None;
                tracing::warn!(
                    target: "deploy_guard::policy",
                    previous = %previous.identity(), previous_digest = %previous.digest,
                    "the trusted keys changed and the previous policy is not signed by them: no roll back to it"
                );
            }
        }
    }

    /// Whether the live policy must be verified again (the trusted keys changed since
    /// it was): the watcher then does it before anything else.
    pub fn needs_recheck(&self) -> bool {
        self.state.lock().recheck_live
    }

    /// Say that the live policy `digest` was verified (by the follower, against its
    /// registry signature) under the trusted keys in force now.
    pub fn mark_live_verified(&self, digest: &str) {
        self.state.lock().mark_verified(digest);
    }

    /// Take the request to verify the live policy again, if there is one (for a policy
    /// followed from a registry, which [`crate::rollout::follow`] verifies).
    pub fn take_recheck(&self) -> Option<()> {
        std::mem::take(&mut self.state.lock().recheck_live).then_some(())
    }

    /// If the trusted keys changed since the live policy was verified, verify it now
    /// from its own bytes: with the signature kept when it went live, or the `.sig`
    /// beside `path` (the policy file), whatever the file holds now. Signed by the
    /// keys, nothing happens (`None`); not signed, it is withdrawn ([`PolicySlot::withdraw`]).
    pub fn recheck_live_file(&self, path: &Path) -> Option<Outcome> {
        let (trust, kept, live) = {
            let mut state = self.state.lock();
            if !std::mem::take(&mut state.recheck_live) {
                return None;
            }
            let trust = state.trust.clone()?;
            let live = self.current()?;
            (trust, state.signatures.get(&live.digest).cloned(), live)
        };
        let beside = read_signature(&signature_path(path));
        let mut why = String::new();
        for (signature, from) in [
            (kept, " (kept)".to_owned()),
            (beside.ok(), format!(" in {}", signature_path(path).display())),
        ] {
            let Some(signature) = signature else { continue };
            match trust.verify(live.bytes(), &signature, &from) {
                Ok(_) => {
                    let mut state = self.state.lock();
                    // Verified under the keys it was checked with, if they are still
                    // the ones in force.
                    if state
                        .trust
                        .as_ref()
                        .is_some_and(|now| now.generation() == trust.generation())
                    {
                        state.mark_verified(&live.digest);
                        state.signatures.insert(live.digest.clone(), signature);
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
        let mut state = self.state.lock();
        let policy = match state.limits {
            Some(limits) if limits != policy.limits() => policy.with_limits(limits),
            _ => policy,
        };
        state.path = Some(path.to_owned());
        let previous = self.live.swap(Some(Arc::new(policy)));
        state.problem = None;
        if !state.signed_by_trusted_keys(&digest) {
            // Verified under keys that changed while it went through the gate (or not
            // verified at all): the watcher verifies it again at its next look.
            state.recheck_live = true;
        }
        if let Some(old) = &previous {
            self.counters.swaps.inc();
            // Return to the last policy that proved itself: one swapped out while still
            // on probation is not it (unless there is no other).
            let old_unproven = state.probation.as_ref().is_some_and(|p| p.digest == old.digest);
            // Under trusted keys, only a policy verified under the keys in force may be
            // returned to.
            if !state.signed_by_trusted_keys(&old.digest) {
                if state.previous.is_none() {
                    tracing::warn!(
                        target: "deploy_guard::policy",
                        previous = %old.identity(), previous_digest = %old.digest,
                        "the policy swapped out is not signed by the trusted keys in force: no roll back to it"
                    );
                }
            } else if !old_unproven || state.previous.is_none() {
                state.previous = Some(Arc::clone(old));
            }
            state.probation = Some(Probation {
                digest: digest.clone(),
                decisions: 0,
                failures: 0,
            });
            self.on_probation.store(true, Ordering::Release);
            if let Some(kept) = &state.previous {
                save_previous(path, kept.bytes());
                // With its verified signature, so that `deploy-guard rollback` can put
                // a signed policy back under trusted keys (or none: a stale one is
                // never left beside it).
                let kept_signature = signature_path(&previous_path(path));
                let _ = match state.signatures.get(&kept.digest) {
                    Some(signature) => write_atomically(&kept_signature, signature, Mode::Readable),
                    None => std::fs::remove_file(&kept_signature),
                };
            }
        }
        drop(state);
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
        if let Some(live) = self.current() {
            say_if_no_monitor(&live);
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
            let mut state = self.state.lock();
            let Some(watched) = state.probation.as_mut().filter(|p| p.digest == digest) else {
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
            state.probation = None;
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
        let mut state = self.state.lock();
        let bad = self.live.load_full()?;
        if expected.is_some_and(|digest| digest != bad.digest) {
            return None;
        }
        let previous = state.previous.take()?;
        if !state.signed_by_trusted_keys(&previous.digest) {
            tracing::warn!(
                target: "deploy_guard::policy",
                previous = %previous.identity(), previous_digest = %previous.digest,
                "no roll back: the previous policy is not signed by the trusted keys in force"
            );
            return None;
        }
        self.live.store(Some(Arc::clone(&previous)));
        self.counters.rollbacks.inc();
        state.refused.insert(bad.digest.clone(), ());
        state.probation = None;
        self.on_probation.store(false, Ordering::Release);
        if let Some(path) = state.path.as_deref() {
            match put_back(path, &bad.digest, previous.bytes()) {
                Ok(()) => {
                    // Its signature too, when one was verified for it, so that a
                    // restart under trusted keys accepts what is back.
                    if let Some(signature) = state.signatures.get(&previous.digest) {
                        let bad_signature = state.signatures.get(&bad.digest).map(|s| crate::decision::digest(s));
                        if let Err(e) = put_back_signature(path, bad_signature.as_deref(), signature) {
                            tracing::error!(
                                target: "deploy_guard::policy", path = %signature_path(path).display(),
                                "the rolled-back policy's signature is not written back: {e}; a restart under trusted keys refuses the file until it is signed"
                            );
                        }
                    }
                }
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
        drop(state);
        tracing::error!(
            target: "deploy_guard::policy",
            from = %bad.identity(), from_digest = %bad.digest, to = %previous.identity(), to_digest = %previous.digest,
            "policy rolled back: {} -> {}: {why}", bad.identity(), previous.identity()
        );
        say_if_no_monitor(&previous);
        Some(Outcome::RolledBack {
            to: previous.identity().to_owned(),
            from: bad.identity().to_owned(),
        })
    }

    /// Keep the same policy under new limits (a configuration reload).
    pub fn relimit(&self, limits: crate::config::Limits) {
        let mut state = self.state.lock();
        state.limits = Some(limits);
        if let Some(policy) = self.live.load_full()
            && policy.limits() != limits
        {
            self.live.store(Some(Arc::new(policy.with_limits(limits))));
        }
        if let Some(previous) = state.previous.as_mut()
            && previous.limits() != limits
        {
            *previous = Arc::new(previous.with_limits(limits));
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
        let bytes = match gate::read_candidate(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.refuse(None, Some(e.reason()), e.to_string()),
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
        let trust = {
            let mut state = self.state.lock();
            if let Verify::Done(true) = verify {
                state.mark_verified(&digest);
            }
            let trust = state.trust.clone().filter(|_| matches!(verify, Verify::File));
            if trust.is_some() {
                key.push_str(&format!(" sig={}", crate::admission::signature::signature_stamp(path)));
            }
            if state.refused.contains(&key) || state.refused.contains(&digest) {
                self.counters.refused("refused-before");
                return Outcome::Refused(format!("{digest} was refused before"));
            }
            trust
        };
        if let Some(trust) = trust {
            if let Err(e) = trust.verify_file(path, &bytes) {
                return self.refuse(
                    Some(key),
                    Some("signature"),
                    format!("policy refused: {}: {e}", path.display()),
                );
            }
            let mut state = self.state.lock();
            // Verified under the keys it was checked with, if they are still in force.
            if state
                .trust
                .as_ref()
                .is_some_and(|now| now.generation() == trust.generation())
            {
                if let Ok(signature) = read_signature(&signature_path(path)) {
                    state.signatures.insert(digest.clone(), signature);
                }
                state.mark_verified(&digest);
            }
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
        let mut state = self.state.lock();
        let Some(live) = self.live.load_full().filter(|live| live.digest == digest) else {
            return Outcome::Unchanged;
        };
        let reason = format!(
            "policy-unavailable: the trusted keys changed and the live policy {} ({digest}) is not signed by them: {why}",
            live.identity()
        );
        self.live.store(None);
        state.problem = Some(Arc::new(reason.clone()));
        self.counters.refused("signature");
        drop(state);
        tracing::error!(target: "deploy_guard::policy", "{reason}: every decision fails safe until a signed policy lands");
        Outcome::Refused(reason)
    }

    /// Refuse a candidate (`class`: the metrics' reason label; none when what failed
    /// was not a candidate, such as an unreachable registry, which is not counted).
    fn refuse(&self, digest: Option<String>, class: Option<&'static str>, reason: String) -> Outcome {
        if let Some(class) = class {
            self.counters.refused(class);
        }
        let mut state = self.state.lock();
        let first_time = match digest {
            Some(digest) => state.refused.insert(digest, ()),
            None => {
                let new = state.last_read_error.as_deref() != Some(reason.as_str());
                state.last_read_error = Some(reason.clone());
                new
            }
        };
        let live = self.current();
        if live.is_none() {
            state.problem = Some(Arc::new(format!("policy-unavailable: {reason}")));
        }
        drop(state);
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
        Outcome::Refused(reason)
    }
}

/// Say once, when it goes live, that a policy of the 1.0.0 world answers no tick: the
/// host answers its ticks PROCEED, rule `tick-not-in-policy` (the monitor's behaviour
/// before the tick guard), on every tick, without saying it again.
fn say_if_no_monitor(policy: &LoadedPolicy) {
    if !policy.has_monitor() {
        tracing::warn!(
            target: "deploy_guard::policy",
            policy = %policy.identity(), policy_digest = %policy.digest, world = policy.world(),
            "{} is a policy of the {} world: it answers no monitor tick; every tick is PROCEED, rule {}",
            policy.identity(), policy.world(), crate::decision::RULE_TICK_NOT_IN_POLICY
        );
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
