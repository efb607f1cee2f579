//! `deploy-guard sign REF|FILE --key KEY`: a detached `FILE.sig` beside a local file, as
//! `cosign sign-blob --key KEY --output-signature FILE.sig FILE` writes it, or the
//! `sha256-<digest>.sig` tag for an artifact in a registry.

use deploy_guard::admission::signature::{read_signing_key, sign, signature_path};
use deploy_guard::files::read::{MAX_POLICY_BYTES, read_bounded};
use deploy_guard::files::write::{Mode, write_atomically};
use std::path::Path;
use std::process::ExitCode;

pub fn run(target: &str, key: &Path) -> anyhow::Result<ExitCode> {
    let signing_key = read_signing_key(key)?;
    if let Some(reference) = super::registry_reference(target) {
        return super::push::sign_reference(&reference, &signing_key);
    }
    let path = Path::new(target);
    let bytes =
        read_bounded(path, MAX_POLICY_BYTES).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let sig_path = signature_path(path);
    let text = sign(&signing_key, &bytes);
    write_atomically(&sig_path, format!("{text}\n").as_bytes(), Mode::Readable)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", sig_path.display()))?;
    println!(
        "signed: {} ({})",
        sig_path.display(),
        deploy_guard::sandbox::policy::digest(&bytes)
    );
    Ok(ExitCode::SUCCESS)
}
