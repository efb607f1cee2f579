//! Where a policy runs: the engines and their limits ([`engine`]), the precompiled
//! cache ([`cache`]), a loaded policy and one sandboxed decision ([`policy`]), its
//! remembered answers ([`memo`]), what a policy is asked ([`question`]), the
//! boundary's types as `bindgen!` makes them ([`wit`]), and the policies built into
//! the binary ([`embedded`]).

pub mod cache;
pub mod embedded;
pub mod engine;
pub mod memo;
pub mod policy;
pub mod question;
pub mod wit;
pub mod world;
