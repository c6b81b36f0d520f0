//! Bugs planted on purpose, to show that the simulation harness bites.
//!
//! A harness that never fails proves nothing: it may check too little, or
//! drive the daemon where the bugs are not. So each [`Bug`] here names a
//! mistake a maintainer could plausibly make, and the core code has one
//! `if crate::planted::active(Bug::X) { ... }` site that makes it. The
//! harness (forkd-harness) turns bugs on with `plant` (there with the
//! `planted` feature only), runs its seeds, and counts how many it needs
//! before an invariant catches each one.
//!
//! This module is test scaffolding: it is public only with the `testing`
//! feature, which production builds never enable (they compile it
//! privately, and its `active` is a constant false). With `testing` but without the
//! `planted` feature, [`active`] is a `const fn` that returns false too:
//! every site is dead code the compiler removes. `planted` is for the
//! harness's own tests and must never be enabled in anything that runs for
//! real.

/// A bug that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The supervisor forgets to restart a `forever` worker that exited.
    NoRestart,
    /// The daemon keeps an exited worker's region mapped.
    KeepOldRegion,
    /// A batch's answer is sent twice.
    AnswerTwice,
    /// A request that came in the same read as the one before it (pipelined)
    /// is dropped without an answer.
    DropPipelined,
    /// The loop reaps only one child per SIGCHLD, although signals merge.
    ReapOne,
    /// A paused worker goes on running its loop body.
    PausedRuns,
    /// The daemon releases its pid lock as soon as it begins to stop, not
    /// once it has stopped.
    EarlyPidUnlock,
    /// The supervisor never kills a worker whose heartbeat stopped.
    NoHangKill,
    /// A rolling reload begins its next batch once the new instances are
    /// ready, without waiting for the old ones to exit.
    ReloadNoWait,
    /// A master that handed over to a new one keeps accepting connections
    /// until it has stopped.
    AcceptAfterHandOver,
}

impl Bug {
    /// Every bug, in a fixed order.
    pub const ALL: [Bug; 10] = [
        Bug::NoRestart,
        Bug::KeepOldRegion,
        Bug::AnswerTwice,
        Bug::DropPipelined,
        Bug::ReapOne,
        Bug::PausedRuns,
        Bug::EarlyPidUnlock,
        Bug::NoHangKill,
        Bug::ReloadNoWait,
        Bug::AcceptAfterHandOver,
    ];

    /// The bug's name on command lines, `kebab-case`.
    pub fn name(self) -> &'static str {
        match self {
            Bug::NoRestart => "no-restart",
            Bug::KeepOldRegion => "keep-old-region",
            Bug::AnswerTwice => "answer-twice",
            Bug::DropPipelined => "drop-pipelined",
            Bug::ReapOne => "reap-one",
            Bug::PausedRuns => "paused-runs",
            Bug::EarlyPidUnlock => "early-pid-unlock",
            Bug::NoHangKill => "no-hang-kill",
            Bug::ReloadNoWait => "reload-no-wait",
            Bug::AcceptAfterHandOver => "accept-after-hand-over",
        }
    }

    /// The bug called `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }

    #[cfg(feature = "planted")]
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Whether this build can plant bugs at all.
pub const ENABLED: bool = cfg!(feature = "planted");

/// Whether `bug` is planted. Always false without the `planted` feature.
#[cfg(not(feature = "planted"))]
#[inline(always)]
pub const fn active(_bug: Bug) -> bool {
    false
}

/// The bugs planted, one bit each. Process-wide on purpose: a simulated
/// world runs each of its processes on a thread of its own.
#[cfg(feature = "planted")]
static PLANTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether `bug` is planted.
#[cfg(feature = "planted")]
pub fn active(bug: Bug) -> bool {
    PLANTED.load(std::sync::atomic::Ordering::Relaxed) & bug.bit() != 0
}

/// Plants exactly `bugs` (none: a correct build again), for the whole
/// process.
#[cfg(feature = "planted")]
pub fn plant(bugs: &[Bug]) {
    let mask = bugs.iter().fold(0, |m, b| m | b.bit());
    PLANTED.store(mask, std::sync::atomic::Ordering::Relaxed);
}
