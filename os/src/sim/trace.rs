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
    /// What happened.
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
    /// `spawn_exec` started `program` as this child (which exits 127 at
    /// once when nothing is installed there).
    Exec {
        /// The child.
        child: Pid,
        /// What it executes.
        program: std::path::PathBuf,
    },
    /// The pid file behind a lock now names `pid`.
    PidRewrite {
        /// The pid it names.
        pid: Pid,
    },
    /// Its spawn failed by an injected fault (EAGAIN).
    SpawnFault,
    /// It detached: its work goes on as `daemon`, and it runs the launcher.
    Detach {
        /// The process that goes on with the daemon's work.
        daemon: Pid,
    },
    /// It wrote `text` to the console (its descriptor 1 or 2).
    Console {
        /// The descriptor written to: 1 (stdout) or 2 (stderr).
        fd: Fd,
        /// What was written, lossily decoded as UTF-8.
        text: String,
    },
    /// It reaped a child.
    Reap {
        /// The child reaped.
        child: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// It sent `signal` to `target`, which reached `victims` (none: ESRCH).
    Kill {
        /// The process or group signalled.
        target: KillTarget,
        /// The signal sent.
        signal: Signal,
        /// The processes it reached, in pid order.
        victims: Vec<Pid>,
    },
    /// It waited for `pid` to go, which it had (or not, at the deadline).
    WaitGone {
        /// The process waited for.
        pid: Pid,
        /// Whether it was gone before the deadline.
        gone: bool,
    },
    /// It took these pending signals.
    Signals(SignalSet),
    /// It listened on `addr`.
    Listen {
        /// The address listened on.
        addr: Address,
        /// The listening descriptor.
        fd: Fd,
    },
    /// It accepted connection `conn` as `fd`.
    Accept {
        /// The descriptor of the accepted stream.
        fd: Fd,
        /// The world's number for the connection.
        conn: u64,
    },
    /// Its accept failed by an injected fault (EMFILE).
    AcceptFault,
    /// It connected to `addr`: connection `conn`, as `fd`.
    Connect {
        /// The address connected to.
        addr: Address,
        /// The descriptor of the stream.
        fd: Fd,
        /// The world's number for the connection.
        conn: u64,
    },
    /// Its connect to `addr` was refused.
    ConnectRefused {
        /// The address that refused.
        addr: Address,
    },
    /// It made a socket pair, connection `conn`.
    SocketPair {
        /// The first end.
        a: Fd,
        /// The second end.
        b: Fd,
        /// The world's number for the connection.
        conn: u64,
    },
    /// It read `n` bytes from `fd`.
    Read {
        /// The descriptor read from.
        fd: Fd,
        /// How many bytes were read (at least one).
        n: usize,
    },
    /// It read the end of `fd`'s stream.
    ReadEof {
        /// The descriptor at its end.
        fd: Fd,
    },
    /// It wrote `n` bytes to `fd`.
    Write {
        /// The descriptor written to.
        fd: Fd,
        /// How many bytes were written.
        n: usize,
    },
    /// Its write to `fd` found the other end closed.
    WriteBrokenPipe {
        /// The descriptor whose peer is gone.
        fd: Fd,
    },
    /// It closed `fd`.
    Close(Fd),
    /// Its poll returned with this many descriptors ready.
    Poll(usize),
    /// Its poll was interrupted by an injected fault.
    PollInterrupted,
    /// It created shared region `region` of `len` bytes.
    ShmCreate {
        /// The length of the region, in bytes.
        len: usize,
        /// The world's number for the region.
        region: u64,
    },
    /// Its shared memory failed by an injected fault (ENOMEM).
    ShmFault,
    /// It kept `region` from its future children.
    ShmKeepFromChildren {
        /// The world's number for the region.
        region: u64,
    },
    /// It unmapped `region`.
    ShmUnmap {
        /// The world's number for the region.
        region: u64,
    },
    /// It locked the pid file at `path`, held by `fd`.
    PidLock {
        /// The pid file.
        path: PathBuf,
        /// The descriptor that holds the lock.
        fd: Fd,
    },
    /// Its pid lock at `path` was refused, with this error.
    PidLockRefused {
        /// The pid file.
        path: PathBuf,
        /// Why it was refused, as the error prints.
        error: String,
    },
    /// It removed the file at `path`.
    Unlink(PathBuf),
    /// It read the private file at `path`: how many bytes, `none`, or why not.
    ReadPrivate {
        /// The file read.
        path: PathBuf,
        /// How many bytes, `none` if there was no file, or the error.
        outcome: String,
    },
    /// It wrote `bytes` to the private file at `path`; `None`: it existed.
    WritePrivate {
        /// The file written.
        path: PathBuf,
        /// How many bytes were written; `None` if the file existed.
        bytes: Option<usize>,
    },
    /// It drew this many random bytes.
    Random(usize),
    /// Something the process noted through `Os::note`.
    Note(String),
    /// It sent a datagram of `len` bytes to `to`.
    Datagram {
        /// The path of the unix datagram socket sent to.
        to: std::ffi::OsString,
        /// The length of the datagram, in bytes.
        len: usize,
    },
    /// A test planted a regular file.
    PlantFile {
        /// Where the file was planted.
        path: PathBuf,
        /// The user that owns it.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// A test planted a symbolic link.
    PlantSymlink {
        /// Where the link was planted.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
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
            E::Exec { child, program } => write!(f, "exec {} -> {child}", program.display()),
            E::PidRewrite { pid } => write!(f, "pid file names {pid}"),
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
