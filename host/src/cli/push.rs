//! `deploy-guard push FILE REF [--key KEY]`: the gate first, then the policy as a CNCF
//! Wasm OCI artifact at `REF`, signed with cosign's tag scheme when a key is given.
//! Prints `REF@sha256:<manifest digest>`. Also the registry halves of `sign` and
//! `verify`.

use deploy_guard::admission::signature::Trust;
use deploy_guard::rollout::oci::client::{DEFAULT_TIMEOUT, Registry};
use deploy_guard::rollout::oci::reference::PolicyRef;
use deploy_guard::{Config, Overrides};
use std::path::Path;
use std::process::ExitCode;

fn connect(reference: &PolicyRef, config: &Config) -> anyhow::Result<Registry> {
    Ok(Registry::connect(
        reference,
        &config.registry_insecure,
        DEFAULT_TIMEOUT,
        &|name| std::env::var(name).ok(),
    )?)
}

pub fn run(file: &Path, target: &str, key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    let reference = PolicyRef::parse(target)?;
    let signing_key = key
        .map(deploy_guard::admission::signature::read_signing_key)
        .transpose()?;
    let sandbox = deploy_guard::sandbox::engine::Sandbox::new()?;
    let bytes = match deploy_guard::admission::gate::admit_file(&sandbox, file, config.limits) {
        Ok(admitted) => {
            eprintln!(
                "gate: {} is {} ({})",
                file.display(),
                admitted.policy.identity(),
                admitted.policy.digest
            );
            admitted.policy.bytes().to_vec()
        }
        Err(e) => {
            println!("refused: {}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let registry = connect(&reference, &config)?;
    let digest = match &signing_key {
        // The signatures already given are read first: if that fails, nothing is pushed.
        Some(signing_key) => {
            let (digest, tag) = registry.push_signed_policy(&reference, &bytes, signing_key)?;
            eprintln!("signed: {tag}");
            digest
        }
        None => registry.push_policy(&reference, &bytes)?,
    };
    println!(
        "{}@{digest}",
        target
            .strip_prefix(deploy_guard::rollout::oci::reference::SCHEME)
            .unwrap_or(target)
    );
    Ok(ExitCode::SUCCESS)
}

/// `sign REF --key KEY`: sign what `REF` points at now.
pub fn sign_reference(reference: &PolicyRef, key: &p256::ecdsa::SigningKey) -> anyhow::Result<ExitCode> {
    let config = Config::load(&Overrides::default());
    super::init_logging(config.log, "warn");
    let registry = connect(reference, &config)?;
    let digest = registry.resolve(reference)?;
    let tag = registry.push_signature(reference, &digest, key)?;
    println!("signed: {}@{digest} ({tag})", reference.repository_name());
    Ok(ExitCode::SUCCESS)
}

/// `verify REF`: the key that signed what `REF` points at, or why none did.
pub fn verify_reference(reference: &PolicyRef, trust: &Trust, config: &Config) -> Result<String, String> {
    let registry = connect(reference, config).map_err(|e| e.to_string())?;
    let digest = registry.resolve(reference).map_err(|e| e.to_string())?;
    registry
        .find_signature(reference, &digest, trust)
        .map(|(key, _)| format!("{key} ({}@{digest})", reference.repository_name()))
        .map_err(|e| e.to_string())
}
