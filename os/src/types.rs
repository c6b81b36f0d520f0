//! Plain values that cross the `Os` boundary: pids, descriptors, signals,
//! exit statuses, instants and readiness.
//!
//! Nothing here performs a system call; both implementations share these
//! types so that the daemon logic cannot tell them apart.

use std::fmt;
use std::time::Duration;

/// A process id, in the kernel's or in the simulation's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub i32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file descriptor of the calling process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fd(pub i32);

impl fmt::Display for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point on a monotonic clock, in nanoseconds from an arbitrary origin.
///
/// The real clock is `CLOCK_MONOTONIC`; the simulated one starts at zero and
/// only moves when every simulated process waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub fn from_nanos(n: u64) -> Instant {
        Instant(n)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }

    /// `self + d`, clamped to the end of time rather than overflowing.
    pub fn saturating_add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant(u64::MAX))
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000_000, (self.0 % 1_000_000_000) / 1000)
    }
}

/// The signals a daemon can catch and turn into events, plus the two it
/// cannot (`Kill`, `Stop`), which it may only send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Usr1,
    Usr2,
    Pipe,
    Alrm,
    Term,
    Chld,
    Cont,
    Tstp,
    Ttin,
    Ttou,
    Winch,
    Kill,
    Stop,
}

impl Signal {
    /// Every signal that a handler may be installed for.
    pub const CATCHABLE: [Signal; 14] = [
        Signal::Hup,
        Signal::Int,
        Signal::Quit,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Pipe,
        Signal::Alrm,
        Signal::Term,
        Signal::Chld,
        Signal::Cont,
        Signal::Tstp,
        Signal::Ttin,
        Signal::Ttou,
        Signal::Winch,
    ];

    /// The Linux signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Pipe => 13,
            Signal::Alrm => 14,
            Signal::Term => 15,
            Signal::Chld => 17,
            Signal::Cont => 18,
            Signal::Stop => 19,
            Signal::Tstp => 20,
            Signal::Ttin => 21,
            Signal::Ttou => 22,
            Signal::Winch => 28,
        }
    }

    pub fn from_number(n: i32) -> Option<Signal> {
        Signal::CATCHABLE.iter().chain(&[Signal::Kill, Signal::Stop]).copied().find(|s| s.number() == n)
    }

    /// The conventional name, `SIGTERM` style.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Pipe => "SIGPIPE",
            Signal::Alrm => "SIGALRM",
            Signal::Term => "SIGTERM",
            Signal::Chld => "SIGCHLD",
            Signal::Cont => "SIGCONT",
            Signal::Tstp => "SIGTSTP",
            Signal::Ttin => "SIGTTIN",
            Signal::Ttou => "SIGTTOU",
            Signal::Winch => "SIGWINCH",
            Signal::Kill => "SIGKILL",
            Signal::Stop => "SIGSTOP",
        }
    }

    /// What the kernel does with this signal when no handler is installed.
    pub fn default_terminates(self) -> bool {
        !matches!(
            self,
            Signal::Chld | Signal::Cont | Signal::Winch | Signal::Tstp | Signal::Ttin | Signal::Ttou | Signal::Stop
        )
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of signals, as a bit mask indexed by signal number. Two deliveries
/// of one signal before it is taken merge into one, as they do in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SignalSet(u64);

impl SignalSet {
    pub const EMPTY: SignalSet = SignalSet(0);

    pub fn insert(&mut self, s: Signal) {
        self.0 |= 1 << s.number();
    }

    pub fn remove(&mut self, s: Signal) {
        self.0 &= !(1 << s.number());
    }

    pub fn contains(&self, s: Signal) -> bool {
        self.0 & (1 << s.number()) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: SignalSet) -> SignalSet {
        SignalSet(self.0 | other.0)
    }

    /// The signals in the set, in ascending signal number.
    pub fn iter(self) -> impl Iterator<Item = Signal> {
        (0..64).filter_map(move |n| if self.0 & (1 << n) != 0 { Signal::from_number(n) } else { None })
    }
}

impl FromIterator<Signal> for SignalSet {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> SignalSet {
        let mut set = SignalSet::EMPTY;
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitStatus {
    /// It called `exit` (or returned from its entry) with this code.
    Exited(i32),
    /// A signal ended it; the number is kept for signals `Signal` does not name.
    Signaled(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exit {code}"),
            ExitStatus::Signaled(n) => match Signal::from_number(n) {
                Some(s) => write!(f, "killed by {s}"),
                None => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// Whom `kill` signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillTarget {
    Process(Pid),
    /// Every process of the group whose id is this pid.
    Group(Pid),
}

/// Readiness a caller of `poll` waits for, and what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    pub const NONE: Ready = Ready(0);
    pub const READ: Ready = Ready(1);
    pub const WRITE: Ready = Ready(2);
    /// The peer is gone (only ever reported, never asked for).
    pub const HUP: Ready = Ready(4);
    /// The descriptor is in error (only ever reported).
    pub const ERROR: Ready = Ready(8);

    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn intersects(self, other: Ready) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for Ready {
    type Output = Ready;
    fn bitor(self, o: Ready) -> Ready {
        Ready(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Ready {
    fn bitor_assign(&mut self, o: Ready) {
        self.0 |= o.0;
    }
}

/// One entry of a `poll` call: the descriptor, what to wait for, and after
/// the call what was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollFd {
    pub fd: Fd,
    pub interest: Ready,
    pub ready: Ready,
}

impl PollFd {
    pub fn new(fd: Fd, interest: Ready) -> PollFd {
        PollFd { fd, interest, ready: Ready::NONE }
    }
}

/// How a child is spawned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Put the child in a process group of its own (`setpgid(0, 0)`), so that
    /// signalling the group reaches the child's own children too.
    pub new_group: bool,
}

/// How a listening socket is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    pub backlog: i32,
    /// Permission bits of a unix socket file.
    pub unix_mode: u32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions { backlog: 128, unix_mode: 0o600 }
    }
}

/// What a path names, as `lstat` tells it (a symbolic link is not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Socket,
    Symlink,
    Other,
}

/// Who is at the other end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A unix socket's peer, as the kernel recorded it when it connected.
    Unix { pid: Pid, uid: u32, gid: u32 },
    /// A tcp peer's address.
    Tcp(std::net::SocketAddr),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { pid, uid, gid } => write!(f, "pid {pid} uid {uid} gid {gid}"),
            Peer::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// What a process uses of the machine, as [`Os::process_stats`](crate::Os::process_stats)
/// reads it: the figures of Prometheus's standard `process_*` metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// User and system CPU time spent, in seconds.
    pub cpu_seconds: f64,
    /// Descriptors open.
    pub open_fds: u64,
    /// The soft limit on open descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}
