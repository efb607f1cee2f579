//! `deploy-guard --help` lists every setting, drawn from the settings' declarations
//! (`host/src/config/settings.rs`), as do the commands that read the configuration.

use deploy_guard::config::settings::{SETTINGS, help};
use std::process::Command;

fn long_help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_deploy-guard"))
        .args(args)
        .arg("--help")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{args:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn help_lists_every_setting_with_its_key_default_and_meaning() {
    let settings = help();
    for args in [&[][..], &["serve"], &["decide"], &["tick"], &["check"], &["rollback"]] {
        let shown = long_help(args);
        assert!(
            shown.contains(settings.trim_end()),
            "{args:?} --help does not list the settings:\n{shown}"
        );
        for setting in SETTINGS {
            assert!(shown.contains(setting.env), "{args:?}: {} missing", setting.env);
        }
    }
    for variable in [
        "DEPLOY_GUARD_CACHE",
        "DEPLOY_GUARD_LEDGER",
        "DEPLOY_GUARD_LEDGER_MAX_ROWS",
        "DEPLOY_GUARD_TRUSTED_KEYS",
        "DEPLOY_GUARD_POLL_MS",
        "DEPLOY_GUARD_REGISTRY_INSECURE",
    ] {
        assert!(
            settings.contains(&format!("\n  {variable}  (config key: ")),
            "{variable}"
        );
    }
}

#[test]
fn a_command_that_reads_no_configuration_does_not_list_the_settings() {
    let shown = long_help(&["keygen"]);
    assert!(!shown.contains("DEPLOY_GUARD_TIMEOUT_MS"), "{shown}");
}
