//! The worker process: what a forked worker runs from its first instruction
//! to its exit code.
//!
//! [`run_worker`] is the entry the daemon spawns. It first sheds what the
//! fork copied but the worker must not keep (the daemon's listener, pid
//! file, the other workers' sockets and regions), asks for SIGTERM when the
//! daemon dies and checks that the daemon is still its parent (it may have
//! died before the request), then runs the user's `Worker` through its
//! states: spinup, looping ⇄ paused, spindown, exited. Each change is written
//! to the channel so that the daemon can report it.
//!
//! Between iterations the worker sleeps in one `poll` on its wake-up socket
//! and its signal descriptor, until the body is due or the next heartbeat.
//! The daemon writes a command in the channel and one byte on the socket, so
//! a command is handled at once, not at the next iteration; the worker
//! drains the socket before it reads the mailbox (a byte that comes meanwhile
//! wakes the next poll: nothing is lost), acts, writes the reply, and writes
//! one byte back. The mailbox is also read on every turn, whatever woke the
//! worker, so a wake-up byte that a long loop body's `should_stop` consumed
//! along the way cannot strand a command.
//!
//! Timing: the body is due one looptime after the *start* of the previous
//! iteration, so the time it takes counts in. A body that overran is due at
//! once, but only once: the next one is due a looptime after that late start,
//! so a slow body never queues up catch-up runs. While paused no body runs.
//!
//! The heartbeat (the `Os` clock in the channel) is written on every turn of
//! the loop: after each iteration, each wake-up, and at least every
//! [`HEARTBEAT_INTERVAL`] while idle or paused. Only user code that does not
//! return stops it, which is what the daemon's hang detection is for.
//!
//! Failures, decided here because the seed leaves them open:
//! - `spinup` returning `Err`: recorded as the last error, the process exits
//!   with [`EXIT_SPINUP_FAILED`] without looping and *without* `spindown`
//!   (as a failed constructor has no destructor: spinup cleans up after
//!   itself before it fails);
//! - `work` returning `Err`: recorded as the last error and logged; the loop
//!   goes on (a worker that cannot go on can panic, or return and check
//!   `should_stop`);
//! - `on_message` returning `Err`: that is the reply, nothing more;
//! - a panic in any user call: `panic: MESSAGE` becomes the last error, no
//!   more user code runs (not even `spindown`: the worker's state is unknown)
//!   and the process exits with [`EXIT_PANIC`]. A payload that is not a
//!   panic message (the simulation unwinds a killed process that way) is
//!   passed on at once with `resume_unwind`.
//!
//! A worker stops gracefully, running `spindown` and exiting with
//! [`EXIT_OK`], on a stop command, on SIGTERM or SIGINT, and when its
//! socket reaches end of file (the daemon is gone). SIGHUP and SIGUSR2 are
//! ignored (the daemon's SIGHUP reloads workers by replacing their
//! processes, its SIGUSR2 upgrades the master; a `systemctl kill -s`,
//! which signals every process of the unit, must not kill the workers).

use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use forkd_os::{Fd, Instant, Os, Pid, PollFd, Ready, Signal, SignalSet};
use serde_json::Value;

use super::channel::{Channel, Command, PendingCommand, WorkerState};
use super::context::{Context, Link, WorkerEvent, EVENTS_MAX};
use super::Worker;

/// The exit code after a clean stop (command, signal, or the daemon gone).
pub const EXIT_OK: i32 = 0;
/// The exit code when `spinup` returned `Err`.
pub const EXIT_SPINUP_FAILED: i32 = 1;
/// The exit code when user code panicked (`EX_SOFTWARE`).
pub const EXIT_PANIC: i32 = 70;
/// The exit code when the operating system failed the worker: signals
/// could not be installed, `poll` failed (`EX_OSERR`).
pub const EXIT_OS_ERROR: i32 = 71;

/// The longest a worker that is not running user code goes without a
/// heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Everything a worker process starts with, moved into its entry.
pub struct WorkerProcess {
    /// The worker's name, as installed (the process title and the log use it).
    pub name: String,
    /// Index in the worker's pool.
    pub instance: u32,
    /// How often the body runs, its own duration included. Zero runs it
    /// back to back, still handling commands between iterations.
    pub looptime: Duration,
    /// The user's worker: its spinup, body and spindown run in this process.
    pub worker: Box<dyn Worker>,
    /// The shared-memory channel to the daemon: state, heartbeat, commands,
    /// replies and events.
    pub channel: Channel,
    /// The worker's end of its socket pair; the daemon holds the other.
    pub wake: Fd,
    /// The daemon's pid: the parent the worker expects.
    pub daemon_pid: Pid,
    /// Descriptors inherited from the daemon that the worker closes first:
    /// the listener, the pid file, the daemon's end of the socket pair,
    /// other workers' sockets. Not the daemon's signal descriptor: the `Os`
    /// already closed it in the child.
    pub close_fds: Vec<Fd>,
    /// Reopens the process's log file; called on SIGUSR1, which the daemon
    /// passes on to its workers when it reopens its own (logrotate).
    pub reopen_log: Option<fn()>,
}

