//! forkd-core: the daemon logic, generic over the `Os` trait.
pub mod daemon;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "testing")]
pub mod planted;
/// Without the `testing` feature no bug can be planted: the core's sites
/// ask this stub, whose `active` is a constant false, so that each site is
/// dead code the compiler removes and the build carries nothing of the
/// planted bugs but their names at the sites.
#[cfg(not(feature = "testing"))]
mod planted {
    /// The bugs the core's sites name; see `planted.rs` for what each is.
    #[derive(Clone, Copy)]
    pub(crate) enum Bug {
        NoRestart,
        KeepOldRegion,
        AnswerTwice,
        DropPipelined,
        ReapOne,
        PausedRuns,
        EarlyPidUnlock,
        NoHangKill,
    }

    /// Never: nothing is planted in this build.
    #[inline(always)]
    pub(crate) const fn active(_bug: Bug) -> bool {
        false
    }
}
pub mod rpc;
pub mod supervisor;
pub mod worker;
