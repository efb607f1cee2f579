//! Signed policies (issue 13): `keygen`, `sign`, `verify`, and trusted keys on every
//! load path (start-up, hot swap, `check`, `decide`, the library's `Guard`). Real key
//! files, real signature files, the real binary, and OpenSSL as the independent reader
//! of the format (what cosign's `verify-blob` checks: ECDSA P-256 over SHA-256, DER,
//! base64).

use deploy_guard::admission::signature::{generate_key_pair, read_signing_key, sign, signature_path};
use deploy_guard::rollout::slot::Outcome;
use deploy_guard::{Guard, Target};
use deploy_guard_e2e::{
    Bounded, NEXT, PATIENT_TIMEOUT_MS, REFERENCE, Workspace, sha256_digest, wait_for, write_atomically,
};
use std::path::{Path, PathBuf};

/// A key pair in `dir`: (private, public).
fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    generate_key_pair(&dir.join(name)).expect("keygen")
}

/// Sign the file at `path` with `key` (the library's signer, what `sign` calls).
fn sign_file(path: &Path, key: &Path) {
    let text = sign(
        &read_signing_key(key).expect("key"),
        &std::fs::read(path).expect("read"),
    );
    std::fs::write(signature_path(path), format!("{text}\n")).expect("write sig");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn keygen_sign_and_verify_on_the_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::story();
    let out = ws.command().args(["keygen", "ops"]).bounded_output();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let private = ws.dir.path().join("ops.key");
    let public = ws.dir.path().join("ops.pub");
    let mode = std::fs::metadata(&private).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is private");
    assert!(
        std::fs::read_to_string(&public)
            .expect("pub")
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let (_, foreign) = keys(ws.dir.path(), "foreign");

    let policy = ws.policy();
    let out = ws
        .command()
        .args(["sign", policy.to_str().expect("utf-8"), "--key", "ops.key"])
        .bounded_output();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(signature_path(&policy).exists());

    let verify = |trusted: &Path| {
        ws.command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", trusted)
            .args(["verify", policy.to_str().expect("utf-8")])
            .bounded_output()
    };
    let ok = verify(&public);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    assert!(text(&ok.stdout).contains("verified"), "{}", text(&ok.stdout));

    let other = verify(&foreign);
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other.stdout).contains("another key"), "{}", text(&other.stdout));

    // The same signature over other bytes.
    write_atomically(&policy, NEXT);
    let tampered = verify(&public);
    assert_eq!(tampered.status.code(), Some(1));
    assert!(
        text(&tampered.stdout).contains("over other bytes"),
        "{}",
        text(&tampered.stdout)
    );

    std::fs::write(signature_path(&policy), "MEUCIQ").expect("truncate");
    let truncated = verify(&public);
    assert_eq!(truncated.status.code(), Some(1));
    assert!(
        text(&truncated.stdout).contains("malformed signature"),
        "{}",
        text(&truncated.stdout)
    );

    std::fs::remove_file(signature_path(&policy)).expect("rm");
    let unsigned = verify(&public);
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(
        text(&unsigned.stdout).contains("unsigned"),
        "{}",
        text(&unsigned.stdout)
    );
}

#[test]
fn openssl_reads_our_signatures_as_cosign_verify_blob_would() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    let policy = ws.policy();
    sign_file(&policy, &private);
    let der = ws.dir.path().join("sig.der");
    let b64 = std::fs::read_to_string(signature_path(&policy)).expect("sig");
    let decoded = deploy_guard_e2e::pipe(
        {
            let mut command = std::process::Command::new("openssl");
            command.args(["base64", "-d", "-A", "-out"]).arg(&der);
            command
        },
        b64.clone().into_bytes(),
    );
    assert!(decoded.status.success(), "{b64}: {}", text(&decoded.stderr));
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public)
        .arg("-signature")
        .arg(&der)
        .arg(&policy)
        .bounded_output();
    assert!(out.status.success(), "{} {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("Verified OK"));

    // And the other way: a signature OpenSSL made verifies with `deploy-guard verify`.
    let pem = ws.dir.path().join("openssl.key");
    let pub_pem = ws.dir.path().join("openssl.pub");
    let status = std::process::Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(&pem)
        .status()
        .expect("openssl");
    assert!(status.success());
    let status = std::process::Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&pub_pem)
        .status()
        .expect("openssl");
    assert!(status.success());
    let signed = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .arg(&policy)
        .status()
        .expect("openssl");
    assert!(signed.success());
    let b64 = std::process::Command::new("openssl")
        .args(["base64", "-A", "-in"])
        .arg(&der)
        .bounded_output();
    std::fs::write(signature_path(&policy), &b64.stdout).expect("write");
    let verify = ws
        .command()
        .env("DEPLOY_GUARD_TRUSTED_KEYS", &pub_pem)
        .args(["verify", policy.to_str().expect("utf-8")])
        .bounded_output();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

