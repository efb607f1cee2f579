//! `deploy-guard keygen PREFIX`: a new signing key pair, `PREFIX.key` (0600) and
//! `PREFIX.pub` (see `deploy_guard::admission::signature` for the format).

use std::path::Path;
use std::process::ExitCode;

pub fn run(prefix: &Path) -> anyhow::Result<ExitCode> {
    let (private, public) = deploy_guard::admission::signature::generate_key_pair(prefix)?;
    println!("private key: {} (keep it secret)", private.display());
    println!(
        "public key: {} (list it in DEPLOY_GUARD_TRUSTED_KEYS)",
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}
