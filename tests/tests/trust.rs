//! The trusted keys are read once per configuration load, and a key file rewritten in
//! place is seen through the same file watching as the config file (issue 20): for a
//! policy file here (a followed tag: registry.rs), with the keys from the environment
//! and no config file at all.

use deploy_guard::admission::signature::{generate_key_pair, read_signing_key, sign, signature_path};
use deploy_guard::guard::ConfigReload;
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::{Guard, Target, Verdict};
use deploy_guard_e2e::{NEXT, Workspace, sha256_digest, write_atomically};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A key pair in `dir`: (private, public).
fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    generate_key_pair(&dir.join(name)).expect("keygen")
}

/// Sign the file at `path` with the private key `key`, beside it (`FILE.sig`).
fn sign_file(path: &Path, key: &Path) {
    let bytes = std::fs::read(path).expect("read");
    let signature = sign(&read_signing_key(key).expect("key"), &bytes);
    write_atomically(&signature_path(path), signature.as_bytes());
}

/// Look at the policy until the look acts (a change is acted on once it held still).
fn refresh_until_outcome(guard: &Guard) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(outcome) = guard.refresh_policy() {
            return outcome;
        }
        assert!(Instant::now() < deadline, "the policy poll never acted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Look at the configuration's files until a reload happens.
fn reload(guard: &Guard) -> ConfigReload {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(reload) = guard.refresh_config() {
            return reload;
        }
        assert!(Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_trusted_key_rewritten_in_place_applies_to_the_live_policy_file() {
    let ws = Workspace::story();
    let (old_private, old_public) = keys(ws.dir.path(), "old");
    let (new_private, new_public) = keys(ws.dir.path(), "new");
    let trusted = ws.dir.path().join("trusted.pub");
    std::fs::copy(&old_public, &trusted).expect("the trusted key");
    sign_file(&ws.policy(), &old_private);
    let env = |name: &str| match name {
        "DEPLOY_GUARD_DB" => Some(ws.db().display().to_string()),
        "DEPLOY_GUARD_POLICY" => Some(ws.policy().display().to_string()),
        "DEPLOY_GUARD_TRUSTED_KEYS" => Some(trusted.display().to_string()),
        _ => None,
    };
    let config = deploy_guard::Config::load_from(env, &deploy_guard::Overrides::default());
    assert_eq!((config.problem.as_deref(), config.file.as_deref()), (None, None));
    let guard = Guard::new(config).expect("guard");
    let reference = sha256_digest(deploy_guard_e2e::REFERENCE);
    assert_eq!(guard.policy().expect("signed by the old key, live").digest, reference);
    // Nothing changed: no reload, however often it is looked at.
    for _ in 0..5 {
        assert_eq!(guard.refresh_config(), None);
    }

    // Rewritten in place with the new key: the live policy, signed by the old key only,
    // is withdrawn at the next look, and every decision fails safe naming why.
    std::fs::write(&trusted, std::fs::read(&new_public).expect("new key")).expect("rewrite in place");
    assert_eq!(reload(&guard), ConfigReload::Reloaded);
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.contains("not signed by them")),
        "{outcome:?}"
    );
    let decision = guard.decide("ORCH-072", Target::Awaiting, None);
    assert_eq!(
        (decision.verdict, decision.rule.as_str()),
        (Verdict::Allow, "fail-safe")
    );
    assert!(
        decision
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("policy-unavailable:")),
        "{decision:?}"
    );

    // The same content written again (a touch of the file, no new key): a look, and no
    // change of the configuration.
    std::fs::write(&trusted, std::fs::read(&new_public).expect("new key")).expect("rewrite the same");
    assert_eq!(reload(&guard), ConfigReload::Unchanged);

    // A new policy signed by the new key goes live.
    write_atomically(&ws.policy(), NEXT);
    sign_file(&ws.policy(), &new_private);
    let outcome = refresh_until_outcome(&guard);
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));
}

/// A configuration made in code was read by no load: a key file it names rewritten in
/// place changes its keys, and nothing else of it (it must not become the defaults).
#[test]
fn a_key_rewritten_under_a_configuration_made_in_code_changes_its_keys_only() {
    let ws = Workspace::story();
    let (old_private, old_public) = keys(ws.dir.path(), "old");
    let (_, new_public) = keys(ws.dir.path(), "new");
    let trusted = ws.dir.path().join("trusted.pub");
    std::fs::copy(&old_public, &trusted).expect("the trusted key");
    sign_file(&ws.policy(), &old_private);
    let made = deploy_guard::Config {
        scope_repos: vec!["orchestrator".to_owned(), "svc-z".to_owned()],
        busy_timeout: Duration::from_millis(1234),
        ..ws.config()
    }
    .with_trusted_keys(vec![trusted.clone()]);
    assert!(made.problem.is_none(), "{:?}", made.problem);
    let guard = Guard::new(made.clone()).expect("guard");
    assert!(guard.policy().is_some(), "signed by the old key, live");

    std::fs::write(&trusted, std::fs::read(&new_public).expect("new key")).expect("rewrite in place");
    assert_eq!(reload(&guard), ConfigReload::Reloaded);
    let now = guard.config();
    assert_eq!(
        (
            &now.db,
            &now.policy,
            &now.scope_repos,
            now.busy_timeout,
            now.enabled,
            &now.trusted_keys
        ),
        (
            &made.db,
            &made.policy,
            &made.scope_repos,
            made.busy_timeout,
            made.enabled,
            &made.trusted_keys
        )
    );
    assert!(now.trust.is_some() && now.trust != made.trust, "the new key is trusted");
    // And it is required: the live policy, signed by the old key only, is withdrawn.
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.contains("not signed by them")),
        "{outcome:?}"
    );
}

/// A key file named in the config file before it exists: the reload is refused, and
/// the file is watched, so that the configuration goes into force when the key lands,
/// without another change to the config file.
#[test]
fn a_key_file_named_before_it_exists_is_read_when_it_lands() {
    let ws = Workspace::story();
    let (old_private, old_public) = keys(ws.dir.path(), "old");
    sign_file(&ws.policy(), &old_private);
    let config_file = ws.dir.path().join("deploy-guard.toml");
    let later = ws.dir.path().join("later.pub");
    let listing = |keys: &[&Path]| {
        let quoted: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.display())).collect();
        format!("trusted_keys = [{}]\n", quoted.join(", "))
    };
    write_atomically(&config_file, listing(&[&old_public]).as_bytes());
    let env = |name: &str| match name {
        "DEPLOY_GUARD_DB" => Some(ws.db().display().to_string()),
        "DEPLOY_GUARD_POLICY" => Some(ws.policy().display().to_string()),
        "DEPLOY_GUARD_CONFIG" => Some(config_file.display().to_string()),
        _ => None,
    };
    let config = deploy_guard::Config::load_from(env, &deploy_guard::Overrides::default());
    assert_eq!(config.problem, None);
    let guard = Guard::new(config).expect("guard");
    assert!(guard.policy().is_some(), "signed by the old key, live");

    write_atomically(&config_file, listing(&[&old_public, &later]).as_bytes());
    let refused = reload(&guard);
    assert!(
        matches!(refused, ConfigReload::Refused(ref why) if why.contains("trusted_keys")),
        "{refused:?}"
    );
    assert_eq!(guard.config().trusted_keys, std::slice::from_ref(&old_public));

    std::fs::copy(&old_public, &later).expect("the key lands");
    assert_eq!(reload(&guard), ConfigReload::Reloaded);
    assert_eq!(guard.config().trusted_keys, [old_public, later]);
}
