//! Hot swap under load: threads deciding without pause while the policy file is
//! replaced back and forth, and the candidates that must never go live.

use deploy_guard::guard::ConfigReload;
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::{Guard, Target};
use deploy_guard_e2e::{
    NEXT, PATIENT_TIMEOUT_MS, REFERENCE, Row, Workspace, insert_task, sha256_digest, wait_for, write_atomically,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    let db = ws.create_db();
    insert_task(
        &db,
        Row {
            work_item: "ORCH-081",
            repo: Some("orchestrator"),
            stage: Some("failed"),
        },
    );
    ws.install_reference();
    ws
}

#[test]
fn deciding_threads_see_exactly_one_policy_per_answer_across_100_swaps() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    let reference = sha256_digest(REFERENCE);
    let next = sha256_digest(NEXT);
    let stop = AtomicBool::new(false);
    // The digest that went live last (set by the swapping thread after refresh()).
    let live = Mutex::new(reference.clone());
    let answers = AtomicUsize::new(0);
    let seen = Mutex::new(HashSet::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    // Once a swap has been noticed, no answer comes from the old policy:
                    // read the live digest before deciding; the answer is that one or newer.
                    let before = live.lock().expect("lock").clone();
                    let d = guard.decide_unlogged(deploy_guard::Request::decide("ORCH-081", Target::Awaiting, None));
                    assert_eq!(d.error, None, "{d:?}");
                    let digest = d.policy_digest.clone().expect("a policy ran");
                    let expected_rule = if digest == reference {
                        "non-terminal"
                    } else {
                        assert_eq!(digest, next, "an answer from an unknown policy");
                        "failed"
                    };
                    assert_eq!(d.rule, expected_rule, "a torn answer: {d:?}");
                    let after = live.lock().expect("lock").clone();
                    if before == after {
                        assert_eq!(
                            digest, before,
                            "an answer from a policy swapped out before the decision began"
                        );
                    }
                    seen.lock().expect("lock").insert(digest);
                    answers.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for swap in 0..120 {
            let (bytes, digest) = if swap % 2 == 0 {
                (NEXT, &next)
            } else {
                (REFERENCE, &reference)
            };
            write_atomically(&ws.policy(), bytes);
            // Hold the live lock across the swap so that deciders see a consistent "live".
            let mut current = live.lock().expect("lock");
            let outcome = guard_refresh_until_swapped(&guard, digest);
            assert!(matches!(outcome, Outcome::Activated { .. }), "swap {swap}: {outcome:?}");
            *current = digest.clone();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        answers.load(Ordering::Relaxed) > 200,
        "{} answers",
        answers.load(Ordering::Relaxed)
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
}

/// Drive the guard's poll by hand (as its watcher thread does) until `digest` is live.
fn guard_refresh_until_swapped(guard: &Guard, digest: &str) -> Outcome {
    wait_for(&format!("{digest} live"), || {
        guard
            .refresh()
            .filter(|_| guard.policy().is_some_and(|p| p.digest == digest))
    })
}

/// `policy` with a custom section appended that holds `tag`: the same component (a
/// custom section changes no behaviour), with bytes, and so a digest, of its own.
fn tagged(policy: &[u8], tag: u8) -> Vec<u8> {
    let name = b"deploy-guard-test";
    let mut bytes = policy.to_vec();
    bytes.push(0); // a custom section
    bytes.push(u8::try_from(1 + name.len() + 1).expect("a one-byte LEB128 size"));
    bytes.push(u8::try_from(name.len()).expect("a one-byte LEB128 length"));
    bytes.extend_from_slice(name);
    bytes.push(tag);
    bytes
}

#[test]
fn bad_candidates_never_go_live_and_the_last_write_wins() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    let reference = sha256_digest(REFERENCE);
    let mut random = vec![0u8; 4096];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for byte in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    // Each candidate, and the part of the refusal that names why.
    let candidates: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the file is empty"),
        (
            "truncated",
            REFERENCE[..REFERENCE.len() / 3].to_vec(),
            "not a component: ",
        ),
        (
            "corrupt",
            REFERENCE
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 97 == 50 { !b } else { *b })
                .collect(),
            "not a component: ",
        ),
        ("random", random, "component header"),
        ("core module", core_module, "core WebAssembly module"),
    ];
    for (what, bytes, why) in &candidates {
        write_atomically(&ws.policy(), bytes);
        // The refusal itself, as the watcher thread would get it.
        match guard_refresh(&guard) {
            Outcome::Refused(reason) => assert!(
                reason.starts_with("policy refused: ") && reason.contains(why),
                "{what}: the refusal does not say {why:?}: {reason}"
            ),
            other => panic!("{what} was not refused: {other:?}"),
        }
        let d = guard.decide("ORCH-081", Target::Awaiting, None);
        assert_eq!(d.policy_digest.as_deref(), Some(reference.as_str()), "{what} went live");
        assert_eq!(d.rule, "non-terminal", "{what}");
    }
    // A rapid series of writes, each of its own content (the policies tagged apart),
    // watched by the guard's own watcher thread, ends on the last one.
    let writes: Vec<Vec<u8>> = vec![
        tagged(NEXT, 1),
        tagged(REFERENCE, 2),
        b"junk".to_vec(),
        tagged(NEXT, 3),
        tagged(REFERENCE, 4),
        tagged(NEXT, 5),
    ];
    let digests: HashSet<String> = writes.iter().map(|w| sha256_digest(w)).collect();
    assert_eq!(digests.len(), writes.len(), "the writes are all different");
    let last = sha256_digest(writes.last().expect("a last write"));
    assert!(!digests.contains(&reference) && last != sha256_digest(NEXT));
    let watcher = guard.watch().expect("watch");
    for bytes in &writes {
        write_atomically(&ws.policy(), bytes);
        std::thread::sleep(Duration::from_millis(7));
    }
    wait_for("the last write live", || {
        guard.policy().is_some_and(|p| p.digest == last).then_some(())
    });
    // With the watcher stopped, a look at the file finds nothing left to act on but
    // the live policy itself (`Unchanged`: the file holds what is live, which only the
    // last write holds): no earlier write is still pending, none goes live after it.
    drop(watcher);
    for _ in 0..3 {
        let outcome = guard.refresh_policy();
        assert!(
            matches!(outcome, None | Some(Outcome::Unchanged)),
            "a change was still pending: {outcome:?}"
        );
        assert_eq!(guard.policy().map(|p| p.digest.clone()).as_ref(), Some(&last));
    }
    let d = guard.decide("ORCH-081", Target::Awaiting, None);
    assert_eq!(
        (d.policy_digest.as_ref(), d.rule.as_str()),
        (Some(&last), "failed"),
        "the last write decides"
    );
}

