//! The trace: what every process of a world did, as typed events.
//!
//! The world records one [`TraceLine`] per call that changed something, so
//! that a checker matches on what happened instead of scraping text. Each
//! event renders as the one line a replay prints (`Display`), and a run's
//! hash is taken over those lines, so two runs compare the same whether they
//! are read as events or as text.

use std::fmt;
use std::path::PathBuf;

use super::Faults;
use crate::{Address, ExitStatus, Fd, Instant, KillTarget, Pid, Signal, SignalSet};

/// One event of the trace: when, who, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// Virtual time of the event.
    pub at: Instant,
    /// The process it happened to; `Pid(0)` for the world itself.
    pub pid: Pid,
    pub event: TraceEvent,
}

impl TraceLine {
    /// Whether the line, as printed, contains `text`: for tests that look
    /// for a process's note.
    pub fn contains(&self, text: &str) -> bool {
        self.to_string().contains(text)
    }

    /// The text of the line if it is a note.
    pub fn note(&self) -> Option<&str> {
        match &self.event {
            TraceEvent::Note(text) => Some(text),
            _ => None,
        }
    }
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.at, self.pid, self.event)
    }
}

/// What happened. Variants mirror the `Os` calls that change the world,
/// plus the world's own events and what processes note.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// The world's first process started.
    Start,
    /// Every process waited with nothing that could wake it.
    Deadlock,
    /// The run was cut short, for this reason.
    Cut(String),
    /// The process panicked with this message.
    Panic(String),
    /// The process exited.
    Exit(ExitStatus),
    /// It spawned this child.
    Spawn(Pid),
    /// Its spawn failed by an injected fault (EAGAIN).
    SpawnFault,
    /// It detached: its work goes on as `daemon`, and it runs the launcher.
    Detach { daemon: Pid },
    /// It wrote `text` to the console (its descriptor 1 or 2).
    Console { fd: Fd, text: String },
    /// It reaped a child.
    Reap { child: Pid, status: ExitStatus },
    /// It sent `signal` to `target`, which reached `victims` (none: ESRCH).
    Kill { target: KillTarget, signal: Signal, victims: Vec<Pid> },
    /// It waited for `pid` to go, which it had (or not, at the deadline).
    WaitGone { pid: Pid, gone: bool },
    /// It took these pending signals.
    Signals(SignalSet),
    /// It listened on `addr`.
    Listen { addr: Address, fd: Fd },
    /// It accepted connection `conn` as `fd`.
    Accept { fd: Fd, conn: u64 },
    /// Its accept failed by an injected fault (EMFILE).
    AcceptFault,
    /// It connected to `addr`: connection `conn`, as `fd`.
    Connect { addr: Address, fd: Fd, conn: u64 },
    /// Its connect to `addr` was refused.
    ConnectRefused { addr: Address },
    /// It made a socket pair, connection `conn`.
    SocketPair { a: Fd, b: Fd, conn: u64 },
    /// It read `n` bytes from `fd`.
    Read { fd: Fd, n: usize },
    /// It read the end of `fd`'s stream.
    ReadEof { fd: Fd },
    /// It wrote `n` bytes to `fd`.
    Write { fd: Fd, n: usize },
    /// Its write to `fd` found the other end closed.
    WriteBrokenPipe { fd: Fd },
    /// It closed `fd`.
    Close(Fd),
    /// Its poll returned with this many descriptors ready.
    Poll(usize),
    /// Its poll was interrupted by an injected fault.
    PollInterrupted,
    /// It created shared region `region` of `len` bytes.
    ShmCreate { len: usize, region: u64 },
    /// Its shared memory failed by an injected fault (ENOMEM).
    ShmFault,
    /// It kept `region` from its future children.
    ShmKeepFromChildren { region: u64 },
    /// It unmapped `region`.
    ShmUnmap { region: u64 },
    /// It locked the pid file at `path`, held by `fd`.
    PidLock { path: PathBuf, fd: Fd },
    /// Its pid lock at `path` was refused, with this error.
    PidLockRefused { path: PathBuf, error: String },
    /// It removed the file at `path`.
    Unlink(PathBuf),
    /// It read the private file at `path`: how many bytes, `none`, or why not.
    ReadPrivate { path: PathBuf, outcome: String },
    /// It wrote `bytes` to the private file at `path`; `None`: it existed.
    WritePrivate { path: PathBuf, bytes: Option<usize> },
    /// It drew this many random bytes.
    Random(usize),
    /// Something the process noted through `Os::note`.
    Note(String),
    /// It sent a datagram of `len` bytes to `to`.
    Datagram { to: std::ffi::OsString, len: usize },
    /// A test planted a regular file.
    PlantFile { path: PathBuf, uid: u32, mode: u32 },
    /// A test planted a symbolic link.
    PlantSymlink { path: PathBuf, target: PathBuf },
    /// The process changed its user.
    SetUid(u32),
    /// The process changed its group.
    SetGid(u32),
    /// The fault rates changed.
    Faults(Faults),
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TraceEvent as E;
        match self {
            E::Start => write!(f, "start"),
            E::Deadlock => write!(f, "deadlock"),
            E::Cut(reason) => write!(f, "cut: {reason}"),
            E::Panic(msg) => write!(f, "panic: {msg}"),
            E::Exit(status) => write!(f, "exit {status}"),
            E::Spawn(child) => write!(f, "spawn -> {child}"),
            E::SpawnFault => write!(f, "spawn -> fault EAGAIN"),
            E::Detach { daemon } => write!(f, "detach -> {daemon}"),
            E::Console { fd, text } => write!(f, "console {fd}: {text:?}"),
            E::Reap { child, status } => write!(f, "reap {child} {status}"),
            E::Kill { target, signal, victims } => {
                let victims: Vec<i32> = victims.iter().map(|p| p.0).collect();
                write!(f, "kill {target:?} {signal} -> {victims:?}")
            }
            E::WaitGone { pid, gone } => write!(f, "wait gone {pid} -> {gone}"),
            E::Signals(set) => {
                let names: Vec<&str> = set.iter().map(Signal::name).collect();
                write!(f, "signals {}", names.join(","))
            }
            E::Listen { addr, fd } => write!(f, "listen {addr} -> fd {fd}"),
            E::Accept { fd, conn } => write!(f, "accept -> fd {fd} (conn {conn})"),
            E::AcceptFault => write!(f, "accept -> fault EMFILE"),
            E::Connect { addr, fd, conn } => write!(f, "connect {addr} -> fd {fd} (conn {conn})"),
            E::ConnectRefused { addr } => write!(f, "connect {addr} -> refused"),
            E::SocketPair { a, b, conn } => write!(f, "socketpair -> fd {a}, fd {b} (conn {conn})"),
            E::Read { fd, n } => write!(f, "read fd {fd} -> {n}"),
            E::ReadEof { fd } => write!(f, "read fd {fd} -> eof"),
            E::Write { fd, n } => write!(f, "write fd {fd} -> {n}"),
            E::WriteBrokenPipe { fd } => write!(f, "write fd {fd} -> EPIPE"),
            E::Close(fd) => write!(f, "close fd {fd}"),
            E::Poll(n) => write!(f, "poll -> {n}"),
            E::PollInterrupted => write!(f, "poll -> EINTR"),
            E::ShmCreate { len, region } => write!(f, "shm_create {len} -> region {region}"),
            E::ShmFault => write!(f, "shm_create -> fault ENOMEM"),
            E::ShmKeepFromChildren { region } => write!(f, "madvise dontfork region {region}"),
            E::ShmUnmap { region } => write!(f, "shm_unmap region {region}"),
            E::PidLock { path, fd } => write!(f, "lock {} -> fd {fd}", path.display()),
            E::PidLockRefused { path, error } => write!(f, "lock {} -> {error}", path.display()),
            E::Unlink(path) => write!(f, "unlink {}", path.display()),
            E::ReadPrivate { path, outcome } => write!(f, "read private {} -> {outcome}", path.display()),
            E::WritePrivate { path, bytes: None } => write!(f, "write private {} -> exists", path.display()),
            E::WritePrivate { path, bytes: Some(n) } => write!(f, "write private {} -> {n} bytes", path.display()),
            E::Random(n) => write!(f, "random {n} bytes"),
            E::Note(text) => write!(f, "{text}"),
            E::Datagram { to, len } => write!(f, "datagram {len} bytes to {}", to.to_string_lossy()),
            E::PlantFile { path, uid, mode } => write!(f, "plant file {} uid {uid} mode {mode:04o}", path.display()),
            E::PlantSymlink { path, target } => write!(f, "plant symlink {} -> {}", path.display(), target.display()),
            E::SetUid(uid) => write!(f, "set uid {uid}"),
            E::SetGid(gid) => write!(f, "set gid {gid}"),
            E::Faults(faults) => write!(f, "faults {faults:?}"),
        }
    }
}
