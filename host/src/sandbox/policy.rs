//! A loaded policy: its bytes' digest, its compiled component, its `InstancePre`, its
//! identity; and one decision run in a fresh sandbox, with everything the guest
//! returns checked before it is believed.
//!
//! The boundary types are the ones `bindgen!` generates in [`crate::sandbox::wit`]; they are
//! re-exported here, where policies are run, for the embedder's convenience.

use crate::config::Limits;
use crate::decision::MAX_RULE_BYTES;
use crate::sandbox::engine::{Sandbox, SandboxState};
use std::sync::Arc;
use wasmtime::Trap;
use wasmtime::component::{Component, types::ComponentItem};

pub use crate::sandbox::wit::{Facts, PolicyInfo, TargetStatus, Task, WitDecision, WitVerdict};
use crate::sandbox::wit::{GuardPolicy, GuardPolicyPre};

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

/// The decision of a policy, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruling {
    /// The verdict.
    pub verdict: crate::Verdict,
    /// The rule (at most [`MAX_RULE_BYTES`] bytes).
    pub rule: String,
}

/// A policy that passed loading: compiled, import-free, of the right world, with an
/// identity. Decisions instantiate it afresh each time.
pub struct LoadedPolicy {
    sandbox: Arc<Sandbox>,
    /// One per lane of the sandbox (see [`crate::sandbox::engine`]).
    pres: Vec<GuardPolicyPre<SandboxState>>,
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
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest)
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
    /// the `guard-policy` world, whose `info` answers within the limits.
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
        check_export_shapes(component, engine)?;
        let mut pres = Vec::with_capacity(sandbox.lanes().len());
        let artifact = if sandbox.lanes().len() > 1 {
            Some(
                component
                    .serialize()
                    .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?,
            )
        } else {
            None
        };
        for (index, lane) in sandbox.lanes().iter().enumerate() {
            let in_lane = match (&artifact, index) {
                (_, 0) | (None, _) => component.clone(),
                // SAFETY: `artifact` was serialized by this process a moment ago, from a
                // component compiled for an engine of the very same configuration.
                (Some(artifact), _) => unsafe { Component::deserialize(lane.engine(), artifact) }
                    .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?,
            };
            let instance_pre = lane
                .linker()
                .instantiate_pre(&in_lane)
                .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
            pres.push(GuardPolicyPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?);
        }
        let mut policy = LoadedPolicy {
            sandbox: Arc::clone(sandbox),
            pres,
            limits,
            digest,
            name: String::new(),
            version: String::new(),
            identity: String::new(),
            bytes,
        };
        let info = policy.info().map_err(|e| match e {
            // The generated bindings typecheck the exports when the first instance is
            // made: a mismatch deeper than the shapes checked above surfaces here.
            RunError::Instantiate(message) if message.contains("type mismatch") => LoadError::WrongWorld(format!(
                "an export of {POLICY_INTERFACE} does not have the type the world gives it: {message}"
            )),
            other => LoadError::Info(other.to_string()),
        })?;
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

    /// A copy of this policy that runs under other limits (a configuration reload).
    pub fn with_limits(&self, limits: Limits) -> LoadedPolicy {
        LoadedPolicy {
            sandbox: Arc::clone(&self.sandbox),
            pres: self.pres.clone(),
            limits,
            digest: self.digest.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            identity: self.identity.clone(),
            bytes: Arc::clone(&self.bytes),
        }
    }

    fn instantiate(&self, lane: usize) -> Result<(wasmtime::Store<SandboxState>, GuardPolicy), RunError> {
        let lane = lane % self.pres.len();
        let mut store = self.sandbox.store(lane, self.limits);
        match self.pres[lane].instantiate(&mut store) {
            Ok(instance) => Ok((store, instance)),
            Err(e) => Err(classify(&store, e, self.limits, RunError::Instantiate)),
        }
    }

    /// Ask `info` in a fresh instance.
    pub fn info(&self) -> Result<PolicyInfo, RunError> {
        let (mut store, instance) = self.instantiate(self.sandbox.current_lane())?;
        instance
            .orchestrator_deploy_guard_policy()
            .call_info(&mut store)
            .map_err(|e| classify(&store, e, self.limits, RunError::InvalidResult))
    }

    /// One decision in a fresh instance; the Store is dropped afterwards, trap or not.
    pub fn decide(&self, facts: &Facts) -> Result<Ruling, RunError> {
        self.decide_in_lane(self.sandbox.current_lane(), facts)
    }

    /// [`LoadedPolicy::decide`] in a given lane (taken modulo the number of lanes).
    pub fn decide_in_lane(&self, lane: usize, facts: &Facts) -> Result<Ruling, RunError> {
        let (mut store, instance) = self.instantiate(lane)?;
        let answer = instance
            .orchestrator_deploy_guard_policy()
            .call_decide(&mut store, facts)
            .map_err(|e| classify(&store, e, self.limits, RunError::InvalidResult))?;
        check(answer)
    }
}

