//! The operating-system boundary of forkd.
//!
//! Everything a forkd daemon does to the world — fork, signals, sockets,
//! shared memory, time, the pid file — goes through the [`Os`] trait. Two
//! implementations exist:
//!
//! - [`RealOs`](real::RealOs), on nix and signal-hook, for real daemons;
//! - [`SimOs`](sim::SimOs), an in-memory deterministic world in which every
//!   simulated process runs one at a time, every `Os` call is a point where a
//!   seeded random choice decides who runs next, and time is virtual.
//!
//! The daemon logic in `forkd-core` is generic over `Os` and never calls the
//! kernel itself, so the same code runs for real and in simulation. The
//! `contract` module (with the `testing` feature) pins down the behaviour
//! both implementations share.
//!
//! Conventions of every call:
//! - errors are `std::io::Error`, with the kernel's error kinds: `WouldBlock`
//!   for a non-blocking call that would wait, `BrokenPipe` for a write to a
//!   closed peer, `AddrInUse`, `ConnectionRefused`, `NotFound` and so on;
//! - `EINTR` never escapes: calls retry it, except `poll`, which returns
//!   early with no descriptor ready so that the caller looks at its signals;
//! - descriptors are non-blocking and close-on-exec.

#![deny(missing_docs)]

pub mod addr;
#[cfg(feature = "testing")]
pub mod contract;
pub mod real;
pub mod rng;
pub mod shm;
pub mod sim;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use std::io;
use std::path::Path;

pub use addr::{Address, AddressError};
pub use shm::Region;
pub use types::*;

/// The function a spawned child runs. It owns everything it captures — a real
/// fork copies the parent, so nothing may be shared with it by reference —
/// and its return value is the child's exit code.
pub type Entry<O> = Box<dyn FnOnce(&mut O) -> i32 + Send + 'static>;

