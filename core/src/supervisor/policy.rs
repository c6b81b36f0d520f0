//! What the supervisor is told: the workers to run, and how to restart
//! them.

use std::time::Duration;

/// How a worker is installed (the seed's `install($worker, $looptime, $forever)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Its name, unique in the daemon; a pool's instances share it.
    pub name: String,
    /// How long one turn of its loop lasts at least.
    pub looptime: Duration,
    /// What its exit does.
    pub restart: Restart,
    /// How many instances run (a pool); changed at runtime by `worker.scale`.
    pub instances: u32,
    /// How many instances a rolling reload replaces at once (at least 1):
    /// the pool may run this many processes beyond its size meanwhile.
    pub reload_batch: u32,
    /// How long a reload's new instance has to become ready before the
    /// reload stops and fails.
    pub reload_timeout: Duration,
}

impl WorkerSpec {
    /// A worker called `name` with `instances` processes, restarted
    /// always, looping every second, reloaded one instance at a time with
    /// [`DEFAULT_RELOAD_TIMEOUT`].
    pub fn new(name: impl Into<String>, instances: u32) -> WorkerSpec {
        WorkerSpec {
            name: name.into(),
            looptime: Duration::from_secs(1),
            restart: Restart::Always,
            instances,
            reload_batch: 1,
            reload_timeout: DEFAULT_RELOAD_TIMEOUT,
        }
    }
}

/// How long a reload waits for a new instance to become ready, unless the
/// worker is configured otherwise.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker's exit does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// It is restarted whenever it exits, within the restart policy's
    /// bounds (the seed's `forever`).
    #[default]
    Always,
    /// It is restarted when it fails (a non-zero exit, a signal, a hang);
    /// a clean exit leaves it stopped, and the daemon goes on.
    OnFailure,
    /// It is never restarted: its exit, clean or not, stops the daemon
    /// (the seed's `forever = false`).
    Never,
}

impl Restart {
    /// Its name in `worker.status`: `always`, `on-failure`, `never`.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// What happens when an instance has used up its restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFailure {
    /// Stop the daemon: a failed worker is a failed service.
    StopDaemon,
    /// Leave the instance failed, and keep the daemon and the other
    /// workers running.
    KeepRunning,
}

/// Bounds on restarts and waits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// The second restart in a row waits this long; each one after doubles it.
    pub backoff_initial: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
    /// An instance up this long has its backoff reset.
    pub stable_after: Duration,
    /// At most this many starts of one instance ...
    pub intensity: u32,
    /// ... within this period, or that instance is failed. Starts are
    /// counted per instance, a pool's included: a pool of 32 whose members
    /// each crash now and then is not failed because together they restart
    /// often; one member that crash-loops is.
    pub period: Duration,
    /// What a failed instance does to the daemon.
    pub on_failure: OnFailure,
    /// An instance whose heartbeat is older than this is killed (and
    /// restarted if `forever`); `None` disables hang detection.
    pub hang_timeout: Option<Duration>,
    /// How long a stopping instance gets after the stop command before
    /// SIGTERM, and as long again before SIGKILL.
    pub stop_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // No stricter than systemd's default start limit: 5 starts in 10 s.
        RestartPolicy {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
            intensity: 5,
            period: Duration::from_secs(10),
            on_failure: OnFailure::StopDaemon,
            hang_timeout: None,
            stop_timeout: Duration::from_secs(5),
        }
    }
}
