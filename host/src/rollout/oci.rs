//! Policies in an OCI registry (issue 13): push a policy as a CNCF Wasm artifact, sign
//! it with cosign's tag scheme, and pull it back with every check a fleet needs before
//! the gate sees it.
//!
//! The layout is the CNCF Wasm OCI artifact one: a config blob of media type
//! `application/vnd.wasm.config.v0+json` and exactly one `application/wasm` layer
//! (Kubewarden's `application/vnd.wasm.content.layer.v1+wasm` is pulled too). A
//! signature is cosign's: a simple-signing payload naming the manifest digest, signed
//! like a blob (see [`crate::admission::signature`]), stored as a layer of the manifest tagged
//! `sha256-<digest>.sig` with the signature in the `dev.cosignproject.cosign/signature`
//! annotation. Debian's registry (distribution 2.8) has no referrers API; the tag
//! scheme works everywhere.
//!
//! The HTTP is `oci-client`'s (reqwest, rustls with ring), driven by a current-thread
//! tokio runtime owned by each [`Registry`]: the host has no async anywhere else, and
//! every registry call here is bounded by a timeout so a registry that hangs, even in
//! the middle of a body, costs a bounded wait on the watcher's thread, never a decision.

use crate::admission::signature::{SignatureError, Trust};
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The URL scheme of a policy kept in a registry.
pub const SCHEME: &str = "oci://";
/// CNCF Wasm OCI artifact: the config's media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// CNCF Wasm OCI artifact: the layer's media type.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Kubewarden's layer media type, accepted on pull.
pub const KUBEWARDEN_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// OCI image manifest.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest (accepted on pull).
const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// cosign's simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// cosign's annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest policy layer pulled; a larger one is refused before its body is read.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;
/// The largest manifest, config or signature payload read.
const MAX_SMALL_BLOB_BYTES: u64 = 1 << 20;
/// How long one registry operation may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong with a registry or an artifact in it.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not `HOST[:PORT]/REPOSITORY(:TAG|@sha256:...)`.
    #[error("not a registry reference {reference:?}: {reason}")]
    Reference {
        /// What was given.
        reference: String,
        /// Why it is not one.
        reason: String,
    },
    /// The registry could not be reached or answered an error.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// Which registry.
        registry: String,
        /// What happened (credentials never appear here).
        reason: String,
    },
    /// The registry did not answer in time.
    #[error("registry {registry}: no answer within {seconds} s ({during})")]
    Timeout {
        /// Which registry.
        registry: String,
        /// The bound.
        seconds: u64,
        /// What was being done.
        during: String,
    },
    /// The artifact is not a policy this host takes.
    #[error("artifact {reference}: {reason}")]
    Artifact {
        /// The artifact.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The artifact's signature is missing or not trusted.
    #[error("artifact {reference}: {error}")]
    Signature {
        /// The artifact.
        reference: String,
        /// Why.
        error: SignatureError,
    },
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

/// A policy's place in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    reference: Reference,
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
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A pulled, checked policy artifact (not yet through the gate).
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The key that signed it, when signatures were checked.
    pub signed_by: Option<String>,
    /// The signature that was verified (payload and base64 signature), to keep beside
    /// the local copy so that a restart can verify it again offline.
    pub signature: Option<StoredSignature>,
}

/// A cosign signature as kept beside a local copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSignature {
    /// The simple-signing payload (JSON text).
    pub payload: String,
    /// The base64 DER signature over the payload.
    pub signature: String,
}

/// cosign's simple-signing payload.
#[derive(Debug, Serialize, Deserialize)]
struct SimpleSigning {
    critical: Critical,
    optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// A manifest as read and written here (the fields used; others are kept).
#[derive(Debug, Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: crate::decision::digest(bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    fn layer_descriptor(&self) -> oci_client::manifest::OciDescriptor {
        oci_client::manifest::OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            ..Default::default()
        }
    }
}

/// The simple-signing payload for `digest` in `reference`'s repository.
pub fn simple_signing_payload(reference: &PolicyRef, digest: &str) -> String {
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: reference.repository_name(),
            },
            image: Image {
                docker_manifest_digest: digest.to_owned(),
            },
            kind: "cosign container image signature".to_owned(),
        },
        optional: None,
    };
    serde_json::to_string(&payload).unwrap_or_default()
}

