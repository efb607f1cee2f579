//! A loaded policy: its bytes' digest, its compiled component, its `InstancePre` and
//! the indices of its exports, its identity and its world; and one question (a stamp or
//! a tick) answered in a fresh sandbox, with everything the guest returns checked
//! before it is believed.
//!
//! A policy of either world of the 1.x line loads: `policy` (and `info`) are found by
//! their major line whatever the minor version they were built against, and a policy
//! without `monitor` (the 1.0.0 world) has its ticks answered by the host: PROCEED,
//! rule `tick-not-in-policy` (said once, when such a policy goes live:
//! [`crate::rollout::slot`]). Every exported function's type is
//! checked once, when the policy is loaded; a decision then calls it without checking
//! it again.

use crate::config::Limits;
use crate::decision::{Ask, MAX_RULE_BYTES, RULE_TICK_NOT_IN_POLICY, Verdict};
use crate::sandbox::engine::{Sandbox, SandboxState};
use crate::sandbox::memo::Memo;
use crate::sandbox::question::Question;
use crate::sandbox::wit::{
    Facts, PolicyInfo, TickFacts, WitDecision, WitTickDecision, WitTickVerdict, WitVerdict, with_facts, with_tick_facts,
};
use crate::sandbox::world::{check_export_shapes, item_kind};
use std::sync::Arc;
use wasmtime::Trap;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre, TypedFunc};

/// The longest name or version a policy may report, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;

/// Why a policy could not be loaded. The message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a component at all.
    #[error("not a component: {0}")]
    NotAComponent(String),
    /// A component that imports something (the names are listed).
    #[error("the component imports {0}; a policy must import nothing")]
    Imports(String),
    /// A component of another world: an export missing or of another type.
    #[error("not a component of the guard-policy world: {0}")]
    WrongWorld(String),
    /// `info` failed or answered something unusable.
    #[error("info: {0}")]
    Info(String),
    /// A component whose declared memory or table is past what the host reserves for
    /// any policy: refused when compiled, before any instance exists.
    #[error("memory: a memory or table past what the host reserves for any policy: {0}")]
    TooLarge(String),
}

/// Why one decision could not be made. The class comes first in the message.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The epoch deadline passed.
    #[error("deadline: the policy ran past its {0} ms deadline")]
    Deadline(u128),
    /// The fuel ran out.
    #[error("fuel: the policy used up its {0} units of fuel")]
    Fuel(u64),
    /// The policy wanted more memory or table than allowed.
    #[error("{0}")]
    Memory(String),
    /// Any other trap.
    #[error("trap: {0}")]
    Trap(String),
    /// The instance could not be created.
    #[error("instantiate: {0}")]
    Instantiate(String),
    /// The guest returned something the host does not accept.
    #[error("invalid-result: {0}")]
    InvalidResult(String),
}

impl RunError {
    /// The fail-safe class of this error (the metrics' label).
    pub fn class(&self) -> crate::decision::FailSafeClass {
        use crate::decision::FailSafeClass;
        match self {
            RunError::Deadline(_) => FailSafeClass::Deadline,
            RunError::Fuel(_) => FailSafeClass::Fuel,
            RunError::Memory(_) => FailSafeClass::Memory,
            RunError::Trap(_) => FailSafeClass::Trap,
            RunError::Instantiate(_) => FailSafeClass::Pool,
            RunError::InvalidResult(_) => FailSafeClass::InvalidResult,
        }
    }
}

/// The decision of a policy, checked. Two rulings are equal when they say the same
/// (verdict and rule): the fuel a run used is how it answered, not what.
#[derive(Clone, Debug)]
pub struct Ruling {
    /// The verdict.
    pub verdict: Verdict,
    /// The rule (at most [`MAX_RULE_BYTES`] bytes).
    pub rule: String,
    /// The fuel the run used; none when the host answered without running the policy
    /// (a tick asked of a policy without `monitor`).
    pub fuel: Option<u64>,
}

impl PartialEq for Ruling {
    fn eq(&self, other: &Ruling) -> bool {
        (self.verdict, &self.rule) == (other.verdict, &other.rule)
    }
}

