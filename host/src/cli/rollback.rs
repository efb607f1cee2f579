//! `deploy-guard rollback`: put the policy that was live before the last swap back in
//! place of the active policy file; a running `serve` swaps to it within a second.
//! The same rule as an automatic roll back: a compare-and-swap against what the file
//! held when the command read it, and never over a symbolic link.

use deploy_guard::admission::signature::{SignatureError, put_back_signature, read_signature, signature_path};
use deploy_guard::files::write::{Mode, write_atomically};
use deploy_guard::rollout::slot::previous_path;
use deploy_guard::sandbox::engine::Sandbox;
use deploy_guard::{Config, Overrides};
use std::process::ExitCode;

pub fn run(overrides: Overrides) -> anyhow::Result<ExitCode> {
    let config = Config::load(&overrides);
    super::init_logging(config.log, "warn");
    let previous = previous_path(&config.policy);
    let bytes = match deploy_guard::files::read::read_bounded(&previous, deploy_guard::files::read::MAX_POLICY_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => {
            println!(
                "nothing to roll back to: {} ({e}); it is written when a running deploy-guard swaps a policy",
                previous.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    // Under trusted keys, the previous policy must carry its signature (kept beside it
    // when it went out), and goes back with it: a policy the host would refuse is never
    // put back with a claim of success.
    let signature = match &config.trust {
        None => None,
        Some(trust) => {
            let kept = signature_path(&previous);
            // Read once: the signature verified is the signature put back.
            let verified = read_signature(&kept).and_then(|signature| {
                trust
                    .verify(&bytes, &signature, &format!(" in {}", kept.display()))
                    .map(|_| signature)
            });
            match verified {
                Ok(signature) => Some(signature),
                Err(e) => {
                    println!(
                        "refused: {}: {e}; a roll back under trusted keys needs its signature",
                        previous.display()
                    );
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    // The same gate as any swap: a previous policy that no longer passes stays out.
    let sandbox = Sandbox::with_cache(config.cache.as_deref())?;
    let vectors = deploy_guard::admission::vectors::vectors_path(&config.policy);
    match deploy_guard::admission::gate::admit(&sandbox, &bytes, config.limits, Some(&vectors)) {
        Ok(admitted) => {
            match deploy_guard::files::read::read_bounded(&config.policy, deploy_guard::files::read::MAX_POLICY_BYTES) {
                // Nothing there to lose (and no link: a dangling one reads as absent
                // but is refused by `put_back`'s check below if it appears).
                Err(e) if e.is_not_found() && std::fs::symlink_metadata(&config.policy).is_err() => {
                    write_atomically(&config.policy, &bytes, Mode::Readable)?;
                }
                Err(e) => {
                    println!("refused: cannot read {}: {e}", config.policy.display());
                    return Ok(ExitCode::from(1));
                }
                Ok(current) => {
                    let expected = deploy_guard::sandbox::policy::digest(&current);
                    if let Err(e) = deploy_guard::files::write::put_back(&config.policy, &expected, &bytes) {
                        println!("refused: {e}; {} still holds {expected}", config.policy.display());
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            if let Some(signature) = signature
                && let Err(e) = put_signature_back(&config.policy, &signature)
            {
                println!(
                    "rolled back, but its signature is not in place ({e}): under trusted keys the host refuses {} until it is signed",
                    config.policy.display()
                );
                return Ok(ExitCode::from(1));
            }
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

/// The signature beside the policy put back ([`put_back_signature`]): written where
/// none is, or over the signature this command found there (read now), by the same
/// compare-and-swap as the policy, never over a link.
fn put_signature_back(policy: &std::path::Path, signature: &[u8]) -> anyhow::Result<()> {
    let path = signature_path(policy);
    let there = match read_signature(&path) {
        Ok(there) => Some(deploy_guard::decision::digest(&there)),
        Err(SignatureError::Missing { .. }) => None,
        Err(e) => anyhow::bail!("{e}"),
    };
    put_back_signature(policy, there.as_deref(), signature)?;
    Ok(())
}
