//! `deploy-guard verify REF|FILE [--key PUB]`: is it signed by one of the trusted keys
//! (`DEPLOY_GUARD_TRUSTED_KEYS`, or the `--key` given)? Exit 0 valid, 1 not, saying why.

use deploy_guard::files::read::{MAX_POLICY_BYTES, read_bounded};
use deploy_guard::{Config, Overrides};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(target: &str, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    if !keys.is_empty() {
        config = config.with_trusted_keys(keys.to_vec());
    }
    let Some(trust) = config.trust.as_deref() else {
        println!("not verified: {target}: no trusted key (set DEPLOY_GUARD_TRUSTED_KEYS or pass --key)");
        return Ok(ExitCode::from(1));
    };
    let outcome = match super::registry_reference(target) {
        Some(reference) => super::push::verify_reference(&reference, trust, &config),
        None => {
            let path = Path::new(target);
            match read_bounded(path, MAX_POLICY_BYTES) {
                Ok(bytes) => trust
                    .verify_file(path, &bytes)
                    .map(str::to_owned)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            }
        }
    };
    match outcome {
        Ok(key) => {
            println!("verified: {target}: signed by {key}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("not verified: {target}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
