//! The decision object of CONTRACT.md, its fail-safe constructor, and the decision
//! line: exactly one tracing event per decision, INFO for ALLOW (and, for a monitor
//! tick, PROCEED), WARN otherwise.
//!
//! The host asks a policy two questions ([`Ask`]): `decide`, before a deploy-phase
//! status is stamped, and `tick`, at each tick of the post-deploy monitor (since the
//! 1.1.0 world). Both travel the same way and end in one [`Decision`]: a tick's has no
//! target, and its verdict is PROCEED or NOOP.
//!
//! Every path through [`crate::Guard::decide`] ends in one [`Decision`] built here,
//! so "never raise" and "one line per decision" are properties of this shape.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The deploy-phase status a setter is about to stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Awaiting Deploy.
    Awaiting,
    /// Deploying.
    Deploying,
    /// Monitoring after Deploy.
    Monitoring,
}

impl Target {
    /// Every target, in pipeline order.
    pub const ALL: [Target; 3] = [Target::Awaiting, Target::Deploying, Target::Monitoring];

    /// The token the seed and the JSON use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Target::Awaiting => "awaiting",
            Target::Deploying => "deploying",
            Target::Monitoring => "monitoring",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown target {s:?}: expected awaiting, deploying or monitoring"))
    }
}

/// What the question was: a stamp about to happen, or a tick of the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ask {
    /// A deploy-phase setter is about to stamp this status (`decide`).
    Decide(Target),
    /// The post-deploy monitor ticks (`tick`, the seed's D4).
    Tick,
}

impl Ask {
    /// The verdict that leaves the caller doing what it was about to do: what the
    /// kill-switch and every fail-safe answer (ALLOW for a stamp, PROCEED for a tick).
    pub const fn as_before(self) -> Verdict {
        match self {
            Ask::Decide(_) => Verdict::Allow,
            Ask::Tick => Verdict::Proceed,
        }
    }

    /// The target of a stamp; none for a tick.
    pub const fn target(self) -> Option<Target> {
        match self {
            Ask::Decide(target) => Some(target),
            Ask::Tick => None,
        }
    }

    /// `decide` or `tick`, as the ledger and `serve`'s `op` name them.
    pub const fn op(self) -> &'static str {
        match self {
            Ask::Decide(_) => "decide",
            Ask::Tick => "tick",
        }
    }
}

/// What the caller does: for a stamp, ALLOW, CONVERGE_DONE or SUPPRESS; for a tick,
/// PROCEED or NOOP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Stamp the requested status.
    Allow,
    /// Stamp Done instead.
    ConvergeDone,
    /// Stamp nothing.
    Suppress,
    /// The monitor acts: it stamps and queues its next tick.
    Proceed,
    /// The monitor does nothing: no status, no next tick (a zombie tick).
    Noop,
}

impl Verdict {
    /// Every verdict, stamps' first.
    pub const ALL: [Verdict; 5] = [
        Verdict::Allow,
        Verdict::ConvergeDone,
        Verdict::Suppress,
        Verdict::Proceed,
        Verdict::Noop,
    ];

    /// The verdict as the seed names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "ALLOW",
            Verdict::ConvergeDone => "CONVERGE_DONE",
            Verdict::Suppress => "SUPPRESS",
            Verdict::Proceed => "PROCEED",
            Verdict::Noop => "NOOP",
        }
    }

    /// Whether the caller does what it was about to do (ALLOW, PROCEED): its decision
    /// line is INFO; any other is WARN, as in the seed.
    pub const fn as_asked(self) -> bool {
        matches!(self, Verdict::Allow | Verdict::Proceed)
    }

    /// Whether this verdict answers `ask` (a stamp's verdict for a stamp, a tick's for
    /// a tick).
    pub const fn answers(self, ask: Ask) -> bool {
        matches!(
            (self, ask),
            (
                Verdict::Allow | Verdict::ConvergeDone | Verdict::Suppress,
                Ask::Decide(_)
            ) | (Verdict::Proceed | Verdict::Noop, Ask::Tick)
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Displays a value, or `null` when there is none, so that every field of the
/// decision object appears in the decision line (tracing has no null of its own).
struct OrNull<'a, T>(&'a Option<T>);

impl<T: fmt::Display> fmt::Display for OrNull<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("null"),
        }
    }
}

