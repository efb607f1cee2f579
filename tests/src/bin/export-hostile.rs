//! Writes hostile components for tests outside Rust (the Python extension's tests):
//! `export-hostile DIR` leaves `DIR/live-loop.wasm` (tests/hostile/live-loop.wat:
//! passes the gate, spins forever when the work item starts with "B").
//!
//! `cargo test --release --workspace` builds it (`target/release/export-hostile`),
//! since the crate's integration tests are built.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: export-hostile DIR");
        return ExitCode::from(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("live-loop.wasm"), deploy_guard_e2e::hostile::LIVE_LOOP));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("export-hostile: {}: {e}", dir.display());
            ExitCode::from(2)
        }
    }
}
