//! Builds the hostile policy components of `tests/hostile/` from their WAT sources.
//!
//! Each case is a core module written by hand in WAT. It is parsed with `wat`, given the
//! component-type metadata of a WIT world (the real `guard-policy` of the 1.0.0 world in
//! `wit/1.0.0/` or of the 1.1.0 world in `wit/`, or a hostile variant in
//! `tests/hostile/wit/`) and encoded as a component with `wit-component`, validated.
//! Most hostile cases are policies of the 1.0.0 world, as deployed policies are; the
//! `tick-*` cases attack the 1.1.0 world's `monitor`. The components go to `OUT_DIR`, and `hostile.rs` there
//! holds one `pub const NAME: &[u8]` per case (`tests/tests/hostile.rs` includes it).
//! `well-behaved.wat` is the control: encoded it must pass the gate (`WELL_BEHAVED`);
//! its bare core module (`CORE_MODULE`) must not.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// Where a case's world comes from.
#[derive(Clone, Copy)]
enum World {
    /// `guard-policy` of the real 1.0.0 world, `wit/1.0.0/deploy-guard.wit`.
    Guard,
    /// `guard-policy` of the real 1.1.0 world, `wit/deploy-guard.wit` (with `monitor`).
    Monitor,
    /// A world of a WIT file in `tests/hostile/wit/`, parsed after the real 1.0.0
    /// package (it may use it): (file, world).
    Extends(&'static str, &'static str),
    /// A world of a WIT file in `tests/hostile/wit/` parsed on its own: (file, world).
    Alone(&'static str, &'static str),
}

/// (WAT file stem, world)
const CASES: &[(&str, World)] = &[
    ("well-behaved", World::Guard),
    ("endless-loop", World::Guard),
    ("recursion", World::Guard),
    ("memory-growth", World::Guard),
    ("huge-memory", World::Guard),
    ("giant-memory", World::Guard),
    ("huge-table", World::Guard),
    ("giant-table", World::Guard),
    ("unreachable", World::Guard),
    ("info-trap", World::Guard),
    ("start-trap", World::Guard),
    (
        "wasi-import",
        World::Extends("wasi-import.wit", "guard-policy-with-wasi"),
    ),
    (
        "unknown-import",
        World::Extends("unknown-import.wit", "guard-policy-with-launcher"),
    ),
    ("wrong-signature", World::Alone("wrong-signature.wit", "guard-policy")),
    ("bad-enum", World::Guard),
    ("invalid-utf8", World::Guard),
    ("rule-out-of-bounds", World::Guard),
    ("huge-rule", World::Guard),
    ("live-trap", World::Guard),
    ("live-huge-rule", World::Guard),
    ("look-alike-name", World::Guard),
    ("forged-line-rule", World::Guard),
    ("live-classes", World::Guard),
    ("live-loop", World::Guard),
    ("remembers", World::Guard),
    ("grows", World::Guard),
    // The version line and the 1.1.0 world's `monitor` (tests/tests/worlds.rs).
    ("other-major", World::Alone("other-major.wit", "guard-policy")),
    (
        "tick-wrong-signature",
        World::Alone("tick-wrong-signature.wit", "guard-policy"),
    ),
    ("tick-loop", World::Monitor),
    ("tick-bad-verdict", World::Monitor),
    ("tick-live-trap", World::Monitor),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let hostile = manifest_dir.join("hostile");
    let real_wit = manifest_dir.join("../wit");
    println!("cargo:rerun-if-changed={}", hostile.display());
    println!("cargo:rerun-if-changed={}", real_wit.display());

    let mut consts = String::new();
    for &(stem, world) in CASES {
        let wat_path = hostile.join(format!("{stem}.wat"));
        println!("cargo:rerun-if-changed={}", wat_path.display());
        let core = wat::parse_file(&wat_path).unwrap_or_else(|e| panic!("{}: {e}", wat_path.display()));
        let component = encode(&core, world, &real_wit, &hostile.join("wit"))
            .unwrap_or_else(|e| panic!("encoding {stem}.wat as a component: {e:?}"));
        let constant = stem.to_uppercase().replace('-', "_");
        let path = out_dir.join(format!("{stem}.wasm"));
        write(&path, &component);
        let _ = writeln!(
            consts,
            "/// `tests/hostile/{stem}.wat`, encoded as a component.\npub const {constant}: &[u8] = include_bytes!({path:?});"
        );
        if stem == "well-behaved" {
            let core_path = out_dir.join(format!("{stem}.core.wasm"));
            write(&core_path, &core);
            let _ = writeln!(
                consts,
                "/// `tests/hostile/{stem}.wat` as the bare core module it is.\npub const CORE_MODULE: &[u8] = include_bytes!({core_path:?});"
            );
        }
    }
    write(&out_dir.join("hostile.rs"), consts.as_bytes());
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn encode(core: &[u8], world: World, real_wit: &Path, extra_wit: &Path) -> anyhow::Result<Vec<u8>> {
    let mut resolve = Resolve::default();
    let world_id = match world {
        World::Guard => {
            let (package, _) = resolve.push_dir(real_wit.join("1.0.0"))?;
            resolve.select_world(&[package], Some("guard-policy"))?
        }
        World::Monitor => {
            let (package, _) = resolve.push_dir(real_wit)?;
            resolve.select_world(&[package], Some("guard-policy"))?
        }
        World::Extends(file, name) => {
            resolve.push_dir(real_wit.join("1.0.0"))?;
            let package = resolve.push_file(extra_wit.join(file))?;
            resolve.select_world(&[package], Some(name))?
        }
        World::Alone(file, name) => {
            let package = resolve.push_file(extra_wit.join(file))?;
            resolve.select_world(&[package], Some(name))?
        }
    };
    let mut module = core.to_vec();
    wit_component::embed_component_metadata(&mut module, &resolve, world_id, StringEncoding::UTF8, false)?;
    let component = ComponentEncoder::default().module(&module)?.validate(true).encode()?;
    Ok(component)
}
