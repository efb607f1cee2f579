//! `deploy-guard serve`: the JSON-lines loop with hot swap, and shadow mode.

use deploy_guard::follow::admit_candidate;
use deploy_guard::{Config, Guard, Overrides};
use std::path::Path;
use std::process::ExitCode;

pub fn run(overrides: Overrides, shadow: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "info");
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
    let mut output = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let guard = match Guard::with_overrides(config.clone(), overrides) {
        Ok(guard) => guard,
        Err(e) => {
            // Never raise: without a sandbox every answer is a fail-safe naming why.
            tracing::error!(target: "deploy_guard::serve", "{e}: every decision fails safe");
            deploy_guard::serve::serve_fail_safe(&e.to_string(), &mut input, &mut output)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(candidate) = shadow {
        match admit_candidate(guard.sandbox(), candidate, &config) {
            Ok(admitted) => {
                let shadow = guard.start_shadow(admitted.policy)?;
                tracing::info!(target: "deploy_guard::shadow", candidate = shadow.candidate(), "shadowing");
            }
            Err(e) => {
                eprintln!(
                    "deploy-guard: the shadow candidate is refused: {}: {e}",
                    candidate.display()
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    let _watcher = guard.watch()?;
    let answered = deploy_guard::serve::serve(&guard, &mut input, &mut output)?;
    tracing::info!(target: "deploy_guard::serve", answered, "end of input");
    if let Some(stats) = guard.finish_shadow() {
        let candidate = shadow.map(|p| p.display().to_string()).unwrap_or_default();
        // A summary for the operator: stderr, since stdout carries answers only.
        eprintln!("{}", stats.summary(&candidate));
    }
    if let Some(ledger) = guard.ledger() {
        ledger.flush();
    }
    Ok(ExitCode::SUCCESS)
}
