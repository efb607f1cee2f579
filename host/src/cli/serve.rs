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
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
    let mut output = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let answered = deploy_guard::serve::serve(&guard, &mut input, &mut output)?;
    tracing::info!(target: "deploy_guard::serve", answered, "end of input");
    Ok(ExitCode::SUCCESS)
}
