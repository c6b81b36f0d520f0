//! The real operating system, on nix and signal-hook.
//!
//! `RealOs` is where forkd's system calls are made, and it makes them
//! plainly: each `Os` method is one call or a short sequence of them,
//! with no policy of its own, so that what the simulation models is what the
//! kernel does. The pieces live in one file per job:
//!
//! - `sys`: the `syscall!` macro and `retry`, the one place where `EINTR` is
//!   retried and a failure becomes an `io::Error`;
//! - `process`: fork, reap, kill and the calls that shape a process;
//! - `signals`: handlers that only record a signal and wake a self-pipe;
//! - `net`, `io`: sockets, reads, writes and `poll`;
//! - `memory`: anonymous shared mappings;
//! - `files`: the pid file;
//! - `time`: the monotonic clock.
//!
//! Descriptors are plain numbers (`Fd`) that the caller owns and closes;
//! `RealOs` owns only its signal pipe. Forking is refused in a process with
//! several threads (see `process`), which is why [`thread_count`] is public:
//! a daemon checks it before it starts anything.

#[macro_use]
mod sys;
mod files;
mod io;
mod isolated;
mod memory;
mod net;
mod process;
mod signals;
mod time;

use std::path::Path;

pub use isolated::isolated;
pub use process::thread_count;

use crate::{
    Address, Entry, ExitStatus, Fd, Instant, KillTarget, ListenOptions, Os, Pid, PidFileError, PollFd, Region, Signal,
    SignalSet, SpawnOptions,
};
use signals::SignalPipe;

/// The `Os` of a real process.
pub struct RealOs {
    /// `getpid`, cached; a spawned child refreshes its own.
    pid: Pid,
    /// Made by the first `install_signals`; a spawned child starts without.
    signals: Option<SignalPipe>,
}

impl RealOs {
    pub fn new() -> std::io::Result<RealOs> {
        Ok(RealOs { pid: Pid(nix::unistd::getpid().as_raw()), signals: None })
    }
}

impl std::fmt::Debug for RealOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealOs")
            .field("pid", &self.pid)
            .field("signal_fd", &self.signals.as_ref().map(SignalPipe::fd))
            .finish()
    }
}

impl Os for RealOs {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn parent_pid(&self) -> Pid {
        Pid(nix::unistd::getppid().as_raw())
    }

    fn now(&self) -> Instant {
        time::now()
    }

    fn sleep_until(&mut self, deadline: Instant) {
        time::sleep_until(deadline)
    }

    fn spawn(&mut self, opts: SpawnOptions, entry: Entry<Self>) -> std::io::Result<Pid> {
        process::spawn(self, opts, entry)
    }

    fn try_reap(&mut self) -> std::io::Result<Option<(Pid, ExitStatus)>> {
        process::try_reap()
    }

    fn kill(&mut self, target: KillTarget, signal: Signal) -> std::io::Result<()> {
        process::kill(target, signal)
    }

    fn setsid(&mut self) -> std::io::Result<()> {
        process::setsid()
    }

    fn set_niceness(&mut self, niceness: i32) -> std::io::Result<()> {
        process::set_niceness(niceness)
    }

    fn set_parent_death_signal(&mut self, signal: Signal) -> std::io::Result<()> {
        process::set_parent_death_signal(signal)
    }

    fn install_signals(&mut self, signals: &[Signal]) -> std::io::Result<Fd> {
        let pipe = match &mut self.signals {
            Some(pipe) => pipe,
            none => none.insert(SignalPipe::new()?),
        };
        pipe.install(signals)?;
        Ok(pipe.fd())
    }

    fn take_signals(&mut self) -> std::io::Result<SignalSet> {
        match &mut self.signals {
            Some(pipe) => pipe.take(),
            None => Ok(SignalSet::EMPTY),
        }
    }

    fn listen(&mut self, addr: &Address, opts: ListenOptions) -> std::io::Result<Fd> {
        net::listen(addr, opts)
    }

    fn accept(&mut self, listener: Fd) -> std::io::Result<Fd> {
        net::accept(listener)
    }

    fn connect(&mut self, addr: &Address) -> std::io::Result<Fd> {
        net::connect(addr)
    }

    fn socket_pair(&mut self) -> std::io::Result<(Fd, Fd)> {
        net::socket_pair()
    }

    fn read(&mut self, fd: Fd, buf: &mut [u8]) -> std::io::Result<usize> {
        io::read(fd, buf)
    }

    fn write(&mut self, fd: Fd, buf: &[u8]) -> std::io::Result<usize> {
        io::write(fd, buf)
    }

    fn close(&mut self, fd: Fd) {
        // The signal pipe is the Os's own: closing it uninstalls the
        // handlers (as in the simulation), and its owner closes the fds.
        if self.signals.as_ref().is_some_and(|s| s.fd() == fd) {
            self.signals = None;
            return;
        }
        io::close(fd)
    }

    fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> std::io::Result<usize> {
        io::poll(fds, io::timeout_millis(self.now(), deadline))
    }

    fn shm_create(&mut self, len: usize) -> std::io::Result<Region> {
        memory::create(len)
    }

    fn shm_unmap(&mut self, region: Region) {
        memory::unmap(region)
    }

    fn shm_keep_from_children(&mut self, region: &Region) -> std::io::Result<()> {
        memory::keep_from_children(region)
    }

    fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError> {
        files::lock_pid_file(path, self.pid)
    }

    fn remove_file(&mut self, path: &Path) -> std::io::Result<()> {
        files::remove_file(path)
    }

    fn file_exists(&self, path: &Path) -> bool {
        files::file_exists(path)
    }
}
