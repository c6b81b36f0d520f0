//! What user code sees of its worker process while it runs.
//!
//! A [`Context`] is handed to every `Worker` call. It is not generic, so
//! that `Worker` stays object-safe and user code never names the `Os` type:
//! what it needs of the operating system (waking the daemon, looking at
//! pending signals) goes through the small [`Link`] trait object that the
//! worker process implements over its `Os`.

use serde_json::Value;

use super::channel::{Channel, ChannelError};

/// Something that happened to the worker, as its user code sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// An iteration of the loop body starts (the last event `work` sees).
    LoopStart,
    /// An iteration of the loop body ended.
    LoopStop,
    /// The daemon paused the worker.
    Pause,
    /// The daemon resumed the worker.
    Resume,
    /// The worker is stopping: a stop command, SIGTERM or SIGINT, or the
    /// daemon gone.
    Stop,
    /// A custom message arrived (it is handed to `on_message`).
    Message,
}

/// Events kept for the next user call; older ones are dropped first.
pub(crate) const EVENTS_MAX: usize = 32;

/// The worker process's side of a context: what needs its `Os`.
pub(crate) trait Link {
    /// Writes a wake-up byte to the daemon.
    fn wake_daemon(&mut self);
    /// Whether SIGTERM or SIGINT is pending (taking the signals, which the
    /// worker process handles later).
    fn stop_signalled(&mut self) -> bool;
    /// Blocks for `d` of the `Os` clock.
    #[cfg(feature = "testing")]
    fn stall(&mut self, d: std::time::Duration);
}

/// The worker's view of itself and its way to talk to the daemon.
pub struct Context<'a> {
    pub(crate) name: &'a str,
    pub(crate) instance: u32,
    pub(crate) loops: u64,
    pub(crate) target: &'a str,
    pub(crate) events: &'a [WorkerEvent],
    pub(crate) stopping: bool,
    pub(crate) channel: &'a Channel,
    pub(crate) link: &'a mut dyn Link,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("instance", &self.instance)
            .field("loops", &self.loops)
            .field("events", &self.events)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl Context<'_> {
    /// The worker's name, as installed in the daemon.
    pub fn name(&self) -> &str {
        self.name
    }

    /// This process's index in its worker's pool, from 0.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// How many iterations of the loop body have ended before this call.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// The `log` target of this worker, `worker.NAME`:
    /// `log::info!(target: ctx.target(), "...")`.
    pub fn target(&self) -> &str {
        self.target
    }

    /// What happened since the previous call into the worker, oldest first
    /// (at most the last 32).
    pub fn events(&self) -> &[WorkerEvent] {
        self.events
    }

    /// Whether the daemon has a command waiting (pause, stop, a message).
    /// Commands are handled between iterations; a long loop body can check
    /// this and return early. Two atomic loads.
    pub fn has_pending_command(&self) -> bool {
        self.channel.command_pending()
    }

    /// Whether the worker has been asked to stop: a stop command waits, or
    /// SIGTERM or SIGINT came, or it is already stopping (in `spindown`).
    /// Costs a non-blocking system call; a long body may call it now and
    /// then to cut its work short.
    pub fn should_stop(&mut self) -> bool {
        self.stopping || self.channel.stop_pending() || self.link.stop_signalled()
    }

    /// Says that this instance is ready to serve, before its first loop.
    ///
    /// An instance counts as ready once its first loop begins; a rolling
    /// reload (`worker.reload`) waits for that before it stops the instance
    /// this one replaces. A worker whose `spinup` is long (it loads a cache,
    /// say) but that can serve before it is over calls this from `spinup`;
    /// the daemon learns it at once. Calling it again, or from `work`, does
    /// nothing more: readiness is never taken back. If `spinup` then fails,
    /// the instance exits like a crashed one and is restarted by its policy:
    /// a reload that saw it ready has already moved on.
    pub fn ready(&mut self) {
        if !self.channel.is_ready() {
            self.channel.set_ready();
            self.link.wake_daemon();
        }
    }

    /// Sends `data` to the daemon, which publishes it as a worker event.
    /// `Full` when the daemon has not yet taken the earlier ones (it takes
    /// them when woken, so this means it is busy or gone); `TooLarge` past
    /// `EVENT_MAX` bytes of JSON.
    pub fn send(&mut self, data: Value) -> Result<(), ChannelError> {
        self.channel.push_event(&data)?;
        self.link.wake_daemon();
        Ok(())
    }

    /// Publishes `value` as the worker's gauge `forkd_user_NAME` (labelled
    /// with its name and instance) in the daemon's metrics: a worker event
    /// `{"metrics": {NAME: VALUE}}`, which the stream carries too.
    pub fn set_metric(&mut self, name: &str, value: f64) -> Result<(), ChannelError> {
        let mut metrics = serde_json::Map::new();
        metrics.insert(name.to_string(), value.into());
        let mut data = serde_json::Map::new();
        data.insert("metrics".into(), Value::Object(metrics));
        self.send(Value::Object(data))
    }

    /// Blocks for `d` of the `Os` clock and does nothing else meanwhile: no
    /// command is read, no heartbeat written, no signal looked at. Real
    /// user code has no use for it (return from `work` and let the loop
    /// wait). It exists for the simulation harness, whose test workers must
    /// be slow or hang in virtual time: a busy loop there would never let
    /// the simulated clock move. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn stall(&mut self, d: std::time::Duration) {
        self.link.stall(d);
    }
}
