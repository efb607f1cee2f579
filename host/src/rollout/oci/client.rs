//! The registry client: push a policy artifact and its signature, pull one back with
//! every check a fleet needs before the gate sees it (one wasm layer, its size, its
//! digest, its signature).
//!
//! The HTTP is `oci-client`'s (reqwest, rustls with ring), driven by a current-thread
//! tokio runtime owned by each [`Registry`]: the host has no async anywhere else, and
//! every registry call here is bounded by a timeout so a registry that hangs, even in
//! the middle of a body, costs a bounded wait on the watcher's thread, never a decision.

use crate::admission::signature::{SignatureError, Trust};
use crate::files::read::MAX_POLICY_BYTES;
use crate::rollout::oci::cosign::{
    SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, StoredSignature, simple_signing_payload, verify_stored,
};
use crate::rollout::oci::credentials::docker_credentials;
use crate::rollout::oci::error::OciError;
use crate::rollout::oci::reference::{PolicyRef, is_loopback};
use futures_util::StreamExt as _;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
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

/// A descriptor of `bytes` as a blob of `media_type`.
fn descriptor_of(media_type: &str, bytes: &[u8]) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: crate::decision::digest(bytes),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}

/// Whether two descriptors name the same blob with the same annotations (an absent
/// and an empty map alike): a signature already under the tag is not added twice.
fn same_descriptor(a: &OciDescriptor, b: &OciDescriptor) -> bool {
    let annotations = |d: &OciDescriptor| d.annotations.clone().unwrap_or_default();
    a.media_type == b.media_type && a.digest == b.digest && a.size == b.size && annotations(a) == annotations(b)
}

/// An OCI image manifest of `config` and `layers`, as pushed here.
fn image_manifest(config: OciDescriptor, layers: Vec<OciDescriptor>) -> OciImageManifest {
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_owned()),
        config,
        layers,
        ..OciImageManifest::default()
    }
}

/// An artifact built here, not yet pushed: its blobs, its manifest (JSON) and the
/// manifest's digest.
struct Artifact {
    blobs: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    digest: String,
}

impl Artifact {
    fn new(blobs: Vec<Vec<u8>>, manifest: &OciImageManifest) -> Result<Artifact, OciError> {
        let manifest = serde_json::to_vec(manifest).map_err(|e| OciError::Local(e.to_string()))?;
        Ok(Artifact {
            blobs,
            digest: crate::decision::digest(&manifest),
            manifest,
        })
    }

    /// `wasm` as a CNCF Wasm artifact.
    fn policy(wasm: &[u8]) -> Result<Artifact, OciError> {
        let layer = descriptor_of(WASM_LAYER_MEDIA_TYPE, wasm);
        let config = serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.digest],
            "component": { "exports": ["orchestrator:deploy-guard/types@1.0.0", "orchestrator:deploy-guard/policy@1.0.0"], "imports": [] },
        })
        .to_string()
        .into_bytes();
        let manifest = image_manifest(descriptor_of(WASM_CONFIG_MEDIA_TYPE, &config), vec![layer]);
        Artifact::new(vec![wasm.to_vec(), config], &manifest)
    }
}

