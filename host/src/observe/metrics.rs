//! The guard's metrics, in the Prometheus/OpenMetrics text format (CONTRACT.md,
//! "Metrics"): what is live, how many decisions failed safe and why, whether a swap was
//! refused or rolled back, whether the ledger drops records.
//!
//! One [`Metrics`] per [`crate::Guard`], fed from the places where things happen: every
//! decision from the one loop where decisions pass their observers (`guard/judge.rs`), swaps,
//! refusals and roll backs from the policy slot (`rollout/slot.rs`), records and drops from the
//! ledger's queue and writer, disagreements from the shadow's thread. The live policy's
//! identity is read from the slot when the text is made, so it is never stale.
//!
//! The cost on the decision path is a few uncontended atomic additions: the counter of
//! a known (verdict, rule) pair is resolved once and kept in a fixed table, the fail-safe
//! classes are a fixed array, and the duration histogram is a fixed array of atomics
//! (prometheus-client's own histogram takes a lock per observation). No allocation and
//! no lock on that path, except the first time an unknown rule is seen: a rule is the
//! policy's own word, so at most [`MAX_UNKNOWN_RULES`] distinct unknown rules get a
//! series of their own (sanitised to `[A-Za-z0-9._:-]`, 64 bytes), the rest count as
//! `other`: a policy cannot grow the host's memory, nor break the text, through its rules.

use crate::decision::{
    Ask, Decision, FailSafeClass, RULE_FAIL_SAFE, RULE_KILL_SWITCH, RULE_TICK_NOT_IN_POLICY, Verdict,
};
use crate::sandbox::policy::LoadedPolicy;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Unknown rules (not of the reference policy nor the host) that get a series of their
/// own; any further one counts under the rule `other`.
pub const MAX_UNKNOWN_RULES: usize = 64;
/// The rule label of the unknown rules beyond [`MAX_UNKNOWN_RULES`].
pub const OTHER_RULE: &str = "other";

/// The stamps' rules whose counters are resolved once: the reference policy's and the
/// host's.
const DECIDE_RULES: [&str; 9] = {
    use deploy_status_guard::predicate::Rule;
    let mut rules = [RULE_FAIL_SAFE; 9];
    let mut i = 0;
    while i < Rule::ALL.len() {
        rules[i] = Rule::ALL[i].as_str();
        i += 1;
    }
    rules[Rule::ALL.len()] = RULE_KILL_SWITCH;
    rules
};

/// The ticks' rules whose counters are resolved once: the reference policy's and the
/// host's (`tick-not-in-policy` for a policy of the 1.0.0 world).
const TICK_RULES: [&str; 7] = {
    use deploy_status_guard::predicate::TickRule;
    let mut rules = [RULE_FAIL_SAFE; 7];
    let mut i = 0;
    while i < TickRule::ALL.len() {
        rules[i] = TickRule::ALL[i].as_str();
        i += 1;
    }
    rules[TickRule::ALL.len()] = RULE_KILL_SWITCH;
    rules[TickRule::ALL.len() + 1] = RULE_TICK_NOT_IN_POLICY;
    rules
};

/// A family of counters by verdict and rule (`deploy_guard_decisions_total` for the
/// stamps, `deploy_guard_ticks_total` for the ticks): the counter of a known (verdict,
/// rule) pair is resolved once and kept; at most [`MAX_UNKNOWN_RULES`] unknown rules
/// get a series of their own.
struct RuleCounters {
    family: Family<DecisionLabels, Counter>,
    verdicts: &'static [Verdict],
    rules: &'static [&'static str],
    /// `known[verdict * rules.len() + rule]`, resolved the first time the pair is seen.
    known: Vec<OnceLock<Counter>>,
    /// Unknown rules given a series so far (bounded by [`MAX_UNKNOWN_RULES`]).
    unknown_rules: Mutex<std::collections::HashSet<String>>,
}