/// Whether `c` is a control character (Unicode category Cc) or a format character
/// (Cf: bidirectional overrides and isolates, zero-width spaces and joiners, the byte
/// order mark, ...): characters that can forge or hide text in a log line or a
/// terminal. Cf as of Unicode 16.
pub fn is_control_or_format(c: char) -> bool {
    c.is_control()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// Displays text with every control or format character (and the backslash that
/// introduces an escape) escaped as `\u{..}` / `\\`, so that a field of the text
/// decision line can never end the line, start another, or move a terminal's cursor.
#[derive(Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        // Fast path, byte by byte: printable ASCII needs no escape (the decision line
        // is formatted on every decision, so this is on the hot path).
        if text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
            || !text.chars().any(|c| c == '\\' || is_control_or_format(c))
        {
            return f.write_str(text);
        }
        for c in text.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if is_control_or_format(c) {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// [`OrNull`] of escaped text.
struct EscapedOrNull<'a>(&'a Option<String>);

impl fmt::Display for EscapedOrNull<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(text) => Escaped(text).fmt(f),
            None => f.write_str("null"),
        }
    }
}

/// Why a decision failed safe: the class its cause belongs to, decided where the cause
/// arises (a [`crate::sandbox::policy::RunError`] variant, a facts error, the configuration, no
/// live policy), never guessed from the text of `error`. The first five are also the
/// first word of their `error` text; `facts` errors start with `database:`, `pool`
/// errors with `instantiate:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailSafeClass {
    /// The policy used up its fuel.
    Fuel,
    /// The policy ran past its deadline.
    Deadline,
    /// The policy wanted more memory or table than allowed.
    Memory,
    /// The policy trapped.
    Trap,
    /// The policy answered something the host does not accept.
    InvalidResult,
    /// The orchestrator's database could not be read.
    Facts,
    /// The configuration could not be read.
    Config,
    /// No policy is live.
    PolicyUnavailable,
    /// No instance could be had (the host's pool, not the policy).
    Pool,
    /// A decision the host failed to make (a bug).
    Internal,
}

impl FailSafeClass {
    /// Every class, in declaration order (the order of `as usize`).
    pub const ALL: [FailSafeClass; 10] = [
        FailSafeClass::Fuel,
        FailSafeClass::Deadline,
        FailSafeClass::Memory,
        FailSafeClass::Trap,
        FailSafeClass::InvalidResult,
        FailSafeClass::Facts,
        FailSafeClass::Config,
        FailSafeClass::PolicyUnavailable,
        FailSafeClass::Pool,
        FailSafeClass::Internal,
    ];

    /// The class as a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailSafeClass::Fuel => "fuel",
            FailSafeClass::Deadline => "deadline",
            FailSafeClass::Memory => "memory",
            FailSafeClass::Trap => "trap",
            FailSafeClass::InvalidResult => "invalid-result",
            FailSafeClass::Facts => "facts",
            FailSafeClass::Config => "config",
            FailSafeClass::PolicyUnavailable => "policy-unavailable",
            FailSafeClass::Pool => "pool",
            FailSafeClass::Internal => "internal",
        }
    }
}