impl Eq for Ruling {}

/// A policy that passed loading: compiled, import-free, of a world of the 1.x line,
/// with an identity. Every question instantiates it afresh.
pub struct LoadedPolicy {
    sandbox: Arc<Sandbox>,
    /// One per lane of the sandbox (see [`crate::sandbox::engine`]).
    lanes: Vec<Lane>,
    limits: Limits,
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// What `info` answered.
    pub name: String,
    /// What `info` answered.
    pub version: String,
    /// `name@version`, made once.
    identity: String,
    /// The component's bytes (kept so that a swapped-out policy can be restored).
    bytes: Arc<[u8]>,
    /// Its answers under these limits (see [`crate::sandbox::memo`]).
    memo: Memo<Ruling>,
}

/// A policy in one lane: its `InstancePre` and where its functions are.
#[derive(Clone)]
struct Lane {
    pre: InstancePre<SandboxState>,
    decide: ComponentExportIndex,
    info: ComponentExportIndex,
    /// None for a policy of the 1.0.0 world (no `monitor`).
    tick: Option<ComponentExportIndex>,
}

/// `info` as a typed function (its type checked at load).
type InfoFunc = TypedFunc<(), (PolicyInfo,)>;

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .field("monitor", &self.has_monitor())
            .finish_non_exhaustive()
    }
}

/// `sha256:` and the lowercase hex digest of `bytes` (the decision's `policy_digest`).
pub use crate::decision::digest;

/// Compile `bytes` (a component) for the sandbox's engine.
pub fn compile(sandbox: &Sandbox, bytes: &[u8]) -> Result<Component, LoadError> {
    sandbox.count_compile();
    Component::new(sandbox.engine(), bytes).map_err(|e| {
        let message = format!("{e:#}");
        // wasmtime's pooling allocator checks each declared memory and table against
        // its slots when compiling; it gives no typed error for it.
        if message.contains("does not fit in pooling allocator requirements") {
            LoadError::TooLarge(message)
        } else {
            LoadError::NotAComponent(message)
        }
    })
}

