//! A whole daemon: its configuration, methods, listeners and workers, and
//! the loop that runs them over an `Os`.
//!
//! The facade crate builds a [`Daemon`] from the user's builder calls and
//! console flags, then calls [`run`] with the real `Os`; the harness calls
//! the same `run` with the simulated one.

mod builtins;
mod config;
mod control;
mod metrics;
mod observe;
mod reload;
mod run;
pub(crate) mod stats;
mod user_metrics;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use builtins::{register_builtins, with_errors, WORKER_ERRORS};
pub use config::{Config, HandOver, UpgradeCommand};
pub use control::{codes, Ctl, Info};
pub use observe::OVERVIEW;
pub use run::{parse_upgrade_env, parse_upgrade_state, run, UPGRADE_ENV};
pub use user_metrics::{MetricError, UserMetrics, MAX_SERIES as MAX_USER_SERIES};

use forkd_os::{Address, Os};

use crate::event::Bus;
use crate::rpc::Registry;
use crate::supervisor::WorkerSpec;
use crate::worker::Worker;

/// Makes a fresh worker object for each process of an instance. It is
/// called in the daemon just before the fork, so every process starts from
/// the object as installed, never from a previous process's state.
pub type WorkerFactory = Box<dyn Fn() -> Box<dyn Worker>>;

/// Everything a daemon runs with.
pub struct Daemon {
    /// Its configuration.
    pub config: Config,
    /// Its methods, the built-in ones included.
    pub registry: Registry<Ctl>,
    /// Its event listeners, the default ones included.
    pub bus: Bus<Ctl>,
    /// Its workers, each with the factory that makes its object in each
    /// process.
    pub workers: Vec<(WorkerSpec, WorkerFactory)>,
    /// Reopens the log file in a worker process on SIGUSR1 (the daemon's own
    /// reopening goes through `Hooks::reopen_log`).
    pub reopen_log: Option<fn()>,
}

impl Daemon {
    /// A daemon with the built-in methods and the default listeners subscribed (see
    /// [`defaults`](crate::event::defaults)); subscribing under one of their
    /// names replaces it, unsubscribing removes it.
    pub fn new(config: Config) -> Daemon {
        let mut bus = Bus::default();
        run::install_default_listeners(&mut bus);
        let mut registry = Registry::new();
        registry.set_info(config.description.clone(), env!("CARGO_PKG_VERSION"));
        register_builtins(&mut registry);
        Daemon { config, registry, bus, workers: Vec::new(), reopen_log: None }
    }
}

/// Where the facade plugs into the loop: readiness, systemd notifications,
/// log reopening. Every method has a default that does nothing.
pub trait Hooks<O: Os> {
    /// The daemon is ready: pid file locked, socket listening, workers
    /// spawned. The launcher of `-d` is told here, and systemd.
    fn ready(&mut self, _os: &mut O) {}
    /// The daemon begins to stop.
    fn stopping(&mut self, _os: &mut O) {}
    /// The daemon hands over to `new`, the master of an upgrade, which is
    /// ready: systemd learns its pid here, from the main process itself,
    /// before this one stops.
    fn handing_over(&mut self, _os: &mut O, _new: forkd_os::Pid) {}
    /// The daemon has cleaned up and is about to return.
    fn stopped(&mut self, _os: &mut O) {}
    /// SIGUSR1 (by default) asked for the log file to be reopened.
    fn reopen_log(&mut self, _os: &mut O) {}
    /// How often `keepalive` is due (systemd's watchdog), if at all.
    fn keepalive_interval(&self) -> Option<Duration> {
        None
    }
    /// Called every `keepalive_interval` (systemd's `WATCHDOG=1`).
    fn keepalive(&mut self, _os: &mut O) {}
    /// Descriptors of the facade's that worker processes must close.
    fn private_fds(&self) -> Vec<forkd_os::Fd> {
        Vec::new()
    }
}

/// How a daemon that started stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// What asked it to stop: a signal, `daemon.shutdown`, a worker's exit.
    pub reason: String,
    /// Set when it stopped because something failed (a worker restarted
    /// too often): its exit code should say so.
    pub failure: Option<String>,
}

/// The hooks of a daemon that needs none.
pub struct NoHooks;

impl<O: Os> Hooks<O> for NoHooks {}

/// Why a daemon could not start. Nothing is left behind when one is
/// returned: no pid file, socket file, shared memory or child process.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The process cannot become this daemon: it runs threads (forking
    /// one is undefined behaviour), or it could not detach.
    Process(String),
    /// Another instance holds the pid file.
    AlreadyRunning(Option<i32>),
    /// The pid file could not be opened, locked or written.
    PidFile(PathBuf, io::Error),
    /// The pid file is locked, but not by the daemon it names.
    PidFileLockedByOther(PathBuf, Option<i32>),
    /// What is at the pid file's path is not a file this daemon may use
    /// (a symbolic link, another user's file, ...); it was left untouched.
    PidFileUnsafe(PathBuf, String),
    /// The tcp token could not be read or made.
    Token(PathBuf, io::Error),
    /// The configuration would open the control plane wider than allowed:
    /// tcp on a non-loopback address without a token.
    Insecure(String),
    /// More worker processes are configured than `Config::max_workers`.
    TooManyWorkers {
        /// The processes the workers would run.
        configured: usize,
        /// The cap.
        max: usize,
    },
    /// Something that is not a stale socket is at the unix socket's path;
    /// it was left untouched.
    SocketPathTaken(PathBuf),
    /// The signal handlers could not be installed.
    Signals(io::Error),
    /// A live daemon answers on the unix socket.
    AddressAnswers(Address),
    /// Binding or listening failed.
    Listen(Address, io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Process(why) => f.write_str(why),
            StartError::AlreadyRunning(Some(pid)) => write!(f, "already running (pid {pid})"),
            StartError::AlreadyRunning(None) => write!(f, "already running"),
            StartError::PidFile(path, e) => write!(f, "pid file {}: {}", path.display(), short_io(e)),
            StartError::PidFileLockedByOther(path, Some(pid)) => write!(
                f,
                "pid file {}: locked by another process (the pid it names, {pid}, is not running)",
                path.display()
            ),
            StartError::PidFileLockedByOther(path, None) => {
                write!(f, "pid file {}: locked by another process", path.display())
            }
            StartError::PidFileUnsafe(path, why) => write!(f, "pid file {}: {why}", path.display()),
            StartError::Token(path, e) => write!(f, "token file {}: {}", path.display(), short_io(e)),
            StartError::Insecure(why) => f.write_str(why),
            StartError::TooManyWorkers { configured, max } => {
                write!(f, "{configured} worker processes configured: at most {max} (max workers)")
            }
            StartError::SocketPathTaken(path) => {
                write!(f, "bind unix://{}: something that is not a socket is in the way", path.display())
            }
            StartError::Signals(e) => write!(f, "install signal handlers: {}", short_io(e)),
            StartError::AddressAnswers(a) => write!(f, "bind {a}: another daemon answers there"),
            StartError::Listen(a, e) => write!(f, "bind {a}: {}", short_io(e)),
        }
    }
}

impl std::error::Error for StartError {}

/// An io::Error's message, lowercase and without the "(os error N)" tail.
pub fn short_io(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().collect::<String>() + c.as_str(),
        None => s,
    }
}
