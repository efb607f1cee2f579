//! One mechanism per concern, checked in the source: a concern that has its module
//! is served by it alone, so that no copy drifts from it (issue 20: three of five
//! atomic writers had skipped fsync).
//!
//! Each check scans the library's and the binary's code under `host/src` (tests
//! modules, from a `#[cfg(test)]` line on, left out) for what only the owning module
//! may do, and names every file and line that does it elsewhere.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Every `(file, line, text)` of code outside `owners` holding one of `needles`.
fn offenders(owners: &[&str], needles: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let shown = path.strip_prefix(&src).expect("under src").display().to_string();
        if owners.contains(&shown.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("source");
        for (number, line) in source.lines().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|needle| code.contains(needle)) {
                found.push(format!("{shown}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn every_file_the_host_writes_goes_through_files_write() {
    let found = offenders(
        &["files/write.rs"],
        &[
            "NamedTempFile",
            ".persist(",
            "fs::write(",
            "File::create(",
            ".create_new(",
            ".create(true)",
        ],
    );
    assert!(
        found.is_empty(),
        "written outside files::write (use write_atomically or write_new):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_what_it_looks_for() {
    // The scan finds the owner's own use when the owner is not excluded: it is not
    // blind to the code it is meant to police.
    assert!(!offenders(&[], &["NamedTempFile"]).is_empty());
}

#[test]
fn every_stamp_of_a_file_is_files_stamp() {
    let found = offenders(
        &["files/stamp.rs"],
        &[".mtime(", ".ctime(", "mtime_nsec", ".ino()", "struct FileStamp"],
    );
    assert!(
        found.is_empty(),
        "a file's change told apart outside files::stamp (use FileStamp):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_trusted_keys_are_read_in_one_place() {
    // Read once per configuration load (Config::with_trusted_keys, which the loader
    // calls); everything else takes the Trust the configuration holds.
    let found = offenders(
        &["config/mod.rs", "admission/signature.rs"],
        &["Trust::from_files(", "read_public_key("],
    );
    assert!(
        found.is_empty(),
        "trusted keys read outside the configuration's load:\n{}",
        found.join("\n")
    );
}
