//! `deploy-guard export-policies`: write the embedded policies as deployable files.

use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (stem, bytes) in deploy_guard::sandbox::embedded::EMBEDDED {
        let path = dir.join(format!("{stem}.wasm"));
        write_atomically(&path, bytes)?;
        println!(
            "{} ({} bytes, {})",
            path.display(),
            bytes.len(),
            deploy_guard::sandbox::policy::digest(bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Write `bytes` to a temporary file beside `path`, then rename it over `path`, so a
/// running `serve` never sees a half-written policy.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, bytes).with_context(|| format!("writing {}", path.display()))?;
    // Readable by the orchestrator's user too (a temporary file starts as 0600).
    std::fs::set_permissions(file.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}
