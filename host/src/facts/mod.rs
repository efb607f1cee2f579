//! The orchestrator's database, read-only: the facts of a work item ([`source`]), and
//! SQLite's mutexes for threads reading them at once ([`sqlite_mutex`]).

pub mod source;
pub mod sqlite_mutex;
