//! Registry credentials from the docker configuration (`$DOCKER_CONFIG/config.json`, or
//! `~/.docker/config.json`), resolved as docker resolves them: the helper named for the
//! registry in `credHelpers`, else the one in `credsStore`, else `auths`. The first of
//! these the configuration sets decides: a helper that has nothing for the registry
//! means no credentials, as in docker, not a look at `auths`.
//!
//! A helper is the program `docker-credential-<name>` on `PATH`, run as
//! `docker-credential-<name> get` with the registry's `host[:port]` on its stdin; it
//! prints `{"ServerURL": ..., "Username": ..., "Secret": ...}`, where a Username of
//! `<token>` means the Secret is an identity token. Its run is bounded (the registry
//! timeout, then it and its process group are killed; at most 64 KiB of output), its
//! stderr is discarded, and nothing it printed reaches a log line or an error: a helper
//! that fails is named with its exit status only.

use crate::rollout::oci::error::OciError;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most a helper may print; more is a failure (a helper's answer is a few hundred
/// bytes).
const MAX_HELPER_OUTPUT: u64 = 64 << 10;

/// What a helper prints when it holds nothing for the server (docker-credential-helpers'
/// `ErrCredentialsNotFound`, which docker takes as "no credentials", not as a failure).
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// The Username that marks the Secret as an identity token.
const IDENTITY_TOKEN_USERNAME: &str = "<token>";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// A helper's answer (`ServerURL` is not needed).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Credentials for `registry` (`host[:port]`) from the docker configuration found
/// through `env` (`DOCKER_CONFIG`, else `HOME`; `PATH` for a helper); anonymous when it
/// has none. An error only when the configuration names a helper for the registry and
/// the helper gives no answer (missing, failing, too slow, too talkative, garbled):
/// the error names the helper, never what it printed.
pub fn docker_credentials(
    registry: &str,
    timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RegistryAuth, OciError> {
    let file = match env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join("config.json"),
        None => match env("HOME") {
            Some(home) => Path::new(&home).join(".docker/config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let Ok(text) = crate::files::read::read_bounded(&file, crate::files::read::MAX_CONFIG_BYTES) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let Ok(config) = serde_json::from_slice::<DockerConfig>(&text) else {
        tracing::warn!(target: "deploy_guard::oci", file = %file.display(), "docker configuration does not parse: pulling anonymously");
        return Ok(RegistryAuth::Anonymous);
    };
    // docker: credHelpers[host] if the key is there (an empty name: no helper), else
    // credsStore if set, else the file's own auths.
    let helper = match config
        .cred_helpers
        .iter()
        .find(|(host, _)| same_registry(host, registry))
    {
        Some((_, helper)) => Some(helper.as_str()),
        None => config.creds_store.as_deref(),
    }
    .filter(|helper| !helper.is_empty());
    match helper {
        Some(helper) => from_helper(registry, helper, timeout, env),
        None => Ok(from_auths(&config.auths, registry)),
    }
}

/// Whether a configuration key (`host[:port]`, perhaps with a scheme and a path, as
/// `docker login` wrote some) names `registry`.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    host == registry || host.split('/').next() == Some(registry)
}

/// The `auths` entry for `registry`: `username` and `password`, or `auth`
/// (base64 of `user:password`); anonymous without one.
fn from_auths(auths: &BTreeMap<String, DockerAuth>, registry: &str) -> RegistryAuth {
    let Some((_, auth)) = auths.iter().find(|(host, _)| same_registry(host, registry)) else {
        return RegistryAuth::Anonymous;
    };
    if let (Some(user), Some(password)) = (&auth.username, &auth.password) {
        return RegistryAuth::Basic(user.clone(), password.clone());
    }
    use base64::Engine as _;
    auth.auth
        .as_deref()
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| RegistryAuth::Basic(u.to_owned(), p.to_owned()))
        })
        .unwrap_or(RegistryAuth::Anonymous)
}

