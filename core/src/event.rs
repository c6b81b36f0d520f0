//! The event bus: signals, daemon and worker happenings as typed events, and
//! the listeners that react to them.
//!
//! In the seed, a POSIX signal becomes a `PosixEvent` that fires hooked
//! listeners, and predefined listeners stop the daemon on SIGTERM. Here too:
//! the loop turns each signal it takes into [`Event::Signal`] and publishes it,
//! with the daemon's other events (start, stop, client connect and hangup,
//! worker events). Listeners run in the loop, never in a signal handler.
//!
//! The defaults — SIGTERM and SIGINT stop the daemon, SIGCHLD drives the
//! watchdog, SIGUSR1 reopens the log, SIGHUP reloads the workers — are
//! ordinary listeners with well-known names, so a user can
//! remove or replace each of them.

use std::collections::BTreeMap;

use forkd_os::Signal;
use serde_json::Value;

/// Something that happened to the daemon.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The loop took this signal from the pending set.
    Signal(Signal),
    /// The daemon is ready: its socket is bound, its workers are spawned
    /// and it has told its launcher (or systemd); it is about to serve.
    DaemonStart,
    /// The daemon is about to exit: published once, after its workers have
    /// stopped and its clients are closed, before its socket closes.
    DaemonStop,
    /// A client connected to the control socket.
    ClientConnect {
        /// The daemon's number for the connection, unique for the run.
        conn: u64,
    },
    /// A client's connection closed, from either end.
    ClientHangup {
        /// The number its [`Event::ClientConnect`] carried.
        conn: u64,
    },
    /// A worker instance changed state, or sent data with `Context::send`.
    Worker {
        /// The worker's name, as installed.
        name: String,
        /// The instance's index in the worker's pool (0 for a single worker).
        instance: u32,
        /// What happened to it.
        event: WorkerEventKind,
        /// What it sent, for [`WorkerEventKind::Data`]; `None` otherwise.
        data: Option<Value>,
    },
    /// A rolling reload of a worker began, replaced an instance, was done
    /// or failed (`worker.reload`, SIGHUP).
    Reload {
        /// The worker's name, as installed.
        name: String,
        /// What happened.
        kind: ReloadEventKind,
        /// Its details: `instances` and `batch` when it began; `instance`,
        /// `old_pid` and `new_pid` for a replacement; `replaced` (a list of
        /// those) when done; `instance`, `reason` and `replaced` when it
        /// failed.
        data: Value,
    },
    /// Raised by user code (an RPC method or a listener).
    Custom {
        /// The name listeners subscribe to with [`Topic::Custom`].
        name: String,
        /// Whatever the raiser attached.
        data: Value,
    },
}

/// The worker happenings the bus carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WorkerEventKind {
    /// The instance's process started for the first time.
    Started,
    /// The instance's process exited and was reaped, for whatever reason.
    Exited,
    /// The instance's process started again after an exit.
    Restarted,
    /// The instance restarted too often within the restart policy's period
    /// and is given up on; the daemon then stops with an error.
    Failed,
    /// The instance acknowledged a pause: its body no longer runs.
    Paused,
    /// The instance acknowledged a resume: its body runs again.
    Resumed,
    /// The instance sent data with `Context::send`; the event's `data` holds it.
    Data,
}

/// What a rolling reload did, as [`Event::Reload`] carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ReloadEventKind {
    /// It began.
    Started,
    /// A new instance is ready, and the old one it replaces is stopping.
    Replaced,
    /// Every instance was replaced.
    Done,
    /// It stopped: a new instance failed, or the daemon is stopping. The
    /// instances not replaced keep running.
    Failed,
}

impl ReloadEventKind {
    /// The name the event stream gives it (`reload.NAME`).
    pub fn name(self) -> &'static str {
        match self {
            ReloadEventKind::Started => "started",
            ReloadEventKind::Replaced => "replaced",
            ReloadEventKind::Done => "done",
            ReloadEventKind::Failed => "failed",
        }
    }
}

/// What a listener subscribes to: a kind of event, not its payload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Topic {
    /// One signal, as [`Event::Signal`] carries it.
    Signal(Signal),
    /// [`Event::DaemonStart`].
    DaemonStart,
    /// [`Event::DaemonStop`].
    DaemonStop,
    /// [`Event::ClientConnect`], for every connection.
    ClientConnect,
    /// [`Event::ClientHangup`], for every connection.
    ClientHangup,
    /// [`Event::Worker`], for every worker and kind.
    Worker,
    /// [`Event::Reload`], for every worker and kind.
    Reload,
    /// [`Event::Custom`] events of this name.
    Custom(String),
}