/// Runs a worker process to its end and returns its exit code. The entry
/// of a spawned worker: `os.spawn(opts, Box::new(move |os| run_worker(os, p)))`.
pub fn run_worker<O: Os>(os: &mut O, spec: WorkerProcess) -> i32 {
    let WorkerProcess { name, instance, looptime, worker, channel, wake, daemon_pid, close_fds, reopen_log } = spec;
    os.close_all(&close_fds);
    let target = format!("worker.{name}");
    let code = match start(os, &target, &channel, daemon_pid) {
        Ok(signal_fd) => {
            let mut runner = Runner {
                os: &mut *os,
                name,
                instance,
                target,
                looptime,
                worker,
                channel: channel.clone(),
                wake,
                signal_fd,
                signals: SignalSet::EMPTY,
                loops: 0,
                state: WorkerState::Spinup,
                events: Vec::new(),
                stop: None,
                daemon_gone: false,
                notify: false,
                reopen_log,
            };
            runner.run()
        }
        Err(code) => code,
    };
    os.close(wake);
    // Safety: the runner and its clone of the channel are gone; this is the
    // worker's last handle.
    unsafe { os.shm_unmap(channel.into_region()) };
    code
}

/// Takes the daemon's death in hand and installs the signals; `Err` is the
/// exit code when the worker must not go on.
fn start<O: Os>(os: &mut O, target: &str, channel: &Channel, daemon_pid: Pid) -> Result<Fd, i32> {
    channel.beat(os.now());
    if let Err(e) = os.set_parent_death_signal(Signal::Term) {
        // Not fatal: the end of file on the socket tells the same, later.
        log::warn!(target: target, "parent death signal: {e}");
    }
    if os.parent_pid() != daemon_pid {
        log::info!(target: target, "daemon {daemon_pid} gone before the worker started");
        channel.set_state(WorkerState::Exited);
        return Err(EXIT_OK);
    }
    match os.install_signals(&[Signal::Term, Signal::Int, Signal::Hup, Signal::Usr1, Signal::Usr2]) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let msg = format!("install signals: {e}");
            log::error!(target: target, "{msg}");
            channel.set_last_error(&msg);
            channel.set_state(WorkerState::Exited);
            Err(EXIT_OS_ERROR)
        }
    }
}

/// Why a worker stops.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stop {
    Command,
    Signal(Signal),
    DaemonGone,
    OsError(String),
}

/// A panic in user code, with its message.
struct Panicked(String);

struct Runner<'o, O: Os> {
    os: &'o mut O,
    name: String,
    instance: u32,
    target: String,
    looptime: Duration,
    worker: Box<dyn Worker>,
    channel: Channel,
    wake: Fd,
    signal_fd: Fd,
    /// Signals taken from the `Os` and not yet acted on.
    signals: SignalSet,
    loops: u64,
    state: WorkerState,
    /// Events for the next user call.
    events: Vec<WorkerEvent>,
    stop: Option<Stop>,
    daemon_gone: bool,
    /// The daemon should be woken at the end of this turn: a reply or a
    /// state change to see.
    notify: bool,
    reopen_log: Option<fn()>,
}

