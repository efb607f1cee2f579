//! Registry credentials from the docker configuration.

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Credentials for `registry` from the docker configuration (`$DOCKER_CONFIG/config.json`
/// or `~/.docker/config.json`, `auths`); anonymous when there are none.
pub fn docker_credentials(registry: &str, env: &dyn Fn(&str) -> Option<String>) -> RegistryAuth {
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: BTreeMap<String, DockerAuth>,
    }
    #[derive(Deserialize)]
    struct DockerAuth {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let file = match env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(&dir).join("config.json"),
        None => match env("HOME") {
            Some(home) => Path::new(&home).join(".docker/config.json"),
            None => return RegistryAuth::Anonymous,
        },
    };
    let Ok(text) = crate::files::read::read_bounded(&file, crate::files::read::MAX_CONFIG_BYTES) else {
        return RegistryAuth::Anonymous;
    };
    let Ok(config) = serde_json::from_slice::<DockerConfig>(&text) else {
        tracing::warn!(target: "deploy_guard::oci", file = %file.display(), "docker configuration does not parse: pulling anonymously");
        return RegistryAuth::Anonymous;
    };
    let entry = config.auths.iter().find(|(host, _)| {
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        host == registry || host.split('/').next() == Some(registry)
    });
    let Some((_, auth)) = entry else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_docker_convention() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"reg.example:5000": {"auth": "dXNlcjpzM2NyZXQ="}}}"#,
        )
        .expect("write");
        let docker_config = dir.path().display().to_string();
        let env = move |name: &str| (name == "DOCKER_CONFIG").then(|| docker_config.clone());
        assert!(
            matches!(docker_credentials("reg.example:5000", &env), RegistryAuth::Basic(u, p) if u == "user" && p == "s3cret")
        );
        assert!(matches!(
            docker_credentials("other:5000", &env),
            RegistryAuth::Anonymous
        ));
    }
}