impl LoadedPolicy {
    /// Decisions for several facts (a batch), in order. Each runs in a fresh instance
    /// with its own fuel and deadline, as [`LoadedPolicy::decide`] does; the instances
    /// of up to [`crate::sandbox::engine::INSTANCES_PER_STORE`] decisions share a Store, which
    /// saves making and dropping one per decision (measured on the reference policy:
    /// 0.5 us of 4.4). The instances of a Store cannot reach one another: nothing is
    /// linked between them. A Store in which anything failed is not used again.
    pub fn decide_many(&self, facts: &[&Facts]) -> Vec<Result<Ruling, RunError>> {
        let lane = self.sandbox.current_lane() % self.pres.len();
        let mut rulings = Vec::with_capacity(facts.len());
        let mut shared: Option<(wasmtime::Store<SandboxState>, usize)> = None;
        for facts in facts {
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
                    let instance = self.pres[lane].instantiate(&mut store).ok()?;
                    Some((store, used, instance))
                });
            let (mut store, used, instance) = match reused {
                Some((store, used, instance)) => (store, used, Ok(instance)),
                None => {
                    let mut store = self.sandbox.store(lane, self.limits);
                    let instance = self.pres[lane]
                        .instantiate(&mut store)
                        .map_err(|e| classify(&store, e, self.limits, RunError::Instantiate));
                    (store, 0, instance)
                }
            };
            let ruling = instance.and_then(|instance| {
                instance
                    .orchestrator_deploy_guard_policy()
                    .call_decide(&mut store, facts)
                    .map_err(|e| classify(&store, e, self.limits, RunError::InvalidResult))
                    .and_then(check)
            });
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

/// The guest's answer, believed only once checked.
fn check(answer: WitDecision) -> Result<Ruling, RunError> {
    if answer.rule.len() > MAX_RULE_BYTES {
        // The rule itself never reaches a log line: only its size.
        return Err(RunError::InvalidResult(format!(
            "the rule is {} bytes long, more than {MAX_RULE_BYTES}",
            answer.rule.len()
        )));
    }
    if answer.rule.chars().any(crate::decision::is_control_or_format) {
        // Escaped, so that the message cannot carry what it reports into a log line.
        return Err(RunError::InvalidResult(format!(
            "the rule holds control or format characters: {}",
            crate::decision::Escaped(&answer.rule)
        )));
    }
    let verdict = match answer.verdict {
        WitVerdict::Allow => crate::Verdict::Allow,
        WitVerdict::ConvergeDone => crate::Verdict::ConvergeDone,
        WitVerdict::Suppress => crate::Verdict::Suppress,
    };
    Ok(Ruling {
        verdict,
        rule: answer.rule,
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

/// The interface a policy exports its functions in.
pub const POLICY_INTERFACE: &str = "orchestrator:deploy-guard/policy@1.0.0";

/// Check the shapes of `decide` and `info` before anything is instantiated, so that a
/// component of another world is refused with the name of what differs.
fn check_export_shapes(component: &Component, engine: &wasmtime::Engine) -> Result<(), LoadError> {
    let ty = component.component_type();
    let Some(policy) = ty.exports(engine).find_map(|(name, export)| match export.ty {
        ComponentItem::ComponentInstance(instance) if name == POLICY_INTERFACE => Some(instance),
        _ => None,
    }) else {
        return Err(LoadError::WrongWorld(format!("it does not export {POLICY_INTERFACE}")));
    };
    // (function, parameters the world gives, results the world gives)
    for (function, params, results) in [
        ("decide", ["record"].as_slice(), "record"),
        ("info", [].as_slice(), "record"),
    ] {
        let func = policy.exports(engine).find_map(|(name, export)| match export.ty {
            ComponentItem::ComponentFunc(func) if name == function => Some(func),
            _ => None,
        });
        let Some(func) = func else {
            return Err(LoadError::WrongWorld(format!(
                "{POLICY_INTERFACE} does not export the function `{function}`"
            )));
        };
        let found_params: Vec<String> = func
            .params()
            .map(|(name, ty)| format!("{name}: {}", type_kind(&ty)))
            .collect();
        let found_results: Vec<&str> = func.results().map(|ty| type_kind(&ty)).collect();
        let params_match = found_params.len() == params.len()
            && func.params().zip(params).all(|((_, ty), kind)| type_kind(&ty) == *kind);
        if !params_match || found_results != [results] {
            return Err(LoadError::WrongWorld(format!(
                "`{function}` takes ({}) and returns ({}); the guard-policy world's takes ({}) and returns ({results})",
                found_params.join(", "),
                found_results.join(", "),
                params.join(", "),
            )));
        }
    }
    Ok(())
}

fn type_kind(ty: &wasmtime::component::Type) -> &'static str {
    use wasmtime::component::Type;
    match ty {
        Type::Record(_) => "record",
        Type::String => "string",
        Type::Enum(_) => "enum",
        Type::Option(_) => "option",
        Type::List(_) => "list",
        Type::Bool => "bool",
        Type::Variant(_) => "variant",
        Type::Result(_) => "result",
        Type::Tuple(_) => "tuple",
        Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::S8 | Type::S16 | Type::S32 | Type::S64 => "integer",
        Type::Float32 | Type::Float64 => "float",
        _ => "another type",
    }
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "a function",
        ComponentItem::CoreFunc(_) => "a core function",
        ComponentItem::Module(_) => "a module",
        ComponentItem::Component(_) => "a component",
        ComponentItem::ComponentInstance(_) => "an instance",
        ComponentItem::Type(_) => "a type",
        ComponentItem::Resource(_) => "a resource",
    }
}
