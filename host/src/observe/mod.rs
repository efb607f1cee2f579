//! What the host tells about its decisions, off their path: the metrics ([`metrics`])
//! and their endpoint ([`metrics_server`]), the decision ledger ([`ledger`]), and a
//! shadow candidate judging the same facts ([`shadow`]).

pub mod ledger;
pub mod metrics;
pub mod metrics_server;
pub mod shadow;
