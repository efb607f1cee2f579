//! The built reference component, loaded with wasmtime: it imports nothing, exports
//! the policy interface with `decide` and `info`, and `info` answers its identity.

use deploy_guard_e2e::{NEXT, REFERENCE};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Config, Engine};

const POLICY_INTERFACE: &str = "orchestrator:deploy-guard/policy@1.0.0";
const TYPES_INTERFACE: &str = "orchestrator:deploy-guard/types@1.0.0";

fn engine() -> Engine {
    Engine::new(&Config::new()).expect("engine")
}

#[test]
fn the_components_start_with_the_component_header() {
    for bytes in [REFERENCE, NEXT] {
        assert_eq!(&bytes[..8], &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
    }
}

#[test]
fn the_reference_component_imports_nothing_and_exports_decide_and_info() {
    let engine = engine();
    for bytes in [REFERENCE, NEXT] {
        let component = Component::new(&engine, bytes).expect("a valid component");
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_owned()).collect();
        assert!(imports.is_empty(), "imports: {imports:?}");
        let exports: Vec<(String, ComponentItem)> = ty.exports(&engine).map(|(n, e)| (n.to_owned(), e.ty)).collect();
        let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&TYPES_INTERFACE), "{names:?}");
        let policy = exports
            .iter()
            .find_map(|(name, item)| match item {
                ComponentItem::ComponentInstance(instance) if name == POLICY_INTERFACE => Some(instance),
                _ => None,
            })
            .expect("the policy interface is exported");
        let mut functions: Vec<String> = policy
            .exports(&engine)
            .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
            .map(|(n, _)| n.to_owned())
            .collect();
        functions.sort();
        assert_eq!(functions, ["decide", "info"]);
    }
}

#[test]
fn info_answers_the_name_and_the_crate_version() {
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let reference =
        deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, deploy_guard::Limits::DEFAULT)
            .expect("loads");
    assert_eq!(
        (reference.name.as_str(), reference.version.as_str()),
        ("deploy-status-guard", "1.0.0")
    );
    assert_eq!(reference.version, deploy_status_guard::POLICY_VERSION);
    let next = deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, NEXT, deploy_guard::Limits::DEFAULT)
        .expect("loads");
    assert_eq!(next.identity(), "deploy-status-guard@1.1.0");
}

#[test]
fn a_decision_never_grows_the_guest_memory() {
    // The arena allocator keeps a decision inside the initial memory: instantiate with a
    // limit of exactly the initial size (2 pages: a 64 KiB stack, the data, the 32 KiB
    // arena) and decide a case with long strings. One page fewer does not even
    // instantiate, so the limit is tight.
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let limits = deploy_guard::Limits {
        memory_bytes: 2 * 65536,
        ..deploy_guard::Limits::DEFAULT
    };
    let too_small = deploy_guard::Limits {
        memory_bytes: 65536,
        ..deploy_guard::Limits::DEFAULT
    };
    // Refused for its memory (the initial 2 pages past a 1-page limit), not any error.
    match deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, too_small) {
        Err(deploy_guard::sandbox::policy::LoadError::Info(reason)) => {
            assert!(reason.starts_with("memory: ") && reason.contains("65536"), "{reason}");
        }
        other => panic!("a 1-page limit did not refuse the 2-page policy for its memory: {other:?}"),
    }
    let policy =
        deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, limits).expect("fits in 4 pages");
    let long = "r".repeat(4000);
    let facts = deploy_guard::sandbox::policy::Facts {
        work_item_id: "W".repeat(1000),
        target: deploy_guard::sandbox::policy::TargetStatus::Monitoring,
        caller: Some("c".repeat(1000)),
        task: Some(deploy_guard::sandbox::policy::Task {
            repo: long.clone(),
            stage: " done ".into(),
        }),
        window_active: Some(true),
        scope_repos: vec![long.clone(), "svc".into()],
        self_hosting_repos: vec!["orchestrator".into()],
    };
    let ruling = policy.decide(&facts).expect("decides within its initial memory");
    assert_eq!(ruling.rule, "monitoring-window-active");
}

#[test]
fn every_lane_runs_the_same_policy() {
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        sandbox.lanes().len(),
        cores.clamp(1, deploy_guard::sandbox::engine::MAX_LANES)
    );
    let policy = deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, deploy_guard::Limits::DEFAULT)
        .expect("loads");
    let facts = deploy_guard::sandbox::policy::Facts {
        work_item_id: "ORCH-061".into(),
        target: deploy_guard::sandbox::policy::TargetStatus::Monitoring,
        caller: None,
        task: Some(deploy_guard::sandbox::policy::Task {
            repo: "orchestrator".into(),
            stage: "done".into(),
        }),
        window_active: Some(false),
        scope_repos: Vec::new(),
        self_hosting_repos: vec!["orchestrator".into()],
    };
    for lane in 0..sandbox.lanes().len() {
        let ruling = policy.decide_in_lane(lane, &facts).expect("decides");
        assert_eq!(ruling.rule, "converge-done", "lane {lane}");
    }
}
