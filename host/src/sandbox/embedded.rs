//! The policies built into the binary by `build.rs` from `guest/` and
//! `policies/deploy-status-guard-next/`, so that `demo` and the tests need nothing
//! but the binary, and `export-policies` can write the deployable files.

include!(concat!(env!("OUT_DIR"), "/policies.rs"));

/// The embedded policies with the file stems they deploy as.
pub const EMBEDDED: [(&str, &[u8]); 2] = [
    ("deploy-status-guard", DEPLOY_STATUS_GUARD),
    ("deploy-status-guard-next", DEPLOY_STATUS_GUARD_NEXT),
];

/// The reference policy as deployed in the 1.0.0 world (`policies/1.0.0/`, kept byte
/// for byte): what `demo` starts on, before it swaps to a policy of the 1.1.0 world.
pub const DEPLOYED_1_0_0: &[u8] = include_bytes!("../../../policies/1.0.0/deploy-status-guard.wasm");