#[test]
fn with_trusted_keys_an_unsigned_policy_never_goes_live_at_start_up() {
    let ws = Workspace::story();
    let (_, public) = keys(ws.dir.path(), "ops");
    // Keys read by the configuration, or only named in a configuration made in code
    // (the guard reads them then): either way, signatures are required.
    let named_only = deploy_guard::Config {
        trusted_keys: vec![public.clone()],
        ..ws.config()
    };
    for config in [ws.config().with_trusted_keys(vec![public]), named_only] {
        let guard = Guard::new(config).expect("guard");
        assert!(guard.policy().is_none());
        let d = guard.decide("ORCH-061", Target::Monitoring, None);
        assert_eq!(d.rule, "fail-safe");
        let error = d.error.expect("a cause");
        assert!(error.contains("unsigned"), "{error}");
    }
}

#[test]
fn hot_swap_refuses_unsigned_and_foreign_signed_and_takes_the_signed_one() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    let (foreign_private, _) = keys(ws.dir.path(), "foreign");
    sign_file(&ws.policy(), &private);
    let guard = Guard::new(ws.config().with_trusted_keys(vec![public])).expect("guard");
    let reference = sha256_digest(REFERENCE);
    assert_eq!(guard.policy().expect("signed reference live").digest, reference);

    // Unsigned: the old signature is over other bytes.
    std::fs::remove_file(signature_path(&ws.policy())).expect("rm sig");
    write_atomically(&ws.policy(), NEXT);
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(&outcome, Outcome::Refused(why) if why.contains("unsigned")),
        "{outcome:?}"
    );
    assert_eq!(guard.policy().expect("live").digest, reference);

    // Signed by a key nobody trusts.
    sign_file(&ws.policy(), &foreign_private);
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(&outcome, Outcome::Refused(why) if why.contains("another key")),
        "{outcome:?}"
    );
    assert_eq!(guard.policy().expect("live").digest, reference);
    let d = guard.decide("ORCH-081", Target::Awaiting, None);
    assert_eq!(
        (d.rule.as_str(), d.error),
        ("non-terminal", None),
        "the reference decides"
    );

    // The trusted signature arrives after the file: the change of the .sig is enough.
    sign_file(&ws.policy(), &private);
    let outcome = refresh_until_outcome(&guard);
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));

    // A roll back puts the reference back in the file with its own signature, so that
    // a restart under the same trusted key starts on it.
    assert!(matches!(guard.roll_back("test"), Some(Outcome::RolledBack { .. })));
    assert_eq!(std::fs::read(ws.policy()).expect("read"), REFERENCE);
    let restarted = Guard::new(ws.config().with_trusted_keys(guard.config().trusted_keys.clone())).expect("guard");
    assert_eq!(restarted.policy().expect("signed reference live").digest, reference);
}