#[test]
fn a_file_copied_in_place_goes_live_only_when_complete() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    // Half the bytes, held still long enough to be looked at: refused.
    std::fs::write(ws.policy(), &NEXT[..NEXT.len() / 2]).expect("write");
    match guard_refresh(&guard) {
        Outcome::Refused(reason) => assert!(reason.contains("not a component: "), "{reason}"),
        other => panic!("half a file was not refused: {other:?}"),
    }
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.2.0"));
    // The copy completes in place (same inode): now it goes live.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.policy())
        .expect("open");
    std::io::Write::write_all(&mut file, &NEXT[NEXT.len() / 2..]).expect("append");
    drop(file);
    match guard_refresh(&guard) {
        Outcome::Activated { identity, .. } => assert_eq!(identity, "deploy-status-guard@1.1.0"),
        other => panic!("the completed file did not go live: {other:?}"),
    }
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.1.0"));
}

#[test]
fn a_policy_that_fails_its_vectors_is_refused() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    // Vectors that say a failed task is ALLOWed: the next policy disagrees.
    let vectors = r#"{"cases": [{"target": "awaiting", "task": {"repo": "orchestrator", "stage": "failed"},
        "expect": {"verdict": "ALLOW", "rule": "non-terminal"}}]}"#;
    std::fs::write(ws.dir.path().join("policies/deploy-status-guard.vectors.json"), vectors).expect("write");
    write_atomically(&ws.policy(), NEXT);
    let outcome = guard_refresh(&guard);
    let Outcome::Refused(reason) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("vectors: vector 1: expected ALLOW (non-terminal), got SUPPRESS (failed)"),
        "{reason}"
    );
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.2.0"));
    // The same content is not re-examined (its refusal was logged once).
    assert_eq!(guard.refresh(), None);
}