impl Event {
    /// The topic whose listeners receive this event.
    ///
    /// ```
    /// use forkd_core::event::{Event, Topic};
    /// use forkd_os::Signal;
    ///
    /// assert_eq!(Event::Signal(Signal::Hup).topic(), Topic::Signal(Signal::Hup));
    /// assert_eq!(Event::ClientConnect { conn: 3 }.topic(), Topic::ClientConnect);
    /// let custom = Event::Custom { name: "reload".into(), data: serde_json::Value::Null };
    /// assert_eq!(custom.topic(), Topic::Custom("reload".into()));
    /// ```
    pub fn topic(&self) -> Topic {
        match self {
            Event::Signal(s) => Topic::Signal(*s),
            Event::DaemonStart => Topic::DaemonStart,
            Event::DaemonStop => Topic::DaemonStop,
            Event::ClientConnect { .. } => Topic::ClientConnect,
            Event::ClientHangup { .. } => Topic::ClientHangup,
            Event::Worker { .. } => Topic::Worker,
            Event::Reload { .. } => Topic::Reload,
            Event::Custom { name, .. } => Topic::Custom(name.clone()),
        }
    }
}

impl WorkerEventKind {
    /// The name the event stream gives it (`worker.NAME`).
    pub fn name(self) -> &'static str {
        match self {
            WorkerEventKind::Started => "started",
            WorkerEventKind::Exited => "exited",
            WorkerEventKind::Restarted => "restarted",
            WorkerEventKind::Failed => "failed",
            WorkerEventKind::Paused => "paused",
            WorkerEventKind::Resumed => "resumed",
            WorkerEventKind::Data => "data",
        }
    }
}

impl Event {
    /// The event as the event stream carries it: an object with its `type`
    /// (`signal`, `daemon.start`, `daemon.stop`, `worker.started`,
    /// `worker.exited`, ..., `custom`) and its fields. Client connects and
    /// hangups are not streamed (`None`): they would only echo the stream's
    /// own readers, and name peers to anyone who subscribes.
    pub fn to_json(&self) -> Option<Value> {
        let mut map = serde_json::Map::new();
        let kind = match self {
            Event::Signal(s) => {
                map.insert("signal".into(), Value::from(s.name()));
                "signal".to_string()
            }
            Event::DaemonStart => "daemon.start".into(),
            Event::DaemonStop => "daemon.stop".into(),
            Event::ClientConnect { .. } | Event::ClientHangup { .. } => return None,
            Event::Worker { name, instance, event, data } => {
                map.insert("worker".into(), Value::from(name.as_str()));
                map.insert("instance".into(), Value::from(*instance));
                if let Some(data) = data {
                    map.insert("data".into(), data.clone());
                }
                format!("worker.{}", event.name())
            }
            Event::Reload { name, kind, data } => {
                map.insert("reload".into(), Value::from(name.as_str()));
                map.insert("data".into(), data.clone());
                format!("reload.{}", kind.name())
            }
            Event::Custom { name, data } => {
                map.insert("name".into(), Value::from(name.as_str()));
                map.insert("data".into(), data.clone());
                "custom".into()
            }
        };
        map.insert("type".into(), Value::from(kind));
        Some(Value::Object(map))
    }
}

/// A subscription, to unsubscribe with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenerId(pub String);

/// Names of the default listeners.
pub mod defaults {
    /// SIGTERM stops the daemon gracefully.
    pub const STOP_ON_TERM: &str = "forkd.stop-on-sigterm";
    /// SIGINT stops the daemon gracefully.
    pub const STOP_ON_INT: &str = "forkd.stop-on-sigint";
    /// SIGCHLD reaps children and drives the worker watchdog.
    pub const WATCHDOG: &str = "forkd.watchdog";
    /// SIGUSR1 reopens the log file.
    pub const REOPEN_LOG: &str = "forkd.reopen-log";
    /// SIGHUP reloads every worker, one after another, by rolling
    /// replacement (`worker.reload` without a name).
    pub const RELOAD_ON_HUP: &str = "forkd.reload-on-sighup";
    /// SIGUSR2 upgrades the master in place (`daemon.upgrade`).
    pub const UPGRADE_ON_USR2: &str = "forkd.upgrade-on-sigusr2";
}

