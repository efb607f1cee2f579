//! The seed's choke point: the three deploy-phase setters of the issue-tracker sync,
//! guarded. The orchestrator implements [`Tracker`] (how a status is stamped); the
//! [`GuardedSetters`] ask the guard first and act on the verdict: ALLOW stamps the
//! requested status, CONVERGE_DONE stamps Done instead, SUPPRESS stamps nothing.

use crate::decision::{Decision, Target, Verdict};
use crate::guard::Guard;

/// A status of the issue tracker that the setters stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// "Awaiting Deploy".
    AwaitingDeploy,
    /// "Deploying".
    Deploying,
    /// "Monitoring after Deploy".
    MonitoringAfterDeploy,
    /// "Done".
    Done,
}

impl Status {
    /// The deploy-phase status a target stands for.
    pub const fn of(target: Target) -> Status {
        match target {
            Target::Awaiting => Status::AwaitingDeploy,
            Target::Deploying => Status::Deploying,
            Target::Monitoring => Status::MonitoringAfterDeploy,
        }
    }
}

/// How the orchestrator stamps a status on a work item.
pub trait Tracker {
    /// What stamping can fail with (a network error, say); passed through unchanged.
    type Error;
    /// Stamp `status` on `work_item`.
    fn stamp(&mut self, work_item: &str, status: Status) -> Result<(), Self::Error>;
}

/// The three setters, guarded.
#[derive(Debug)]
pub struct GuardedSetters<'g, T> {
    guard: &'g Guard,
    tracker: T,
}

impl<'g, T: Tracker> GuardedSetters<'g, T> {
    /// Setters that stamp through `tracker` after asking `guard`.
    pub fn new(guard: &'g Guard, tracker: T) -> Self {
        GuardedSetters { guard, tracker }
    }

    /// The tracker back.
    pub fn into_tracker(self) -> T {
        self.tracker
    }

    /// `set_issue_awaiting_deploy(work_item, reason)`.
    pub fn set_issue_awaiting_deploy(&mut self, work_item: &str, reason: Option<&str>) -> Result<Decision, T::Error> {
        self.set(work_item, Target::Awaiting, reason)
    }

    /// `set_issue_deploying(work_item, reason)`.
    pub fn set_issue_deploying(&mut self, work_item: &str, reason: Option<&str>) -> Result<Decision, T::Error> {
        self.set(work_item, Target::Deploying, reason)
    }

    /// `set_issue_monitoring(work_item, reason)`.
    pub fn set_issue_monitoring(&mut self, work_item: &str, reason: Option<&str>) -> Result<Decision, T::Error> {
        self.set(work_item, Target::Monitoring, reason)
    }

    fn set(&mut self, work_item: &str, target: Target, reason: Option<&str>) -> Result<Decision, T::Error> {
        let decision = self.guard.decide(work_item, target, reason);
        match decision.verdict {
            // A stamp's answer is one of the first three; the tick's two (never given
            // for a stamp) read as what they mean: go on as asked, or do nothing.
            Verdict::Allow | Verdict::Proceed => self.tracker.stamp(work_item, Status::of(target))?,
            Verdict::ConvergeDone => self.tracker.stamp(work_item, Status::Done)?,
            Verdict::Suppress | Verdict::Noop => {}
        }
        Ok(decision)
    }
}
