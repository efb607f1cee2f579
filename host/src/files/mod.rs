//! The host's own ways with files it is given or keeps: reading one without blocking
//! and within a bound ([`read`]).

pub mod read;
