//! `deploy-guard serve`: the JSON-lines loop with hot swap.

use deploy_guard::{Config, Guard, Overrides};
use std::process::ExitCode;

pub fn run(overrides: Overrides) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "info");
    let guard = Guard::with_overrides(config, overrides)?;
    let _watcher = guard.watch()?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let answered = deploy_guard::serve::serve(&guard, &mut stdin.lock(), &mut stdout.lock())?;
    tracing::info!(target: "deploy_guard::serve", answered, "end of input");
    Ok(ExitCode::SUCCESS)
}
