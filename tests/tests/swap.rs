//! Hot swap under load: threads deciding without pause while the policy file is
//! replaced back and forth, and the candidates that must never go live.

use deploy_guard::swap::Outcome;
use deploy_guard::{Guard, Target};
use deploy_guard_e2e::{NEXT, REFERENCE, Row, Workspace, insert_task, write_atomically};
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
    let reference = deploy_guard::policy::digest(REFERENCE);
    let next = deploy_guard::policy::digest(NEXT);
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
                    let d = guard.decide_unlogged(deploy_guard::Request {
                        work_item: "ORCH-081",
                        target: Target::Awaiting,
                        caller: None,
                    });
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
    for _ in 0..100 {
        if let Some(outcome) = guard.refresh()
            && guard.policy().is_some_and(|p| p.digest == digest)
        {
            return outcome;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{digest} never went live");
}

#[test]
fn bad_candidates_never_go_live_and_the_last_write_wins() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    let _watcher = guard.watch().expect("watch");
    let reference = deploy_guard::policy::digest(REFERENCE);
    let mut random = vec![0u8; 4096];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for byte in &mut random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let candidates: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", REFERENCE[..REFERENCE.len() / 3].to_vec()),
        (
            "corrupt",
            REFERENCE
                .iter()
                .enumerate()
                .map(|(i, b)| if i % 97 == 50 { !b } else { *b })
                .collect(),
        ),
        ("random", random),
        ("core module", core_module),
    ];
    for (what, bytes) in &candidates {
        write_atomically(&ws.policy(), bytes);
        std::thread::sleep(Duration::from_millis(350));
        let d = guard.decide("ORCH-081", Target::Awaiting, None);
        assert_eq!(d.policy_digest.as_deref(), Some(reference.as_str()), "{what} went live");
        assert_eq!(d.rule, "non-terminal", "{what}");
    }
    // A rapid series of writes ends on the last one.
    for bytes in [NEXT, REFERENCE, b"junk".as_slice(), NEXT, REFERENCE, NEXT] {
        write_atomically(&ws.policy(), bytes);
        std::thread::sleep(Duration::from_millis(7));
    }
    let next = deploy_guard::policy::digest(NEXT);
    let settled = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        guard.policy().is_some_and(|p| p.digest == next)
    });
    assert!(settled, "the last write did not go live");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(guard.policy().map(|p| p.digest.clone()), Some(next));
}

#[test]
fn a_file_copied_in_place_goes_live_only_when_complete() {
    let ws = workspace();
    let guard = Guard::new(ws.config()).expect("guard");
    let _watcher = guard.watch().expect("watch");
    // Half the bytes, left half-written long enough to be looked at: refused.
    std::fs::write(ws.policy(), &NEXT[..NEXT.len() / 2]).expect("write");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.0.0"));
    // The copy completes in place (same inode): now it goes live.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.policy())
        .expect("open");
    std::io::Write::write_all(&mut file, &NEXT[NEXT.len() / 2..]).expect("append");
    drop(file);
    let live = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        guard.policy().is_some_and(|p| p.version == "1.1.0")
    });
    assert!(live, "the completed file never went live");
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
    assert_eq!(guard.policy().map(|p| p.version.clone()).as_deref(), Some("1.0.0"));
    // The same content is not re-examined (its refusal was logged once).
    assert_eq!(guard.refresh(), None);
}

fn guard_refresh(guard: &Guard) -> Outcome {
    for _ in 0..50 {
        if let Some(outcome) = guard.refresh() {
            return outcome;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no change noticed");
}

#[test]
fn the_config_file_is_reloaded_and_a_bad_one_keeps_the_running_configuration() {
    let ws = workspace();
    let file = ws.dir.path().join("guard.toml");
    std::fs::write(
        &file,
        format!("db = {:?}\npolicy = {:?}\nenabled = true\n", ws.db(), ws.policy()),
    )
    .expect("write");
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    assert_eq!(config.problem, None);
    let guard = Arc::new(Guard::new(config).expect("guard"));
    assert_eq!(guard.decide("ORCH-081", Target::Awaiting, None).rule, "non-terminal");
    // Reload reads DEPLOY_GUARD_CONFIG from the process environment.
    // SAFETY: this test binary sets the variable once, before any other thread reads it.
    unsafe { std::env::set_var("DEPLOY_GUARD_CONFIG", &file) };
    write_atomically(
        &file,
        format!("db = {:?}\npolicy = {:?}\nenabled = false\n", ws.db(), ws.policy()).as_bytes(),
    );
    let switched = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(30));
        guard.refresh();
        guard.decide("ORCH-081", Target::Awaiting, None).rule == "kill-switch"
    });
    assert!(switched, "the kill-switch did not take effect");
    write_atomically(&file, b"enabled = = nonsense");
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(30));
        guard.refresh();
    }
    assert_eq!(
        guard.decide("ORCH-081", Target::Awaiting, None).rule,
        "kill-switch",
        "the running configuration was kept"
    );
}
