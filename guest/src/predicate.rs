//! The guard predicates of the seed, in plain Rust with no bindings, so that they are
//! tested natively and reused as the host's native reference: `decide()` (steps 2 to
//! 6), and the monitor's zombie-tick guard (D4, [`tick`]).
//!
//! Steps 1 (the kill-switch) and 7 (any failure degrades to ALLOW) belong to the host:
//! a policy never sees a disabled guard and cannot fail safe on its own behalf.
//!
//! The seed's details that matter, and are kept here on purpose:
//! - the stage and the repo are trimmed as Python's `str.strip()` trims (see
//!   [`py_strip`]); the stage is then compared case-sensitively, so `DONE` is not
//!   terminal;
//! - with an empty scope the guard applies to the self-hosting repositories only;
//! - the post-deploy window matters only for target `monitoring` of a `done` task.
//!   The seed reads the window there and nowhere else; a read that fails raises, and
//!   its exception path answers ALLOW: here that is the rule `window-unknown`.

/// The deploy-phase status a setter is about to stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Awaiting Deploy.
    Awaiting,
    /// Deploying.
    Deploying,
    /// Monitoring after Deploy.
    Monitoring,
}

impl Target {
    /// Every target, in the order of the pipeline.
    pub const ALL: [Target; 3] = [Target::Awaiting, Target::Deploying, Target::Monitoring];
}

/// What the setter does with its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Stamp the requested status.
    Allow,
    /// Stamp Done instead.
    ConvergeDone,
    /// Stamp nothing.
    Suppress,
}

/// The rule that decided; its text is what the decision carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// No task row for the work item: a foreign or unknown issue (seed step 2).
    TaskNotFound,
    /// The task's repo is outside the guard's scope (seed step 3).
    OutOfScope,
    /// The task is still in a live deploy cycle (seed step 4).
    NonTerminal,
    /// The task was cancelled: never stamp over it (seed step 5).
    Cancelled,
    /// Done, target monitoring, window active: the legitimate post-deploy status (step 6).
    MonitoringWindowActive,
    /// Done, target monitoring, the window could not be read: the seed's exception path.
    WindowUnknown,
    /// Done and no legitimate deploy-phase status left: converge to Done (step 6).
    ConvergeDone,
}

impl Rule {
    /// Every rule, in the seed's order of steps.
    pub const ALL: [Rule; 7] = [
        Rule::TaskNotFound,
        Rule::OutOfScope,
        Rule::NonTerminal,
        Rule::Cancelled,
        Rule::MonitoringWindowActive,
        Rule::WindowUnknown,
        Rule::ConvergeDone,
    ];

    /// The rule's name as decisions carry it (CONTRACT.md).
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::TaskNotFound => "task-not-found",
            Rule::OutOfScope => "out-of-scope",
            Rule::NonTerminal => "non-terminal",
            Rule::Cancelled => "cancelled",
            Rule::MonitoringWindowActive => "monitoring-window-active",
            Rule::WindowUnknown => "window-unknown",
            Rule::ConvergeDone => "converge-done",
        }
    }
}

/// A task as stored: repo and stage untrimmed, a NULL given as the empty string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task<'a> {
    /// The task's repository.
    pub repo: &'a str,
    /// The task's stage.
    pub stage: &'a str,
}

/// The facts of one stamp, borrowed from whoever holds them (the bindings' owned
/// strings in the component, the host's reads natively).
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a, S: AsRef<str>> {
    /// The status about to be stamped.
    pub target: Target,
    /// The newest task row of the work item, if any.
    pub task: Option<Task<'a>>,
    /// Post-deploy window active (ARMED and not DONE); none if unreadable.
    pub window_active: Option<bool>,
    /// The sanitised scope; empty means self-hosting repos only.
    pub scope_repos: &'a [S],
    /// The self-hosting repos.
    pub self_hosting_repos: &'a [S],
}

/// The predicate's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ruling {
    /// What the setter does.
    pub verdict: Verdict,
    /// Why.
    pub rule: Rule,
}

const fn ruling(verdict: Verdict, rule: Rule) -> Ruling {
    Ruling { verdict, rule }
}