impl RuleCounters {
    fn new(verdicts: &'static [Verdict], rules: &'static [&'static str]) -> RuleCounters {
        RuleCounters {
            family: Family::default(),
            verdicts,
            rules,
            known: (0..verdicts.len() * rules.len()).map(|_| OnceLock::new()).collect(),
            unknown_rules: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn count(&self, verdict: Verdict, rule: &str) {
        let known = self.verdicts.iter().position(|v| *v == verdict).and_then(|verdict_at| {
            let rule_at = self.rules.iter().position(|known| *known == rule)?;
            Some(verdict_at * self.rules.len() + rule_at)
        });
        if let Some(at) = known {
            // Borrowed, not cloned: a clone would touch the counter's shared reference
            // count on every decision.
            self.known[at]
                .get_or_init(|| {
                    self.family
                        .get_or_create(&DecisionLabels {
                            verdict: verdict.as_str(),
                            rule: rule.to_owned(),
                        })
                        .clone()
                })
                .inc();
            return;
        }
        let rule = sanitise_rule(rule);
        let rule = match self.unknown_rules.lock() {
            Ok(mut seen) if seen.contains(&rule) || seen.len() < MAX_UNKNOWN_RULES => {
                seen.insert(rule.clone());
                rule
            }
            _ => OTHER_RULE.to_owned(),
        };
        self.family
            .get_or_create(&DecisionLabels {
                verdict: verdict.as_str(),
                rule,
            })
            .inc();
    }
}

/// Upper bounds of the duration histogram's buckets, in nanoseconds: 1 us to 100 ms.
const BUCKETS_NS: [u64; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    verdict: &'static str,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    name: String,
    version: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The counters of the policy slot (`rollout/slot.rs`); clones share their values.
#[derive(Clone, Debug, Default)]
pub struct SwapCounters {
    /// A new policy went live in place of a live one.
    pub swaps: Counter,
    /// A roll back, automatic or an operator's.
    pub rollbacks: Counter,
    refusals: Family<ReasonLabels, Counter>,
}

impl SwapCounters {
    /// Count a refused candidate; `reason` is a short class (see
    /// [`crate::admission::gate::GateError::reason`]).
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// The counters of the ledger (`observe/ledger.rs`); clones share their values.
#[derive(Clone, Debug, Default)]
pub struct LedgerCounters {
    /// Records committed to the ledger file.
    pub records: Counter,
    /// Records lost: the queue was full, or their batch could not be written.
    pub dropped: Counter,
}

/// A histogram of decision durations, lock-free: one atomic per bucket (not cumulative;
/// the last is `+Inf`) and the sum in nanoseconds. The count is the buckets' sum.
#[derive(Clone, Debug, Default)]
struct DurationHistogram {
    inner: Arc<DurationBuckets>,
}

#[derive(Debug, Default)]
struct DurationBuckets {
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS_NS.len());
        self.inner.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        #[allow(clippy::cast_precision_loss)]
        let seconds = |ns: u64| ns as f64 / 1e9;
        let mut buckets: Vec<(f64, u64)> = BUCKETS_NS
            .iter()
            .zip(&self.inner.buckets)
            .map(|(&bound, count)| (seconds(bound), count.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            self.inner.buckets[BUCKETS_NS.len()].load(Ordering::Relaxed),
        ));
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = seconds(self.inner.sum_ns.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics of one guard. See the module documentation.
pub struct Metrics {
    registry: Registry,
    decisions: RuleCounters,
    ticks: RuleCounters,
    fail_safe: [Counter; FailSafeClass::ALL.len()],
    duration: DurationHistogram,
    policy_info: Family<PolicyLabels, Gauge>,
    swap: SwapCounters,
    ledger: LedgerCounters,
    shadow_disagreements: Counter,
    /// Serialises [`Metrics::encode`] (it rewrites the policy info before encoding).
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric of CONTRACT.md, registered, at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let decisions = RuleCounters::new(&Verdict::ALL[..3], &DECIDE_RULES);
        registry.register(
            "deploy_guard_decisions",
            "Decisions made on stamps, by verdict and rule",
            decisions.family.clone(),
        );
        let ticks = RuleCounters::new(&Verdict::ALL[3..], &TICK_RULES);
        registry.register(
            "deploy_guard_ticks",
            "Decisions made on the post-deploy monitor's ticks, by verdict and rule",
            ticks.family.clone(),
        );
        let fail_safe_family = Family::<ClassLabels, Counter>::default();
        let fail_safe = FailSafeClass::ALL.map(|class| {
            fail_safe_family
                .get_or_create(&ClassLabels { class: class.as_str() })
                .clone()
        });
        registry.register(
            "deploy_guard_fail_safe",
            "Decisions that failed safe (ALLOW, or PROCEED for a tick), by the class of their cause",
            fail_safe_family,
        );
        let duration = DurationHistogram::default();
        registry.register_with_unit(
            "deploy_guard_decision_duration",
            "Time to decide (facts, sandbox, checks); a batch's decisions share its time equally",
            Unit::Seconds,
            duration.clone(),
        );
        let policy_info = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "deploy_guard_policy_info",
            "The live policy: 1 for its name, version and digest",
            policy_info.clone(),
        );
        let swap = SwapCounters::default();
        registry.register(
            "deploy_guard_policy_swaps",
            "Policies that went live in place of a live one (hot swap)",
            swap.swaps.clone(),
        );
        registry.register(
            "deploy_guard_policy_refusals",
            "Candidate policies refused, by reason",
            swap.refusals.clone(),
        );
        registry.register(
            "deploy_guard_policy_rollbacks",
            "Roll backs to the previous policy, automatic or an operator's",
            swap.rollbacks.clone(),
        );
        let ledger = LedgerCounters::default();
        registry.register(
            "deploy_guard_ledger_records",
            "Decisions committed to the ledger",
            ledger.records.clone(),
        );
        registry.register(
            "deploy_guard_ledger_dropped",
            "Decisions the ledger lost: its queue was full or its file could not be written",
            ledger.dropped.clone(),
        );
        let shadow_disagreements = Counter::default();
        registry.register(
            "deploy_guard_shadow_disagreements",
            "Decisions where the shadow candidate's verdict or rule differed from the live one",
            shadow_disagreements.clone(),
        );
        Metrics {
            registry,
            decisions,
            ticks,
            fail_safe,
            duration,
            policy_info,
            swap,
            ledger,
            shadow_disagreements,
            encoding: Mutex::new(()),
        }
    }

    /// Count one decision: its verdict and rule (a stamp's or a tick's), its fail-safe
    /// class, its duration.
    pub fn observe(&self, decision: &Decision, fail_safe: Option<FailSafeClass>, elapsed: Duration) {
        let counters = match decision.ask {
            Ask::Decide(_) => &self.decisions,
            Ask::Tick => &self.ticks,
        };
        counters.count(decision.verdict, &decision.rule);
        if let Some(class) = fail_safe {
            self.fail_safe[class as usize].inc();
        }
        self.duration.observe(elapsed);
    }

    /// The counters the policy slot feeds.
    pub fn swap_counters(&self) -> SwapCounters {
        self.swap.clone()
    }

    /// The counters the ledger feeds.
    pub fn ledger_counters(&self) -> LedgerCounters {
        self.ledger.clone()
    }

    /// The counter the shadow feeds.
    pub fn shadow_disagreements(&self) -> Counter {
        self.shadow_disagreements.clone()
    }

    /// The OpenMetrics text of every metric, with `live` as the live policy.
    pub fn encode(&self, live: Option<&LoadedPolicy>) -> String {
        let _serialised = self.encoding.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.policy_info.clear();
        if let Some(policy) = live {
            self.policy_info
                .get_or_create(&PolicyLabels {
                    name: escape_label(&policy.name),
                    version: escape_label(&policy.version),
                    digest: policy.digest.clone(),
                })
                .set(1);
        }
        let mut text = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String does not fail; should it, say so in the text's own terms.
            return format!("# cannot encode the metrics: {e}\n# EOF\n");
        }
        text
    }
}

/// A label value escaped as the text format asks (`\\`, `\"`, `\n`): the encoder
/// writes label values as they are, and a policy's name is the policy's own word.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A rule as a label value: `[A-Za-z0-9._:-]` kept, anything else `_`, at most 64 bytes.
fn sanitise_rule(rule: &str) -> String {
    rule.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Request, Target};

    fn decision(verdict: Verdict, rule: &str) -> Decision {
        let request = Request::decide("W-1", Target::Awaiting, None);
        let mut decision = Decision::kill_switch(request);
        decision.verdict = verdict;
        decision.rule = rule.to_owned();
        decision
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_metric_of_the_contract_is_named_as_it_says() {
        let metrics = Metrics::new();
        // A labelled family appears with its first series (the policy info with a live
        // policy: tests/tests/metrics.rs); the fail-safe classes are there from the start.
        metrics.observe(&decision(Verdict::Allow, "non-terminal"), None, Duration::ZERO);
        metrics.swap_counters().refused("grid");
        let text = metrics.encode(None);
        for name in [
            "deploy_guard_decisions_total",
            "deploy_guard_fail_safe_total",
            "deploy_guard_decision_duration_seconds",
            "deploy_guard_policy_swaps_total",
            "deploy_guard_policy_refusals_total",
            "deploy_guard_policy_rollbacks_total",
            "deploy_guard_ledger_records_total",
            "deploy_guard_ledger_dropped_total",
            "deploy_guard_shadow_disagreements_total",
        ] {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} missing in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        for class in FailSafeClass::ALL {
            let series = format!("deploy_guard_fail_safe_total{{class=\"{}\"}} 0", class.as_str());
            assert!(text.contains(&series), "{series} missing in:\n{text}");
        }
    }

    #[test]
    fn decisions_count_by_verdict_and_rule_and_the_histogram_by_duration() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.observe(
                &decision(Verdict::Suppress, "cancelled"),
                None,
                Duration::from_micros(3),
            );
        }
        metrics.observe(
            &decision(Verdict::Allow, RULE_FAIL_SAFE),
            Some(FailSafeClass::Fuel),
            Duration::from_secs(1),
        );
        let text = metrics.encode(None);
        assert_eq!(
            line(
                &text,
                "deploy_guard_decisions_total{verdict=\"SUPPRESS\",rule=\"cancelled\"}"
            ),
            Some("deploy_guard_decisions_total{verdict=\"SUPPRESS\",rule=\"cancelled\"} 3")
        );
        assert!(
            text.contains("deploy_guard_fail_safe_total{class=\"fuel\"} 1\n"),
            "{text}"
        );
        // Cumulative buckets: 3 decisions within 5 us, the fourth past 100 ms.
        assert!(
            text.contains("deploy_guard_decision_duration_seconds_bucket{le=\"2.5e-6\"} 0\n")
                || text.contains("deploy_guard_decision_duration_seconds_bucket{le=\"0.0000025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("deploy_guard_decision_duration_seconds_bucket{le=\"0.1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("deploy_guard_decision_duration_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("deploy_guard_decision_duration_seconds_count 4\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("deploy-status-guard"), "deploy-status-guard");
    }

    #[test]
    fn unknown_rules_are_sanitised_and_bounded() {
        let metrics = Metrics::new();
        metrics.observe(&decision(Verdict::Allow, "a \"quoted\"\nrule"), None, Duration::ZERO);
        for i in 0..(MAX_UNKNOWN_RULES + 10) {
            metrics.observe(&decision(Verdict::Allow, &format!("rule-{i}")), None, Duration::ZERO);
        }
        let text = metrics.encode(None);
        assert!(
            text.contains("deploy_guard_decisions_total{verdict=\"ALLOW\",rule=\"a__quoted__rule\"} 1\n"),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("deploy_guard_decisions_total{"))
            .count();
        assert_eq!(series, MAX_UNKNOWN_RULES + 1, "{text}");
        assert!(
            text.contains("deploy_guard_decisions_total{verdict=\"ALLOW\",rule=\"other\"} 11\n"),
            "{text}"
        );
    }
}