/// `deploy-guard rollback` under trusted keys: the policy that went out kept its
/// signature beside it, and both go back, so the host takes it; without that signature
/// the command refuses (exit 1) rather than claim a roll back the host would refuse.
#[test]
fn the_rollback_command_puts_a_signed_policy_back_with_its_signature() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    sign_file(&ws.policy(), &private);
    let config = || ws.config().with_trusted_keys(vec![public.clone()]);
    let guard = Guard::new(config()).expect("guard");
    write_atomically(&ws.policy(), NEXT);
    sign_file(&ws.policy(), &private);
    let outcome = refresh_until_outcome(&guard);
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    let previous = deploy_guard::rollout::slot::previous_path(&ws.policy());
    assert_eq!(std::fs::read(&previous).expect("kept"), REFERENCE);
    assert!(
        signature_path(&previous).exists(),
        "the kept policy's signature is kept too"
    );

    let rollback = || {
        ws.command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", &public)
            .arg("rollback")
            .bounded_output()
    };
    // Without the kept signature: refused, nothing changed.
    let kept_signature = std::fs::read(signature_path(&previous)).expect("kept sig");
    std::fs::remove_file(signature_path(&previous)).expect("rm");
    let out = rollback();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("needs its signature"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read(ws.policy()).expect("read"), NEXT);

    // With it: the reference and its signature are back, and the host takes them.
    std::fs::write(signature_path(&previous), &kept_signature).expect("restore");
    let out = rollback();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(std::fs::read(ws.policy()).expect("read"), REFERENCE);
    assert_eq!(
        std::fs::read(signature_path(&ws.policy())).expect("sig"),
        kept_signature
    );
    let outcome = refresh_until_outcome(&guard);
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(REFERENCE));
}

/// Refresh until the policy poll acts (a change is acted on once it held still).
fn refresh_until_outcome(guard: &Guard) -> Outcome {
    wait_for("the policy poll acting", || guard.refresh_policy())
}

/// Look at the config file until a change is acted on.
fn reload(guard: &Guard) {
    wait_for("the config file reloaded", || guard.refresh_config());
}

#[test]
fn a_missing_or_non_key_trusted_file_is_named_in_every_answer() {
    let ws = Workspace::story();
    let (private, _) = keys(ws.dir.path(), "ops");
    sign_file(&ws.policy(), &private);
    let not_a_key = ws.dir.path().join("notes.txt");
    std::fs::write(&not_a_key, "not a key").expect("write");
    for broken in [ws.dir.path().join("missing.pub"), not_a_key] {
        let out = ws
            .command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", &broken)
            .args(["decide", "--work-item", "ORCH-061", "--target", "monitoring"])
            .bounded_output();
        assert_eq!(out.status.code(), Some(0));
        let decision: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(decision["rule"], "fail-safe", "{decision}");
        let error = decision["error"].as_str().expect("error");
        assert!(
            error.contains("trusted_keys") && error.contains(&broken.display().to_string()),
            "{error}"
        );
    }
}

#[test]
fn check_and_decide_require_the_signature_too() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    let check = || {
        ws.command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", &public)
            .args(["check", ws.policy().to_str().expect("utf-8")])
            .bounded_output()
    };
    let decide = || {
        let out = ws
            .command()
            .env("DEPLOY_GUARD_TRUSTED_KEYS", &public)
            .args(["decide", "--work-item", "ORCH-061", "--target", "monitoring"])
            .bounded_output();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let refused = check();
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stdout).contains("unsigned"), "{}", text(&refused.stdout));
    assert_eq!(decide()["rule"], "fail-safe");

    sign_file(&ws.policy(), &private);
    let admitted = check();
    assert_eq!(admitted.status.code(), Some(0), "{}", text(&admitted.stdout));
    assert!(text(&admitted.stdout).contains("signature: valid"));
    assert_eq!(decide()["rule"], "converge-done");
}