/// The terminal stages of the orchestrator (harmonised with its serial gate).
pub const DONE: &str = "done";
/// See [`DONE`].
pub const CANCELLED: &str = "cancelled";

/// The seed's `decide()`, steps 2 to 6.
pub fn decide<S: AsRef<str>>(facts: &Facts<'_, S>) -> Ruling {
    // Step 2: no task row -> foreign or unknown work item.
    let Some(task) = facts.task else {
        return ruling(Verdict::Allow, Rule::TaskNotFound);
    };
    // Step 3: the guard applies to this repo only if it is in scope.
    if !applies(task.repo, facts.scope_repos, facts.self_hosting_repos) {
        return ruling(Verdict::Allow, Rule::OutOfScope);
    }
    // Step 4: non-terminal -> a live deploy cycle. Case-sensitive, after strip().
    let stage = py_strip(task.stage);
    if stage != DONE && stage != CANCELLED {
        return ruling(Verdict::Allow, Rule::NonTerminal);
    }
    // Step 5: never stamp over a cancelled task.
    if stage == CANCELLED {
        return ruling(Verdict::Suppress, Rule::Cancelled);
    }
    // Step 6: done. Only Monitoring inside the post-deploy window is legitimate.
    if facts.target == Target::Monitoring {
        match facts.window_active {
            Some(true) => return ruling(Verdict::Allow, Rule::MonitoringWindowActive),
            None => return ruling(Verdict::Allow, Rule::WindowUnknown),
            Some(false) => {}
        }
    }
    ruling(Verdict::ConvergeDone, Rule::ConvergeDone)
}

/// What the post-deploy monitor does with its tick (the seed's D4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickVerdict {
    /// Act: stamp the monitoring status, queue the next tick.
    Proceed,
    /// Do nothing: no status PATCH, no re-queue.
    Noop,
}

/// The rule that decided a tick; its text is what the decision carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickRule {
    /// No task row for the work item: nothing to guard, the monitor acts as before.
    TaskNotFound,
    /// The task's repo is outside the guard's scope: the monitor acts as before.
    OutOfScope,
    /// The task was cancelled during its window: the tick is a zombie, it does nothing.
    ZombieTick,
    /// Any other task: the monitor acts.
    Proceed,
}

impl TickRule {
    /// Every rule, in the order they are tried.
    pub const ALL: [TickRule; 4] = [
        TickRule::TaskNotFound,
        TickRule::OutOfScope,
        TickRule::ZombieTick,
        TickRule::Proceed,
    ];

    /// The rule's name as decisions carry it (CONTRACT.md, third round).
    pub const fn as_str(self) -> &'static str {
        match self {
            TickRule::TaskNotFound => "task-not-found",
            TickRule::OutOfScope => "out-of-scope",
            TickRule::ZombieTick => "zombie-tick",
            TickRule::Proceed => "proceed",
        }
    }
}

/// The facts of one tick: those of a stamp, without a target.
#[derive(Clone, Copy, Debug)]
pub struct TickFacts<'a, S: AsRef<str>> {
    /// The newest task row of the work item, if any.
    pub task: Option<Task<'a>>,
    /// Post-deploy window active (ARMED and not DONE); none if unreadable. The seed's
    /// D4 does not look at it: a task cancelled is a zombie whether or not its window
    /// was closed since.
    pub window_active: Option<bool>,
    /// The sanitised scope; empty means self-hosting repos only.
    pub scope_repos: &'a [S],
    /// The self-hosting repos.
    pub self_hosting_repos: &'a [S],
}

/// The answer for a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TickRuling {
    /// What the monitor does.
    pub verdict: TickVerdict,
    /// Why.
    pub rule: TickRule,
}

