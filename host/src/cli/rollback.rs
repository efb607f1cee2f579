//! `deploy-guard rollback`: put the policy that was live before the last swap back in
//! place of the active policy file; a running `serve` swaps to it within a second.

use super::export::write_atomically;
use deploy_guard::engine::Sandbox;
use deploy_guard::swap::previous_path;
use deploy_guard::{Config, Overrides};
use std::process::ExitCode;

pub fn run(overrides: Overrides) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "warn");
    let previous = previous_path(&config.policy);
    let bytes = match std::fs::read(&previous) {
        Ok(bytes) => bytes,
        Err(e) => {
            println!(
                "nothing to roll back to: {} ({e}); it is written when a running deploy-guard swaps a policy",
                previous.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    // The same gate as any swap: a previous policy that no longer passes stays out.
    let sandbox = Sandbox::with_cache(config.cache.as_deref())?;
    let vectors = deploy_guard::vectors::vectors_path(&config.policy);
    match deploy_guard::gate::admit(&sandbox, &bytes, config.limits, Some(&vectors)) {
        Ok(admitted) => {
            write_atomically(&config.policy, &bytes)?;
            println!(
                "rolled back: {} is {} ({}) again",
                config.policy.display(),
                admitted.policy.identity(),
                admitted.policy.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("refused: {}: {e}", previous.display());
            Ok(ExitCode::from(1))
        }
    }
}
