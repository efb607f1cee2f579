//! deploy-guard: the orchestrator's deploy-status guard as a sandboxed WebAssembly
//! policy. See the README for the why; ARCHITECTURE.md for how a decision travels.
//!
//! Embedding: build a [`Guard`] from the environment or an explicit [`Config`], ask it
//! for decisions from any thread, and put the [`GuardedSetters`] in front of the
//! tracker's deploy-phase setters. Deciding never fails: any failure is a fail-safe
//! ALLOW with its cause in [`Decision::error`].
//!
//! ```no_run
//! use deploy_guard::{Config, Guard, GuardedSetters, Status, Target, Tracker, Verdict};
//!
//! // The orchestrator's side: how a status is stamped on a work item.
//! struct Plane;
//! impl Tracker for Plane {
//!     type Error = std::io::Error;
//!     fn stamp(&mut self, work_item: &str, status: Status) -> Result<(), Self::Error> {
//!         println!("{work_item}: {status:?}");
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let config = Config {
//!     db: "orchestrator.db".into(),
//!     policy: "policies/deploy-status-guard.wasm".into(),
//!     ..Config::default()
//! };
//! let guard = Guard::new(config)?;
//! let _hot_swap = guard.watch()?; // swaps the policy when its file changes
//!
//! // A bare decision...
//! let decision = guard.decide("ORCH-061", Target::Monitoring, Some("monitor-tick"));
//! if decision.verdict == Verdict::ConvergeDone { /* stamp Done instead */ }
//!
//! // ...or the guarded setters, which act on the verdict themselves.
//! let mut setters = GuardedSetters::new(&guard, Plane);
//! setters.set_issue_awaiting_deploy("ORCH-061", Some("stale-retry"))?;
//! # Ok(())
//! # }
//! ```

pub mod admission;
pub mod config;
pub mod decision;
pub mod facts;
pub mod files;
pub mod guard;
pub mod observe;
pub mod rollout;
pub mod sandbox;
pub mod serve;
pub mod tracker;

pub use config::{Config, Limits, LogFormat, Overrides};
pub use decision::{Decision, Request, Target, Verdict};
pub use guard::{Guard, GuardError};
pub use tracker::{GuardedSetters, Status, Tracker};