/// The format of the decision lines on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How the decision line is written (set once by the binary's logging set-up): JSON
/// lines escape their values themselves and write a missing value as null; text lines
/// escape every field here and write a missing one as `null`.
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Say how decision lines are formatted (see [`Decision::log`]).
pub fn set_line_format(format: LogFormat) {
    JSON_LINES.store(format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
}

/// `sha256:` and the lowercase hex digest of `bytes`: the form of a decision's
/// `policy_digest` (of the module file's bytes), and of every digest the host compares.
pub fn digest(bytes: &[u8]) -> String {
    let hash = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Rule of a decision made with the guard disabled (the policy did not run).
pub const RULE_KILL_SWITCH: &str = "kill-switch";
/// Rule of a decision where something failed: the verdict is ALLOW (PROCEED for a tick).
pub const RULE_FAIL_SAFE: &str = "fail-safe";
/// Rule of a tick answered by the host for a policy of the 1.0.0 world, which has no
/// `monitor`: PROCEED, what the monitor did before there was a tick guard.
pub const RULE_TICK_NOT_IN_POLICY: &str = "tick-not-in-policy";
/// The longest rule a policy may return, in bytes (CONTRACT.md).
pub const MAX_RULE_BYTES: usize = 256;

/// The fields of the decision object (CONTRACT.md), in its order: the JSON answer's
/// keys, the decision line's fields, the Python `Decision`'s attributes. A tick's
/// object has them all but `target` ([`TICK_FIELDS`]).
pub const FIELDS: [&str; 10] = [
    "work_item",
    "caller",
    "target",
    "db_stage",
    "window_active",
    "verdict",
    "rule",
    "policy",
    "policy_digest",
    "error",
];

/// The fields of a tick's decision object (CONTRACT.md, third round), in its order.
pub const TICK_FIELDS: [&str; 9] = [
    "work_item",
    "caller",
    "db_stage",
    "window_active",
    "verdict",
    "rule",
    "policy",
    "policy_digest",
    "error",
];

/// One decision, as printed by `decide`, `tick` and `serve` and logged by the decision
/// line. In JSON it is the decision object of CONTRACT.md: `target` is written for a
/// stamp, and a tick's object has no `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The work item the status goes on (or the monitor watches).
    pub work_item: String,
    /// The setter's (or the monitor's) reason, if it gave one.
    pub caller: Option<String>,
    /// What was asked: the status about to be stamped, or a tick.
    pub ask: Ask,
    /// The trimmed stage of the task, when a task was found.
    pub db_stage: Option<String>,
    /// Whether the post-deploy window is active; null when not read or unreadable.
    pub window_active: Option<bool>,
    /// What the setter does.
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: String,
    /// `name@version` of the policy that ran, null when none ran.
    pub policy: Option<String>,
    /// `sha256:<hex>` of the policy module's bytes, null when none ran.
    pub policy_digest: Option<String>,
    /// The cause of a fail-safe, or of a fact that could not be read.
    pub error: Option<String>,
}

/// The request half of a decision: who asks what.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The work item.
    pub work_item: &'a str,
    /// A stamp (its target) or a tick.
    pub ask: Ask,
    /// The setter's (or the monitor's) reason.
    pub caller: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// A setter is about to stamp `target` on `work_item`.
    pub const fn decide(work_item: &'a str, target: Target, caller: Option<&'a str>) -> Request<'a> {
        Request {
            work_item,
            ask: Ask::Decide(target),
            caller,
        }
    }

    /// The post-deploy monitor ticks for `work_item`.
    pub const fn tick(work_item: &'a str, caller: Option<&'a str>) -> Request<'a> {
        Request {
            work_item,
            ask: Ask::Tick,
            caller,
        }
    }
}

impl Decision {
    /// A decision with the request's fields and nothing else known yet.
    pub(crate) fn blank(request: Request<'_>, verdict: Verdict, rule: &str) -> Decision {
        Decision {
            work_item: request.work_item.to_owned(),
            caller: request.caller.map(str::to_owned),
            ask: request.ask,
            db_stage: None,
            window_active: None,
            verdict,
            rule: rule.to_owned(),
            policy: None,
            policy_digest: None,
            error: None,
        }
    }

    /// The guard is disabled: ALLOW (PROCEED for a tick), the policy is not run (seed
    /// step 1).
    pub fn kill_switch(request: Request<'_>) -> Decision {
        Decision::blank(request, request.ask.as_before(), RULE_KILL_SWITCH)
    }

    /// Something failed: ALLOW (PROCEED for a tick) with the cause (seed step 7, NFR-1).
    pub fn fail_safe(request: Request<'_>, cause: impl fmt::Display) -> Decision {
        let mut decision = Decision::blank(request, request.ask.as_before(), RULE_FAIL_SAFE);
        decision.error = Some(cause.to_string());
        decision
    }

    /// The status that was about to be stamped; none for a tick.
    pub fn target(&self) -> Option<Target> {
        self.ask.target()
    }

