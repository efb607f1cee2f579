//! Builds the policies this crate embeds (the reference policy and its next version)
//! as WebAssembly components, from the repository's own sources, with no manual step.
//!
//! For each policy crate: `cargo build --release --target wasm32-unknown-unknown` in a
//! target directory of its own (the outer build holds the lock on its own target
//! directory; sharing it deadlocks), then the core module is encoded as a component
//! with `wit-component`, validated, and written to `OUT_DIR`. `src/sandbox/embedded.rs`
//! includes the bytes. Each crate is built in its own cargo invocation: built together,
//! cargo would unify the reference crate's features and the next policy would export
//! the reference policy's symbols too.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, file stem of the deployable component)
const POLICIES: [(&str, &str); 2] = [
    ("deploy-status-guard", "deploy-status-guard"),
    ("deploy-status-guard-next", "deploy-status-guard-next"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in [
        "wit",
        "guest",
        "policies/deploy-status-guard-next",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // The bench's floor (an empty component), from its WAT source.
    let floor = manifest_dir.join("src/cli/bench/floor.wat");
    println!("cargo:rerun-if-changed={}", floor.display());
    let bytes = wat::parse_file(&floor).unwrap_or_else(|e| panic!("{}: {e}", floor.display()));
    std::fs::write(out_dir.join("floor.wasm"), bytes).expect("writing floor.wasm");
    let guest_target_dir = guest_target_dir(&out_dir);
    let mut consts = String::new();
    for (package, stem) in POLICIES {
        let core = build_core_module(&root, &guest_target_dir, package);
        let component = encode_component(&core, package);
        let path = out_dir.join(format!("{stem}.wasm"));
        std::fs::write(&path, component).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let constant = stem.to_uppercase().replace('-', "_");
        consts.push_str(&format!(
            "/// The `{stem}` component (built from `{package}`).\npub const {constant}: &[u8] = include_bytes!({path:?});\n"
        ));
    }
    std::fs::write(out_dir.join("policies.rs"), consts).expect("writing policies.rs");
}

/// A target directory for the guest builds that survives across profiles and builds,
/// so that the guests compile once: `<target-dir>/wasm-guests`, found from OUT_DIR
/// (`<target-dir>/[<triple>/]<profile>/build/<pkg>-<hash>/out`). Falls back to OUT_DIR.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(|target| target.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"))
}

fn build_core_module(root: &Path, target_dir: &Path, package: &str) -> Vec<u8> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // Warnings in a guest fail the build, as they do in the host (CI's clippy).
        .args(["--config", "target.wasm32-unknown-unknown.rustflags=[\"-Dwarnings\"]"]);
    // What the outer build sets for itself must not leak into the guest build.
    for leaked in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
    ] {
        cmd.env_remove(leaked);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {package}: {e}"));
    assert!(
        status.success(),
        "building the policy `{package}` for wasm32-unknown-unknown failed ({status}); \
         is the target installed? `rustup target add wasm32-unknown-unknown`"
    );
    let artifact = target_dir
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&artifact).unwrap_or_else(|e| panic!("reading {}: {e}", artifact.display()))
}

fn encode_component(core: &[u8], package: &str) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|encoder| encoder.validate(true).encode())
        .unwrap_or_else(|e| panic!("encoding `{package}` as a component: {e:?}"))
}