type Listener<C> = Box<dyn FnMut(&mut C, &Event)>;

/// Listeners by topic, called in the order they subscribed. `C` is what a
/// listener gets to act on the daemon with (the daemon's `Ctl`; anything in
/// a test).
///
/// A listener that panics is logged, and the others still run.
///
/// ```
/// use forkd_core::event::{defaults, Bus, Event, Topic};
/// use forkd_os::Signal;
///
/// let mut bus: Bus<Vec<String>> = Bus::default();
/// let term = Topic::Signal(Signal::Term);
/// bus.subscribe_named(term.clone(), defaults::STOP_ON_TERM, |log, _| log.push("stop".into()));
/// // The same name on the same topic replaces the default listener.
/// bus.subscribe_named(term, defaults::STOP_ON_TERM, |log, e| log.push(format!("{e:?}")));
///
/// let mut log = Vec::new();
/// bus.publish(&mut log, &Event::Signal(Signal::Term));
/// bus.publish(&mut log, &Event::Signal(Signal::Hup)); // nobody listens
/// assert_eq!(log, ["Signal(Term)"]);
/// ```
pub struct Bus<C> {
    listeners: BTreeMap<Topic, Vec<(ListenerId, Listener<C>)>>,
    anonymous: u64,
}

impl<C> Default for Bus<C> {
    fn default() -> Self {
        Bus { listeners: BTreeMap::new(), anonymous: 0 }
    }
}

impl<C> Bus<C> {
    /// Subscribes `listener` to `topic` under `name`; a listener of the same
    /// name on the same topic is replaced.
    pub fn subscribe_named(
        &mut self,
        topic: Topic,
        name: &str,
        listener: impl FnMut(&mut C, &Event) + 'static,
    ) -> ListenerId {
        let id = ListenerId(name.to_string());
        let list = self.listeners.entry(topic).or_default();
        list.retain(|(i, _)| *i != id);
        list.push((id.clone(), Box::new(listener)));
        id
    }

    /// Subscribes under a fresh name.
    pub fn subscribe(&mut self, topic: Topic, listener: impl FnMut(&mut C, &Event) + 'static) -> ListenerId {
        self.anonymous += 1;
        let name = format!("listener-{}", self.anonymous);
        self.subscribe_named(topic, &name, listener)
    }

    /// Removes a listener from every topic; whether there was one.
    pub fn unsubscribe(&mut self, id: &ListenerId) -> bool {
        let mut found = false;
        for list in self.listeners.values_mut() {
            let before = list.len();
            list.retain(|(i, _)| i != id);
            found |= list.len() != before;
        }
        found
    }

    /// Calls every listener of the event's topic.
    pub fn publish(&mut self, ctx: &mut C, event: &Event) {
        if let Some(list) = self.listeners.get_mut(&event.topic()) {
            for (id, l) in list.iter_mut() {
                // A listener that panics is the user's bug: it is logged,
                // and the daemon and the other listeners run on.
                let run = std::panic::AssertUnwindSafe(|| l(ctx, event));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    log::error!("listener {id:?} panicked: {}", crate::rpc::registry::panic_message(&*panic));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_run_in_order_and_can_be_replaced_or_removed() {
        let mut bus: Bus<Vec<&'static str>> = Bus::default();
        bus.subscribe_named(Topic::Signal(Signal::Term), defaults::STOP_ON_TERM, |log, _| log.push("stop"));
        let user = bus.subscribe(Topic::Signal(Signal::Term), |log, _| log.push("user"));
        let mut log = Vec::new();
        bus.publish(&mut log, &Event::Signal(Signal::Term));
        assert_eq!(log, ["stop", "user"]);
        bus.subscribe_named(Topic::Signal(Signal::Term), defaults::STOP_ON_TERM, |log, _| log.push("mine"));
        assert!(bus.unsubscribe(&user));
        log.clear();
        bus.publish(&mut log, &Event::Signal(Signal::Term));
        assert_eq!(log, ["mine"]);
        bus.publish(&mut log, &Event::Signal(Signal::Hup));
        assert_eq!(log, ["mine"], "nobody listens to SIGHUP");
    }
}