/// The first bytes of a component (magic, then version 0x0d and layer 1).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The first bytes of a core module (magic, version 1, layer 0).
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl LoadedPolicy {
    /// Compile `bytes` and check the shape: a component, importing nothing, exporting
    /// a world of the 1.x line, whose `info` answers within the limits.
    pub fn load(sandbox: &Arc<Sandbox>, bytes: &[u8], limits: Limits) -> Result<LoadedPolicy, LoadError> {
        if bytes.is_empty() {
            return Err(LoadError::NotAComponent("the file is empty".into()));
        }
        if bytes.starts_with(&MODULE_HEADER) {
            return Err(LoadError::NotAComponent(
                "this is a core WebAssembly module; encode it as a component (wasm-tools component new)".into(),
            ));
        }
        if !bytes.starts_with(&COMPONENT_HEADER) {
            return Err(LoadError::NotAComponent(format!(
                "the file does not start with the component header 00 61 73 6d 0d 00 01 00 ({} bytes)",
                bytes.len()
            )));
        }
        let digest = digest(bytes);
        let cached = sandbox.cache().and_then(|cache| cache.load(sandbox.engine(), &digest));
        let compiled = cached.is_none();
        let component = match cached {
            Some(component) => component,
            None => compile(sandbox, bytes)?,
        };
        let policy = Self::from_component(sandbox, &component, Arc::from(bytes), digest, limits)?;
        // Kept only once it is a policy of this world whose `info` answers: a stream of
        // malformed candidates leaves nothing behind.
        if let (true, Some(cache)) = (compiled, sandbox.cache()) {
            cache.store(sandbox.engine(), &policy.digest, &component);
        }
        Ok(policy)
    }

    /// Check an already compiled component (the precompiled cache gives these).
    pub fn from_component(
        sandbox: &Arc<Sandbox>,
        component: &Component,
        bytes: Arc<[u8]>,
        digest: String,
        limits: Limits,
    ) -> Result<LoadedPolicy, LoadError> {
        let engine = sandbox.engine();
        let imports: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, item)| format!("`{name}` ({})", item_kind(&item.ty)))
            .collect();
        if !imports.is_empty() {
            return Err(LoadError::Imports(imports.join(", ")));
        }
        let exports = check_export_shapes(component, engine).map_err(LoadError::WrongWorld)?;
        let artifact = if sandbox.lanes().len() > 1 {
            Some(
                component
                    .serialize()
                    .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?,
            )
        } else {
            None
        };
        let mut lanes = Vec::with_capacity(sandbox.lanes().len());
        for (index, lane) in sandbox.lanes().iter().enumerate() {
            let in_lane = match (&artifact, index) {
                (_, 0) | (None, _) => component.clone(),
                // SAFETY: `artifact` was serialized by this process a moment ago, from a
                // component compiled for an engine of the very same configuration.
                (Some(artifact), _) => unsafe { Component::deserialize(lane.engine(), artifact) }
                    .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?,
            };
            let pre = lane
                .linker()
                .instantiate_pre(&in_lane)
                .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
            let function = |interface: &str, name: &str| {
                let instance = in_lane.get_export_index(None, interface);
                instance
                    .and_then(|instance| in_lane.get_export_index(Some(&instance), name))
                    .ok_or_else(|| LoadError::WrongWorld(format!("{interface} does not export the function `{name}`")))
            };
            lanes.push(Lane {
                decide: function(&exports.policy, "decide")?,
                info: function(&exports.policy, "info")?,
                tick: exports.monitor.as_deref().map(|m| function(m, "tick")).transpose()?,
                pre,
            });
        }
        let mut policy = LoadedPolicy {
            sandbox: Arc::clone(sandbox),
            lanes,
            limits,
            digest,
            name: String::new(),
            version: String::new(),
            identity: String::new(),
            bytes,
            memo: Memo::new(),
        };
        // Every function's type, in every lane, checked once here: a decision calls
        // them unchecked.
        for lane in 0..policy.lanes.len() {
            policy.check_types(lane)?;
        }
        let info = policy.info().map_err(|e| LoadError::Info(e.to_string()))?;
        for (what, value) in [("name", &info.name), ("version", &info.version)] {
            // A control or format character (a bidirectional override, a zero-width
            // space) would let a policy print as another's identity, or forge a log line.
            if value.trim().is_empty()
                || value.len() > MAX_IDENTITY_BYTES
                || value.chars().any(crate::decision::is_control_or_format)
            {
                return Err(LoadError::Info(format!(
                    "the {what} must be 1 to {MAX_IDENTITY_BYTES} bytes of printable text, without control or \
                     format characters ({} bytes given: {})",
                    value.len(),
                    crate::decision::Escaped(&value.chars().take(MAX_IDENTITY_BYTES).collect::<String>())
                )));
            }
        }
        policy.identity = format!("{}@{}", info.name, info.version);
        policy.name = info.name;
        policy.version = info.version;
        Ok(policy)
    }

    /// Instantiate in `lane` and check the types of `decide`, `info` and `tick` against
    /// the world's.
    fn check_types(&self, lane: usize) -> Result<(), LoadError> {
        let (mut store, instance) = self.instantiate(lane).map_err(|e| LoadError::Info(e.to_string()))?;
        let exports = &self.lanes[lane];
        let mismatch = |function: &str, e: wasmtime::Error| {
            LoadError::WrongWorld(format!(
                "`{function}` does not have the type the guard-policy world gives it: {e:#}"
            ))
        };
        instance
            .get_typed_func::<(&Facts<'_>,), (WitDecision,)>(&mut store, &exports.decide)
            .map_err(|e| mismatch("decide", e))?;
        instance
            .get_typed_func::<(), (PolicyInfo,)>(&mut store, &exports.info)
            .map_err(|e| mismatch("info", e))?;
        if let Some(tick) = &exports.tick {
            instance
                .get_typed_func::<(&TickFacts<'_>,), (WitTickDecision,)>(&mut store, tick)
                .map_err(|e| mismatch("tick", e))?;
        }
        Ok(())
    }

    /// `name@version`.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The component's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The limits decisions of this policy run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the policy answers ticks itself (it exports `monitor`: the 1.1.0 world).
    pub fn has_monitor(&self) -> bool {
        self.lanes.first().is_some_and(|lane| lane.tick.is_some())
    }

    /// The version of the world the policy exports: `1.1.0` with `monitor`, else `1.0.0`.
    pub fn world(&self) -> &'static str {
        if self.has_monitor() { "1.1.0" } else { "1.0.0" }
    }

    /// A copy of this policy that runs under other limits (a configuration reload).
    pub fn with_limits(&self, limits: Limits) -> LoadedPolicy {
        LoadedPolicy {
            sandbox: Arc::clone(&self.sandbox),
            lanes: self.lanes.clone(),
            limits,
            digest: self.digest.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            identity: self.identity.clone(),
            bytes: Arc::clone(&self.bytes),
            // Other limits, other answers (fuel, memory): nothing remembered is carried.
            memo: Memo::new(),
        }
    }

    fn instantiate(&self, lane: usize) -> Result<(wasmtime::Store<SandboxState>, Instance), RunError> {
        let lane = lane % self.lanes.len();
        let mut store = self.sandbox.store(lane, self.limits);
        match self.lanes[lane].pre.instantiate(&mut store) {
            Ok(instance) => Ok((store, instance)),
            Err(e) => Err(classify(&store, e, self.limits, RunError::Instantiate)),
        }
    }

    /// Ask `info` in a fresh instance.
    pub fn info(&self) -> Result<PolicyInfo, RunError> {
        let lane = self.sandbox.current_lane() % self.lanes.len();
        let (mut store, instance) = self.instantiate(lane)?;
        let info: InfoFunc = self.function(&mut store, &instance, &self.lanes[lane].info)?;
        info.call(&mut store, ())
            .map(|(info,)| info)
            .map_err(|e| classify(&store, e, self.limits, RunError::InvalidResult))
    }

    /// The function at `index` of `instance`, typed without a check.
    fn function<P, R>(
        &self,
        store: &mut wasmtime::Store<SandboxState>,
        instance: &Instance,
        index: &ComponentExportIndex,
    ) -> Result<TypedFunc<P, R>, RunError>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let func = instance
            .get_func(&mut *store, index)
            .ok_or_else(|| RunError::Instantiate("an export checked at load is missing".to_owned()))?;
        // SAFETY: `index` is an export of the component this instance was made from,
        // whose type was checked against `(P, R)` when the policy was loaded
        // (`check_types`, for every lane).
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }

    /// The host's answer to a tick for a policy without `monitor`, if this is one.
    fn tick_not_in_policy(&self, question: &Question<'_>) -> Option<Ruling> {
        if question.ask != Ask::Tick || self.has_monitor() {
            return None;
        }
        Some(Ruling {
            verdict: Verdict::Proceed,
            rule: RULE_TICK_NOT_IN_POLICY.to_owned(),
            fuel: None,
        })
    }

    /// Answer one question in a fresh instance; the Store is dropped afterwards, trap
    /// or not. A tick asked of a policy without `monitor` is answered by the host.
    pub fn rule(&self, question: &Question<'_>) -> Result<Ruling, RunError> {
        self.rule_in_lane(self.sandbox.current_lane(), question)
    }

    /// [`LoadedPolicy::rule`] in a given lane (taken modulo the number of lanes).
    pub fn rule_in_lane(&self, lane: usize, question: &Question<'_>) -> Result<Ruling, RunError> {
        if let Some(ruling) = self.tick_not_in_policy(question) {
            return Ok(ruling);
        }
        let lane = lane % self.lanes.len();
        let (mut store, instance) = self.instantiate(lane)?;
        self.call(&mut store, &instance, lane, question)
    }

    /// Call the function that answers `question` on `instance`; the ruling carries the
    /// fuel the call used.
    fn call(
        &self,
        store: &mut wasmtime::Store<SandboxState>,
        instance: &Instance,
        lane: usize,
        question: &Question<'_>,
    ) -> Result<Ruling, RunError> {
        let mut ruling = self.call_unmetered(store, instance, lane, question)?;
        // The Store was given `limits.fuel` for this call (made or rearmed just before).
        ruling.fuel = Some(self.limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)));
        Ok(ruling)
    }

    fn call_unmetered(
        &self,
        store: &mut wasmtime::Store<SandboxState>,
        instance: &Instance,
        lane: usize,
        question: &Question<'_>,
    ) -> Result<Ruling, RunError> {
        let exports = &self.lanes[lane];
        let classified =
            |store: &wasmtime::Store<SandboxState>, e| classify(store, e, self.limits, RunError::InvalidResult);
        match (question.ask, &exports.tick) {
            (Ask::Decide(target), _) => {
                let decide: TypedFunc<(&Facts<'_>,), (WitDecision,)> =
                    self.function(store, instance, &exports.decide)?;
                let (answer,) = with_facts(question, target, |facts| decide.call(&mut *store, (facts,)))
                    .map_err(|e| classified(store, e))?;
                check(
                    match answer.verdict {
                        WitVerdict::Allow => Verdict::Allow,
                        WitVerdict::ConvergeDone => Verdict::ConvergeDone,
                        WitVerdict::Suppress => Verdict::Suppress,
                    },
                    answer.rule,
                )
            }
            (Ask::Tick, Some(index)) => {
                let tick: TypedFunc<(&TickFacts<'_>,), (WitTickDecision,)> = self.function(store, instance, index)?;
                let (answer,) = with_tick_facts(question, |facts| tick.call(&mut *store, (facts,)))
                    .map_err(|e| classified(store, e))?;
                check(
                    match answer.verdict {
                        WitTickVerdict::Proceed => Verdict::Proceed,
                        WitTickVerdict::Noop => Verdict::Noop,
                    },
                    answer.rule,
                )
            }
            (Ask::Tick, None) => Err(RunError::Instantiate("no tick in this policy".to_owned())),
        }
    }

    /// [`LoadedPolicy::rule`], answered from this policy's memo when the very same
    /// question was answered before under the same limits (see
    /// [`crate::sandbox::memo`]); a new answer is remembered, a failure never is.
    pub fn rule_remembered(&self, question: &Question<'_>) -> Result<Ruling, RunError> {
        if let Some(ruling) = self.memo.recall(question) {
            return Ok(ruling);
        }
        let ruling = self.rule(question);
        if let Ok(ruling) = &ruling {
            self.remember(question, ruling);
        }
        ruling
    }

    /// Keep an answer the policy gave in the sandbox (one the host gave itself, for a
    /// tick of a policy without `monitor`, costs nothing to give again).
    fn remember(&self, question: &Question<'_>, ruling: &Ruling) {
        if ruling.fuel.is_some() {
            self.memo.remember(question, ruling.clone(), ruling.rule.len());
        }
    }

    /// [`LoadedPolicy::rule_many`] with the memo of [`LoadedPolicy::rule_remembered`]:
    /// only the questions not remembered run, together.
    pub fn rule_many_remembered(&self, questions: &[Question<'_>]) -> Vec<Result<Ruling, RunError>> {
        let recalled: Vec<Option<Ruling>> = questions.iter().map(|q| self.memo.recall(q)).collect();
        let unanswered: Vec<Question<'_>> = questions
            .iter()
            .zip(&recalled)
            .filter(|(_, recalled)| recalled.is_none())
            .map(|(question, _)| *question)
            .collect();
        let mut ran = self.rule_many(&unanswered).into_iter().zip(&unanswered);
        recalled
            .into_iter()
            .map(|recalled| match recalled {
                Some(ruling) => Ok(ruling),
                None => match ran.next() {
                    Some((ruling, question)) => {
                        if let Ok(ruling) = &ruling {
                            self.remember(question, ruling);
                        }
                        ruling
                    }
                    None => Err(RunError::Instantiate(
                        "the policy gave no ruling for this question".to_owned(),
                    )),
                },
            })
            .collect()
    }

    /// How often this policy's memo answered (see [`LoadedPolicy::rule_remembered`]).
    pub fn memo_stats(&self) -> crate::sandbox::memo::MemoStats {
        self.memo.stats()
    }

    /// Answers for several questions (a batch), in order. Each runs in a fresh instance
    /// with its own fuel and deadline, as [`LoadedPolicy::rule`] does; the instances
    /// of up to [`crate::sandbox::engine::INSTANCES_PER_STORE`] questions share a Store,
    /// which saves making and dropping one per decision (measured on the reference
    /// policy: 0.5 us of 4.4). The instances of a Store cannot reach one another:
    /// nothing is linked between them. A Store in which anything failed is not used
    /// again.
    pub fn rule_many(&self, questions: &[Question<'_>]) -> Vec<Result<Ruling, RunError>> {
        let lane = self.sandbox.current_lane() % self.lanes.len();
        let pre = &self.lanes[lane].pre;
        let mut rulings = Vec::with_capacity(questions.len());
        let mut shared: Option<(wasmtime::Store<SandboxState>, usize)> = None;
        for question in questions {
            if let Some(ruling) = self.tick_not_in_policy(question) {
                rulings.push(Ok(ruling));
                continue;
            }
            // The batch's Store, if it may take one more decision (the Store it replaces
            // is dropped first, so that dropping it is not counted against the deadline
            // of this decision). A Store whose caps this policy's instances have filled
            // (a policy of several core instances) cannot take one more: the decision
            // goes on in a new Store, as any decision would.
            let reused = shared
                .take()
                .filter(|(_, used)| *used < crate::sandbox::engine::INSTANCES_PER_STORE)
                .and_then(|(mut store, used)| {
                    crate::sandbox::engine::rearm(&mut store);
                    let instance = pre.instantiate(&mut store).ok()?;
                    Some((store, used, instance))
                });
            let (mut store, used, instance) = match reused {
                Some((store, used, instance)) => (store, used, Ok(instance)),
                None => {
                    let mut store = self.sandbox.store(lane, self.limits);
                    let instance = pre
                        .instantiate(&mut store)
                        .map_err(|e| classify(&store, e, self.limits, RunError::Instantiate));
                    (store, 0, instance)
                }
            };
            let ruling = instance.and_then(|instance| self.call(&mut store, &instance, lane, question));
            // A Store in which anything failed, or in which an instance grew its memory
            // or a table, takes no further decision.
            if ruling.is_ok() && !store.data().grew {
                shared = Some((store, used + 1));
            }
            rulings.push(ruling);
        }
        rulings
    }
}

/// The guest's answer, believed only once checked: its rule bounded and printable.
fn check(verdict: Verdict, rule: String) -> Result<Ruling, RunError> {
    if rule.len() > MAX_RULE_BYTES {
        // The rule itself never reaches a log line: only its size.
        return Err(RunError::InvalidResult(format!(
            "the rule is {} bytes long, more than {MAX_RULE_BYTES}",
            rule.len()
        )));
    }
    if rule.chars().any(crate::decision::is_control_or_format) {
        // Escaped, so that the message cannot carry what it reports into a log line.
        return Err(RunError::InvalidResult(format!(
            "the rule holds control or format characters: {}",
            crate::decision::Escaped(&rule)
        )));
    }
    Ok(Ruling {
        verdict,
        rule,
        fuel: None,
    })
}

/// Turn wasmtime's error into the class of what happened. Errors that are not traps
/// come from lifting or lowering values at the boundary: `otherwise` names them.
fn classify(
    store: &wasmtime::Store<SandboxState>,
    error: wasmtime::Error,
    limits: Limits,
    otherwise: fn(String) -> RunError,
) -> RunError {
    if let Some(denied) = &store.data().denied {
        return RunError::Memory(denied.clone());
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RunError::Deadline(limits.timeout.as_millis()),
        Some(Trap::OutOfFuel) => RunError::Fuel(limits.fuel),
        Some(trap) => RunError::Trap(trap.to_string()),
        None => otherwise(format!("{error:#}")),
    }
}
