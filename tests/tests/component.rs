//! The built policy components, loaded with wasmtime: they import nothing; the
//! reference exports the 1.1.0 world (`policy` with `decide` and `info`, `monitor` with
//! `tick`), the next policy the 1.0.0 world (`policy` alone); `info` answers their
//! identity.

use deploy_guard_e2e::{NEXT, REFERENCE};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Config, Engine};

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
fn the_components_import_nothing_and_export_the_functions_of_their_world() {
    let engine = engine();
    for (bytes, world, interfaces) in [
        (
            REFERENCE,
            "1.1.0",
            [("policy", ["decide", "info"].as_slice()), ("monitor", &["tick"])].as_slice(),
        ),
        (NEXT, "1.0.0", [("policy", ["decide", "info"].as_slice())].as_slice()),
    ] {
        let component = Component::new(&engine, bytes).expect("a valid component");
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_owned()).collect();
        assert!(imports.is_empty(), "imports: {imports:?}");
        let exports: Vec<(String, ComponentItem)> = ty.exports(&engine).map(|(n, e)| (n.to_owned(), e.ty)).collect();
        let mut names: Vec<String> = exports.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let mut expected: Vec<String> = std::iter::once("types")
            .chain(interfaces.iter().map(|(name, _)| *name))
            .map(|name| format!("orchestrator:deploy-guard/{name}@{world}"))
            .collect();
        expected.sort();
        assert_eq!(names, expected);
        for (interface, wanted) in interfaces {
            let name = format!("orchestrator:deploy-guard/{interface}@{world}");
            let instance = exports
                .iter()
                .find_map(|(n, item)| match item {
                    ComponentItem::ComponentInstance(instance) if *n == name => Some(instance),
                    _ => None,
                })
                .expect("the interface is an instance");
            let mut functions: Vec<String> = instance
                .exports(&engine)
                .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                .map(|(n, _)| n.to_owned())
                .collect();
            functions.sort();
            assert_eq!(functions, *wanted, "{name}");
        }
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
        ("deploy-status-guard", "1.2.0")
    );
    assert_eq!(reference.version, deploy_status_guard::POLICY_VERSION);
    let next = deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, NEXT, deploy_guard::Limits::DEFAULT)
        .expect("loads");
    assert_eq!(next.identity(), "deploy-status-guard@1.1.0");
}

#[test]
fn a_decision_never_grows_the_guest_memory() {
    // The arena allocator keeps a decision inside the initial memory: instantiate with a
    // limit of exactly the initial size (1 page: a 16 KiB stack, the data, the 16 KiB
    // arena) and decide a case with long strings. No memory at all does not even
    // instantiate, so the limit is tight.
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let limits = deploy_guard::Limits {
        memory_bytes: 65536,
        ..deploy_guard::Limits::DEFAULT
    };
    let too_small = deploy_guard::Limits {
        memory_bytes: 0,
        ..deploy_guard::Limits::DEFAULT
    };
    // Refused for its memory (the initial page past a limit of none), not any error.
    match deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, too_small) {
        Err(deploy_guard::sandbox::policy::LoadError::Info(reason)) => {
            assert!(reason.starts_with("memory: ") && reason.contains("65536"), "{reason}");
        }
        other => panic!("a limit of no memory did not refuse the 1-page policy for its memory: {other:?}"),
    }
    let policy =
        deploy_guard::sandbox::policy::LoadedPolicy::load(&sandbox, REFERENCE, limits).expect("fits in 1 page");
    let long = "r".repeat(4000);
    let facts = deploy_guard::sandbox::question::FactsRecord {
        work_item: "W".repeat(1000),
        ask: deploy_guard::decision::Ask::Decide(deploy_guard::Target::Monitoring),
        caller: Some("c".repeat(1000)),
        task: Some(deploy_guard::sandbox::question::RecordTask {
            repo: long.clone(),
            stage: " done ".into(),
        }),
        window_active: Some(true),
        scope_repos: vec![long.clone(), "svc".into()],
        self_hosting_repos: vec!["orchestrator".into()],
    };
    let ruling = policy
        .rule(&facts.question())
        .expect("decides within its initial memory");
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
    let facts = deploy_guard::sandbox::question::FactsRecord {
        work_item: "ORCH-061".into(),
        ask: deploy_guard::decision::Ask::Decide(deploy_guard::Target::Monitoring),
        caller: None,
        task: Some(deploy_guard::sandbox::question::RecordTask {
            repo: "orchestrator".into(),
            stage: "done".into(),
        }),
        window_active: Some(false),
        scope_repos: Vec::new(),
        self_hosting_repos: vec!["orchestrator".into()],
    };
    for lane in 0..sandbox.lanes().len() {
        let ruling = policy.rule_in_lane(lane, &facts.question()).expect("decides");
        assert_eq!(ruling.rule, "converge-done", "lane {lane}");
    }
}