/// Look at the policy file (as the watcher thread does) until a change is acted on;
/// its outcome. A change is acted on at the second look that finds it held still.
fn guard_refresh(guard: &Guard) -> Outcome {
    wait_for("a change of the policy file noticed", || guard.refresh_policy())
}

#[test]
fn the_config_file_is_reloaded_and_a_bad_one_keeps_the_running_configuration() {
    let ws = workspace();
    let file = ws.dir.path().join("guard.toml");
    std::fs::write(
        &file,
        format!(
            "db = {:?}\npolicy = {:?}\nenabled = true\ntimeout_ms = {PATIENT_TIMEOUT_MS}\n",
            ws.db(),
            ws.policy()
        ),
    )
    .expect("write");
    // The file is named to this guard alone (never through the process environment,
    // which the other tests of this binary share).
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    assert_eq!(config.problem, None);
    let guard = Arc::new(Guard::new(config).expect("guard"));
    assert_eq!(guard.decide("ORCH-081", Target::Awaiting, None).rule, "non-terminal");
    write_atomically(
        &file,
        format!(
            "db = {:?}\npolicy = {:?}\nenabled = false\ntimeout_ms = {PATIENT_TIMEOUT_MS}\n",
            ws.db(),
            ws.policy()
        )
        .as_bytes(),
    );
    assert_eq!(config_refresh(&guard), ConfigReload::Reloaded);
    assert!(!guard.config().enabled);
    assert_eq!(guard.decide("ORCH-081", Target::Awaiting, None).rule, "kill-switch");
    write_atomically(&file, b"enabled = = nonsense");
    match config_refresh(&guard) {
        ConfigReload::Refused(problem) => assert!(
            problem.contains("cannot parse the config file") && problem.contains(&file.display().to_string()),
            "the refusal does not name the file: {problem}"
        ),
        other => panic!("a config file that does not parse was not refused: {other:?}"),
    }
    assert_eq!(
        guard.decide("ORCH-081", Target::Awaiting, None).rule,
        "kill-switch",
        "the running configuration was kept"
    );
}

/// Look at the config file until a change is acted on; what the reload did.
fn config_refresh(guard: &Guard) -> ConfigReload {
    wait_for("a change of the config file noticed", || guard.refresh_config())
}

/// A candidate admitted under the limits before a configuration reload (its gate ran
/// while the configuration changed) goes live under the limits then in force.
#[test]
fn a_policy_admitted_across_a_reload_of_the_limits_runs_under_the_new_ones() {
    use deploy_guard::Limits;
    use deploy_guard::rollout::slot::PolicySlot;
    use deploy_guard::sandbox::policy::LoadedPolicy;
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new().expect("sandbox");
    let slot = PolicySlot::counted(deploy_guard::observe::metrics::Metrics::new().swap_counters());
    let reloaded = Limits {
        fuel: 1_234_567,
        ..Limits::DEFAULT
    };
    let admitted = LoadedPolicy::load(&sandbox, REFERENCE, Limits::DEFAULT).expect("loads");
    slot.relimit(reloaded);
    let outcome = slot.activate(admitted, std::path::Path::new("policy.wasm"));
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    assert_eq!(slot.current().expect("live").limits(), reloaded);
}
