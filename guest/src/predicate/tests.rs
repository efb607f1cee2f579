//! The predicate against the seed, rule by rule, subtle case by subtle case, and over
//! an exhaustive grid checked against a table written out by hand from the seed.

use super::*;

const SELF_HOSTING: &[&str] = &["orchestrator"];
const NO_SCOPE: &[&str] = &[];

fn task<'a>(repo: &'a str, stage: &'a str) -> Option<Task<'a>> {
    Some(Task { repo, stage })
}

fn decide_with(
    target: Target,
    task: Option<Task<'_>>,
    window_active: Option<bool>,
    scope_repos: &[&str],
) -> (Verdict, &'static str) {
    let ruling = decide(&Facts {
        target,
        task,
        window_active,
        scope_repos,
        self_hosting_repos: SELF_HOSTING,
    });
    (ruling.verdict, ruling.rule.as_str())
}

// One test per rule.

#[test]
fn no_task_row_allows_as_task_not_found() {
    for target in Target::ALL {
        assert_eq!(
            decide_with(target, None, None, NO_SCOPE),
            (Verdict::Allow, "task-not-found")
        );
    }
}

#[test]
fn a_repo_out_of_scope_allows_as_out_of_scope() {
    let t = task("enduro-trails", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), NO_SCOPE),
        (Verdict::Allow, "out-of-scope")
    );
}

#[test]
fn a_live_stage_allows_as_non_terminal() {
    let t = task("orchestrator", "deploy");
    assert_eq!(
        decide_with(Target::Deploying, t, Some(false), NO_SCOPE),
        (Verdict::Allow, "non-terminal")
    );
}

#[test]
fn a_cancelled_task_is_suppressed_for_every_target() {
    for target in Target::ALL {
        let t = task("orchestrator", "cancelled");
        assert_eq!(
            decide_with(target, t, Some(true), NO_SCOPE),
            (Verdict::Suppress, "cancelled")
        );
    }
}

#[test]
fn monitoring_a_done_task_inside_its_window_is_allowed() {
    let t = task("orchestrator", "done");
    assert_eq!(
        decide_with(Target::Monitoring, t, Some(true), NO_SCOPE),
        (Verdict::Allow, "monitoring-window-active")
    );
}

#[test]
fn monitoring_a_done_task_with_an_unreadable_window_allows_as_window_unknown() {
    let t = task("orchestrator", "done");
    assert_eq!(
        decide_with(Target::Monitoring, t, None, NO_SCOPE),
        (Verdict::Allow, "window-unknown")
    );
}

#[test]
fn a_done_task_converges_to_done() {
    let t = task("orchestrator", "done");
    assert_eq!(
        decide_with(Target::Monitoring, t, Some(false), NO_SCOPE),
        (Verdict::ConvergeDone, "converge-done")
    );
}

// The subtle cases of the seed.

#[test]
fn the_orch_061_pendulum_holds_done() {
    // Done since days, no active window, a stale caller re-stamps Awaiting then Monitoring.
    let t = task("orchestrator", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), NO_SCOPE).0,
        Verdict::ConvergeDone
    );
    assert_eq!(
        decide_with(Target::Monitoring, t, Some(false), NO_SCOPE).0,
        Verdict::ConvergeDone
    );
}

#[test]
fn awaiting_and_deploying_converge_even_inside_the_window() {
    // Phases A and B happen strictly before deploy -> done: always spurious for done.
    let t = task("orchestrator", "done");
    for target in [Target::Awaiting, Target::Deploying] {
        assert_eq!(
            decide_with(target, t, Some(true), NO_SCOPE),
            (Verdict::ConvergeDone, "converge-done")
        );
    }
}

#[test]
fn an_unknown_window_matters_only_for_monitoring() {
    let t = task("orchestrator", "done");
    for target in [Target::Awaiting, Target::Deploying] {
        assert_eq!(
            decide_with(target, t, None, NO_SCOPE),
            (Verdict::ConvergeDone, "converge-done")
        );
    }
}

