//! How a policy goes live and changes while the host runs: the live slot with its
//! probation and roll back ([`slot`]), the watching of files ([`watch`]); following a
//! tag in a registry ([`follow`]) and the registry itself ([`oci`]).

pub mod follow;
pub mod oci;
pub mod slot;
pub mod watch;