/// Trusted keys that arrive with a configuration reload apply to the policy already
/// live, not only to the next candidate: the live policy's file is verified again,
/// and a policy that is not signed by them stops deciding (fail-safe, naming why)
/// until it is signed; a signed one stays live without a swap. The policy a roll back
/// would return to must be signed by them too.
#[test]
fn trusted_keys_added_by_a_reload_apply_to_the_live_policy() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    let file = ws.dir.path().join("guard.toml");
    let write_config = |trusted: Option<&Path>| {
        let mut text = format!(
            "db = {:?}\npolicy = {:?}\ntimeout_ms = {PATIENT_TIMEOUT_MS}\n",
            ws.db(),
            ws.policy()
        );
        if let Some(key) = trusted {
            text.push_str(&format!("trusted_keys = {:?}\n", key));
        }
        write_atomically(&file, text.as_bytes());
    };
    write_config(None);
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    let guard = Guard::new(config).expect("guard");
    // Unsigned, no keys required: the reference is live, then NEXT (unsigned too)
    // replaces it, so that a roll back target exists.
    write_atomically(&ws.policy(), NEXT);
    assert!(matches!(refresh_until_outcome(&guard), Outcome::Activated { .. }));
    assert_eq!(guard.decide("ORCH-072", Target::Awaiting, None).rule, "non-terminal");

    // Keys now required: the unsigned live policy stops deciding at the next look.
    write_config(Some(&public));
    reload(&guard);
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.contains("not signed by them")),
        "{outcome:?}"
    );
    assert!(guard.policy().is_none());
    let decision = guard.decide("ORCH-072", Target::Awaiting, None);
    assert_eq!(
        (decision.rule.as_str(), decision.verdict),
        ("fail-safe", deploy_guard::Verdict::Allow)
    );
    let error = decision.error.expect("the cause");
    assert!(
        error.starts_with("policy-unavailable:") && error.contains("not signed"),
        "{error}"
    );
    // Nor can it come back by a roll back: the previous policy is unsigned too.
    assert_eq!(guard.roll_back("test"), None);

    // Signing the same file brings it back.
    sign_file(&ws.policy(), &private);
    let outcome = refresh_until_outcome(&guard);
    assert!(matches!(outcome, Outcome::Activated { .. }), "{outcome:?}");
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));

    // A signed live policy stays live when the keys change again (a second key added):
    // verified again, nothing swapped.
    let (_, other) = keys(ws.dir.path(), "other");
    std::fs::write(
        &file,
        format!(
            "db = {:?}\npolicy = {:?}\ntimeout_ms = {PATIENT_TIMEOUT_MS}\ntrusted_keys = [{:?}, {:?}]\n",
            ws.db(),
            ws.policy(),
            public,
            other
        ),
    )
    .expect("write");
    reload(&guard);
    for _ in 0..3 {
        // The re-check finds it signed: nothing to act on (`None`, not a swap).
        assert_eq!(guard.refresh_policy(), None);
    }
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));
    assert_eq!(guard.decide("ORCH-072", Target::Awaiting, None).rule, "non-terminal");
}

/// The keys change while the file holds something else than the live policy (a
/// candidate refused for its signature): the live policy is still verified again, from
/// its own bytes, and withdrawn if the new keys do not sign it; the watcher does not
/// keep reading the file for it.
#[test]
fn a_key_change_checks_the_live_policy_whatever_its_file_holds_now() {
    let ws = Workspace::story();
    let (private, public) = keys(ws.dir.path(), "ops");
    let (other_private, other_public) = keys(ws.dir.path(), "other");
    let file = ws.dir.path().join("guard.toml");
    let write_config = |key: &Path| {
        write_atomically(
            &file,
            format!(
                "db = {:?}\npolicy = {:?}\ntimeout_ms = {PATIENT_TIMEOUT_MS}\ntrusted_keys = {:?}\n",
                ws.db(),
                ws.policy(),
                key
            )
            .as_bytes(),
        );
    };
    sign_file(&ws.policy(), &private);
    write_config(&public);
    let config = deploy_guard::Config::load_from(
        |name| (name == "DEPLOY_GUARD_CONFIG").then(|| file.display().to_string()),
        &deploy_guard::Overrides::default(),
    );
    let guard = Guard::new(config).expect("guard");
    let reference = sha256_digest(REFERENCE);
    assert_eq!(guard.policy().expect("signed, live").digest, reference);
    // An unsigned candidate lands: refused, the reference stays.
    write_atomically(&ws.policy(), NEXT);
    std::fs::remove_file(signature_path(&ws.policy())).expect("rm sig");
    assert!(matches!(refresh_until_outcome(&guard), Outcome::Refused(_)));
    assert_eq!(guard.policy().expect("live").digest, reference);
    // Now only the other key is trusted: the live reference (signed by the first) goes.
    write_config(&other_public);
    reload(&guard);
    let outcome = refresh_until_outcome(&guard);
    assert!(
        matches!(outcome, Outcome::Refused(ref why) if why.contains("not signed by them")),
        "{outcome:?}"
    );
    assert!(guard.policy().is_none());
    // Once: the file is not read again for it.
    for _ in 0..3 {
        assert_eq!(guard.refresh_policy(), None);
    }
    // The candidate signed by the trusted key goes live.
    sign_file(&ws.policy(), &other_private);
    assert!(matches!(refresh_until_outcome(&guard), Outcome::Activated { .. }));
    assert_eq!(guard.policy().expect("live").digest, sha256_digest(NEXT));
}