#[test]
fn the_window_is_not_consulted_for_a_live_stage() {
    let t = task("orchestrator", "deploy");
    assert_eq!(
        decide_with(Target::Monitoring, t, None, NO_SCOPE),
        (Verdict::Allow, "non-terminal")
    );
}

#[test]
fn the_stage_is_trimmed_as_python_strips() {
    for stage in [
        " done",
        "done\n",
        "\t done \r\n",
        "\u{1c}done\u{1f}",
        "\u{a0}done\u{3000}",
        "\u{85}done\u{2028}",
    ] {
        let t = task("orchestrator", stage);
        assert_eq!(
            decide_with(Target::Awaiting, t, Some(false), NO_SCOPE).0,
            Verdict::ConvergeDone,
            "{stage:?}"
        );
    }
}

#[test]
fn characters_python_does_not_strip_are_kept() {
    // U+200B (zero width space) and U+180E are not whitespace in Python 3.
    for stage in ["\u{200b}done", "done\u{180e}", "done\u{feff}"] {
        let t = task("orchestrator", stage);
        assert_eq!(
            decide_with(Target::Awaiting, t, Some(false), NO_SCOPE),
            (Verdict::Allow, "non-terminal"),
            "{stage:?}"
        );
    }
}

#[test]
fn the_stage_is_compared_case_sensitively() {
    for stage in ["DONE", "Done", "CANCELLED", "Cancelled"] {
        let t = task("orchestrator", stage);
        assert_eq!(
            decide_with(Target::Awaiting, t, Some(false), NO_SCOPE),
            (Verdict::Allow, "non-terminal"),
            "{stage}"
        );
    }
}

#[test]
fn a_missing_stage_counts_as_empty_and_is_not_terminal() {
    let t = task("orchestrator", "");
    assert_eq!(
        decide_with(Target::Monitoring, t, Some(false), NO_SCOPE),
        (Verdict::Allow, "non-terminal")
    );
}

#[test]
fn repo_membership_compares_the_trimmed_repo() {
    let t = task("  orchestrator\n", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), NO_SCOPE).0,
        Verdict::ConvergeDone
    );
    let t = task("\u{1d}svc-a ", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), &["svc-a"]).0,
        Verdict::ConvergeDone
    );
}

#[test]
fn an_empty_scope_means_self_hosting_only() {
    let t = task("svc-a", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), NO_SCOPE),
        (Verdict::Allow, "out-of-scope")
    );
}

#[test]
fn a_non_empty_scope_replaces_the_self_hosting_repos() {
    let t = task("orchestrator", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), &["svc-a"]),
        (Verdict::Allow, "out-of-scope")
    );
    let t = task("svc-a", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), &["svc-a"]),
        (Verdict::ConvergeDone, "converge-done")
    );
}

#[test]
fn an_empty_repo_is_never_in_scope() {
    let t = task("", "done");
    assert_eq!(
        decide_with(Target::Awaiting, t, Some(false), NO_SCOPE),
        (Verdict::Allow, "out-of-scope")
    );
}

#[test]
fn python_whitespace_is_unicode_white_space_plus_the_separators() {
    let python_isspace: Vec<char> = "\t\n\u{b}\u{c}\r\u{1c}\u{1d}\u{1e}\u{1f} \u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}"
        .chars()
        .collect();
    // The full list of `c for c in map(chr, range(0x110000)) if c.isspace()` in CPython 3.11.
    let ours: Vec<char> = (0..=0x10ffff_u32)
        .filter_map(char::from_u32)
        .filter(|&c| is_py_space(c))
        .collect();
    assert_eq!(ours, python_isspace);
}

