//! What a component must export to be a policy: the `policy` interface (and, in the
//! 1.1.0 world, `monitor`) of the 1.x line, each function of the shape the world gives
//! it. Checked from the component's type alone, before anything is instantiated, so
//! that a component of another world or another major version is refused with the
//! name of what differs.

use crate::sandbox::wit::{MAJOR, MONITOR, PACKAGE, POLICY};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// Where a policy's interfaces are: the exact export names of `policy` and, if it has
/// one, `monitor`, each of the 1.x line.
#[derive(Debug)]
pub struct Exports {
    /// The export name of `policy`.
    pub policy: String,
    /// The export name of `monitor`, if the policy has one.
    pub monitor: Option<String>,
}

/// `orchestrator:deploy-guard/<interface>@<version>` split, if `name` is one.
fn interface_of(name: &str) -> Option<(&str, semver_major::Version<'_>)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    Some((interface, semver_major::Version(version)))
}

/// The major number of a `MAJOR.MINOR.PATCH` version, parsed as wasmtime does for its
/// semver-compatible lookups (no pre-release: it is compatible with nothing else).
mod semver_major {
    /// A version as the export name writes it.
    #[derive(Clone, Copy, Debug)]
    pub struct Version<'a>(pub &'a str);

    impl Version<'_> {
        /// Its major number, when it is a release version.
        pub fn major(self) -> Option<u64> {
            let mut parts = self.0.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor: Option<u64> = parts.next()?.parse().ok();
            let patch: Option<u64> = parts.next()?.parse().ok();
            (minor.is_some() && patch.is_some() && parts.next().is_none()).then_some(major)
        }
    }
}

/// Find `policy` (required) and `monitor` (optional) among the component's exports and
/// check the shapes of their functions before anything is instantiated, so that a
/// component of another world or another major version is refused with the name of
/// what differs.
pub fn check_export_shapes(component: &Component, engine: &wasmtime::Engine) -> Result<Exports, String> {
    let ty = component.component_type();
    let mut found: [Option<(String, wasmtime::component::types::ComponentInstance)>; 2] = [None, None];
    for (name, export) in ty.exports(engine) {
        let Some((interface, version)) = interface_of(name) else {
            continue;
        };
        let Some(slot) = [POLICY, MONITOR].iter().position(|i| *i == interface) else {
            continue;
        };
        if version.major() != Some(MAJOR) {
            return Err(format!(
                "it exports `{name}`, of another version line: this host speaks {PACKAGE} {MAJOR}.x \
                 (1.0.0 and 1.1.0), and a policy of another major version is never called"
            ));
        }
        let ComponentItem::ComponentInstance(instance) = export.ty else {
            return Err(format!("`{name}` is not an instance"));
        };
        found[slot] = Some((name.to_owned(), instance));
    }
    let [policy, monitor] = found;
    let Some((policy_name, policy)) = policy else {
        return Err(format!("it does not export {PACKAGE}/{POLICY}@{MAJOR}.x"));
    };
    // (interface, function, parameters the world gives, results the world gives)
    let mut shapes = vec![
        (&policy_name, &policy, "decide", ["record"].as_slice(), "record"),
        (&policy_name, &policy, "info", [].as_slice(), "record"),
    ];
    if let Some((monitor_name, monitor)) = &monitor {
        shapes.push((monitor_name, monitor, "tick", ["record"].as_slice(), "record"));
    }
    for (interface, instance, function, params, results) in shapes {
        let func = instance.exports(engine).find_map(|(name, export)| match export.ty {
            ComponentItem::ComponentFunc(func) if name == function => Some(func),
            _ => None,
        });
        let Some(func) = func else {
            return Err(format!("{interface} does not export the function `{function}`"));
        };
        let found_params: Vec<String> = func
            .params()
            .map(|(name, ty)| format!("{name}: {}", type_kind(&ty)))
            .collect();
        let found_results: Vec<&str> = func.results().map(|ty| type_kind(&ty)).collect();
        let params_match = found_params.len() == params.len()
            && func.params().zip(params).all(|((_, ty), kind)| type_kind(&ty) == *kind);
        if !params_match || found_results != [results] {
            return Err(format!(
                "`{function}` takes ({}) and returns ({}); the guard-policy world's takes ({}) and returns ({results})",
                found_params.join(", "),
                found_results.join(", "),
                params.join(", "),
            ));
        }
    }
    Ok(Exports {
        policy: policy_name,
        monitor: monitor.map(|(name, _)| name),
    })
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

/// What an import or export is, in words.
pub fn item_kind(item: &ComponentItem) -> &'static str {
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
