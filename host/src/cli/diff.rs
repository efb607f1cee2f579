//! `deploy-guard diff OLD.wasm NEW.wasm`: what a new policy changes over the fact grid.

use deploy_guard::admission::gate::Admitted;
use deploy_guard::rollout::follow::admit_candidate;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::{Config, Overrides};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

pub fn run(old: &Path, new: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    let sandbox = Sandbox::new()?;
    let load = |path: &Path| admit_candidate(&sandbox, path, &config).map_err(|e| format!("{}: {e}", path.display()));
    let (old_admitted, new_admitted) = match (load(old), load(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            println!("trouble: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let differences = grid_differences(&old_admitted, &new_admitted);
    println!(
        "{} ({}) -> {} ({})",
        old_admitted.policy.identity(),
        old_admitted.policy.digest,
        new_admitted.policy.identity(),
        new_admitted.policy.digest
    );
    let mut by_transition: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (label, before, after) in &differences {
        let transition = if before.verdict == after.verdict {
            format!("{} -> {} (rule only)", before.verdict, after.verdict)
        } else {
            format!("{} -> {}", before.verdict, after.verdict)
        };
        by_transition.entry(transition).or_default().push(format!(
            "  {label}: {} ({}) -> {} ({})",
            before.verdict, before.rule, after.verdict, after.rule
        ));
    }
    for (transition, cases) in &by_transition {
        println!(
            "{transition}: {} case{}",
            cases.len(),
            if cases.len() == 1 { "" } else { "s" }
        );
        for case in cases {
            println!("{case}");
        }
    }
    // The exit code follows the verdicts (CONTRACT.md); a renamed rule is listed, not
    // counted as a difference.
    let verdicts_differ = differences.iter().filter(|(_, a, b)| a.verdict != b.verdict).count();
    println!(
        "summary: {verdicts_differ} of {} cases differ, {} more in their rule only (fingerprints {} -> {})",
        old_admitted.grid.len(),
        differences.len() - verdicts_differ,
        old_admitted.fingerprint(),
        new_admitted.fingerprint()
    );
    Ok(if verdicts_differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The grid cases whose verdict or rule differs: (label, old, new).
pub fn grid_differences<'a>(
    old: &'a Admitted,
    new: &'a Admitted,
) -> Vec<(
    &'a str,
    &'a deploy_guard::sandbox::policy::Ruling,
    &'a deploy_guard::sandbox::policy::Ruling,
)> {
    old.grid
        .iter()
        .zip(&new.grid)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((case, a), (_, b))| (case.label.as_str(), a, b))
        .collect()
}
