//! The component against a native Rust port of the seed, over thousands of generated
//! facts: every verdict and rule identical.
//!
//! The port below is written from the Python, line by line, independently of
//! `guest/src/predicate.rs`: `strip()` is spelled out with Python's whitespace table.
//! Every rule of the seed must be reached by the generated facts (counted), so that no
//! branch goes uncompared.

use deploy_guard::Target;
use deploy_guard::decision::Ask;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::sandbox::policy::LoadedPolicy;
use deploy_guard::sandbox::question::{FactsRecord, RecordTask};
use deploy_guard::{Limits, Verdict};
use proptest::prelude::*;
use std::sync::OnceLock;

/// CPython 3's `str.isspace()` characters.
const PY_WHITESPACE: &[char] = &[
    '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}', ' ', '\u{85}', '\u{a0}', '\u{1680}',
    '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

fn strip(s: &str) -> &str {
    s.trim_matches(|c| PY_WHITESPACE.contains(&c))
}

/// The seed's decide(), steps 2-6, with the window read as the seed reads it.
fn seed_decide(f: &FactsRecord) -> (Verdict, &'static str) {
    // step 2
    let Some(task) = &f.task else {
        return (Verdict::Allow, "task-not-found");
    };
    // step 3: applies(repo)
    let repo = strip(&task.repo);
    let applies = if !f.scope_repos.is_empty() {
        f.scope_repos.iter().any(|r| r == repo)
    } else {
        f.self_hosting_repos.iter().any(|r| r == repo)
    };
    if !applies {
        return (Verdict::Allow, "out-of-scope");
    }
    // step 4
    let db_stage = strip(&task.stage);
    if db_stage != "done" && db_stage != "cancelled" {
        return (Verdict::Allow, "non-terminal");
    }
    // step 5
    if db_stage == "cancelled" {
        return (Verdict::Suppress, "cancelled");
    }
    // step 6
    if f.ask == Ask::Decide(Target::Monitoring) {
        match f.window_active {
            // window_active() raised: the except clause answers ALLOW.
            None => return (Verdict::Allow, "window-unknown"),
            Some(true) => return (Verdict::Allow, "monitoring-window-active"),
            Some(false) => {}
        }
    }
    (Verdict::ConvergeDone, "converge-done")
}

fn policy() -> &'static LoadedPolicy {
    static POLICY: OnceLock<LoadedPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let sandbox = Sandbox::new().expect("sandbox");
        LoadedPolicy::load(&sandbox, deploy_guard_e2e::REFERENCE, Limits::DEFAULT).expect("reference loads")
    })
}

fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            ' ', '\t', '\n', '\u{1c}', '\u{1f}', '\u{a0}', '\u{3000}', '\u{200b}', '\u{180e}',
        ]),
        0..3,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn word(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        padding(),
        prop::sample::select(words),
        padding(),
        any::<bool>(),
        "\\PC{0,6}",
    )
        .prop_map(
            |(a, w, b, arbitrary, noise)| {
                if arbitrary { noise } else { format!("{a}{w}{b}") }
            },
        )
}

const STAGES: &[&str] = &[
    "done",
    "cancelled",
    "deploy",
    "failed",
    "DONE",
    "Done",
    "cancelled ",
    "",
    "review",
];
const REPOS: &[&str] = &["orchestrator", "svc-a", "svc-b", "enduro-trails", "", "Orchestrator"];

/// Half the cases anything (mostly out of scope or not found), half aimed at the
/// branches after the scope check: a repo of the scope or the self-hosting list and a
/// terminal stage, both padded, so that every rule is reached many times over.
fn facts() -> impl Strategy<Value = FactsRecord> {
    prop_oneof![arbitrary_facts(), facts_in_scope()]
}

fn facts_in_scope() -> impl Strategy<Value = FactsRecord> {
    (
        "\\PC{0,12}",
        // Monitoring thrice as often: the window rules live only there.
        prop::sample::select(vec![
            Target::Awaiting,
            Target::Deploying,
            Target::Monitoring,
            Target::Monitoring,
            Target::Monitoring,
        ]),
        (
            padding(),
            prop::sample::select(vec!["orchestrator", "svc-a"]),
            padding(),
        ),
        (
            padding(),
            prop::sample::select(vec!["done", "done", "cancelled", "deploy"]),
            padding(),
        ),
        prop::option::of(any::<bool>()),
        prop::collection::vec(prop::sample::select(vec!["svc-a", "orchestrator"]), 0..2),
    )
        .prop_map(
            |(work_item, target, (a, repo, b), (c, stage, d), window_active, scope)| FactsRecord {
                work_item,
                ask: Ask::Decide(target),
                caller: None,
                task: Some(RecordTask {
                    repo: format!("{a}{repo}{b}"),
                    stage: format!("{c}{stage}{d}"),
                }),
                window_active,
                scope_repos: scope.into_iter().map(str::to_owned).collect(),
                self_hosting_repos: vec!["orchestrator".to_owned()],
            },
        )
}

fn arbitrary_facts() -> impl Strategy<Value = FactsRecord> {
    (
        "\\PC{0,12}",
        prop::sample::select(vec![Target::Awaiting, Target::Deploying, Target::Monitoring]),
        prop::option::of("\\PC{0,8}"),
        prop::option::of((word(REPOS), word(STAGES))),
        prop::option::of(any::<bool>()),
        prop::collection::vec(
            prop::sample::select(vec!["svc-a", "svc-b", "orchestrator", "x.y_z-1"]),
            0..3,
        ),
        prop::collection::vec(
            prop::sample::select(vec!["orchestrator", "svc-b", "enduro-trails"]),
            0..3,
        ),
    )
        .prop_map(
            |(work_item, target, caller, task, window_active, scope, self_hosting)| FactsRecord {
                work_item,
                ask: Ask::Decide(target),
                caller,
                task: task.map(|(repo, stage)| RecordTask { repo, stage }),
                window_active,
                scope_repos: scope.into_iter().map(str::to_owned).collect(),
                self_hosting_repos: self_hosting.into_iter().map(str::to_owned).collect(),
            },
        )
}

/// Every rule the seed can reach, in its order.
const RULES: [&str; 7] = [
    "task-not-found",
    "out-of-scope",
    "non-terminal",
    "cancelled",
    "monitoring-window-active",
    "window-unknown",
    "converge-done",
];

#[test]
fn the_component_decides_as_the_seed() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 5000,
        ..ProptestConfig::default()
    });
    // How often each rule was reached: a rule never hit is a branch never compared.
    let hits = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u32>::new());
    runner
        .run(&facts(), |facts| {
            let ruling = policy()
                .rule(&facts.question())
                .expect("the reference policy never fails");
            let (verdict, rule) = seed_decide(&facts);
            prop_assert_eq!((ruling.verdict, ruling.rule.as_str()), (verdict, rule), "{:?}", facts);
            *hits.borrow_mut().entry(rule).or_default() += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let hits = hits.into_inner();
    eprintln!("rules reached: {hits:?}");
    let never: Vec<&str> = RULES.iter().copied().filter(|rule| !hits.contains_key(rule)).collect();
    assert!(never.is_empty(), "rules never reached: {never:?} (reached: {hits:?})");
    assert_eq!(hits.len(), RULES.len(), "a rule outside the seed's: {hits:?}");
}
