//! Shadow mode: a candidate policy judges the same facts as the live one, off the
//! answer's path, and every disagreement is logged and counted. The candidate passed
//! the same gate as a swap; whatever it does (a trap, a limit) never touches an answer.
//!
//! The live decision hands (facts, live ruling) to a bounded queue; a thread of its own
//! runs the candidate. A full queue drops the comparison (counted), it never waits.

use crate::decision::Verdict;
use crate::sandbox::policy::LoadedPolicy;
use crate::sandbox::question::FactsRecord;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Comparisons that may wait before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Bytes of facts that may wait: the queue is bounded in bytes too, so that huge facts
/// cannot grow the host while a slow candidate works.
pub const QUEUE_BYTES: usize = 64 << 20;

/// About how many bytes a comparison holds (its strings; the rest is small).
fn size(facts: &FactsRecord, rule: &str) -> usize {
    128 + rule.len()
        + facts.work_item.len()
        + facts.caller.as_ref().map_or(0, String::len)
        + facts.task.as_ref().map_or(0, |t| t.repo.len() + t.stage.len())
        + facts
            .scope_repos
            .iter()
            .chain(&facts.self_hosting_repos)
            .map(String::len)
            .sum::<usize>()
}

/// What the shadow saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Decisions judged by both.
    pub compared: u64,
    /// Of those, where the verdict or the rule differed.
    pub disagreements: u64,
    /// Disagreements by transition (`ALLOW -> SUPPRESS`).
    pub by_transition: BTreeMap<String, u64>,
    /// Decisions the candidate could not make (it would have failed safe).
    pub candidate_failures: u64,
    /// Comparisons dropped because the queue was full.
    pub dropped: u64,
}

impl ShadowStats {
    /// One line for the end of a run.
    pub fn summary(&self, candidate: &str) -> String {
        let transitions: Vec<String> = self.by_transition.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        format!(
            "shadow {candidate}: {} decisions compared, {} disagreements{}{}, {} candidate failures, {} dropped",
            self.compared,
            self.disagreements,
            if transitions.is_empty() { "" } else { " (" },
            if transitions.is_empty() {
                String::new()
            } else {
                transitions.join(", ") + ")"
            },
            self.candidate_failures,
            self.dropped
        )
    }
}

struct Comparison {
    facts: FactsRecord,
    verdict: Verdict,
    rule: String,
}

/// A running shadow. [`Shadow::finish`] waits for the queue to drain.
#[derive(Debug)]
pub struct Shadow {
    candidate: String,
    sender: Mutex<Option<SyncSender<Comparison>>>,
    stats: Arc<Mutex<ShadowStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set when finishing takes too long: what still waits is dropped, not run.
    abandon: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes of the comparisons waiting (shared with the thread).
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long [`Shadow::finish`] lets the candidate work through what still waits.
pub const FINISH_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Shadow {
    /// Start shadowing with `candidate` (already admitted by the gate).
    pub fn start(candidate: LoadedPolicy) -> std::io::Result<Shadow> {
        Shadow::start_counted(candidate, prometheus_client::metrics::counter::Counter::default())
    }

    /// [`Shadow::start`], counting the disagreements in `disagreements` too.
    pub fn start_counted(
        candidate: LoadedPolicy,
        disagreements: prometheus_client::metrics::counter::Counter,
    ) -> std::io::Result<Shadow> {
        let identity = format!("{} ({})", candidate.identity(), candidate.digest);
        let (sender, receiver) = sync_channel(QUEUE_CAPACITY);
        let stats = Arc::new(Mutex::new(ShadowStats::default()));
        let shared = Arc::clone(&stats);
        let abandon = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = Arc::clone(&abandon);
        let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let queued = Arc::clone(&queued_bytes);
        let thread = std::thread::Builder::new()
            .name("deploy-guard-shadow".into())
            .spawn(move || compare_loop(&candidate, &receiver, &shared, &abandoned, &queued, &disagreements))?;
        Ok(Shadow {
            candidate: identity,
            sender: Mutex::new(Some(sender)),
            stats,
            thread: Mutex::new(Some(thread)),
            abandon,
            queued_bytes,
        })
    }

    /// The candidate, as `name@version (digest)`.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// Queue a comparison of the live answer `(verdict, rule)` on `facts`.
    pub fn compare(&self, facts: FactsRecord, verdict: Verdict, rule: &str) {
        let Ok(sender) = self.sender.lock() else { return };
        let Some(sender) = sender.as_ref() else { return };
        let bytes = size(&facts, rule);
        let within_budget =
            self.queued_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes <= QUEUE_BYTES;
        let comparison = Comparison {
            facts,
            verdict,
            rule: rule.to_owned(),
        };
        if !(within_budget && sender.try_send(comparison).is_ok()) {
            self.queued_bytes.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
            if let Ok(mut stats) = self.stats.lock() {
                stats.dropped += 1;
            }
        }
    }

    /// What was seen so far (comparisons still queued are not in it).
    pub fn stats(&self) -> ShadowStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stop taking comparisons, let the queued ones run for up to [`FINISH_BUDGET`]
    /// (what is left then is counted as dropped), and return the totals.
    pub fn finish(&self) -> ShadowStats {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        if let Ok(mut thread) = self.thread.lock()
            && let Some(thread) = thread.take()
        {
            let started = std::time::Instant::now();
            while !thread.is_finished() && started.elapsed() < FINISH_BUDGET {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            self.abandon.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = thread.join();
        }
        self.stats()
    }
}

fn compare_loop(
    candidate: &LoadedPolicy,
    receiver: &Receiver<Comparison>,
    stats: &Mutex<ShadowStats>,
    abandon: &std::sync::atomic::AtomicBool,
    queued_bytes: &std::sync::atomic::AtomicUsize,
    disagreements: &prometheus_client::metrics::counter::Counter,
) {
    while let Ok(comparison) = receiver.recv() {
        queued_bytes.fetch_sub(
            size(&comparison.facts, &comparison.rule),
            std::sync::atomic::Ordering::Relaxed,
        );
        if abandon.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(mut stats) = stats.lock() {
                stats.dropped += 1;
            }
            continue;
        }
        let outcome = candidate.rule(&comparison.facts.question());
        let Ok(mut stats) = stats.lock() else { return };
        stats.compared += 1;
        match outcome {
            Ok(ruling) if ruling.verdict == comparison.verdict && ruling.rule == comparison.rule => {}
            Ok(ruling) => {
                stats.disagreements += 1;
                disagreements.inc();
                let transition = format!("{} -> {}", comparison.verdict, ruling.verdict);
                *stats.by_transition.entry(transition).or_default() += 1;
                tracing::warn!(
                    target: "deploy_guard::shadow",
                    work_item = %comparison.facts.work_item,
                    live_verdict = comparison.verdict.as_str(),
                    live_rule = %comparison.rule,
                    candidate_verdict = ruling.verdict.as_str(),
                    candidate_rule = %ruling.rule,
                    "shadow disagreement"
                );
            }
            Err(e) => {
                stats.candidate_failures += 1;
                tracing::warn!(
                    target: "deploy_guard::shadow",
                    work_item = %comparison.facts.work_item,
                    "shadow candidate failed: {e}"
                );
            }
        }
    }
}