impl<O: Os> Runner<'_, O> {
    fn run(&mut self) -> i32 {
        self.enter(WorkerState::Spinup);
        match self.call(|w, ctx| w.spinup(ctx).map_err(|e| e.to_string())) {
            Err(p) => return self.panicked(p),
            Ok(Err(e)) => {
                log::error!(target: &self.target, "spinup failed: {e}");
                self.channel.set_last_error(&e);
                self.enter(WorkerState::Exited);
                return EXIT_SPINUP_FAILED;
            }
            Ok(Ok(())) => {}
        }
        // Ready (if `spinup` did not say so already with `Context::ready`):
        // the first loop begins, the state written first so that a daemon
        // that reads ready reads looping too. Readiness is a byte on the
        // socket: the daemon learns at once that spinup is over.
        self.enter(WorkerState::Looping);
        self.channel.set_ready();
        self.notify = true;
        if let Err(p) = self.main_loop() {
            return self.panicked(p);
        }
        if let Err(p) = self.call(|w, ctx| w.spindown(ctx)) {
            return self.panicked(p);
        }
        self.enter(WorkerState::Exited);
        match self.stop {
            Some(Stop::OsError(_)) => EXIT_OS_ERROR,
            Some(Stop::Command | Stop::Signal(_) | Stop::DaemonGone) | None => EXIT_OK,
        }
    }

    /// Turns until the worker must stop. Each turn: act on what came in,
    /// tell the daemon, run the body if it is due, wait.
    fn main_loop(&mut self) -> Result<(), Panicked> {
        let mut due = self.os.now();
        loop {
            self.take_in()?;
            self.channel.beat(self.os.now());
            if self.notify {
                self.notify = false;
                self.wake_daemon();
            }
            if self.stop.is_some() {
                return Ok(());
            }
            let now = self.os.now();
            let paused_runs =
                crate::planted::active(crate::planted::Bug::PausedRuns) && self.state == WorkerState::Paused;
            if (self.state == WorkerState::Looping || paused_runs) && now >= due {
                due = now + self.looptime;
                self.run_body()?;
                self.channel.beat(self.os.now());
            }
            let next_beat = self.os.now() + HEARTBEAT_INTERVAL;
            let deadline = match self.state {
                WorkerState::Looping => due.min(next_beat),
                WorkerState::Paused | WorkerState::Spinup | WorkerState::Spindown | WorkerState::Exited => next_beat,
            };
            self.wait(deadline);
        }
    }

    /// Waits in `poll` until a wake-up byte, a signal, or `deadline` (which
    /// may have passed: then it only looks).
    fn wait(&mut self, deadline: Instant) {
        let mut fds = [PollFd::new(self.wake, Ready::READ), PollFd::new(self.signal_fd, Ready::READ)];
        if let Err(e) = self.os.poll(&mut fds, Some(deadline)) {
            self.stop_with(Stop::OsError(format!("poll: {e}")));
            return;
        }
        if !fds[1].ready.is_empty() {
            self.take_signals();
        }
        if !fds[0].ready.is_empty() {
            self.drain_wake();
        }
    }

    /// Acts on the signals taken and the command in the mailbox.
    fn take_in(&mut self) -> Result<(), Panicked> {
        for signal in std::mem::take(&mut self.signals).iter() {
            match signal {
                Signal::Term | Signal::Int => self.stop_with(Stop::Signal(signal)),
                Signal::Usr1 => {
                    if let Some(reopen) = self.reopen_log {
                        reopen();
                    }
                }
                other => log::info!(target: &self.target, "ignoring {other}"),
            }
        }
        // A stopping worker answers no more commands: the daemon sees it exit.
        if self.stop.is_some() {
            return Ok(());
        }
        match self.channel.read_command() {
            Ok(None) => Ok(()),
            Ok(Some(PendingCommand { seq, command })) => self.handle_command(seq, command),
            Err(e) => {
                // Torn: the daemon is mid-write; its wake-up byte follows.
                log::warn!(target: &self.target, "mailbox: {e}");
                Ok(())
            }
        }
    }

    fn handle_command(
        &mut self,
        seq: u64,
        command: Result<Command, super::channel::ChannelError>,
    ) -> Result<(), Panicked> {
        let command = match command {
            Ok(c) => c,
            Err(e) => {
                log::warn!(target: &self.target, "bad command {seq}: {e}");
                self.reply(seq, Err(format!("bad command: {e}")));
                return Ok(());
            }
        };
        log::debug!(target: &self.target, "command {seq}: {}", command.name());
        let result = match (self.state, command) {
            (WorkerState::Looping, Command::Pause) => {
                self.push_event(WorkerEvent::Pause);
                self.enter(WorkerState::Paused);
                Ok(Value::Null)
            }
            (WorkerState::Paused, Command::Resume) => {
                self.push_event(WorkerEvent::Resume);
                self.enter(WorkerState::Looping);
                Ok(Value::Null)
            }
            // Already there: nothing to do, and nothing went wrong.
            (WorkerState::Paused, Command::Pause) | (WorkerState::Looping, Command::Resume) => Ok(Value::Null),
            (WorkerState::Looping | WorkerState::Paused, Command::Stop) => {
                self.stop_with(Stop::Command);
                Ok(Value::Null)
            }
            (WorkerState::Looping | WorkerState::Paused, Command::Message(msg)) => {
                self.push_event(WorkerEvent::Message);
                self.call(|w, ctx| w.on_message(ctx, msg).map_err(|e| e.to_string()))?
            }
            // Commands are only read in the loop, after spinup and before
            // spindown.
            (WorkerState::Spinup | WorkerState::Spindown | WorkerState::Exited, c) => {
                Err(format!("cannot {} while {}", c.name(), self.state))
            }
        };
        self.reply(seq, result);
        Ok(())
    }

    fn reply(&mut self, seq: u64, result: Result<Value, String>) {
        self.channel.write_reply(seq, &result);
        self.notify = true;
    }

    fn run_body(&mut self) -> Result<(), Panicked> {
        self.push_event(WorkerEvent::LoopStart);
        let result = self.call(|w, ctx| w.work(ctx).map_err(|e| e.to_string()))?;
        self.loops += 1;
        self.channel.set_loops(self.loops);
        self.push_event(WorkerEvent::LoopStop);
        if let Err(e) = result {
            log::warn!(target: &self.target, "loop {}: {e}", self.loops);
            self.channel.set_last_error(&e);
        }
        Ok(())
    }

    /// Decides to stop (the first reason wins) and says so in the channel.
    fn stop_with(&mut self, why: Stop) {
        if self.stop.is_some() {
            return;
        }
        log::info!(target: &self.target, "stopping: {why:?}");
        self.push_event(WorkerEvent::Stop);
        self.stop = Some(why);
        self.enter(WorkerState::Spindown);
    }

    fn enter(&mut self, state: WorkerState) {
        if state != self.state {
            self.os.note(format_args!("worker {}.{}: {}", self.name, self.instance, state));
        }
        self.state = state;
        self.channel.set_state(state);
        self.channel.beat(self.os.now());
        self.notify = true;
    }

    fn push_event(&mut self, event: WorkerEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    fn take_signals(&mut self) {
        match self.os.take_signals() {
            Ok(set) => self.signals = self.signals.union(set),
            Err(e) => log::warn!(target: &self.target, "take signals: {e}"),
        }
    }

    /// Reads the wake-up socket empty. End of file, or an error, means the
    /// daemon is gone. Bounded: bytes left over wake the next poll at once.
    fn drain_wake(&mut self) {
        let mut buf = [0u8; 64];
        for _ in 0..64 {
            match self.os.read(self.wake, &mut buf) {
                Ok(0) => return self.daemon_gone(),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!(target: &self.target, "wake-up socket: {e}");
                    return self.daemon_gone();
                }
            }
        }
    }

    fn daemon_gone(&mut self) {
        self.daemon_gone = true;
        self.stop_with(Stop::DaemonGone);
    }

    fn wake_daemon(&mut self) {
        if !self.daemon_gone {
            write_wake_byte(self.os, self.wake, &self.target);
        }
    }

    /// Runs user code with a context, catching its panics.
    fn call<R>(&mut self, f: impl FnOnce(&mut dyn Worker, &mut Context<'_>) -> R) -> Result<R, Panicked> {
        let mut link = OsLink {
            os: &mut *self.os,
            wake: self.wake,
            target: &self.target,
            signals: &mut self.signals,
            daemon_gone: self.daemon_gone,
        };
        let mut ctx = Context {
            name: &self.name,
            instance: self.instance,
            loops: self.loops,
            target: &self.target,
            events: &self.events,
            stopping: self.stop.is_some(),
            channel: &self.channel,
            link: &mut link,
        };
        let worker = &mut *self.worker;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(worker, &mut ctx)));
        let result = match outcome {
            Ok(r) => Ok(r),
            Err(payload) => {
                let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
                    s.to_string()
                } else if let Some(s) = payload.downcast_ref::<String>() {
                    s.clone()
                } else {
                    // Not a panic of user code: a killed simulated process
                    // unwinding. Nothing more may run.
                    panic::resume_unwind(payload)
                };
                Err(Panicked(msg))
            }
        };
        // The user has seen these events.
        self.events.clear();
        result
    }

    fn panicked(&mut self, Panicked(msg): Panicked) -> i32 {
        let msg = format!("panic: {msg}");
        log::error!(target: &self.target, "{msg}");
        self.channel.set_last_error(&msg);
        self.channel.set_state(WorkerState::Exited);
        EXIT_PANIC
    }
}