/// Ask `docker-credential-<helper>` for `registry`'s credentials.
fn from_helper(
    registry: &str,
    helper: &str,
    timeout: Duration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RegistryAuth, OciError> {
    let failed = |reason: String| OciError::Credentials {
        registry: registry.to_owned(),
        helper: helper.to_owned(),
        reason,
    };
    // A name is a suffix, never a path: `credsStore: "../x"` runs nothing.
    if helper.contains('/') || helper.contains('\0') {
        return Err(failed("not a helper's name".to_owned()));
    }
    let program = format!("docker-credential-{helper}");
    let path = find_on_path(&program, env("PATH").as_deref()).ok_or_else(|| failed("not found on PATH".to_owned()))?;
    let output = run_bounded(&path, registry, timeout).map_err(failed)?;
    if !output.status.success() {
        if output.stdout.trim_ascii() == HELPER_NOT_FOUND.as_bytes() {
            tracing::debug!(target: "deploy_guard::oci", registry, helper = %program, "{program} has no credentials for {registry}");
            return Ok(RegistryAuth::Anonymous);
        }
        use std::os::unix::process::ExitStatusExt as _;
        return Err(failed(match (output.status.code(), output.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "failed".to_owned(),
        }));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|e| {
        // serde_json's message can quote the value it choked on: only where it was.
        failed(format!(
            "did not answer JSON with a Username and a Secret (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    tracing::debug!(target: "deploy_guard::oci", registry, helper = %program, "credentials for {registry} from {program}");
    Ok(if answer.username == IDENTITY_TOKEN_USERNAME {
        // oci-client sends it as the bearer token itself (it has no refresh-token
        // exchange): a registry that wants the OAuth2 exchange answers unauthorized.
        RegistryAuth::Bearer(answer.secret)
    } else {
        RegistryAuth::Basic(answer.username, answer.secret)
    })
}

/// `program` in one of `path`'s directories (empty entries, the current directory,
/// are skipped), if it is an executable file there.
fn find_on_path(program: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    path?
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// What a helper's run left: its exit status and its stdout (at most
/// [`MAX_HELPER_OUTPUT`] bytes).
struct HelperOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
}

/// Run `program get` with `server` on its stdin, in a process group of its own: its
/// output is read up to the bound, and when `timeout` passes or the output exceeds the
/// bound, the whole group is killed. The error text never holds what it printed.
fn run_bounded(program: &Path, server: &str, timeout: Duration) -> Result<HelperOutput, String> {
    use std::os::unix::process::CommandExt as _;
    let deadline = Instant::now() + timeout;
    let mut child = std::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let kill_group = |child: &mut std::process::Child| {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill has no memory preconditions; the group is the helper's own
            // (process_group(0) made it its leader), and it is not reaped yet.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = child.wait();
    };
    // The server name is short (far below a pipe's buffer): this write never blocks. A
    // helper that exits without reading it is judged by its exit status below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let Some(stdout) = child.stdout.take() else {
        kill_group(&mut child);
        return Err("cannot be read".to_owned());
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = stdout.take(MAX_HELPER_OUTPUT + 1).read_to_end(&mut bytes);
        let _ = sender.send(read.map(|_| bytes));
    });
    let seconds = timeout.as_secs_f64();
    let stdout = match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(bytes)) if bytes.len() as u64 > MAX_HELPER_OUTPUT => {
            kill_group(&mut child);
            return Err(format!("printed more than {MAX_HELPER_OUTPUT} bytes"));
        }
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            kill_group(&mut child);
            return Err(format!("cannot be read: {e}"));
        }
        Err(_) => {
            kill_group(&mut child);
            return Err(format!("no answer within {seconds} s"));
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(HelperOutput { status, stdout }),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                kill_group(&mut child);
                return Err(format!("did not exit within {seconds} s"));
            }
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("cannot be waited for: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A docker configuration directory holding `config`, and a `bin` directory for
    /// helpers; the environment that names both.
    struct Docker {
        dir: tempfile::TempDir,
    }

    impl Docker {
        fn new(config: &str) -> Docker {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("config.json"), config).expect("write");
            std::fs::create_dir(dir.path().join("bin")).expect("bin");
            Docker { dir }
        }

        /// `docker-credential-<name>`: a shell script with `body`.
        fn helper(&self, name: &str, body: &str) {
            use std::os::unix::fs::PermissionsExt as _;
            let path = self.dir.path().join("bin").join(format!("docker-credential-{name}"));
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("helper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }

        fn credentials(&self, registry: &str) -> Result<RegistryAuth, OciError> {
            let config = self.dir.path().display().to_string();
            let bin = self.dir.path().join("bin").display().to_string();
            let env = move |name: &str| match name {
                "DOCKER_CONFIG" => Some(config.clone()),
                "PATH" => Some(bin.clone()),
                _ => None,
            };
            docker_credentials(registry, Duration::from_secs(2), &env)
        }
    }

    /// A helper that answers `user`/`secret` for `registry` only, as the protocol says.
    fn answering(registry: &str, user: &str, secret: &str) -> String {
        format!(
            r#"[ "$1" = get ] || exit 9
read -r server || true
if [ "$server" = "{registry}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server"
else
  echo "{HELPER_NOT_FOUND}"; exit 1
fi"#
        )
    }

    #[test]
    fn credentials_follow_the_docker_convention() {
        let docker = Docker::new(r#"{"auths": {"reg.example:5000": {"auth": "dXNlcjpzM2NyZXQ="}}}"#);
        assert!(
            matches!(docker.credentials("reg.example:5000"), Ok(RegistryAuth::Basic(u, p)) if u == "user" && p == "s3cret")
        );
        assert!(matches!(docker.credentials("other:5000"), Ok(RegistryAuth::Anonymous)));
    }

    #[test]
    fn cred_helpers_then_creds_store_then_auths() {
        let docker = Docker::new(
            r#"{"credHelpers": {"a.example:5000": "for-a", "c.example": ""}, "credsStore": "store",
                "auths": {"a.example:5000": {"auth": "dXNlcjpzM2NyZXQ="}, "c.example": {"auth": "dXNlcjpzM2NyZXQ="}}}"#,
        );
        docker.helper("for-a", &answering("a.example:5000", "alice", "from-helper"));
        docker.helper("store", &answering("b.example:5000", "bob", "from-store"));
        assert!(
            matches!(docker.credentials("a.example:5000"), Ok(RegistryAuth::Basic(u, p)) if u == "alice" && p == "from-helper")
        );
        assert!(
            matches!(docker.credentials("b.example:5000"), Ok(RegistryAuth::Basic(u, p)) if u == "bob" && p == "from-store")
        );
        // An empty credHelpers entry: no helper, so the file's auths.
        assert!(
            matches!(docker.credentials("c.example"), Ok(RegistryAuth::Basic(u, p)) if u == "user" && p == "s3cret")
        );
        // The store has nothing for it: anonymous, as docker does (auths not looked at).
        assert!(matches!(docker.credentials("d.example"), Ok(RegistryAuth::Anonymous)));
    }

    #[test]
    fn an_identity_token_is_a_bearer_token() {
        let docker = Docker::new(r#"{"credsStore": "store"}"#);
        docker.helper("store", &answering("reg.example", "<token>", "an-identity-token"));
        assert!(matches!(docker.credentials("reg.example"), Ok(RegistryAuth::Bearer(t)) if t == "an-identity-token"));
    }

    #[test]
    fn a_helper_that_fails_is_named_and_never_quoted() {
        let secret = "do-not-show-me";
        let cases = [
            ("missing", None, "not found on PATH"),
            (
                "fails",
                Some(format!("echo {secret}; echo {secret} >&2; exit 3")),
                "exited with status 3",
            ),
            (
                "garbled",
                Some(format!(r#"printf '{{"Username": 5, "Secret": "{secret}"'"#)),
                "did not answer JSON",
            ),
            (
                "talkative",
                Some(format!("yes {secret}")),
                "printed more than 65536 bytes",
            ),
            ("slow", Some("sleep 30".to_owned()), "no answer within"),
            ("../escape", None, "not a helper's name"),
        ];
        for (name, body, expected) in cases {
            let docker = Docker::new(&format!(r#"{{"credsStore": "{name}"}}"#));
            if let Some(body) = &body {
                docker.helper(name, body);
            }
            let started = Instant::now();
            let error = docker.credentials("reg.example").expect_err(name);
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name}: {:?}",
                started.elapsed()
            );
            assert!(matches!(error, OciError::Credentials { .. }), "{name}: {error:?}");
            let text = error.to_string();
            assert!(text.contains(&format!("docker-credential-{name}")), "{name}: {text}");
            assert!(text.contains(expected), "{name}: {text}");
            assert!(!text.contains(secret), "{name}: {text}");
        }
    }
}