    /// Turn this decision into a fail-safe, keeping the facts and identity it has.
    pub(crate) fn into_fail_safe(mut self, cause: impl fmt::Display) -> Decision {
        self.verdict = self.ask.as_before();
        self.rule = RULE_FAIL_SAFE.to_owned();
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{cause}; {earlier}"),
            None => cause.to_string(),
        });
        self
    }

    /// Emit the decision line: one tracing event with every field of the decision.
    /// In text, every field is escaped ([`Escaped`]) and a missing one reads `null`;
    /// in JSON (see [`set_line_format`]) the values go as they are, a missing one as
    /// an absent field that the JSON formatter writes as null. A stamp's line is
    /// `deploy_status_guard decision` with its target; a tick's is `deploy_status_guard
    /// tick`, without one.
    pub fn log(&self) {
        macro_rules! line {
            ($level:ident, text, $message:literal $(, $target:expr)?) => {
                tracing::$level!(
                    target: "deploy_guard::decision",
                    work_item = %Escaped(&self.work_item),
                    caller = %EscapedOrNull(&self.caller),
                    $("target" = $target,)?
                    db_stage = %EscapedOrNull(&self.db_stage),
                    window_active = %OrNull(&self.window_active),
                    verdict = self.verdict.as_str(),
                    rule = %Escaped(&self.rule),
                    policy = %EscapedOrNull(&self.policy),
                    policy_digest = %EscapedOrNull(&self.policy_digest),
                    error = %EscapedOrNull(&self.error),
                    $message
                )
            };
            ($level:ident, json, $message:literal $(, $target:expr)?) => {
                tracing::$level!(
                    target: "deploy_guard::decision",
                    work_item = self.work_item.as_str(),
                    caller = self.caller.as_deref(),
                    $("target" = $target,)?
                    db_stage = self.db_stage.as_deref(),
                    window_active = self.window_active,
                    verdict = self.verdict.as_str(),
                    rule = self.rule.as_str(),
                    policy = self.policy.as_deref(),
                    policy_digest = self.policy_digest.as_deref(),
                    error = self.error.as_deref(),
                    $message
                )
            };
        }
        let json = JSON_LINES.load(std::sync::atomic::Ordering::Relaxed);
        match (self.ask, self.verdict.as_asked(), json) {
            (Ask::Decide(t), true, false) => line!(info, text, "deploy_status_guard decision", t.as_str()),
            (Ask::Decide(t), true, true) => line!(info, json, "deploy_status_guard decision", t.as_str()),
            (Ask::Decide(t), false, false) => line!(warn, text, "deploy_status_guard decision", t.as_str()),
            (Ask::Decide(t), false, true) => line!(warn, json, "deploy_status_guard decision", t.as_str()),
            (Ask::Tick, true, false) => line!(info, text, "deploy_status_guard tick"),
            (Ask::Tick, true, true) => line!(info, json, "deploy_status_guard tick"),
            (Ask::Tick, false, false) => line!(warn, text, "deploy_status_guard tick"),
            (Ask::Tick, false, true) => line!(warn, json, "deploy_status_guard tick"),
        }
    }

    /// The decision as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise decision: {e}\"}}"))
    }
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let target = self.ask.target();
        let mut object = serializer.serialize_struct("Decision", if target.is_some() { 10 } else { 9 })?;
        object.serialize_field("work_item", &self.work_item)?;
        object.serialize_field("caller", &self.caller)?;
        if let Some(target) = target {
            object.serialize_field("target", &target)?;
        }
        object.serialize_field("db_stage", &self.db_stage)?;
        object.serialize_field("window_active", &self.window_active)?;
        object.serialize_field("verdict", &self.verdict)?;
        object.serialize_field("rule", &self.rule)?;
        object.serialize_field("policy", &self.policy)?;
        object.serialize_field("policy_digest", &self.policy_digest)?;
        object.serialize_field("error", &self.error)?;
        object.end()
    }
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decision, D::Error> {
        /// The decision object as JSON has it: a tick's has no target.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            work_item: String,
            caller: Option<String>,
            #[serde(default)]
            target: Option<Target>,
            db_stage: Option<String>,
            window_active: Option<bool>,
            verdict: Verdict,
            rule: String,
            policy: Option<String>,
            policy_digest: Option<String>,
            error: Option<String>,
        }
        let object = Object::deserialize(deserializer)?;
        let ask = object.target.map_or(Ask::Tick, Ask::Decide);
        if !object.verdict.answers(ask) {
            return Err(serde::de::Error::custom(format!(
                "the verdict {} does not answer a {}",
                object.verdict,
                ask.op()
            )));
        }
        Ok(Decision {
            work_item: object.work_item,
            caller: object.caller,
            ask,
            db_stage: object.db_stage,
            window_active: object.window_active,
            verdict: object.verdict,
            rule: object.rule,
            policy: object.policy,
            policy_digest: object.policy_digest,
            error: object.error,
        })
    }
}
