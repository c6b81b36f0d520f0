//! The states of an instance, as the supervisor's table moves it between
//! them: what each one means and what follows a stop.

use std::collections::VecDeque;
use std::time::Duration;

use forkd_os::{ExitStatus, Instant, Pid};

/// Where an instance is in its life, from the supervisor's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Waiting to be spawned (at once, or after a backoff).
    Waiting {
        /// When it is to be spawned.
        at: Instant,
    },
    /// A rolling reload's new instance, beside the one it is to replace:
    /// its spawn is asked for (`pid` is `None`), then it spins up until it
    /// is ready (it becomes `Running`), fails, or `since` plus the worker's
    /// reload timeout passes. It is not a member of the pool yet.
    Joining {
        /// Its process, once spawned.
        pid: Option<Pid>,
        /// When its spawn was asked for, then when it was spawned.
        since: Instant,
    },
    /// Its process runs.
    Running {
        /// Its process.
        pid: Pid,
    },
    /// Its process is being stopped; `then` says what follows its exit.
    Stopping {
        /// Its process.
        pid: Pid,
        /// When it was first asked to stop.
        since: Instant,
        /// How far the escalation went: asked, SIGTERM, SIGKILL.
        step: StopStep,
        /// What follows once it has exited.
        then: AfterStop,
    },
    /// Exited and not to be restarted.
    Stopped,
    /// Scaled away and its process gone: it may be taken again by a scale up.
    Retired,
    /// Restarted too often.
    Failed,
}

/// How far a stop has escalated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Asked through its channel; SIGTERM follows after the stop timeout.
    Asked,
    /// Sent SIGTERM; SIGKILL follows after the stop timeout again.
    Termed,
    /// Sent SIGKILL: nothing is left to send, only the exit to wait for.
    Killed,
}

/// What becomes of an instance once its stopping process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterStop {
    /// Spawned again at once, whatever its restart policy (`restart`).
    Restart,
    /// Treated like a crash, by the restart policy (a hung instance killed).
    Recover,
    /// Retired (scaled down).
    Retire,
    /// Stopped (the daemon is going down).
    Stop,
    /// Retired: a rolling reload's new instance took its place.
    Replace,
}

impl InstanceState {
    /// Its process, while it has one.
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            InstanceState::Running { pid } | InstanceState::Stopping { pid, .. } => Some(pid),
            InstanceState::Joining { pid, .. } => pid,
            InstanceState::Waiting { .. } | InstanceState::Stopped | InstanceState::Retired | InstanceState::Failed => {
                None
            }
        }
    }

    /// Whether the instance is scaled away, or will be once its process exits.
    pub fn is_retired(&self) -> bool {
        matches!(
            self,
            InstanceState::Retired | InstanceState::Stopping { then: AfterStop::Retire | AfterStop::Replace, .. }
        )
    }

    /// Whether the instance is one of its pool's: neither retired nor a
    /// reload's new instance that is not ready yet.
    pub fn is_member(&self) -> bool {
        !self.is_retired() && !matches!(self, InstanceState::Joining { .. })
    }
}

/// One process of a worker (one of a pool's).
#[derive(Clone, Debug)]
pub struct Instance {
    /// The index of its worker in the supervisor's specs.
    pub worker: usize,
    /// Its number within its worker (0 for a single instance).
    pub index: u32,
    /// Where it is in its life.
    pub state: InstanceState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// How its last process ended.
    pub last_exit: Option<ExitStatus>,
    /// When its current process started.
    pub started_at: Option<Instant>,
    /// This instance's starts within the policy's period: intensity is
    /// counted per instance, never per worker or pool.
    pub(super) starts: VecDeque<Instant>,
    pub(super) backoff: Duration,
}