/// Check `stored` against `trust` for the manifest `digest`: the signature is by a
/// trusted key over the payload, and the payload names this digest.
pub fn verify_stored(trust: &Trust, stored: &StoredSignature, digest: &str) -> Result<String, SignatureError> {
    let key = trust.verify(
        stored.payload.as_bytes(),
        stored.signature.as_bytes(),
        " in the registry",
    )?;
    let payload: SimpleSigning = serde_json::from_str(&stored.payload).map_err(|e| SignatureError::Malformed {
        from: " payload".into(),
        reason: e.to_string(),
    })?;
    if payload.critical.image.docker_manifest_digest != digest {
        return Err(SignatureError::Malformed {
            from: " payload".into(),
            reason: format!(
                "signed for another digest: {} is not {digest}",
                payload.critical.image.docker_manifest_digest
            ),
        });
    }
    Ok(key.to_owned())
}

/// A connection to one registry.
pub struct Registry {
    client: Client,
    runtime: tokio::runtime::Runtime,
    auth: RegistryAuth,
    registry: String,
    timeout: Duration,
    plain_http: bool,
}

impl std::fmt::Debug for Registry {
    // By hand: the client has no Debug, and the credentials must never be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry", &self.registry)
            .field("timeout", &self.timeout)
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client for the registry of `reference`: HTTPS, or plain HTTP when the host is
    /// loopback or named in `insecure` (`host:port`). Credentials come from the docker
    /// configuration found through `env` (`DOCKER_CONFIG`, else `HOME`).
    pub fn connect(
        reference: &PolicyRef,
        insecure: &[String],
        timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Registry, OciError> {
        let registry = reference.registry().to_owned();
        let plain = is_loopback(&registry) || insecure.iter().any(|h| h.trim() == registry);
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::HttpsExcept(vec![registry.clone()])
            } else {
                ClientProtocol::Https
            },
            read_timeout: Some(timeout),
            connect_timeout: Some(timeout),
            ..ClientConfig::default()
        };
        install_crypto_provider();
        let client = Client::try_from(config).map_err(|e| OciError::Registry {
            registry: registry.clone(),
            reason: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OciError::Local(format!("cannot start the registry client: {e}")))?;
        Ok(Registry {
            client,
            runtime,
            auth: docker_credentials(&registry, env),
            registry,
            timeout,
            plain_http: plain,
        })
    }

