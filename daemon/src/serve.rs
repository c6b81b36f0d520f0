//! Serving a built daemon: in the foreground, or detached with `-d`'s
//! launcher, with systemd's notifications, socket activation and watchdog
//! when the environment asks for them.
//!
//! Generic over the `Os`, so that the simulation runs this very code
//! (`forkd::testing::serve`): `-d` and systemd are tested on every seed.

use std::time::Duration;

use forkd_core::daemon::{Daemon, Hooks, StartError, Stopped};
use forkd_os::real::RealOs;
use forkd_os::{Fd, Os};

use crate::daemonize::{self, Readiness};
use crate::{logger, systemd};

/// Whether the daemon runs where it was started, or detached (`-d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the foreground (`-f`), as under systemd.
    Foreground,
    /// Detached, once the launcher has been told the daemon is ready.
    Detached,
}

/// A start that failed, and whether its error was already reported (to
/// the launcher of `-d`, which prints it).
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: StartError,
    /// Whether the launcher was told.
    pub reported: bool,
}

/// The facade's part of the loop: readiness for the launcher of `-d`,
/// systemd notifications, log reopening.
struct FacadeHooks {
    readiness: Option<Readiness>,
    watchdog: Option<Duration>,
    /// A new master of an upgrade: systemd learns its pid before it is
    /// told ready (`NotifyAccess=all`).
    upgraded: bool,
}

impl<O: Os> Hooks<O> for FacadeHooks {
    fn ready(&mut self, os: &mut O) {
        log::info!("ready");
        if let Some(r) = &mut self.readiness {
            r.ready(os);
        }
        if self.upgraded {
            systemd::notify(os, &format!("MAINPID={}", os.pid()));
        }
        systemd::notify(os, "READY=1");
    }

    fn stopping(&mut self, os: &mut O) {
        systemd::notify(os, "STOPPING=1");
    }

    fn handing_over(&mut self, os: &mut O, new: forkd_os::Pid) {
        systemd::notify(os, &format!("MAINPID={new}"));
    }

    fn stopped(&mut self, _os: &mut O) {
        log::info!("stopped");
    }

    fn reopen_log(&mut self, _os: &mut O) {
        logger::reopen();
    }

    fn keepalive_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn keepalive(&mut self, os: &mut O) {
        systemd::notify(os, "WATCHDOG=1");
    }

    fn private_fds(&self) -> Vec<Fd> {
        self.readiness.as_ref().and_then(Readiness::fd).into_iter().collect()
    }
}

/// The exit code a binary ends with after `serve`, and what it says on
/// stderr: 0 once stopped cleanly; 1 if it could not start (said here,
/// unless the launcher said it) or a failure stopped it (said in the log).
pub fn exit_code(result: &Result<Stopped, Failed>) -> (u8, Option<String>) {
    match result {
        Ok(Stopped { failure: Some(why), .. }) => {
            // A service manager restarting on failure must see one.
            log::error!("stopped: {why}");
            (1, None)
        }
        Ok(_) => (0, None),
        Err(Failed { reported: true, .. }) => (1, None),
        Err(Failed { error, .. }) => (1, Some(format!("error: {error}\n"))),
    }
}

/// Serves on the real operating system: refuses a process that already
/// runs threads, and restricts the umask before anything is created.
pub(crate) fn serve_real(daemon: Daemon, mode: Mode) -> Result<Stopped, Failed> {
    let unreported = |error| Failed { error, reported: false };
    // A process that already runs threads cannot fork safely.
    if let Ok(n) = forkd_os::real::thread_count() {
        if n > 1 {
            let why = format!("the process has {n} threads: run the daemon before starting any thread");
            return Err(unreported(StartError::Process(why)));
        }
    }
    let mut os = RealOs::new().map_err(|e| unreported(StartError::Process(format!("{e}"))))?;
    // What an upgrade executes, resolved now: the directory it was
    // started in, before `-d` moves to `/`.
    let mut daemon = daemon;
    if let Ok(cwd) = crate::upgrade::start_dir() {
        daemon.config.upgrade = crate::upgrade::command(&cwd);
    }
    // Before anything is created, in the foreground as under -d: nothing
    // the daemon creates is for others.
    daemonize::restrict_umask(&mut os);
    serve(&mut os, daemon, mode)
}

/// Runs `daemon` on `os`, detached or not. Returns in the daemon once it
/// has stopped (the launcher of `-d` exits inside, with its verdict); a
/// start that fails under `-d` is reported to the launcher too.
pub fn serve<O: Os>(os: &mut O, mut daemon: Daemon, mode: Mode) -> Result<Stopped, Failed> {
    // A new master, executed by the old one: detached already if it was
    // (`-d` forks no more), with its predecessor's socket and lock.
    let handed_over = crate::upgrade::handed_over(os)
        .map_err(|e| Failed { error: StartError::Process(format!("take over: {e}")), reported: false })?;
    let upgraded = handed_over.is_some();
    daemon.config.handed_over = handed_over;
    let readiness = match mode {
        _ if upgraded => None,
        Mode::Foreground => None,
        Mode::Detached => match daemonize::daemonize(os) {
            Ok(r) => Some(r),
            Err(e) => return Err(Failed { error: StartError::Process(format!("daemonize: {e}")), reported: false }),
        },
    };
    let mut hooks = FacadeHooks { readiness, watchdog: None, upgraded };
    daemon.config.listen_fd = systemd::activated_listener(os);
    hooks.watchdog = systemd::watchdog_interval(os);
    log::debug!("starting {} on {}", daemon.config.description, daemon.config.address);
    let pid = os.pid();
    forkd_core::daemon::run(os, daemon, &mut hooks).map_err(|error| {
        // A worker process never gets here: it exits inside `spawn`.
        debug_assert_eq!(os.pid(), pid);
        let reported = match &mut hooks.readiness {
            Some(r) => {
                log::error!("{error}");
                r.failed(os, &error.to_string());
                true
            }
            None => false,
        };
        Failed { error, reported }
    })
}