#[test]
fn strip_agrees_with_the_char_by_char_definition() {
    let samples = [
        "",
        " ",
        "done",
        "  done  ",
        "\u{1c}\u{1f}x\u{1e}",
        "\u{3000}a\u{2028}",
        "\u{200b}x\u{200b}",
        " \u{e9}t\u{e9} ",
        "\u{85}",
        "a b",
        "\t\n\u{b}\u{c}\r",
        "\u{a0}\u{a0}é",
        "é\u{a0}",
        "日本\u{3000}",
    ];
    for sample in samples {
        assert_eq!(py_strip(sample), sample.trim_matches(is_py_space), "{sample:?}");
    }
    let padded = format!("{}done{}", " ".repeat(100_000), "\u{3000}".repeat(1000));
    assert_eq!(py_strip(&padded), "done");
    // Every mix of lengths around the 8-byte words, uniform and mixed padding.
    for before in 0..20 {
        for after in 0..20 {
            for (pad_a, pad_b) in [(" ", " "), ("\t", "\n"), (" \t", "\u{1f}\r"), ("\u{a0}", " ")] {
                let text = format!("{}x y{}", pad_a.repeat(before), pad_b.repeat(after));
                assert_eq!(py_strip(&text), "x y", "{text:?}");
                assert_eq!(py_strip(&text), text.trim_matches(is_py_space), "{text:?}");
            }
            let blank = " ".repeat(before + after);
            assert_eq!(py_strip(&blank), "");
        }
    }
}

// The exhaustive grid, against a table written from the seed, not from this code.

/// How the seed sees each stage once stripped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StageIs {
    Done,
    Cancelled,
    Live,
}

/// How each repo stands towards each scope.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RepoIs {
    SelfHosting,
    Scoped,
    Outside,
}