    /// Whether this client may speak plain HTTP to its registry (loopback, or named in
    /// the allowance it was made with).
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// Run `future` bounded by the timeout.
    fn run<T>(
        &self,
        during: &str,
        future: impl Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    ) -> Result<T, OciError> {
        // The timer is made inside the runtime (it needs the runtime's clock).
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, future).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(OciError::Registry {
                registry: self.registry.clone(),
                reason: format!("{during}: {}", describe(&e)),
            }),
            Err(_) => Err(self.timed_out(during)),
        }
    }

    fn timed_out(&self, during: &str) -> OciError {
        OciError::Timeout {
            registry: self.registry.clone(),
            seconds: self.timeout.as_secs().max(1),
            during: during.to_owned(),
        }
    }

    /// The manifest digest the reference points at now (a tag resolved).
    pub fn resolve(&self, reference: &PolicyRef) -> Result<String, OciError> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_owned());
        }
        let (_, digest) = self.run(
            "resolving the tag",
            self.client.pull_manifest_raw(
                &reference.reference,
                &self.auth,
                &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE],
            ),
        )?;
        Ok(digest)
    }

    /// Push `wasm` as a CNCF Wasm artifact at `reference`; the manifest's digest.
    pub fn push_policy(&self, reference: &PolicyRef, wasm: &[u8]) -> Result<String, OciError> {
        let layer = Descriptor::of(WASM_LAYER_MEDIA_TYPE, wasm);
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.digest],
            "component": { "exports": ["orchestrator:deploy-guard/types@1.0.0", "orchestrator:deploy-guard/policy@1.0.0"], "imports": [] },
        })
        .to_string()
        .into_bytes();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_owned()),
            config: Descriptor::of(WASM_CONFIG_MEDIA_TYPE, &config),
            layers: vec![layer],
        };
        self.push_blobs_and_manifest(reference, &[wasm.to_vec(), config], &manifest)
    }

    fn push_blobs_and_manifest(
        &self,
        reference: &PolicyRef,
        blobs: &[Vec<u8>],
        manifest: &Manifest,
    ) -> Result<String, OciError> {
        let body = serde_json::to_vec(manifest).map_err(|e| OciError::Local(e.to_string()))?;
        self.push_artifact(reference, blobs, body)
    }

    /// Push `blobs` and the OCI image manifest `manifest` (JSON bytes, as given) at
    /// `reference`; the manifest's digest. What `push` and `sign` build on; also how a
    /// test puts a hand-made artifact in a registry.
    pub fn push_artifact(&self, reference: &PolicyRef, blobs: &[Vec<u8>], body: Vec<u8>) -> Result<String, OciError> {
        self.run("authenticating", async {
            self.client
                .store_auth_if_needed(reference.reference.resolve_registry(), &self.auth)
                .await;
            Ok(())
        })?;
        for blob in blobs {
            let digest = crate::decision::digest(blob);
            self.run(
                "pushing a blob",
                self.client.push_blob(&reference.reference, blob.clone(), &digest),
            )?;
        }
        let digest = crate::decision::digest(&body);
        let content_type = http::HeaderValue::from_static(OCI_MANIFEST_MEDIA_TYPE);
        self.run(
            "pushing the manifest",
            self.client.push_manifest_raw(&reference.reference, body, content_type),
        )?;
        Ok(digest)
    }

    /// Sign the manifest `digest` of `reference`'s repository: cosign's `.sig` tag, the
    /// new signature added to those already there.
    pub fn push_signature(
        &self,
        reference: &PolicyRef,
        digest: &str,
        key: &p256::ecdsa::SigningKey,
    ) -> Result<PolicyRef, OciError> {
        let payload = simple_signing_payload(reference, digest);
        let signature = crate::admission::signature::sign(key, payload.as_bytes());
        let tag = reference.signature_tag(digest);
        let mut layers = match self.pull_manifest(&tag) {
            Ok((manifest, _)) => manifest.layers,
            Err(_) => Vec::new(),
        };
        let mut layer = Descriptor::of(SIMPLE_SIGNING_MEDIA_TYPE, payload.as_bytes());
        layer.annotations.insert(SIGNATURE_ANNOTATION.to_owned(), signature);
        if !layers.contains(&layer) {
            layers.push(layer);
        }
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "created": "0001-01-01T00:00:00Z",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        })
        .to_string()
        .into_bytes();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_owned()),
            config: Descriptor::of(oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE, &config),
            layers,
        };
        self.push_blobs_and_manifest(&tag, &[payload.into_bytes(), config], &manifest)?;
        Ok(tag)
    }

    fn pull_manifest(&self, reference: &PolicyRef) -> Result<(Manifest, String), OciError> {
        let (body, digest) = self.run(
            "pulling the manifest",
            self.client.pull_manifest_raw(
                &reference.reference,
                &self.auth,
                &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE],
            ),
        )?;
        if body.len() as u64 > MAX_SMALL_BLOB_BYTES {
            return Err(artifact(reference, format!("manifest of {} bytes", body.len())));
        }
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|e| artifact(reference, format!("not an image manifest: {e}")))?;
        Ok((manifest, digest))
    }

    /// Read a blob of at most `limit` bytes and check its digest.
    fn pull_blob(&self, reference: &PolicyRef, descriptor: &Descriptor, limit: u64) -> Result<Vec<u8>, OciError> {
        if descriptor.size > limit {
            return Err(artifact(
                reference,
                format!(
                    "blob {} is {} bytes, more than the {limit} allowed",
                    descriptor.digest, descriptor.size
                ),
            ));
        }
        let during = "pulling a blob";
        // Too large is the artifact's fault (not pulled again); a broken transfer is
        // the registry's (tried again later).
        enum Failed {
            TooLarge,
            Digest(String),
            Transfer(String),
        }
        let bytes = self
            .runtime
            .block_on(async {
                tokio::time::timeout(self.timeout, async {
                    let mut stream = self
                        .client
                        .pull_blob_stream(&reference.reference, &descriptor.layer_descriptor())
                        .await
                        .map_err(|e| Failed::Transfer(describe(&e)))?;
                    let mut bytes = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(|e| {
                            // oci-client checks the digest as the body streams in.
                            match e
                                .get_ref()
                                .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
                            {
                                Some(digest) => Failed::Digest(digest.to_string()),
                                None => Failed::Transfer(describe(&e)),
                            }
                        })?;
                        if (bytes.len() + chunk.len()) as u64 > limit {
                            return Err(Failed::TooLarge);
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(bytes)
                })
                .await
            })
            .map_err(|_| self.timed_out(during))?
            .map_err(|failed| match failed {
                Failed::TooLarge => artifact(
                    reference,
                    format!("blob {} is larger than the {limit} bytes allowed", descriptor.digest),
                ),
                Failed::Digest(reason) => artifact(reference, format!("digest mismatch: {reason}")),
                Failed::Transfer(reason) => OciError::Registry {
                    registry: self.registry.clone(),
                    reason: format!("{during} {}: {reason}", descriptor.digest),
                },
            })?;
        let got = crate::decision::digest(&bytes);
        if got != descriptor.digest {
            return Err(artifact(
                reference,
                format!(
                    "digest mismatch: the manifest says {}, the blob is {got}",
                    descriptor.digest
                ),
            ));
        }
        if bytes.len() as u64 != descriptor.size {
            return Err(artifact(
                reference,
                format!(
                    "size mismatch: the manifest says {}, the blob is {}",
                    descriptor.size,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Pull the policy at the manifest `digest` (by digest), with its checks: exactly
    /// one wasm layer, its size bound, its digest; and, when `trust` is given, a
    /// cosign signature by a trusted key over this digest.
    pub fn pull_policy(&self, reference: &PolicyRef, digest: &str, trust: Option<&Trust>) -> Result<Pulled, OciError> {
        let pinned = reference.at_digest(digest);
        let (manifest, manifest_digest) = self.pull_manifest(&pinned)?;
        if manifest_digest != digest {
            return Err(artifact(
                &pinned,
                format!("digest mismatch: asked for {digest}, the manifest is {manifest_digest}"),
            ));
        }
        let wasm_layers: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE || l.media_type == KUBEWARDEN_LAYER_MEDIA_TYPE)
            .collect();
        let layer = match (wasm_layers.as_slice(), manifest.layers.len()) {
            ([layer], 1) => *layer,
            (_, count) => {
                return Err(artifact(
                    &pinned,
                    format!(
                        "expected exactly one layer of {WASM_LAYER_MEDIA_TYPE}, found {count} layer(s) ({})",
                        manifest
                            .layers
                            .iter()
                            .map(|l| l.media_type.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        };
        let (signed_by, signature) = match trust {
            None => (None, None),
            Some(trust) => {
                let stored = self.find_signature(reference, digest, trust)?;
                (Some(stored.0), Some(stored.1))
            }
        };
        let bytes = self.pull_blob(&pinned, layer, MAX_POLICY_BYTES)?;
        Ok(Pulled {
            bytes,
            manifest_digest,
            signed_by,
            signature,
        })
    }

    /// The first signature under `digest`'s `.sig` tag that a trusted key made over a
    /// payload naming `digest`; else why none is.
    pub fn find_signature(
        &self,
        reference: &PolicyRef,
        digest: &str,
        trust: &Trust,
    ) -> Result<(String, StoredSignature), OciError> {
        let tag = reference.signature_tag(digest);
        let signature_error = |error| OciError::Signature {
            reference: reference.at_digest(digest).to_string(),
            error,
        };
        let (manifest, _) = match self.pull_manifest(&tag) {
            Ok(found) => found,
            Err(OciError::Registry { reason, .. }) if reason.contains("not found") || reason.contains("unknown") => {
                return Err(signature_error(SignatureError::Missing { path: tag.to_string() }));
            }
            Err(e) => return Err(e),
        };
        let mut last = SignatureError::Missing { path: tag.to_string() };
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        {
            let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
                continue;
            };
            let payload = self.pull_blob(&tag, layer, MAX_SMALL_BLOB_BYTES)?;
            let stored = StoredSignature {
                payload: String::from_utf8_lossy(&payload).into_owned(),
                signature: signature.clone(),
            };
            match verify_stored(trust, &stored, digest) {
                Ok(key) => return Ok((key, stored)),
                Err(e) => last = e,
            }
        }
        Err(signature_error(last))
    }
}

fn artifact(reference: &PolicyRef, reason: String) -> OciError {
    OciError::Artifact {
        reference: reference.to_string(),
        reason,
    }
}

/// An error's text with its causes (reqwest hides the useful part in the source).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// rustls needs one process-wide crypto provider; ring is the one built in.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

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
