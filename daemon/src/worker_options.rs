//! How a worker is installed: its name, looptime, restart policy and
//! number of instances, as named options.

use std::time::Duration;

use forkd_core::supervisor::Restart;

/// The options of [`Builder::worker`](crate::Builder::worker).
///
/// The defaults: a looptime of one second, [`Restart::Always`] (the seed's
/// `forever`), one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    pub(crate) name: String,
    pub(crate) looptime: Duration,
    pub(crate) restart: Restart,
    pub(crate) instances: u32,
}

impl WorkerOptions {
    /// A worker called `name` (unique in the daemon; `worker.*` methods
    /// and the event bus name it so).
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions { name: name.into(), looptime: Duration::from_secs(1), restart: Restart::Always, instances: 1 }
    }

    /// How long one turn of its loop lasts at least (more than zero): the
    /// worker sleeps what is left of it after `work` returns.
    pub fn looptime(mut self, looptime: Duration) -> WorkerOptions {
        self.looptime = looptime;
        self
    }

    /// What its exit does.
    pub fn restart(mut self, restart: Restart) -> WorkerOptions {
        self.restart = restart;
        self
    }

    /// How many processes run it: more than one makes a pool, which
    /// `worker.scale` resizes at run time. Zero installs it with none
    /// running until it is scaled up.
    pub fn instances(mut self, instances: u32) -> WorkerOptions {
        self.instances = instances;
        self
    }
}
