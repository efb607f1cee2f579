//! Every file the host writes is flushed to the disk before it is renamed into place,
//! and its directory is flushed after, so that a crash leaves the old file or the new
//! one, whole, and never loses the rename (issue 20: three of five writers skipped
//! the first fsync, none did the second). Observed from outside with `strace`, on the
//! real binary: `export-policies` (files::write::write_atomically) and `keygen` (the
//! private key through files::write::write_new, the public key atomically).
//!
//! That every writer of the host goes through those two is checked in the source by
//! `host/tests/mechanisms.rs`.

use deploy_guard_e2e::binary;
use std::path::Path;
use std::process::Command;

/// One system call as strace printed it: its name, its arguments' text, its result.
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
    result: String,
}

/// The calls of `command` that open, flush, rename or link files, in order; `None` when
/// strace is not installed (the test then says so and checks nothing).
fn trace(command: Command, dir: &Path) -> Option<Vec<Call>> {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed; the writes' flushes are not observed here");
        return None;
    }
    let log = dir.join("strace.log");
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat",
        ])
        .arg("-o")
        .arg(&log)
        .arg(program)
        .args(args)
        .envs(
            command
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("strace runs");
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).expect("the strace log");
    Some(
        text.lines()
            .filter_map(|line| {
                // "<pid> name(args) = result"
                let line = line.split_once(" ").map_or(line, |(_, rest)| rest.trim_start());
                let (name, rest) = line.split_once('(')?;
                let (args, result) = rest.rsplit_once(" = ")?;
                Some(Call {
                    name: name.to_owned(),
                    args: args.trim_end().trim_end_matches(')').to_owned(),
                    result: result.split_whitespace().next().unwrap_or("").to_owned(),
                })
            })
            .collect(),
    )
}

/// The quoted paths in a call's arguments.
fn paths(args: &str) -> Vec<String> {
    args.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Checks that `target` came into place by a rename (or a link) of a temporary file in
/// its directory that was flushed first, and that the directory was flushed after.
fn assert_durable(calls: &[Call], target: &Path) {
    let target = target.display().to_string();
    let dir = Path::new(&target).parent().expect("a directory").display().to_string();
    let placed = calls
        .iter()
        .position(|c| {
            matches!(c.name.as_str(), "rename" | "renameat" | "renameat2" | "link" | "linkat")
                && paths(&c.args).last() == Some(&target)
                && c.result == "0"
        })
        .unwrap_or_else(|| panic!("{target} was not renamed or linked into place: {calls:#?}"));
    let staged = paths(&calls[placed].args)[0].clone();
    assert!(
        staged.starts_with(&format!("{dir}/")) && staged != target,
        "{target} was put in place from {staged}, not from a file beside it"
    );
    let opened = calls[..placed]
        .iter()
        .rposition(|c| c.name == "openat" && paths(&c.args).first() == Some(&staged))
        .unwrap_or_else(|| panic!("{staged} was never opened"));
    let fd = &calls[opened].result;
    assert!(
        calls[opened..placed]
            .iter()
            .any(|c| matches!(c.name.as_str(), "fsync" | "fdatasync") && c.args == *fd),
        "{staged} (fd {fd}) was not flushed before it became {target}"
    );
    let dir_opened = calls[placed..]
        .iter()
        .position(|c| c.name == "openat" && paths(&c.args).first() == Some(&dir))
        .unwrap_or_else(|| panic!("{dir} was not opened after {target} was put in place"))
        + placed;
    let dir_fd = &calls[dir_opened].result;
    assert!(
        calls[dir_opened..]
            .iter()
            .any(|c| c.name == "fsync" && c.args == *dir_fd),
        "{dir} (fd {dir_fd}) was not flushed after {target} was put in place"
    );
}

#[test]
fn exported_policies_are_flushed_then_renamed_then_their_directory_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("policies");
    let mut command = Command::new(binary());
    command.arg("export-policies").arg("--out").arg(&out);
    let Some(calls) = trace(command, dir.path()) else {
        return;
    };
    for stem in ["deploy-status-guard", "deploy-status-guard-next"] {
        assert_durable(&calls, &out.join(format!("{stem}.wasm")));
    }
}

#[test]
fn a_key_pair_is_flushed_and_the_private_key_never_written_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("signer");
    let mut command = Command::new(binary());
    command.arg("keygen").arg(&prefix);
    let Some(calls) = trace(command, dir.path()) else {
        return;
    };
    assert_durable(&calls, &dir.path().join("signer.key"));
    assert_durable(&calls, &dir.path().join("signer.pub"));
    // The private key is linked in (which fails if the name is taken), never renamed
    // over whatever is there.
    let key = dir.path().join("signer.key").display().to_string();
    assert!(
        calls
            .iter()
            .any(|c| matches!(c.name.as_str(), "link" | "linkat") && paths(&c.args).last() == Some(&key)),
        "the private key was not linked into place"
    );
    let again = Command::new(binary())
        .arg("keygen")
        .arg(&prefix)
        .output()
        .expect("keygen");
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second keygen over the same prefix fails"
    );
}