/// Everything forkd asks of the operating system.
pub trait Os: Sized + 'static {
    // --- identity and time -------------------------------------------------

    /// The calling process's id.
    fn pid(&self) -> Pid;

    /// The calling process's parent (1, or the simulation's init, once the
    /// parent is gone).
    fn parent_pid(&self) -> Pid;

    /// The monotonic clock.
    fn now(&self) -> Instant;

    /// Blocks until `deadline` has passed. Signals do not shorten it.
    fn sleep_until(&mut self, deadline: Instant);

    // --- processes ---------------------------------------------------------

    /// Forks a child that runs `entry` and exits with what it returns (101 if
    /// it panics). The child inherits the parent's descriptors and shared
    /// regions. Signals are blocked across the fork, and the child resets
    /// every handler the parent installed to its default before unblocking.
    ///
    /// Fails with `Other` if the calling process has several threads: forking
    /// one of those is undefined behaviour in everything but the simplest
    /// child.
    fn spawn(&mut self, opts: SpawnOptions, entry: Entry<Self>) -> io::Result<Pid>;

    /// Forks a child that executes `spec.program` (read from disk now, so a
    /// newly installed build is what runs) with `spec.args`, the caller's
    /// environment changed by `spec.env_set` and `spec.env_unset`, and
    /// only the descriptors of `spec.fds`, under their new numbers. The
    /// child's signals are back to their defaults and unblocked before the
    /// exec; it stays in the caller's process group and session. Everything
    /// is prepared before the fork: the child only moves descriptors, fills
    /// in `LISTEN_PID` if asked, and executes. A program that cannot be
    /// executed makes the child exit 127, as a shell's does.
    ///
    /// Fails with `Other` if the calling process has several threads.
    fn spawn_exec(&mut self, spec: &ExecSpec) -> io::Result<Pid>;

    /// Reaps one exited child without blocking (`waitpid(-1, WNOHANG)`):
    /// `Ok(None)` when no child has exited. Call it until `None` after a
    /// `SIGCHLD`: several exits may have raised one signal.
    fn try_reap(&mut self) -> io::Result<Option<(Pid, ExitStatus)>>;

    /// Sends `signal` to a process or a process group.
    fn kill(&mut self, target: KillTarget, signal: Signal) -> io::Result<()>;

    /// Waits until the process `pid` is gone or `deadline` passes, and says
    /// whether it is gone. Any process may be waited for, not only a child;
    /// one that has exited but is not yet reaped (a zombie) counts as gone.
    /// The real kernel is asked through a pidfd, which polls readable when
    /// the process exits; a kernel without pidfds is asked with `kill(pid,
    /// 0)` every few milliseconds instead. A signal does not end the wait.
    fn wait_gone(&mut self, pid: Pid, deadline: Instant) -> io::Result<bool>;

    /// Detaches the calling process as a daemon, by the classic double
    /// fork: the caller's work goes on in a new process, a grandchild in a
    /// session of its own that it does not lead (so it can never reacquire
    /// a controlling terminal) and that init adopts; `detach` returns `Ok`
    /// there. The process that called it runs `launcher` instead, once the
    /// first child is reaped, and exits with what `launcher` returns (101
    /// if it panics): the launcher typically waits on a pipe made before
    /// for the daemon to say whether it started. Both sides keep the
    /// caller's descriptors.
    ///
    /// Call it early, with one thread and no children, regions or signal
    /// handlers yet. Fails, changing nothing, if the first fork fails.
    fn detach(&mut self, launcher: Entry<Self>) -> io::Result<()>;

    /// Closes every descriptor above 2 but `keep`: what a detached daemon
    /// does, so that it holds nothing of its launcher's (a pipe that its
    /// caller reads to end of file, say). Nothing fails: a descriptor that
    /// will not close is left.
    fn close_inherited(&mut self, keep: &[Fd]);

    /// Makes the calling process a session leader (`setsid`).
    fn setsid(&mut self) -> io::Result<()>;

    /// Sets the calling process's umask, the bits taken from the mode of
    /// every file it creates from now on, and returns the previous one.
    fn set_umask(&mut self, umask: u32) -> u32;

    /// Moves the calling process to `/`, so that a daemon keeps no
    /// directory busy. The simulation has no working directory: it only
    /// records the call.
    fn chdir_root(&mut self) -> io::Result<()>;

    /// Points descriptors 0, 1 and 2 at `/dev/null`. They are never left
    /// closed, or the next descriptor opened would become someone's
    /// standard output. The simulation has no standard descriptors: it
    /// only records the call.
    fn redirect_stdio_to_null(&mut self) -> io::Result<()>;

    /// Sets the calling process's niceness.
    fn set_niceness(&mut self, niceness: i32) -> io::Result<()>;

    /// Asks for `signal` when the parent dies (`PR_SET_PDEATHSIG`). Callers
    /// then compare `parent_pid` with the parent they expect, to close the
    /// race with a parent that died before the call.
    fn set_parent_death_signal(&mut self, signal: Signal) -> io::Result<()>;

    // --- signals -----------------------------------------------------------

    /// Installs handlers for `signals` that only record them and wake the
    /// returned descriptor, which polls readable while any is pending.
    /// Signals not installed keep their default disposition, except SIGPIPE,
    /// which is ignored so that writes to a closed peer fail with
    /// `BrokenPipe`.
    fn install_signals(&mut self, signals: &[Signal]) -> io::Result<Fd>;

    /// Drains the wake-up descriptor, then returns and clears the pending
    /// signals. Draining first means a signal that arrives meanwhile is
    /// either in the set or wakes the next poll: none is lost.
    fn take_signals(&mut self) -> io::Result<SignalSet>;

    // --- sockets -----------------------------------------------------------

    /// Binds and listens. A unix socket file is created with
    /// `opts.unix_mode`; an existing file at the path is `AddrInUse`.
    fn listen(&mut self, addr: &Address, opts: ListenOptions) -> io::Result<Fd>;

    /// Accepts one connection, `WouldBlock` if none waits.
    fn accept(&mut self, listener: Fd) -> io::Result<Fd>;

    /// Connects (blocking for the connection itself) and returns a
    /// non-blocking stream.
    fn connect(&mut self, addr: &Address) -> io::Result<Fd>;

    /// A connected pair of unix stream sockets.
    fn socket_pair(&mut self) -> io::Result<(Fd, Fd)>;

    /// A pipe: `(read end, write end)`. The reader sees end of file once
    /// every copy of the write end is closed, in every process that
    /// inherited one (a daemon's readiness pipe tells its launcher so that
    /// it died before it was ready). The simulation models a pipe as a
    /// stream pair used one way.
    fn pipe(&mut self) -> io::Result<(Fd, Fd)>;

    /// Non-blocking read; `Ok(0)` is end of file.
    fn read(&mut self, fd: Fd, buf: &mut [u8]) -> io::Result<usize>;

    /// Non-blocking write; may write less than `buf`. A write to a stream
    /// whose peer has closed is `BrokenPipe` (never a `SIGPIPE`).
    fn write(&mut self, fd: Fd, buf: &[u8]) -> io::Result<usize>;

    /// Closes a descriptor. Only descriptors this `Os` handed out (or, for
    /// the real one, was given with `RealOs::adopt`) are closed: closing
    /// any other, or one already closed, is a programmer error in the caller
    /// and is ignored here, so that it cannot close a descriptor something
    /// else holds. Closing the signal descriptor uninstalls the handlers
    /// `install_signals` installed.
    fn close(&mut self, fd: Fd);

    /// Closes each of `fds`, as [`Os::close`] would one by one. The real
    /// arm closes each run of consecutive numbers in one `close_range`
    /// call: a worker forked by a daemon of a thousand workers closes the
    /// thousand descriptors it inherited in a few calls.
    fn close_all(&mut self, fds: &[Fd]) {
        for &fd in fds {
            self.close(fd);
        }
    }

    /// Waits until one of `fds` is ready or `deadline` passes (`None`: no
    /// deadline), and returns how many are ready. A signal may end the wait
    /// early with none ready.
    fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<usize>;

    // --- shared memory -----------------------------------------------------

    /// Creates an anonymous shared region of at least `len` bytes, zeroed,
    /// which children spawned afterwards inherit.
    fn shm_create(&mut self, len: usize) -> io::Result<Region>;

    /// Unmaps a region from the calling process.
    ///
    /// # Safety
    /// No other handle to the region may be used afterwards in this process:
    /// not a clone of `region`, not a structure that keeps one (a channel
    /// laid out on it). With a real mapping such a handle would read and
    /// write unmapped memory, or whatever the kernel maps there next.
    unsafe fn shm_unmap(&mut self, region: Region);

    /// Keeps a region out of the children spawned from now on
    /// (`MADV_DONTFORK`): a daemon shares each worker's region with that
    /// worker alone, and a fork copies no mapping it does not need.
    fn shm_keep_from_children(&mut self, region: &Region) -> io::Result<()>;

    /// Zeroes `region` (a whole region or a [`Region::slice`] of one, on
    /// page boundaries) for every process that maps it, and frees the
    /// memory behind it (`MADV_REMOVE`): a part of a shared mapping that
    /// served one worker is made fresh for the next, and is resident in
    /// nobody until someone touches it again.
    fn shm_discard(&mut self, region: &Region) -> io::Result<()>;

    // --- files -------------------------------------------------------------

    /// Opens (creating if need be, mode 0600) and exclusively locks the pid
    /// file, then writes the caller's pid into it. It never truncates a file
    /// whose lock it did not get. The lock lives as long as the returned
    /// descriptor.
    ///
    /// What is at the path is judged first, without following a symbolic
    /// link, and refused untouched with [`PidFileError::Unsafe`] when it is
    /// a link, not a regular file, another user's than [`Os::uid`], or has
    /// several hard links. A file of ours that group or others may read is
    /// made 0600. A held lock is [`PidFileError::Locked`] when the pid the
    /// file names runs, [`PidFileError::LockedByOther`] when it does not.
    fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError>;

    /// Writes `pid` into the pid file whose lock `lock` holds (what
    /// [`Os::lock_pid_file`] returned, or a copy of it a new master was
    /// handed), replacing what it said. The lock is untouched.
    fn rewrite_pid_file(&mut self, lock: Fd, pid: Pid) -> io::Result<()>;

    /// Removes a file or a unix socket file.
    fn remove_file(&mut self, path: &Path) -> io::Result<()>;

    /// Whether something exists at `path`.
    fn file_exists(&self, path: &Path) -> bool;

    /// What is at `path`, without following a symbolic link; `None` when
    /// nothing is.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;

    /// Reads a small file that must be private to the caller: `Ok(None)` when
    /// nothing is at `path`; an error (`PermissionDenied`, with a message
    /// saying why) when it is a symbolic link, not a regular file, owned by
    /// another user than [`Os::uid`], readable or writable by group or
    /// others, or hard-linked. At most `limit` bytes are read (`InvalidData` past it).
    fn read_private_file(&mut self, path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>>;

    /// Creates a new file of mode 0600 holding `data` (`O_CREAT | O_EXCL |
    /// O_NOFOLLOW`): `AlreadyExists` when anything is at `path`, a dangling
    /// symbolic link included. A file that could not be written whole is
    /// removed again.
    fn write_private_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;

    // --- what the process was handed --------------------------------------

    /// The value of an environment variable of the calling process, `None`
    /// when it is unset. The simulation's processes all see the world's
    /// environment, [`sim::Config::env`].
    fn env_var(&self, name: &str) -> Option<std::ffi::OsString>;

    /// Removes an environment variable from the calling process, and so
    /// from the children it spawns afterwards: what a service manager or an
    /// old master handed over (`LISTEN_FDS`, `FORKD_UPGRADE`) is taken, then
    /// dropped, so that no worker and nothing a worker starts mistakes it
    /// for its own. Call it while the process has one thread (a daemon's
    /// master has), as `setenv(3)` wants.
    fn remove_env(&mut self, name: &str);

    /// Takes a descriptor the process was handed at start (a service
    /// manager's listening socket): makes it non-blocking and close-on-exec,
    /// and this `Os`'s own to close. `EBADF` when no such descriptor is open.
    fn take_inherited(&mut self, fd: Fd) -> io::Result<Fd>;

    /// Sends one datagram on a fresh unbound unix datagram socket to `to`: a
    /// socket file's path, or with a leading `@` an abstract name (the
    /// convention of systemd's `NOTIFY_SOCKET`). The simulation has no
    /// datagram sockets: it keeps every datagram sent in the trace and in
    /// [`sim::Report::datagrams`], and never fails.
    fn send_datagram(&mut self, to: &std::ffi::OsStr, data: &[u8]) -> io::Result<()>;

    // --- identity of peers -------------------------------------------------

    /// The calling process's effective user id.
    fn uid(&self) -> u32;

    /// Who is at the other end of an accepted or connected stream: the
    /// credentials the kernel recorded at connect time (`SO_PEERCRED`) for a
    /// unix socket, the peer's address for tcp.
    fn peer(&mut self, fd: Fd) -> io::Result<Peer>;

    /// Fills `buf` with random bytes fit for secrets (`getrandom(2)` on the
    /// real kernel; drawn from the world's seed in the simulation).
    fn random_bytes(&mut self, buf: &mut [u8]) -> io::Result<()>;

    // --- observation -------------------------------------------------------

    /// What process `pid` (this one, or a child) uses: resident memory, CPU
    /// time, descriptors and their limit, its start time. Read from
    /// `/proc` on the real kernel; modelled in the simulation. A pid that
    /// is not (or no longer) a process is an error.
    fn process_stats(&mut self, pid: Pid) -> io::Result<ProcessStats>;

    /// Process `pid`'s resident memory in bytes: the one figure of
    /// [`Os::process_stats`] that changes while it runs and is cheap to
    /// read (`/proc/PID/statm`), for scrapes of many workers.
    fn resident_memory(&mut self, pid: Pid) -> io::Result<u64>;

    /// Gives the memory the allocator holds free back to the kernel, after
    /// a burst of allocations (a large answer) is over. The real arm calls
    /// glibc's `malloc_trim`, which releases the free pages inside the heap
    /// as well as its top; without glibc, and in the simulation, nothing
    /// is done.
    fn trim_memory(&mut self) {}

    /// Records an event of the daemon's in the world's trace. The simulation
    /// keeps it beside its own events, so a replayed seed shows what the
    /// daemon did; the real operating system has no trace and ignores it.
    fn note(&mut self, _event: std::fmt::Arguments<'_>) {}
}

/// Why the pid file could not be taken.
#[derive(Debug)]
pub enum PidFileError {
    /// Another live process holds the lock; its pid, if the file said.
    Locked(Option<i32>),
    /// The lock is held, but the pid the file names is not running: some
    /// other process (not a daemon) holds it.
    LockedByOther(Option<i32>),
    /// What is at the path is not a pid file this daemon may use: a
    /// symbolic link, not a regular file, another user's, or hard-linked.
    /// The message says which; the file is left untouched.
    Unsafe(String),
    /// Opening, locking or writing failed.
    Io(io::Error),
}

impl std::fmt::Display for PidFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidFileError::Locked(Some(pid)) => write!(f, "already running (pid {pid})"),
            PidFileError::Locked(None) => f.write_str("already running"),
            PidFileError::LockedByOther(Some(pid)) => {
                write!(f, "locked by another process (the pid it names, {pid}, is not running)")
            }
            PidFileError::LockedByOther(None) => f.write_str("locked by another process"),
            PidFileError::Unsafe(why) => f.write_str(why),
            PidFileError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PidFileError {}