/// The seed's D4 (`run_post_deploy_monitor`): a tick for a task that became
/// `cancelled` during its post-deploy window does nothing (no status PATCH, no
/// re-queue); every other tick proceeds. The kill-switch (PROCEED `kill-switch`) and
/// any failure (PROCEED `fail-safe`) are the host's, as for [`decide`]; the task, the
/// scope and the stage are read as `decide` reads them (the stage trimmed as
/// `str.strip()` trims it, compared case-sensitively).
pub fn tick<S: AsRef<str>>(facts: &TickFacts<'_, S>) -> TickRuling {
    let tick_ruling = |verdict, rule| TickRuling { verdict, rule };
    let Some(task) = facts.task else {
        return tick_ruling(TickVerdict::Proceed, TickRule::TaskNotFound);
    };
    if !applies(task.repo, facts.scope_repos, facts.self_hosting_repos) {
        return tick_ruling(TickVerdict::Proceed, TickRule::OutOfScope);
    }
    if py_strip(task.stage) == CANCELLED {
        return tick_ruling(TickVerdict::Noop, TickRule::ZombieTick);
    }
    tick_ruling(TickVerdict::Proceed, TickRule::Proceed)
}

/// The seed's `applies(repo)`: with a non-empty scope, membership of the trimmed repo
/// in the scope; with an empty scope, membership in the self-hosting repos.
pub fn applies<S: AsRef<str>>(repo: &str, scope_repos: &[S], self_hosting_repos: &[S]) -> bool {
    let repo = py_strip(repo);
    let within = |list: &[S]| list.iter().any(|r| r.as_ref() == repo);
    if scope_repos.is_empty() {
        within(self_hosting_repos)
    } else {
        within(scope_repos)
    }
}

/// Python's `str.strip()` with no argument: removes the characters for which
/// `str.isspace()` holds from both ends. That set is Unicode `White_Space` (what
/// [`char::is_whitespace`] tests) plus the information separators U+001C to U+001F,
/// which Python counts as whitespace and Unicode does not.
///
/// ASCII bytes are tested one by one without decoding (a stage padded with megabytes
/// of spaces must cost the sandbox little fuel); other characters are decoded.
pub fn py_strip(text: &str) -> &str {
    let mut rest = text;
    loop {
        rest = &rest[leading_ascii_space(rest.as_bytes())..];
        match rest.chars().next() {
            Some(c) if !c.is_ascii() && is_py_space(c) => rest = &rest[c.len_utf8()..],
            _ => break,
        }
    }
    loop {
        rest = &rest[..rest.len() - trailing_ascii_space(rest.as_bytes())];
        match rest.chars().next_back() {
            Some(c) if !c.is_ascii() && is_py_space(c) => rest = &rest[..rest.len() - c.len_utf8()],
            _ => break,
        }
    }
    rest
}

/// Eight copies of a byte in a word.
const fn splat(byte: u8) -> u64 {
    byte as u64 * 0x0101_0101_0101_0101
}

/// How many ASCII whitespace bytes `bytes` starts with. Padding is usually one byte
/// repeated: such runs are skipped eight bytes at a time (in the sandbox a byte-by-byte
/// scan costs about 24 fuel per byte, this about 2).
fn leading_ascii_space(bytes: &[u8]) -> usize {
    let mut i = 0;
    loop {
        while let Some(word) = bytes.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
            let first = word[0];
            if !is_ascii_py_space(first) || u64::from_le_bytes(word) != splat(first) {
                break;
            }
            i += 8;
        }
        let stop = (i + 8).min(bytes.len());
        while i < stop {
            if !is_ascii_py_space(bytes[i]) {
                return i;
            }
            i += 1;
        }
        if i >= bytes.len() {
            return i;
        }
    }
}

/// How many ASCII whitespace bytes `bytes` ends with (see [`leading_ascii_space`]).
fn trailing_ascii_space(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    loop {
        while let Some(word) = end
            .checked_sub(8)
            .and_then(|start| <[u8; 8]>::try_from(&bytes[start..end]).ok())
        {
            let last = word[7];
            if !is_ascii_py_space(last) || u64::from_le_bytes(word) != splat(last) {
                break;
            }
            end -= 8;
        }
        let stop = end.saturating_sub(8);
        while end > stop {
            if !is_ascii_py_space(bytes[end - 1]) {
                return bytes.len() - end;
            }
            end -= 1;
        }
        if end == 0 {
            return bytes.len();
        }
    }
}

/// Python whitespace among ASCII: `\t \n \v \f \r`, the separators 0x1C to 0x1F,
/// and the space.
const fn is_ascii_py_space(byte: u8) -> bool {
    matches!(byte, 0x09..=0x0d | 0x1c..=0x20)
}

/// Whether Python's `str.isspace()` holds for `c`.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests;
