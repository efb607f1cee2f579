//! `deploy-guard decide`: one decision as one JSON object; exit 0 whatever failed.

use deploy_guard::{Config, Decision, Guard, Overrides, Request, Target};
use std::io::Write;
use std::process::ExitCode;

pub fn run(work_item: &str, target: Target, caller: Option<&str>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    answer_one(Request::decide(work_item, target, caller), overrides)
}

/// Answer one request (a stamp or a tick) with the configuration of the environment
/// and `overrides`, print its decision object and exit 0, whatever failed inside.
pub fn answer_one(request: Request<'_>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "info");
    let decision = match Guard::with_overrides(config, overrides) {
        Ok(guard) => guard.answer(request),
        Err(e) => {
            let decision = Decision::fail_safe(request, e);
            decision.log();
            decision
        }
    };
    // A stdout that cannot be written (closed pipe, full disk) is not a reason to exit
    // otherwise than 0: the decision line on stderr has the answer.
    let _ = writeln!(std::io::stdout().lock(), "{}", decision.to_json());
    Ok(ExitCode::SUCCESS)
}
