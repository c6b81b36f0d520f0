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
///
/// Arithmetic saturates instead of overflowing or panicking: a deadline
/// far in the future is the end of time, and the time since a later instant
/// is zero.
///
/// ```
/// use forkd_os::Instant;
/// use std::time::Duration;
///
/// let start = Instant::from_nanos(1_500_000_000);
/// let later = start + Duration::from_millis(250);
/// assert_eq!(later.saturating_duration_since(start), Duration::from_millis(250));
/// assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
/// assert_eq!(Instant::from_nanos(u64::MAX) + Duration::from_secs(1), Instant::from_nanos(u64::MAX));
/// assert_eq!(later.to_string(), "1.750000"); // seconds, to the microsecond
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// The origin of the clock: the simulation's first instant.
    pub const ZERO: Instant = Instant(0);

    /// The instant `n` nanoseconds after the origin.
    pub fn from_nanos(n: u64) -> Instant {
        Instant(n)
    }

    /// Nanoseconds since the origin.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` if the sum does not fit in `u64` nanoseconds
    /// (about 584 years after the origin).
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
    /// `SIGHUP` (1): the controlling terminal hung up; daemons reload on it.
    Hup,
    /// `SIGINT` (2): interrupt from the keyboard.
    Int,
    /// `SIGQUIT` (3): quit from the keyboard.
    Quit,
    /// `SIGUSR1` (10): user-defined.
    Usr1,
    /// `SIGUSR2` (12): user-defined.
    Usr2,
    /// `SIGPIPE` (13): write to a pipe or socket with no reader.
    Pipe,
    /// `SIGALRM` (14): a timer expired.
    Alrm,
    /// `SIGTERM` (15): polite request to terminate.
    Term,
    /// `SIGCHLD` (17): a child stopped or ended.
    Chld,
    /// `SIGCONT` (18): continue a stopped process.
    Cont,
    /// `SIGTSTP` (20): stop request from the terminal.
    Tstp,
    /// `SIGTTIN` (21): background read from the terminal.
    Ttin,
    /// `SIGTTOU` (22): background write to the terminal.
    Ttou,
    /// `SIGWINCH` (28): the terminal changed size.
    Winch,
    /// `SIGKILL` (9): ends the process; it cannot be caught, only sent.
    Kill,
    /// `SIGSTOP` (19): stops the process; it cannot be caught, only sent.
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

    /// The signal with Linux number `n`, or `None` for a number this type
    /// does not name.
    ///
    /// ```
    /// use forkd_os::Signal;
    ///
    /// assert_eq!(Signal::from_number(15), Some(Signal::Term));
    /// assert_eq!(Signal::from_number(Signal::Kill.number()), Some(Signal::Kill));
    /// assert_eq!(Signal::from_number(64), None);
    /// ```
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
    /// The set with no signal.
    pub const EMPTY: SignalSet = SignalSet(0);

    /// Adds `s`; adding a signal already in the set changes nothing.
    pub fn insert(&mut self, s: Signal) {
        self.0 |= 1 << s.number();
    }

    /// Removes `s`, if it is in the set.
    pub fn remove(&mut self, s: Signal) {
        self.0 &= !(1 << s.number());
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: Signal) -> bool {
        self.0 & (1 << s.number()) != 0
    }

    /// Whether the set holds no signal.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The signals in either set.
    ///
    /// ```
    /// use forkd_os::{Signal, SignalSet};
    ///
    /// let a: SignalSet = [Signal::Term, Signal::Hup].into_iter().collect();
    /// let b: SignalSet = [Signal::Hup, Signal::Chld].into_iter().collect();
    /// let all: Vec<Signal> = a.union(b).iter().collect();
    /// assert_eq!(all, [Signal::Hup, Signal::Term, Signal::Chld]);
    /// ```
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
    /// Whether the child exited with code 0 (a signal is never success).
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
    /// The one process with this pid.
    Process(Pid),
    /// Every process of the group whose id is this pid.
    Group(Pid),
}

/// Readiness a caller of `poll` waits for, and what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    /// No readiness: what `poll` reports for a descriptor that is not ready.
    pub const NONE: Ready = Ready(0);
    /// The descriptor can be read without blocking (or is at end of file).
    pub const READ: Ready = Ready(1);
    /// The descriptor can be written without blocking.
    pub const WRITE: Ready = Ready(2);
    /// The peer is gone (only ever reported, never asked for).
    pub const HUP: Ready = Ready(4);
    /// The descriptor is in error (only ever reported).
    pub const ERROR: Ready = Ready(8);

    /// Whether every flag of `other` is in `self`; `false` if `other` is empty.
    ///
    /// ```
    /// use forkd_os::Ready;
    ///
    /// let both = Ready::READ | Ready::WRITE;
    /// assert!(both.contains(Ready::READ));
    /// assert!(!Ready::READ.contains(both));
    /// assert!(!both.contains(Ready::NONE));
    /// ```
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether `self` and `other` share at least one flag.
    pub fn intersects(self, other: Ready) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw flags: 1 read, 2 write, 4 hang-up, 8 error.
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
    /// The descriptor to watch.
    pub fd: Fd,
    /// What to wait for: [`Ready::READ`], [`Ready::WRITE`] or both.
    pub interest: Ready,
    /// What `poll` found; [`Ready::NONE`] until the call fills it in.
    pub ready: Ready,
}

impl PollFd {
    /// An entry for `fd` waiting for `interest`, with nothing found yet.
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

/// What [`Os::spawn_exec`](crate::Os::spawn_exec) runs: a program on disk,
/// its arguments, the environment it gets, and the descriptors it is
/// handed under the numbers it expects them at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program's path, read again from disk at the call.
    pub program: std::path::PathBuf,
    /// Its arguments after `argv[0]` (which is `program`).
    pub args: Vec<std::ffi::OsString>,
    /// Variables set in the caller's environment for the program; one of
    /// the caller's own by the same name is replaced.
    pub env_set: Vec<(String, std::ffi::OsString)>,
    /// Variables of the caller's environment the program does not get.
    pub env_unset: Vec<String>,
    /// Each of the caller's descriptors handed over, and the number it has
    /// in the program (without close-on-exec there); nothing else is
    /// inherited.
    pub fds: Vec<(Fd, i32)>,
    /// Sets `LISTEN_PID` to the child's own pid (systemd's convention for
    /// handed-over sockets), written in the child between fork and exec.
    pub listen_pid: bool,
}

/// How a listening socket is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The length of the queue of connections not yet accepted (`listen(2)`'s
    /// backlog); 128 by default.
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
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A unix socket file.
    Socket,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else: a device, a fifo.
    Other,
}

/// Who is at the other end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A unix socket's peer, as the kernel recorded it when it connected.
    Unix {
        /// The peer's process id, in the daemon's pid namespace.
        pid: Pid,
        /// The peer's effective user id.
        uid: u32,
        /// The peer's effective group id.
        gid: u32,
    },
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
