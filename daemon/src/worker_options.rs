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
    pub(crate) reload_batch: u32,
    pub(crate) reload_timeout: Duration,
}

impl WorkerOptions {
    /// A worker called `name` (unique in the daemon; `worker.*` methods
    /// and the event bus name it so).
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            looptime: Duration::from_secs(1),
            restart: Restart::Always,
            instances: 1,
            reload_batch: 1,
            reload_timeout: forkd_core::supervisor::DEFAULT_RELOAD_TIMEOUT,
        }
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

    /// How many instances a rolling reload (`worker.reload`, SIGHUP)
    /// replaces at once, 1 by default (more than 0): the pool runs up to
    /// this many processes beyond its size meanwhile, and never fewer than
    /// its size minus this many are looping. A call's own `batch` param
    /// overrides it.
    pub fn reload_batch(mut self, batch: u32) -> WorkerOptions {
        self.reload_batch = batch;
        self
    }

    /// How long a reload's new instance has to become ready (its first
    /// loop begins, or it calls `Context::ready`), 30 s by default (more
    /// than 0); past it the reload stops, the new instance is stopped, the
    /// old ones keep running, and the caller gets the error.
    pub fn reload_timeout(mut self, timeout: Duration) -> WorkerOptions {
        self.reload_timeout = timeout;
        self
    }
}
