//! The `deploy-guard` binary's own command line. Having an integration test here also
//! makes `cargo test` build the binary, which the end-to-end tests in `tests/` and the
//! Python client's tests drive as a process.

use std::process::Command;

fn deploy_guard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy-guard"))
}

#[test]
fn help_lists_every_command_of_the_contract() {
    let output = deploy_guard().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "decide",
        "serve",
        "check",
        "diff",
        "demo",
        "bench",
        "replay",
        "rollback",
        "export-policies",
    ] {
        assert!(help.contains(command), "{command} missing from --help:\n{help}");
    }
}

#[test]
fn decide_help_names_its_flags_and_targets() {
    let output = deploy_guard().args(["decide", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--work-item",
        "--target",
        "--caller",
        "--db",
        "--policy",
        "awaiting",
        "deploying",
        "monitoring",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
}

#[test]
fn the_version_is_the_crate_version() {
    let output = deploy_guard().arg("--version").output().expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("deploy-guard {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bench_runs_and_prints_every_figure() {
    // A benchmark, not a timed test: only that it runs (small N) and reports everything.
    let output = deploy_guard()
        .args(["bench", "--decisions", "400", "--batches", "4", "--threads", "2"])
        .env("DEPLOY_GUARD_CACHE", "off")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for figure in [
        "native reference, end to end",
        "sandboxed, end to end ",
        "sandboxed, end to end, 16 per transaction",
        "facts read once",
        "sandbox alone",
        "ratio sandboxed / native, end to end:",
        "ratio sandbox alone / facts read once:",
        "throughput, 1 thread:",
        "throughput, 2 threads:",
        "start-up: compile the policy",
        "start-up: load it from the cache",
        "ratio compile / cached:",
        "serve, 20000 piped requests, whole process:",
        "serve, peak resident memory (VmHWM):",
    ] {
        assert!(stdout.contains(figure), "{figure:?} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains("median") && stdout.contains("p99") && stdout.contains("spread"),
        "{stdout}"
    );
}