#[test]
fn exhaustive_grid_matches_the_seed_table() {
    let stages = [
        ("done", StageIs::Done),
        ("cancelled", StageIs::Cancelled),
        ("deploy", StageIs::Live),
        ("awaiting_deploy", StageIs::Live),
        ("  done \n", StageIs::Done),
        ("\tcancelled\u{1f}", StageIs::Cancelled),
        ("DONE", StageIs::Live),
        ("Cancelled", StageIs::Live),
        ("", StageIs::Live),
        ("   ", StageIs::Live),
    ];
    let repos = [
        ("orchestrator", RepoIs::SelfHosting),
        (" orchestrator\t", RepoIs::SelfHosting),
        ("svc-a", RepoIs::Scoped),
        ("svc-a\n", RepoIs::Scoped),
        ("enduro-trails", RepoIs::Outside),
        ("", RepoIs::Outside),
    ];
    let scopes: [&[&str]; 2] = [&[], &["svc-a", "svc-b"]];
    let windows = [Some(true), Some(false), None];
    // Does the guard apply? (repo, scope empty?) -> applies, straight from the seed's applies().
    let applies_table = |repo: RepoIs, scope_empty: bool| match (repo, scope_empty) {
        (RepoIs::SelfHosting, true) => true,
        (RepoIs::SelfHosting, false) => false,
        (RepoIs::Scoped, true) => false,
        (RepoIs::Scoped, false) => true,
        (RepoIs::Outside, _) => false,
    };
    // The verdict for an applicable task: (stage, target is monitoring, window) -> expected.
    let terminal_table = |stage: StageIs, monitoring: bool, window: Option<bool>| match (stage, monitoring, window) {
        (StageIs::Live, _, _) => (Verdict::Allow, "non-terminal"),
        (StageIs::Cancelled, _, _) => (Verdict::Suppress, "cancelled"),
        (StageIs::Done, true, Some(true)) => (Verdict::Allow, "monitoring-window-active"),
        (StageIs::Done, true, None) => (Verdict::Allow, "window-unknown"),
        (StageIs::Done, true, Some(false)) => (Verdict::ConvergeDone, "converge-done"),
        (StageIs::Done, false, _) => (Verdict::ConvergeDone, "converge-done"),
    };
    let mut cases = 0;
    let mut seen = std::collections::HashSet::new();
    for target in Target::ALL {
        for scope in scopes {
            for window in windows {
                assert_eq!(
                    decide_with(target, None, window, scope),
                    (Verdict::Allow, "task-not-found")
                );
                cases += 1;
                for (repo, repo_is) in repos {
                    for (stage, stage_is) in stages {
                        let expected = if applies_table(repo_is, scope.is_empty()) {
                            terminal_table(stage_is, target == Target::Monitoring, window)
                        } else {
                            (Verdict::Allow, "out-of-scope")
                        };
                        let got = decide_with(target, task(repo, stage), window, scope);
                        assert_eq!(
                            got, expected,
                            "{target:?} repo={repo:?} stage={stage:?} scope={scope:?} window={window:?}"
                        );
                        seen.insert(got.1);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 3 * 2 * 3 * (1 + 6 * 10));
    // Every rule but task-not-found (asserted above) shows up in the grid.
    assert_eq!(seen.len(), 6, "{seen:?}");
}

/// `Rule::ALL` holds every rule exactly once (the host's metrics resolve one counter
/// per rule from it): the match below stops compiling when a rule is added, and each
/// rule must sit in `ALL` at its place.
#[test]
fn rule_all_lists_every_rule_once() {
    let place = |rule: Rule| match rule {
        Rule::TaskNotFound => 0,
        Rule::OutOfScope => 1,
        Rule::NonTerminal => 2,
        Rule::Cancelled => 3,
        Rule::MonitoringWindowActive => 4,
        Rule::WindowUnknown => 5,
        Rule::ConvergeDone => 6,
    };
    for (at, rule) in Rule::ALL.iter().enumerate() {
        assert_eq!(place(*rule), at, "{rule:?}");
    }
    let mut names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Rule::ALL.len(), "two rules share a name");
}

// The monitor's tick (the seed's D4).

fn tick_with(task: Option<Task<'_>>, window_active: Option<bool>, scope_repos: &[&str]) -> (TickVerdict, &'static str) {
    let ruling = tick(&TickFacts {
        task,
        window_active,
        scope_repos,
        self_hosting_repos: SELF_HOSTING,
    });
    (ruling.verdict, ruling.rule.as_str())
}

#[test]
fn a_tick_without_a_task_proceeds_as_task_not_found() {
    assert_eq!(
        tick_with(None, None, NO_SCOPE),
        (TickVerdict::Proceed, "task-not-found")
    );
    assert_eq!(
        tick_with(None, Some(true), &["svc-a"]),
        (TickVerdict::Proceed, "task-not-found")
    );
}

#[test]
fn a_tick_out_of_scope_proceeds_even_for_a_cancelled_task() {
    // Outside the guard's scope nothing changes, as with decide: the monitor acts.
    assert_eq!(
        tick_with(task("enduro-trails", "cancelled"), Some(true), NO_SCOPE),
        (TickVerdict::Proceed, "out-of-scope")
    );
    assert_eq!(
        tick_with(task("orchestrator", "cancelled"), Some(true), &["svc-a"]),
        (TickVerdict::Proceed, "out-of-scope")
    );
}

#[test]
fn a_tick_for_a_task_cancelled_mid_window_is_a_zombie_and_does_nothing() {
    for window in [Some(true), Some(false), None] {
        assert_eq!(
            tick_with(task("orchestrator", "cancelled"), window, NO_SCOPE),
            (TickVerdict::Noop, "zombie-tick"),
            "window {window:?}"
        );
    }
    // Stage and repo trimmed as str.strip() trims them; the scope names the repo.
    assert_eq!(
        tick_with(task(" svc-a\u{3000}", "\u{1c} cancelled\n"), Some(true), &["svc-a"]),
        (TickVerdict::Noop, "zombie-tick")
    );
}

#[test]
fn every_other_tick_proceeds() {
    for stage in ["done", "deploy", "failed", "", "CANCELLED", "cancel led", "cancelled!"] {
        assert_eq!(
            tick_with(task("orchestrator", stage), Some(true), NO_SCOPE),
            (TickVerdict::Proceed, "proceed"),
            "stage {stage:?}"
        );
    }
}

#[test]
fn the_tick_rules_are_the_contracts_in_order() {
    let names: Vec<&str> = TickRule::ALL.iter().map(|rule| rule.as_str()).collect();
    assert_eq!(names, ["task-not-found", "out-of-scope", "zombie-tick", "proceed"]);
}
