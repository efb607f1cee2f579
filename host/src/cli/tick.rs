//! `deploy-guard tick`: one tick of the post-deploy monitor decided (the seed's D4), as
//! one JSON object without a target; exit 0 whatever failed.

use deploy_guard::{Overrides, Request};
use std::process::ExitCode;

pub fn run(work_item: &str, caller: Option<&str>, overrides: Overrides) -> anyhow::Result<ExitCode> {
    super::decide::answer_one(Request::tick(work_item, caller), overrides)
}
