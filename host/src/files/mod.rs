//! The host's own ways with files it is given or keeps: reading one without blocking
//! and within a bound ([`read`]), telling that one changed ([`stamp`]), and writing one
//! atomically or putting one back only where it is safe ([`write`]).

pub mod read;
pub mod stamp;
pub mod write;
