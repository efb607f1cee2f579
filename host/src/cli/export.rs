//! `deploy-guard export-policies`: write the embedded policies as deployable files.

use anyhow::Context;
use deploy_guard::files::write::{Mode, write_atomically};
use std::path::Path;
use std::process::ExitCode;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (stem, bytes) in deploy_guard::sandbox::embedded::EMBEDDED {
        let path = dir.join(format!("{stem}.wasm"));
        write_atomically(&path, bytes, Mode::Readable).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{} ({} bytes, {})",
            path.display(),
            bytes.len(),
            deploy_guard::sandbox::policy::digest(bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
