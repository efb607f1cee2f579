//! `deploy-guard check POLICY.wasm`: the gate as a command.

use deploy_guard::admission::grid::GRID_CASES;
use deploy_guard::rollout::follow::admit_candidate;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::{Config, Overrides};
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    let sandbox = Sandbox::new()?;
    // Who signed it comes before whether it is safe (issue 13), when keys are trusted;
    // an `oci://` reference is pulled first.
    match admit_candidate(&sandbox, path, &config) {
        Ok(admitted) => {
            let policy = &admitted.policy;
            println!("ok: {} is {} ({})", path.display(), policy.identity(), policy.digest);
            println!(
                "  a component of orchestrator:deploy-guard/guard-policy@{} that imports nothing{}",
                policy.world(),
                if policy.has_monitor() {
                    ""
                } else {
                    " (no monitor: its ticks are the host's, PROCEED tick-not-in-policy)"
                }
            );
            println!("  info answers name {:?}, version {:?}", policy.name, policy.version);
            println!(
                "  fact grid: {} of {GRID_CASES} cases decided within the limits",
                admitted.grid.len()
            );
            match admitted.vectors_passed {
                Some(n) => println!(
                    "  vectors: {n} of {n} passed ({}){}",
                    deploy_guard::admission::vectors::vectors_path(path).display(),
                    match admitted.vectors_not_applicable {
                        0 => String::new(),
                        skipped => format!("; {skipped} tick vectors do not apply to a policy without a monitor"),
                    }
                ),
                None => println!(
                    "  vectors: none shipped ({} does not exist)",
                    deploy_guard::admission::vectors::vectors_path(path).display()
                ),
            }
            println!("  fingerprint: {}", admitted.fingerprint());
            if !config.trusted_keys.is_empty() {
                println!("  signature: valid, by a trusted key");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("refused: {}: {e}", path.display());
            Ok(ExitCode::from(1))
        }
    }
}
