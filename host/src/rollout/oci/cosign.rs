//! cosign's signatures in a registry: the simple-signing payload that names a manifest
//! digest, and its check against the trusted keys.

use crate::admission::signature::{SignatureError, Trust};
use crate::rollout::oci::reference::PolicyRef;
use serde::{Deserialize, Serialize};

/// cosign's simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// cosign's annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

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
