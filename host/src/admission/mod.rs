//! What a policy must pass before it decides anything: who signed it ([`signature`]),
//! the gate itself ([`gate`]), the fact grid it is run over ([`grid`]) and the vectors
//! it ships ([`vectors`]).

pub mod gate;
pub mod grid;
pub mod signature;
pub mod vectors;