/// The answer in oci-client's `error` when it says the registry does not hold what was
/// asked for: HTTP 404, or an error envelope whose every code is one of the
/// distribution spec's "unknown" codes (oci-client keeps a 4xx's envelope and drops its
/// status). `None` for every other failure.
fn not_found_answer(error: &OciDistributionError) -> Option<String> {
    match error {
        OciDistributionError::ServerError { code: 404, .. } => Some("HTTP 404".to_owned()),
        OciDistributionError::RegistryError { envelope, .. }
            if !envelope.errors.is_empty()
                && envelope.errors.iter().all(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) =>
        {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| {
                    serde_json::to_value(&e.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            Some(codes.join(", "))
        }
        _ => None,
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
    /// configuration found through `env` (`DOCKER_CONFIG`, else `HOME`), a credential
    /// helper it names run here, within `timeout` (see [`docker_credentials`]).
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
        let auth = docker_credentials(&registry, timeout, env)?;
        Ok(Registry {
            client,
            runtime,
            auth,
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

    /// Run `future` (a request about `reference`) bounded by the timeout.
    fn run<T>(
        &self,
        during: &str,
        reference: &PolicyRef,
        future: impl Future<Output = Result<T, OciDistributionError>>,
    ) -> Result<T, OciError> {
        // The timer is made inside the runtime (it needs the runtime's clock).
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, future).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(during, reference, &e)),
            Err(_) => Err(self.timed_out(during)),
        }
    }

    /// oci-client's typed `error` as ours: "not found" apart from every other failure.
    fn failed(&self, during: &str, reference: &PolicyRef, error: &OciDistributionError) -> OciError {
        match not_found_answer(error) {
            Some(answer) => OciError::NotFound {
                registry: self.registry.clone(),
                reference: reference.to_string(),
                during: during.to_owned(),
                answer,
            },
            None => OciError::Registry {
                registry: self.registry.clone(),
                reason: format!("{during}: {}", describe(error)),
            },
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
            reference,
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
        let artifact = Artifact::policy(wasm)?;
        self.push_artifact(reference, &artifact.blobs, artifact.manifest)
    }

    /// Push `wasm` as [`Registry::push_policy`] does and sign it with `key` as
    /// [`Registry::push_signature`] does: the manifest's digest and the signature tag.
    /// The signatures already under that tag are read before anything is written, so
    /// that a registry failing that read leaves the registry as it was.
    pub fn push_signed_policy(
        &self,
        reference: &PolicyRef,
        wasm: &[u8],
        key: &p256::ecdsa::SigningKey,
    ) -> Result<(String, PolicyRef), OciError> {
        let artifact = Artifact::policy(wasm)?;
        let tag = reference.signature_tag(&artifact.digest);
        let existing = self.signatures_under(&tag)?;
        let digest = self.push_artifact(reference, &artifact.blobs, artifact.manifest)?;
        self.write_signature(reference, &digest, key, existing)?;
        Ok((digest, tag))
    }

    /// Push `blobs` and the OCI image manifest `manifest` (JSON bytes, as given) at
    /// `reference`; the manifest's digest. What `push` and `sign` build on; also how a
    /// test puts a hand-made artifact in a registry.
    pub fn push_artifact(
        &self,
        reference: &PolicyRef,
        blobs: &[Vec<u8>],
        manifest: Vec<u8>,
    ) -> Result<String, OciError> {
        self.run("authenticating", reference, async {
            self.client
                .store_auth_if_needed(reference.reference.resolve_registry(), &self.auth)
                .await;
            Ok(())
        })?;
        for blob in blobs {
            let digest = crate::decision::digest(blob);
            self.run(
                "pushing a blob",
                reference,
                self.client.push_blob(&reference.reference, blob.clone(), &digest),
            )?;
        }
        let digest = crate::decision::digest(&manifest);
        let content_type = http::HeaderValue::from_static(OCI_MANIFEST_MEDIA_TYPE);
        self.run(
            "pushing the manifest",
            reference,
            self.client
                .push_manifest_raw(&reference.reference, manifest, content_type),
        )?;
        Ok(digest)
    }

    /// Sign the manifest `digest` of `reference`'s repository: cosign's `.sig` tag, the
    /// new signature added to those already there. Only a registry that says the tag
    /// is not there ([`OciError::NotFound`]) means there are none yet: any other
    /// failure to read them is returned, and nothing is written, so that no signature
    /// already given is ever dropped.
    pub fn push_signature(
        &self,
        reference: &PolicyRef,
        digest: &str,
        key: &p256::ecdsa::SigningKey,
    ) -> Result<PolicyRef, OciError> {
        let tag = reference.signature_tag(digest);
        let existing = self.signatures_under(&tag)?;
        self.write_signature(reference, digest, key, existing)
    }

    /// The layers of the signature manifest at `tag`: none when the registry says it is
    /// not there; any other failure (the registry's, or a manifest that does not parse)
    /// is an error.
    fn signatures_under(&self, tag: &PolicyRef) -> Result<Vec<OciDescriptor>, OciError> {
        match self.pull_manifest(tag, "reading the signatures already given") {
            Ok((manifest, _)) => Ok(manifest.layers),
            Err(OciError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Write the signature manifest for `digest`: the `existing` layers and a new one
    /// with `key`'s signature (unless it is one of them already).
    fn write_signature(
        &self,
        reference: &PolicyRef,
        digest: &str,
        key: &p256::ecdsa::SigningKey,
        mut layers: Vec<OciDescriptor>,
    ) -> Result<PolicyRef, OciError> {
        let payload = simple_signing_payload(reference, digest);
        let signature = crate::admission::signature::sign(key, payload.as_bytes());
        let tag = reference.signature_tag(digest);
        let mut layer = descriptor_of(SIMPLE_SIGNING_MEDIA_TYPE, payload.as_bytes());
        layer.annotations = Some(BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), signature)]));
        if !layers.iter().any(|l| same_descriptor(l, &layer)) {
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
        let manifest = image_manifest(
            descriptor_of(oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE, &config),
            layers,
        );
        let artifact = Artifact::new(vec![payload.into_bytes(), config], &manifest)?;
        self.push_artifact(&tag, &artifact.blobs, artifact.manifest)?;
        Ok(tag)
    }

    /// The image manifest at `reference` and its digest, read while `during`.
    fn pull_manifest(&self, reference: &PolicyRef, during: &str) -> Result<(OciImageManifest, String), OciError> {
        let (body, digest) = self.run(
            during,
            reference,
            self.client.pull_manifest_raw(
                &reference.reference,
                &self.auth,
                &[OCI_MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE],
            ),
        )?;
        if body.len() as u64 > MAX_SMALL_BLOB_BYTES {
            return Err(artifact(reference, format!("manifest of {} bytes", body.len())));
        }
        let manifest: OciImageManifest =
            serde_json::from_slice(&body).map_err(|e| artifact(reference, format!("not an image manifest: {e}")))?;
        if let Some(negative) = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .find(|d| d.size < 0)
        {
            return Err(artifact(
                reference,
                format!(
                    "not an image manifest: {} has a negative size ({})",
                    negative.digest, negative.size
                ),
            ));
        }
        Ok((manifest, digest))
    }

    /// Read a blob of at most `limit` bytes and check its digest.
    fn pull_blob(&self, reference: &PolicyRef, descriptor: &OciDescriptor, limit: u64) -> Result<Vec<u8>, OciError> {
        // Never negative: pull_manifest refuses a manifest that says so.
        let size = u64::try_from(descriptor.size).unwrap_or(u64::MAX);
        if size > limit {
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
            Request(OciDistributionError),
            Transfer(String),
        }
        let bytes = self
            .runtime
            .block_on(async {
                tokio::time::timeout(self.timeout, async {
                    // By digest alone: the manifest's `urls` (other hosts to fetch the
                    // blob from) are never followed.
                    let mut stream = self
                        .client
                        .pull_blob_stream(&reference.reference, descriptor.digest.as_str())
                        .await
                        .map_err(Failed::Request)?;
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
                Failed::Request(e) => self.failed(&format!("{during} {}", descriptor.digest), reference, &e),
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
        if bytes.len() as u64 != size {
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
        let (manifest, manifest_digest) = self.pull_manifest(&pinned, "pulling the manifest")?;
        if manifest_digest != digest {
            return Err(artifact(
                &pinned,
                format!("digest mismatch: asked for {digest}, the manifest is {manifest_digest}"),
            ));
        }
        let wasm_layers: Vec<&OciDescriptor> = manifest
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
        let (manifest, _) = match self.pull_manifest(&tag, "pulling the signatures") {
            Ok(found) => found,
            Err(OciError::NotFound { .. }) => {
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
            let Some(signature) = layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION)) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(json: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: serde_json::from_str(json).expect("envelope"),
            url: "http://127.0.0.1:5000/v2/policies/guard/manifests/live".to_owned(),
        }
    }

    fn server(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1:5000/v2/policies/guard/manifests/live".to_owned(),
            message: "manifest unknown, not found".to_owned(),
        }
    }

    #[test]
    fn only_a_404_or_the_unknown_codes_are_not_found() {
        assert_eq!(not_found_answer(&server(404)).as_deref(), Some("HTTP 404"));
        assert_eq!(
            not_found_answer(&envelope(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ))
            .as_deref(),
            Some("MANIFEST_UNKNOWN")
        );
        assert_eq!(
            not_found_answer(&envelope(
                r#"{"errors":[{"code":"NAME_UNKNOWN"},{"code":"BLOB_UNKNOWN"}]}"#
            ))
            .as_deref(),
            Some("NAME_UNKNOWN, BLOB_UNKNOWN")
        );
        // Whatever their text says, these say nothing about what is stored.
        for other in [
            server(500),
            server(502),
            server(429),
            envelope(r#"{"errors":[{"code":"UNAUTHORIZED","message":"manifest unknown"}]}"#),
            envelope(r#"{"errors":[{"code":"MANIFEST_UNKNOWN"},{"code":"DENIED"}]}"#),
            envelope(r#"{"errors":[]}"#),
            OciDistributionError::UnauthorizedError {
                url: "not found".to_owned(),
            },
            OciDistributionError::GenericError(Some("not found, unknown".to_owned())),
        ] {
            assert_eq!(not_found_answer(&other), None, "{other}");
        }
    }

    #[test]
    fn a_pushed_manifest_is_the_cncf_layout_byte_for_byte() {
        let artifact = Artifact::policy(b"\0asm").expect("artifact");
        let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).expect("JSON");
        let layer_digest = crate::decision::digest(b"\0asm");
        let config = &artifact.blobs[1];
        let expected = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"{WASM_CONFIG_MEDIA_TYPE}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{WASM_LAYER_MEDIA_TYPE}","digest":"{layer_digest}","size":4}}]}}"#,
            crate::decision::digest(config),
            config.len()
        );
        assert_eq!(String::from_utf8_lossy(&artifact.manifest), expected, "{manifest}");
        assert_eq!(artifact.digest, crate::decision::digest(expected.as_bytes()));
    }
}
