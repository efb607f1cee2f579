//! `deploy-guard replay --ledger PATH --against NEW.wasm`: every recorded decision's
//! facts (a stamp's or a tick's) through a candidate; what would have changed, by
//! transition, with examples.

use deploy_guard::observe::ledger::read_ledger;
use deploy_guard::rollout::follow::admit_candidate;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::{Config, Overrides};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

/// What was asked, as the examples say it: `target=...`, or `tick`.
fn asked(ask: deploy_guard::decision::Ask) -> String {
    match ask.target() {
        Some(target) => format!("target={target}"),
        None => "tick".to_owned(),
    }
}

/// Examples printed per transition.
const EXAMPLES: usize = 5;

pub fn run(ledger: &Path, candidate: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    let sandbox = Sandbox::with_cache(config.cache.as_deref())?;
    let admitted = match admit_candidate(&sandbox, candidate, &config) {
        Ok(admitted) => admitted,
        Err(e) => {
            println!("trouble: {}: {e}", candidate.display());
            return Ok(ExitCode::from(2));
        }
    };
    let recorded = match read_ledger(ledger) {
        Ok(recorded) => recorded,
        Err(e) => {
            println!("trouble: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let policy = &admitted.policy;
    let mut replayed = 0usize;
    let mut not_replayable = 0usize;
    let mut candidate_failures = 0usize;
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &recorded {
        let Some(facts) = &record.facts else {
            // The policy never ran (kill-switch, a database error): nothing to replay.
            not_replayable += 1;
            continue;
        };
        replayed += 1;
        let old = &record.decision;
        let (new_verdict, new_rule) = match policy.rule(&facts.question()) {
            Ok(ruling) => (ruling.verdict, ruling.rule),
            Err(e) => {
                candidate_failures += 1;
                (facts.ask.as_before(), format!("fail-safe: {e}"))
            }
        };
        if (old.verdict, old.rule.as_str()) != (new_verdict, new_rule.as_str()) {
            changed
                .entry(format!("{} -> {}", old.verdict, new_verdict))
                .or_default()
                .push(format!(
                    "  {} at {} (unix ms) {}: {} ({}) -> {} ({})",
                    old.work_item,
                    record.time_ms,
                    asked(old.ask),
                    old.verdict,
                    old.rule,
                    new_verdict,
                    new_rule
                ));
        }
    }
    println!(
        "replay of {} ({} decisions) against {} ({})",
        ledger.display(),
        recorded.len(),
        policy.identity(),
        policy.digest
    );
    let mut total = 0;
    for (transition, cases) in &changed {
        total += cases.len();
        println!(
            "{transition}: {} decision{}",
            cases.len(),
            if cases.len() == 1 { "" } else { "s" }
        );
        for example in cases.iter().take(EXAMPLES) {
            println!("{example}");
        }
        if cases.len() > EXAMPLES {
            println!("  ... and {} more", cases.len() - EXAMPLES);
        }
    }
    println!(
        "summary: {total} of {replayed} replayed decisions would change; {not_replayable} not replayable \
         (no policy ran); {candidate_failures} candidate failures"
    );
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
