//! The registry client: push a policy artifact and its signature, pull one back with
//! every check a fleet needs before the gate sees it (one wasm layer, its size, its
//! digest, its signature).
//!
//! The HTTP is `oci-client`'s (reqwest, rustls with ring), driven by a current-thread
//! tokio runtime owned by each [`Registry`]: the host has no async anywhere else, and
//! every registry call here is bounded by a timeout so a registry that hangs, even in
//! the middle of a body, costs a bounded wait on the watcher's thread, never a decision.

use crate::admission::signature::{SignatureError, Trust};
use crate::rollout::oci::cosign::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, StoredSignature, simple_signing_payload, verify_stored,
};
use crate::rollout::oci::credentials::docker_credentials;
use crate::rollout::oci::error::OciError;
use crate::rollout::oci::reference::{PolicyRef, is_loopback};
use futures_util::StreamExt as _;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

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
/// The largest policy layer pulled; a larger one is refused before its body is read.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;
/// The largest manifest, config or signature payload read.
const MAX_SMALL_BLOB_BYTES: u64 = 1 << 20;
/// How long one registry operation may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