/// Writes one byte to the daemon. A full socket already holds a byte that
/// will wake it, and a closed one means it is gone: neither is an error.
fn write_wake_byte<O: Os>(os: &mut O, fd: Fd, target: &str) {
    match os.write(fd, &[1]) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::BrokenPipe) => {}
        Err(e) => log::debug!(target: target, "wake daemon: {e}"),
    }
}

/// The `Os` behind a `Context`.
struct OsLink<'a, O: Os> {
    os: &'a mut O,
    wake: Fd,
    target: &'a str,
    signals: &'a mut SignalSet,
    daemon_gone: bool,
}

impl<O: Os> Link for OsLink<'_, O> {
    fn wake_daemon(&mut self) {
        if !self.daemon_gone {
            write_wake_byte(self.os, self.wake, self.target);
        }
    }

    fn stop_signalled(&mut self) -> bool {
        match self.os.take_signals() {
            Ok(set) => *self.signals = self.signals.union(set),
            Err(e) => log::warn!(target: self.target, "take signals: {e}"),
        }
        self.signals.contains(Signal::Term) || self.signals.contains(Signal::Int)
    }

    #[cfg(feature = "testing")]
    fn stall(&mut self, d: Duration) {
        let until = self.os.now() + d;
        self.os.sleep_until(until);
    }
}
