//! The precompiled cache: a hit deserializes what this process stored; anything it did
//! not write, or that was damaged, is recompiled and never deserialized.
//!
//! Policies load under the PATIENT limits (a 60 s deadline): loading runs the policy's
//! `info`, and these tests are about the cache, not about deadlines.

use deploy_guard::sandbox::cache::ArtifactCache;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::{LoadedPolicy, digest};
use deploy_guard_e2e::{PATIENT, REFERENCE};
use std::os::unix::fs::PermissionsExt;

fn entry(sandbox: &Sandbox) -> std::path::PathBuf {
    let cache = sandbox.cache().expect("the cache is in use");
    cache.entry_path(sandbox.engine(), &digest(REFERENCE))
}

#[test]
fn the_first_load_stores_and_the_next_one_hits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("cache");
    let sandbox = Sandbox::with_cache(Some(&cache_dir)).expect("sandbox");
    let mode = std::fs::metadata(&cache_dir).expect("created").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(sandbox.compiles(), 0);
    LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("loads");
    assert_eq!(sandbox.compiles(), 1, "the first load compiles");
    let path = entry(&sandbox);
    assert!(path.exists(), "no entry written");
    let cache = ArtifactCache::open(&cache_dir).expect("open");
    assert!(
        cache.load(sandbox.engine(), &digest(REFERENCE)).is_some(),
        "the entry does not load"
    );
    // The next load is served by the cache: no compile, and it decides like the compiled one.
    let policy = LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("loads from the cache");
    assert_eq!(
        sandbox.compiles(),
        1,
        "the second load compiled again instead of hitting"
    );
    assert_eq!(policy.identity(), "deploy-status-guard@1.2.0");
    let ruling = policy
        .rule(&converge_done_facts().question())
        .expect("the cached policy decides");
    assert_eq!(
        (ruling.verdict, ruling.rule.as_str()),
        (deploy_guard::Verdict::ConvergeDone, "converge-done")
    );
    // A new process (another sandbox over the same directory) hits too.
    let restarted = Sandbox::with_cache(Some(&cache_dir)).expect("sandbox");
    LoadedPolicy::load(&restarted, REFERENCE, PATIENT).expect("loads from the cache");
    assert_eq!(restarted.compiles(), 0, "a restart compiled instead of hitting");
}

/// A done task of the self-hosting repo, stamped Monitoring, window closed.
fn converge_done_facts() -> deploy_guard::sandbox::question::FactsRecord {
    deploy_guard::sandbox::question::FactsRecord {
        work_item: "ORCH-061".to_owned(),
        ask: deploy_guard::decision::Ask::Decide(deploy_guard::Target::Monitoring),
        caller: None,
        task: Some(deploy_guard::sandbox::question::RecordTask {
            repo: "orchestrator".to_owned(),
            stage: "done".to_owned(),
        }),
        window_active: Some(false),
        scope_repos: Vec::new(),
        self_hosting_repos: vec!["orchestrator".to_owned()],
    }
}

#[test]
fn a_damaged_or_truncated_entry_is_recompiled_not_deserialized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::with_cache(Some(dir.path())).expect("sandbox");
    LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("loads");
    let path = entry(&sandbox);
    let cache = sandbox.cache().expect("cache");
    let good = std::fs::read(&path).expect("entry");
    for damaged in [good[..good.len() / 2].to_vec(), {
        let mut flipped = good.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 0xff;
        flipped
    }] {
        std::fs::write(&path, &damaged).expect("damage");
        assert!(
            cache.load(sandbox.engine(), &digest(REFERENCE)).is_none(),
            "a damaged entry was used"
        );
        assert!(!path.exists(), "the damaged entry was kept");
        // The next load recompiles and rewrites a sound entry.
        let compiles = sandbox.compiles();
        LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("recompiles");
        assert_eq!(sandbox.compiles(), compiles + 1, "a damaged entry was not recompiled");
        assert_eq!(std::fs::read(&path).expect("rewritten").len(), good.len());
    }
}

#[test]
fn bytes_not_written_by_the_cache_are_never_deserialized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::with_cache(Some(dir.path())).expect("sandbox");
    let path = entry(&sandbox);
    // A raw wasmtime artifact without the cache's header and digest: refused.
    let component = deploy_guard::sandbox::policy::compile(&sandbox, REFERENCE).expect("compiles");
    std::fs::write(&path, component.serialize().expect("serialize")).expect("plant");
    assert!(
        sandbox
            .cache()
            .expect("cache")
            .load(sandbox.engine(), &digest(REFERENCE))
            .is_none()
    );
    // A sound entry made writable by others: refused.
    LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("loads");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    assert!(
        sandbox
            .cache()
            .expect("cache")
            .load(sandbox.engine(), &digest(REFERENCE))
            .is_none()
    );
}

#[test]
fn a_directory_open_to_others_is_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let error = ArtifactCache::open(dir.path()).expect_err("refused");
    assert!(error.to_string().contains("writable by no one else"), "{error}");
    // The sandbox still works, compiling every time.
    let sandbox = Sandbox::with_cache(Some(dir.path())).expect("sandbox");
    assert!(sandbox.cache().is_none());
    LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("compiles");
}

#[test]
fn an_entry_of_another_engine_misses_and_compiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::with_cache(Some(dir.path())).expect("sandbox");
    LoadedPolicy::load(&sandbox, REFERENCE, PATIENT).expect("loads");
    // An engine of another configuration (here: no fuel) has another compatibility hash.
    let other = wasmtime::Engine::new(&wasmtime::Config::new()).expect("engine");
    let cache = sandbox.cache().expect("cache");
    assert_ne!(cache.entry_path(&other, &digest(REFERENCE)), entry(&sandbox));
    assert!(cache.load(&other, &digest(REFERENCE)).is_none());
    // Even an entry renamed to the other engine's key is refused by wasmtime, not run.
    std::fs::copy(entry(&sandbox), cache.entry_path(&other, &digest(REFERENCE))).expect("copy");
    assert!(cache.load(&other, &digest(REFERENCE)).is_none());
}
