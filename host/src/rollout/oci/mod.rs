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
//! One concern a file: where a policy is in a registry ([`reference`]), cosign's
//! payloads and their check ([`cosign`]), the docker credentials ([`credentials`]), what can go
//! wrong ([`error`]), and the registry client with every check on a pulled artifact ([`client`]).

pub mod client;
pub mod cosign;
pub mod credentials;
pub mod error;
pub mod reference;
