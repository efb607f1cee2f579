//! Where a policy is in a registry: `oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:...)`.

use crate::rollout::oci::error::OciError;
use oci_client::Reference;
use std::path::Path;

/// The URL scheme of a policy kept in a registry.
pub const SCHEME: &str = "oci://";

/// A policy's place in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    pub(crate) reference: Reference,
}

impl PolicyRef {
    /// Parse `HOST[:PORT]/REPOSITORY:TAG` or `...@sha256:...`, with or without `oci://`.
    /// The host is required: no registry is implied.
    pub fn parse(text: &str) -> Result<PolicyRef, OciError> {
        let bare = text.strip_prefix(SCHEME).unwrap_or(text);
        let error = |reason: &str| OciError::Reference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, rest) = bare
            .split_once('/')
            .ok_or_else(|| error("no repository after the host"))?;
        if host.is_empty() || rest.is_empty() {
            return Err(error("expected HOST[:PORT]/REPOSITORY:TAG"));
        }
        let reference: Reference = bare
            .parse()
            .map_err(|e: oci_client::ParseError| error(&e.to_string()))?;
        if reference.registry() != host {
            return Err(error("the first component must be the registry host"));
        }
        Ok(PolicyRef { reference })
    }

    /// `host[:port]`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository.
    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The same repository at `digest`.
    pub fn at_digest(&self, digest: &str) -> PolicyRef {
        PolicyRef {
            reference: Reference::with_digest(
                self.registry().to_owned(),
                self.repository().to_owned(),
                digest.to_owned(),
            ),
        }
    }

    /// The same repository at `tag`.
    fn at_tag(&self, tag: &str) -> PolicyRef {
        PolicyRef {
            reference: Reference::with_tag(self.registry().to_owned(), self.repository().to_owned(), tag.to_owned()),
        }
    }

    /// cosign's signature tag for the manifest `digest`: `sha256-<hex>.sig`.
    pub fn signature_tag(&self, digest: &str) -> PolicyRef {
        self.at_tag(&format!("{}.sig", digest.replacen(':', "-", 1)))
    }

    /// `host/repository`, as cosign names it in a payload's `docker-reference`.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// A name usable as a directory name, one per reference.
    pub fn directory_name(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reference.whole())
    }
}

/// True when `policy` names a registry (`oci://...`) rather than a file.
pub fn is_oci(policy: &Path) -> bool {
    policy.to_str().is_some_and(|p| p.starts_with(SCHEME))
}

/// True for a host that is this machine: plain HTTP is allowed there.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_host_and_take_tags_or_digests() {
        let r = PolicyRef::parse("oci://127.0.0.1:5000/policies/guard:1.1.0").expect("parse");
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "policies/guard"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = PolicyRef::parse(&format!("localhost:5000/guard@{digest}")).expect("parse");
        assert_eq!(pinned.digest(), Some(digest.as_str()));
        assert_eq!(
            r.signature_tag(&digest).to_string(),
            format!("127.0.0.1:5000/policies/guard:sha256-{}.sig", "a".repeat(64))
        );
        assert!(PolicyRef::parse("guard:1.0").is_err());
        assert!(PolicyRef::parse("oci://").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80"));
        assert!(!is_loopback("registry.example:5000") && !is_loopback("10.0.0.1:5000"));
    }
}
