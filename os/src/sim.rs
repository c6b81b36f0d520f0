//! The simulated operating system: a deterministic world in memory.
//!
//! A [`World`] holds a process table, a virtual clock, in-memory sockets,
//! shared buffers and a tiny file system. Each simulated process runs its
//! entry on a thread of its own, but only one of them runs at any moment: the
//! world hands a baton from process to process, and every `Os` call is a
//! point where a seeded random choice decides who holds it next. So the same
//! seed gives the same interleaving, bit for bit, and different seeds explore
//! different ones — the idea of shuttle and FoundationDB's simulation.
//!
//! Time is virtual. Each call moves the clock by a microsecond; when every
//! process waits, the clock jumps to the earliest deadline. A world in which
//! every process waits with no deadline and nothing can wake it ends as a
//! deadlock rather than hanging.
//!
//! What a real fork copies, the simulation copies too: a spawned process gets
//! a copy of its parent's descriptor table (the objects behind the
//! descriptors are shared, as open file descriptions are) and of its mapped
//! regions, and its entry owns whatever it captured. A process killed by a
//! signal unwinds its thread at its next `Os` call with a payload that is not
//! a panic, and the world closes its descriptors and unmaps its regions as
//! the kernel would.
//!
//! Faults are opt-in and seeded: fork failing, interrupted polls, short reads
//! and writes, accept failing for lack of descriptors, shared memory that
//! cannot be created. The contract suite runs with them off; the harness turns
//! them on.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use crate::rng::SplitMix64;
use crate::{
    Address, Entry, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError, PollFd,
    Ready, Region, Signal, SignalSet, SpawnOptions,
};

/// Bytes a simulated stream buffers in each direction before writes block.
pub const STREAM_CAPACITY: usize = 64 * 1024;

/// The pid of the simulated init, which adopts orphans and reaps them.
pub const INIT_PID: Pid = Pid(1);

/// The pid of the first process a world runs.
pub const ROOT_PID: Pid = Pid(100);

/// The umask a world's first process starts with, as most shells set it.
pub const DEFAULT_UMASK: u32 = 0o022;

/// The first port of the range a simulated tcp client connects from.
const EPHEMERAL_PORTS: u16 = 40_000;

/// How often each kind of fault happens, in parts per million of the calls
/// that can suffer it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `spawn` fails with `WouldBlock` (EAGAIN).
    pub spawn_fails: u32,
    /// `poll` returns early with nothing ready, as on EINTR.
    pub poll_interrupted: u32,
    /// `read` returns fewer bytes than are buffered.
    pub short_read: u32,
    /// `write` takes fewer bytes than there is room for.
    pub short_write: u32,
    /// `accept` fails with EMFILE.
    pub accept_emfile: u32,
    /// `shm_create` fails with ENOMEM.
    pub shm_fails: u32,
}

/// How a world is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub faults: Faults,
    /// The run is cut short past this many scheduling points.
    pub max_steps: u64,
    /// The run is cut short past this much virtual time.
    pub max_time: Duration,
    /// Keep a trace of every call (always on for replays; off saves memory).
    pub trace: bool,
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            faults: Faults::default(),
            max_steps: 2_000_000,
            max_time: Duration::from_secs(3600),
            trace: true,
        }
    }
}

/// How a world's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every process exited.
    Finished,
    /// Every process waited with nothing that could wake it.
    Deadlock,
    /// `max_steps` or `max_time` ran out.
    Cut(String),
}

/// What a run left behind, for the caller's checks.
#[derive(Clone, Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// How the first process ended.
    pub root_status: Option<ExitStatus>,
    /// Every process's exit, in order of exit.
    pub exits: Vec<(Pid, ExitStatus)>,
    /// Panics in simulated processes: pid and message.
    pub panics: Vec<(Pid, String)>,
    /// Per process, what it still held when it exited: descriptors and regions
    /// it had not closed or unmapped.
    pub held_at_exit: BTreeMap<Pid, Held>,
    /// Files left in the simulated file system.
    pub files: Vec<PathBuf>,
    /// Regions some process still maps (none once every process is gone).
    pub live_regions: usize,
    /// The trace, one event a line.
    pub trace: Vec<String>,
    /// Virtual time at the end.
    pub now: Instant,
    pub steps: u64,
}

impl Report {
    /// A 64-bit FNV-1a hash of the trace, to compare runs cheaply.
    pub fn trace_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for line in &self.trace {
            for b in line.bytes().chain(std::iter::once(b'\n')) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100000001b3);
            }
        }
        h
    }
}

/// What a process had not released when it exited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub fds: Vec<(Fd, String)>,
    pub regions: Vec<u64>,
}

/// A deterministic simulated world.
pub struct World {
    config: Config,
}

impl World {
    pub fn new(seed: u64) -> World {
        World { config: Config::new(seed) }
    }

    pub fn with_config(config: Config) -> World {
        World { config }
    }

    /// Runs `root` as the world's first process and everything it spawns,
    /// until every process has exited (or the run deadlocks or is cut).
    pub fn run<F>(self, root: F) -> Report
    where
        F: FnOnce(&mut SimOs) -> i32 + Send + 'static,
    {
        install_panic_hook();
        let shared = Arc::new(Shared { state: Mutex::new(State::new(self.config)), main: Condvar::new() });
        {
            let mut st = shared.lock();
            let proc = Proc::new(ROOT_PID, INIT_PID, ROOT_PID);
            st.procs.insert(ROOT_PID.0, proc);
            st.running = Some(ROOT_PID.0);
            st.trace_line(ROOT_PID.0, format_args!("start"));
            start_thread(&shared, &mut st, ROOT_PID, Box::new(root));
        }
        let mut st = shared.lock();
        while !st.done {
            st = shared.main.wait(st).unwrap();
        }
        let threads = std::mem::take(&mut st.threads);
        drop(st);
        for t in threads {
            let _ = t.join();
        }
        let mut st = shared.lock();
        st.report()
    }
}

/// The handle a simulated process uses to reach its world.
pub struct SimOs {
    shared: Arc<Shared>,
    pid: Pid,
}

struct Shared {
    state: Mutex<State>,
    main: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The payload a killed process unwinds with. It is not a panic: the world
/// turns it into a death by signal.
struct Killed;

#[derive(Clone, Debug)]
enum Wait {
    Poll { fds: Vec<(i32, Ready)>, deadline: Option<u64> },
    Sleep { deadline: u64 },
}

#[derive(Debug)]
enum Run {
    Runnable,
    Blocked(Wait),
    Zombie(ExitStatus),
}

struct Proc {
    pid: Pid,
    ppid: Pid,
    pgid: Pid,
    run: Run,
    /// Set once its thread is unwinding: its calls no longer schedule.
    dying: bool,
    /// A fatal signal it has been sent and will die of at its next call.
    fatal: Option<i32>,
    fds: BTreeMap<i32, u64>,
    regions: BTreeSet<u64>,
    installed: SignalSet,
    pending: SignalSet,
    signal_fd: Option<i32>,
    death_signal: Option<Signal>,
    wake: Arc<Condvar>,
    niceness: i32,
    /// Its effective user and group, inherited by its children.
    uid: u32,
    gid: u32,
    /// Bits taken from the mode of a file it creates, inherited too.
    umask: u32,
}

impl Proc {
    fn new(pid: Pid, ppid: Pid, pgid: Pid) -> Proc {
        Proc {
            pid,
            ppid,
            pgid,
            run: Run::Runnable,
            dying: false,
            fatal: None,
            fds: BTreeMap::new(),
            regions: BTreeSet::new(),
            installed: SignalSet::EMPTY,
            pending: SignalSet::EMPTY,
            signal_fd: None,
            death_signal: None,
            wake: Arc::new(Condvar::new()),
            niceness: 0,
            uid: 0,
            gid: 0,
            umask: DEFAULT_UMASK,
        }
    }

    fn alive(&self) -> bool {
        !matches!(self.run, Run::Zombie(_))
    }

    fn lowest_free_fd(&self) -> i32 {
        (3..).find(|n| !self.fds.contains_key(n)).unwrap()
    }
}

#[derive(Debug)]
enum Object {
    Stream { conn: u64, side: usize },
    Listener { addr: Address, backlog: VecDeque<u64>, max: usize, open: bool, owner: End },
    SignalWake { pid: i32 },
    PidLock { path: PathBuf },
}

impl Object {
    fn describe(&self) -> String {
        match self {
            Object::Stream { conn, side } => format!("stream {conn}.{side}"),
            Object::Listener { addr, .. } => format!("listener {addr}"),
            Object::SignalWake { .. } => "signal pipe".to_string(),
            Object::PidLock { path } => format!("pid file {}", path.display()),
        }
    }
}

struct Conn {
    /// `bufs[s]` holds what side `s` wrote and the other side has yet to read.
    bufs: [VecDeque<u8>; 2],
    open: [bool; 2],
    /// What `peer` on side `s` answers: `ends[1 - s]`, who is at the other
    /// end, as the kernel recorded it when the connection was made.
    ends: [End; 2],
}

/// Who made one end of a connection.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The process that connected, listened or made the pair, with the
    /// user and group it had then.
    Unix {
        pid: Pid,
        uid: u32,
        gid: u32,
    },
    Tcp(SocketAddr),
}

impl End {
    fn of(p: &Proc) -> End {
        End::Unix { pid: p.pid, uid: p.uid, gid: p.gid }
    }
}

/// What a path of the simulated file system holds. Hard links are not
/// modelled: every file has one name.
enum FileNode {
    Regular { content: Vec<u8>, lock: Option<u64>, uid: u32, mode: u32 },
    Socket { mode: u32 },
    Symlink { target: PathBuf },
}

impl FileNode {
    fn kind(&self) -> FileKind {
        match self {
            FileNode::Regular { .. } => FileKind::Regular,
            FileNode::Socket { .. } => FileKind::Socket,
            FileNode::Symlink { .. } => FileKind::Symlink,
        }
    }
}

struct State {
    config: Config,
    rng: SplitMix64,
    clock: u64,
    steps: u64,
    procs: BTreeMap<i32, Proc>,
    running: Option<i32>,
    next_pid: i32,
    objects: BTreeMap<u64, (Object, usize)>,
    next_object: u64,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    files: BTreeMap<PathBuf, FileNode>,
    tcp_ports: BTreeMap<SocketAddr, u64>,
    regions: BTreeMap<u64, BTreeSet<i32>>,
    /// Regions marked `MADV_DONTFORK`, by the process that marked them.
    dont_fork: BTreeSet<(i32, u64)>,
    next_region: u64,
    trace: Vec<String>,
    exits: Vec<(Pid, ExitStatus)>,
    panics: Vec<(Pid, String)>,
    held_at_exit: BTreeMap<Pid, Held>,
    root_status: Option<ExitStatus>,
    outcome: Option<Outcome>,
    aborting: bool,
    done: bool,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl State {
    fn new(config: Config) -> State {
        State {
            rng: SplitMix64::new(config.seed ^ 0x9E37_79B9_7F4A_7C15),
            config,
            clock: 0,
            steps: 0,
            procs: BTreeMap::new(),
            running: None,
            next_pid: ROOT_PID.0 + 1,
            objects: BTreeMap::new(),
            next_object: 1,
            conns: BTreeMap::new(),
            next_conn: 1,
            files: BTreeMap::new(),
            tcp_ports: BTreeMap::new(),
            regions: BTreeMap::new(),
            dont_fork: BTreeSet::new(),
            next_region: 1,
            trace: Vec::new(),
            exits: Vec::new(),
            panics: Vec::new(),
            held_at_exit: BTreeMap::new(),
            root_status: None,
            outcome: None,
            aborting: false,
            done: false,
            threads: Vec::new(),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// Whether a fault with this rate (per million) strikes now.
    fn fault(&mut self, rate: u32) -> bool {
        rate > 0 && self.below(1_000_000) < u64::from(rate)
    }

    fn trace_line(&mut self, pid: i32, event: std::fmt::Arguments<'_>) {
        if self.config.trace {
            let mut line = String::new();
            let _ = write!(line, "{} {} {}", Instant(self.clock), pid, event);
            self.trace.push(line);
        }
    }

    fn proc(&mut self, pid: i32) -> &mut Proc {
        self.procs.get_mut(&pid).expect("a running process is in the table")
    }

    fn object_of(&self, pid: i32, fd: Fd) -> Option<u64> {
        self.procs.get(&pid).and_then(|p| p.fds.get(&fd.0)).copied()
    }

    fn new_object(&mut self, obj: Object) -> u64 {
        let id = self.next_object;
        self.next_object += 1;
        self.objects.insert(id, (obj, 0));
        id
    }

    /// Puts object `id` at the lowest free descriptor of `pid`.
    fn install_fd(&mut self, pid: i32, id: u64) -> Fd {
        self.objects.get_mut(&id).expect("object exists").1 += 1;
        let p = self.proc(pid);
        let fd = p.lowest_free_fd();
        p.fds.insert(fd, id);
        Fd(fd)
    }

    fn close_fd(&mut self, pid: i32, fd: i32) {
        let Some(id) = self.procs.get_mut(&pid).and_then(|p| p.fds.remove(&fd)) else {
            return;
        };
        let entry = self.objects.get_mut(&id).expect("object exists");
        entry.1 -= 1;
        if entry.1 > 0 {
            return;
        }
        let (obj, _) = self.objects.remove(&id).unwrap();
        match obj {
            Object::Stream { conn, side } => {
                let c = self.conns.get_mut(&conn).expect("conn exists");
                c.open[side] = false;
                if !c.open[0] && !c.open[1] {
                    self.conns.remove(&conn);
                }
            }
            Object::Listener { addr, backlog, .. } => {
                // Connections nobody accepted are reset, as the kernel does.
                for conn in backlog {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.open[1] = false;
                        c.bufs[0].clear();
                    }
                }
                if let Address::Tcp(sa) = addr {
                    self.tcp_ports.remove(&sa);
                }
                // A unix socket file outlives its listener: it is stale now.
            }
            Object::SignalWake { .. } => {}
            Object::PidLock { path } => {
                if let Some(FileNode::Regular { lock, .. }) = self.files.get_mut(&path) {
                    if *lock == Some(id) {
                        *lock = None;
                    }
                }
            }
        }
    }

    /// `path` with its symbolic links followed, as a kernel call that
    /// follows them sees it; `ELOOP` past a depth of 40, as on Linux.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let mut path = path.to_path_buf();
        for _ in 0..40 {
            match self.files.get(&path) {
                Some(FileNode::Symlink { target }) => {
                    path = match path.parent() {
                        Some(dir) => dir.join(target),
                        None => target.clone(),
                    };
                }
                _ => return Ok(path),
            }
        }
        Err(io::Error::from_raw_os_error(40)) // ELOOP
    }

    fn readiness(&self, pid: i32, fd: i32, interest: Ready) -> Ready {
        let Some(id) = self.procs.get(&pid).and_then(|p| p.fds.get(&fd)) else {
            return Ready::ERROR;
        };
        let (obj, _) = &self.objects[id];
        let mut r = Ready::NONE;
        match obj {
            Object::Stream { conn, side } => {
                let c = &self.conns[conn];
                let other = 1 - side;
                if !c.bufs[other].is_empty() || !c.open[other] {
                    r |= Ready::READ;
                }
                if !c.open[other] {
                    r |= Ready::HUP | Ready::WRITE;
                } else if c.bufs[*side].len() < STREAM_CAPACITY {
                    r |= Ready::WRITE;
                }
            }
            Object::Listener { backlog, .. } => {
                if !backlog.is_empty() {
                    r |= Ready::READ;
                }
            }
            Object::SignalWake { pid } => {
                if self.procs.get(pid).is_some_and(|p| !p.pending.is_empty()) {
                    r |= Ready::READ;
                }
            }
            Object::PidLock { .. } => r |= Ready::READ | Ready::WRITE,
        }
        let keep = interest | Ready::HUP | Ready::ERROR;
        Ready::from_bits(r.bits() & keep.bits())
    }

    /// Whether a process may run now.
    fn can_run(&self, pid: i32) -> bool {
        let p = &self.procs[&pid];
        if p.fatal.is_some() || self.aborting {
            return p.alive();
        }
        match &p.run {
            Run::Runnable => true,
            Run::Zombie(_) => false,
            Run::Blocked(Wait::Sleep { deadline }) => self.clock >= *deadline,
            Run::Blocked(Wait::Poll { fds, deadline }) => {
                deadline.is_some_and(|d| self.clock >= d)
                    || fds.iter().any(|(fd, interest)| !self.readiness(pid, *fd, *interest).is_empty())
            }
        }
    }

    fn earliest_deadline(&self) -> Option<u64> {
        self.procs
            .values()
            .filter_map(|p| match &p.run {
                Run::Blocked(Wait::Sleep { deadline }) => Some(*deadline),
                Run::Blocked(Wait::Poll { deadline, .. }) => *deadline,
                _ => None,
            })
            .min()
    }

    /// Picks who runs next. Returns `None` when nobody is left to run.
    fn pick(&mut self) -> Option<i32> {
        loop {
            let runnable: Vec<i32> = self
                .procs
                .iter()
                .filter(|(_, p)| p.alive())
                .map(|(pid, _)| *pid)
                .filter(|pid| self.can_run(*pid))
                .collect();
            if !runnable.is_empty() {
                let i = self.below(runnable.len() as u64) as usize;
                return Some(runnable[i]);
            }
            if !self.procs.values().any(|p| p.alive()) {
                return None;
            }
            match self.earliest_deadline() {
                Some(d) if d > self.clock => self.clock = d,
                _ => {
                    // Everybody waits and nothing can wake anybody.
                    self.outcome.get_or_insert(Outcome::Deadlock);
                    self.trace_line(0, format_args!("deadlock"));
                    self.aborting = true;
                }
            }
        }
    }

    /// Hands the baton to the next process and reports whether it is `me`.
    fn hand_over(&mut self, me: i32) -> bool {
        match self.pick() {
            Some(next) => {
                self.running = Some(next);
                if next != me {
                    self.procs[&next].wake.notify_one();
                }
                next == me
            }
            None => {
                self.running = None;
                self.finish();
                false
            }
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.outcome.get_or_insert(Outcome::Finished);
        }
    }

    fn deliver(&mut self, pid: i32, sig: Signal) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.alive() {
            return;
        }
        if sig == Signal::Kill {
            p.fatal = Some(9);
        } else if p.installed.contains(sig) {
            p.pending.insert(sig);
        } else if sig.default_terminates() {
            p.fatal = Some(sig.number());
        }
    }

    /// The kernel's part of a process's death: descriptors closed, regions
    /// unmapped, children handed to init, the parent told.
    fn exit_process(&mut self, pid: i32, status: ExitStatus) {
        let held = {
            let p = &self.procs[&pid];
            Held {
                fds: p.fds.iter().map(|(fd, id)| (Fd(*fd), self.objects[id].0.describe())).collect(),
                regions: p.regions.iter().copied().collect(),
            }
        };
        if !held.fds.is_empty() || !held.regions.is_empty() {
            self.held_at_exit.insert(Pid(pid), held);
        }
        let fds: Vec<i32> = self.procs[&pid].fds.keys().copied().collect();
        for fd in fds {
            self.close_fd(pid, fd);
        }
        let regions = std::mem::take(&mut self.proc(pid).regions);
        for r in regions {
            self.unmap(pid, r);
        }
        self.trace_line(pid, format_args!("exit {status}"));
        self.exits.push((Pid(pid), status));
        if Pid(pid) == ROOT_PID {
            self.root_status = Some(status);
        }
        let ppid = self.procs[&pid].ppid;
        self.proc(pid).run = Run::Zombie(status);
        // Orphans go to init; their death signals fire.
        let children: Vec<i32> = self.procs.values().filter(|p| p.ppid.0 == pid).map(|p| p.pid.0).collect();
        for c in children {
            self.proc(c).ppid = INIT_PID;
            if let Some(sig) = self.procs[&c].death_signal {
                self.deliver(c, sig);
            }
            if matches!(self.procs[&c].run, Run::Zombie(_)) {
                self.procs.remove(&c);
            }
        }
        if ppid == INIT_PID {
            self.procs.remove(&pid);
        } else {
            self.deliver(ppid.0, Signal::Chld);
        }
    }

    fn unmap(&mut self, pid: i32, region: u64) {
        self.dont_fork.remove(&(pid, region));
        if let Some(users) = self.regions.get_mut(&region) {
            users.remove(&pid);
            if users.is_empty() {
                self.regions.remove(&region);
            }
        }
    }

    fn cut_if_over(&mut self) {
        if self.aborting {
            return;
        }
        let reason = if self.steps > self.config.max_steps {
            Some(format!("more than {} steps", self.config.max_steps))
        } else if Duration::from_nanos(self.clock) > self.config.max_time {
            Some(format!("more than {:?} of virtual time", self.config.max_time))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.trace_line(0, format_args!("cut: {reason}"));
            self.outcome.get_or_insert(Outcome::Cut(reason));
            self.aborting = true;
        }
    }

    fn report(&mut self) -> Report {
        Report {
            outcome: self.outcome.clone().unwrap_or(Outcome::Finished),
            root_status: self.root_status,
            exits: self.exits.clone(),
            panics: self.panics.clone(),
            held_at_exit: self.held_at_exit.clone(),
            files: self.files.keys().cloned().collect(),
            live_regions: self.regions.len(),
            trace: std::mem::take(&mut self.trace),
            now: Instant(self.clock),
            steps: self.steps,
        }
    }
}

impl Ready {
    fn from_bits(bits: u8) -> Ready {
        let mut r = Ready::NONE;
        for flag in [Ready::READ, Ready::WRITE, Ready::HUP, Ready::ERROR] {
            if bits & flag.bits() != 0 {
                r |= flag;
            }
        }
        r
    }
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics of simulated processes are recorded, not printed: a harness run of
/// a thousand seeds would otherwise bury its verdict.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let sim = std::thread::current().name().is_some_and(|n| n.starts_with("sim-"));
            if sim {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    s.to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "panic".to_string()
                };
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

fn start_thread(shared: &Arc<Shared>, st: &mut State, pid: Pid, entry: Entry<SimOs>) {
    let shared2 = Arc::clone(shared);
    let handle = std::thread::Builder::new()
        .name(format!("sim-{}", pid.0))
        .stack_size(1 << 20)
        .spawn(move || process_main(shared2, pid, entry))
        .expect("spawn a simulation thread");
    st.threads.push(handle);
}

fn process_main(shared: Arc<Shared>, pid: Pid, entry: Entry<SimOs>) {
    let mut os = SimOs { shared: Arc::clone(&shared), pid };
    // Wait for the baton before running anything.
    {
        let st = shared.lock();
        let wake = Arc::clone(&st.procs[&pid.0].wake);
        let st = wait_for_baton(&shared, st, pid.0, &wake);
        let killed = st.procs[&pid.0].fatal.is_some() || st.aborting;
        drop(st);
        if killed {
            let mut st = shared.lock();
            let n = st.procs[&pid.0].fatal.unwrap_or(9);
            st.exit_process(pid.0, ExitStatus::Signaled(n));
            st.hand_over(pid.0);
            notify_end(&shared, &st);
            return;
        }
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| entry(&mut os)));
    let mut st = shared.lock();
    let status = match result {
        Ok(code) => ExitStatus::Exited(code),
        Err(payload) if payload.is::<Killed>() => ExitStatus::Signaled(st.procs[&pid.0].fatal.unwrap_or(9)),
        Err(_) => {
            let msg = PANIC_MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "panic".into());
            st.trace_line(pid.0, format_args!("panic: {msg}"));
            st.panics.push((pid, msg));
            ExitStatus::Exited(101)
        }
    };
    st.exit_process(pid.0, status);
    st.hand_over(pid.0);
    notify_end(&shared, &st);
}

fn notify_end(shared: &Shared, st: &State) {
    if st.done {
        shared.main.notify_all();
    }
}

fn wait_for_baton<'a>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, State>,
    me: i32,
    wake: &Condvar,
) -> MutexGuard<'a, State> {
    while st.running != Some(me) {
        if st.done {
            // The world ended while this process waited: it is torn down.
            break;
        }
        st = wake.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    let _ = shared;
    st
}

impl SimOs {
    /// Enters the world for one call: a scheduling point. Returns the state
    /// locked, with this process holding the baton. A process that has been
    /// killed unwinds here.
    fn enter(&self) -> MutexGuard<'_, State> {
        let me = self.pid.0;
        let mut st = self.shared.lock();
        if st.procs[&me].dying {
            // A dying process's destructors may still call in; they run
            // without scheduling. If user code caught the unwinding and went
            // on, it is unwound again: a killed process does not come back.
            if !std::thread::panicking() {
                drop(st);
                panic::resume_unwind(Box::new(Killed));
            }
            return st;
        }
        st.steps += 1;
        st.clock += 1_000;
        st.cut_if_over();
        st = self.schedule(st);
        self.die_if_killed(st)
    }

    fn schedule<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        if !st.hand_over(me) {
            if st.done {
                self.shared.main.notify_all();
            }
            let wake = Arc::clone(&st.procs[&me].wake);
            st = wait_for_baton(&self.shared, st, me, &wake);
        }
        st
    }

    fn die_if_killed<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        let p = st.proc(me);
        if p.fatal.is_some() || st.aborting || st.done {
            let p = st.proc(me);
            if p.fatal.is_none() {
                p.fatal = Some(9);
            }
            p.dying = true;
            drop(st);
            panic::resume_unwind(Box::new(Killed));
        }
        st
    }

    /// Blocks this process until `wait` is satisfied, then returns with the
    /// baton.
    fn block<'a>(&'a self, mut st: MutexGuard<'a, State>, wait: Wait) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        if st.procs[&me].dying {
            return st;
        }
        st.proc(me).run = Run::Blocked(wait);
        st = self.schedule(st);
        st.proc(me).run = Run::Runnable;
        self.die_if_killed(st)
    }

    fn ebadf() -> io::Error {
        io::Error::from_raw_os_error(9)
    }

    /// The world's trace so far is not reachable from a process; `note`
    /// writes into it.
    fn stream_of(st: &State, pid: i32, fd: Fd) -> io::Result<(u64, usize)> {
        match st.object_of(pid, fd).map(|id| &st.objects[&id].0) {
            Some(Object::Stream { conn, side }) => Ok((*conn, *side)),
            Some(_) => Err(io::Error::from_raw_os_error(88)), // ENOTSOCK-ish: not a stream
            None => Err(Self::ebadf()),
        }
    }
}

impl Os for SimOs {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn parent_pid(&self) -> Pid {
        self.shared.lock().procs[&self.pid.0].ppid
    }

    fn now(&self) -> Instant {
        Instant(self.shared.lock().clock)
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let st = self.enter();
        if st.clock < deadline.0 {
            let _st = self.block(st, Wait::Sleep { deadline: deadline.0 });
        }
    }

    fn spawn(&mut self, opts: SpawnOptions, entry: Entry<SimOs>) -> io::Result<Pid> {
        let me = self.pid.0;
        let mut st = self.enter();
        let rate = st.config.faults.spawn_fails;
        if st.fault(rate) {
            st.trace_line(me, format_args!("spawn -> fault EAGAIN"));
            return Err(io::Error::from_raw_os_error(11));
        }
        let pid = Pid(st.next_pid);
        st.next_pid += 1;
        let parent = &st.procs[&me];
        let pgid = if opts.new_group { pid } else { parent.pgid };
        let mut child = Proc::new(pid, Pid(me), pgid);
        // The child's copy of the descriptor table: every object gains a
        // reference. The signal pipe is the parent's own and is closed in the
        // child, as the real implementation does.
        let sig_fd = parent.signal_fd;
        let fds: Vec<(i32, u64)> =
            parent.fds.iter().map(|(f, o)| (*f, *o)).filter(|(f, _)| Some(*f) != sig_fd).collect();
        let regions: BTreeSet<u64> =
            parent.regions.iter().copied().filter(|r| !st.dont_fork.contains(&(me, *r))).collect();
        child.niceness = parent.niceness;
        child.uid = parent.uid;
        child.gid = parent.gid;
        child.umask = parent.umask;
        for (fd, id) in &fds {
            st.objects.get_mut(id).unwrap().1 += 1;
            child.fds.insert(*fd, *id);
        }
        for r in &regions {
            st.regions.get_mut(r).unwrap().insert(pid.0);
        }
        child.regions = regions;
        st.procs.insert(pid.0, child);
        st.trace_line(me, format_args!("spawn -> {pid}"));
        start_thread(&self.shared, &mut st, pid, entry);
        Ok(pid)
    }

    fn try_reap(&mut self) -> io::Result<Option<(Pid, ExitStatus)>> {
        let me = self.pid.0;
        let mut st = self.enter();
        let zombies: Vec<(i32, ExitStatus)> = st
            .procs
            .values()
            .filter(|p| p.ppid.0 == me)
            .filter_map(|p| match p.run {
                Run::Zombie(s) => Some((p.pid.0, s)),
                _ => None,
            })
            .collect();
        if zombies.is_empty() {
            return Ok(None);
        }
        let i = st.below(zombies.len() as u64) as usize;
        let (pid, status) = zombies[i];
        st.procs.remove(&pid);
        st.trace_line(me, format_args!("reap {pid} {status}"));
        Ok(Some((Pid(pid), status)))
    }

    fn kill(&mut self, target: KillTarget, signal: Signal) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        let victims: Vec<i32> = match target {
            KillTarget::Process(pid) => st.procs.get(&pid.0).map(|p| vec![p.pid.0]).unwrap_or_default(),
            KillTarget::Group(g) => st.procs.values().filter(|p| p.pgid == g && p.alive()).map(|p| p.pid.0).collect(),
        };
        st.trace_line(me, format_args!("kill {target:?} {signal} -> {victims:?}"));
        if victims.is_empty() {
            return Err(io::Error::from_raw_os_error(3)); // ESRCH
        }
        for v in victims {
            st.deliver(v, signal);
        }
        Ok(())
    }

    fn setsid(&mut self) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        let p = st.proc(me);
        p.pgid = p.pid;
        Ok(())
    }

    fn set_niceness(&mut self, niceness: i32) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).niceness = niceness;
        Ok(())
    }

    fn set_parent_death_signal(&mut self, signal: Signal) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).death_signal = Some(signal);
        Ok(())
    }

    fn install_signals(&mut self, signals: &[Signal]) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        for s in signals {
            assert!(*s != Signal::Kill && *s != Signal::Stop, "{s} cannot be caught");
            st.proc(me).installed.insert(*s);
        }
        if let Some(fd) = st.procs[&me].signal_fd {
            return Ok(Fd(fd));
        }
        let id = st.new_object(Object::SignalWake { pid: me });
        let fd = st.install_fd(me, id);
        st.proc(me).signal_fd = Some(fd.0);
        Ok(fd)
    }

    fn take_signals(&mut self) -> io::Result<SignalSet> {
        let me = self.pid.0;
        let mut st = self.enter();
        let set = std::mem::take(&mut st.proc(me).pending);
        if !set.is_empty() {
            let names: Vec<&str> = set.iter().map(Signal::name).collect();
            st.trace_line(me, format_args!("signals {}", names.join(",")));
        }
        Ok(set)
    }

    fn listen(&mut self, addr: &Address, opts: ListenOptions) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        match addr {
            Address::Unix(path) => {
                if st.files.contains_key(path) {
                    return Err(io::Error::from_raw_os_error(98)); // EADDRINUSE
                }
                // Made under a umask that lets exactly `unix_mode` through,
                // as the real bind is: the process's own umask plays no part.
                st.files.insert(path.clone(), FileNode::Socket { mode: opts.unix_mode & 0o777 });
            }
            Address::Tcp(sa) => {
                if st.tcp_ports.contains_key(sa) {
                    return Err(io::Error::from_raw_os_error(98));
                }
            }
        }
        let max = opts.backlog.max(1) as usize;
        let owner = match addr {
            Address::Unix(_) => End::of(&st.procs[&me]),
            Address::Tcp(sa) => End::Tcp(*sa),
        };
        let id =
            st.new_object(Object::Listener { addr: addr.clone(), backlog: VecDeque::new(), max, open: true, owner });
        if let Address::Tcp(sa) = addr {
            st.tcp_ports.insert(*sa, id);
        }
        let fd = st.install_fd(me, id);
        st.trace_line(me, format_args!("listen {addr} -> fd {fd}"));
        Ok(fd)
    }

    fn accept(&mut self, listener: Fd) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        let id = st.object_of(me, listener).ok_or_else(Self::ebadf)?;
        let rate = st.config.faults.accept_emfile;
        let Object::Listener { backlog, .. } = &mut st.objects.get_mut(&id).unwrap().0 else {
            return Err(io::Error::from_raw_os_error(22)); // EINVAL
        };
        if backlog.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if st.fault(rate) {
            st.trace_line(me, format_args!("accept -> fault EMFILE"));
            return Err(io::Error::from_raw_os_error(24));
        }
        let Object::Listener { backlog, .. } = &mut st.objects.get_mut(&id).unwrap().0 else { unreachable!() };
        let conn = backlog.pop_front().unwrap();
        let obj = st.new_object(Object::Stream { conn, side: 1 });
        let fd = st.install_fd(me, obj);
        st.trace_line(me, format_args!("accept -> fd {fd} (conn {conn})"));
        Ok(fd)
    }

    fn connect(&mut self, addr: &Address) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        let listener = match addr {
            Address::Unix(path) => {
                // connect follows symbolic links, as the kernel's does.
                let path = st.resolve(path)?;
                match st.files.get(&path) {
                    None => return Err(io::Error::from_raw_os_error(2)), // ENOENT
                    Some(FileNode::Regular { .. } | FileNode::Symlink { .. }) => {
                        return Err(io::Error::from_raw_os_error(111))
                    }
                    Some(FileNode::Socket { .. }) => {
                        let target = Address::Unix(path);
                        st.objects
                            .iter()
                            .find(
                                |(_, (o, _))| matches!(o, Object::Listener { addr: a, open: true, .. } if *a == target),
                            )
                            .map(|(id, _)| *id)
                    }
                }
            }
            Address::Tcp(sa) => st.tcp_ports.get(sa).copied(),
        };
        let Some(listener) = listener else {
            st.trace_line(me, format_args!("connect {addr} -> refused"));
            return Err(io::Error::from_raw_os_error(111)); // ECONNREFUSED
        };
        let conn = st.next_conn;
        let client = match addr {
            Address::Unix(_) => End::of(&st.procs[&me]),
            Address::Tcp(_) => {
                let port = EPHEMERAL_PORTS + (conn % 20_000) as u16;
                End::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
            }
        };
        let Object::Listener { backlog, max, owner, .. } = &mut st.objects.get_mut(&listener).unwrap().0 else {
            unreachable!()
        };
        if backlog.len() >= *max {
            return Err(io::Error::from_raw_os_error(11)); // EAGAIN: backlog full
        }
        backlog.push_back(conn);
        let server = *owner;
        st.next_conn += 1;
        st.conns.insert(
            conn,
            Conn { bufs: [VecDeque::new(), VecDeque::new()], open: [true, true], ends: [client, server] },
        );
        let obj = st.new_object(Object::Stream { conn, side: 0 });
        let fd = st.install_fd(me, obj);
        st.trace_line(me, format_args!("connect {addr} -> fd {fd} (conn {conn})"));
        Ok(fd)
    }

    fn socket_pair(&mut self) -> io::Result<(Fd, Fd)> {
        let me = self.pid.0;
        let mut st = self.enter();
        let conn = st.next_conn;
        st.next_conn += 1;
        let end = End::of(&st.procs[&me]);
        st.conns.insert(conn, Conn { bufs: [VecDeque::new(), VecDeque::new()], open: [true, true], ends: [end, end] });
        let a = st.new_object(Object::Stream { conn, side: 0 });
        let b = st.new_object(Object::Stream { conn, side: 1 });
        let fa = st.install_fd(me, a);
        let fb = st.install_fd(me, b);
        st.trace_line(me, format_args!("socketpair -> fd {fa}, fd {fb} (conn {conn})"));
        Ok((fa, fb))
    }

    fn read(&mut self, fd: Fd, buf: &mut [u8]) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        let other = 1 - side;
        let available = st.conns[&conn].bufs[other].len();
        if available == 0 {
            if !st.conns[&conn].open[other] {
                st.trace_line(me, format_args!("read fd {fd} -> eof"));
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = available.min(buf.len());
        let rate = st.config.faults.short_read;
        if n > 1 && st.fault(rate) {
            n = 1 + st.below(n as u64 - 1) as usize;
        }
        let c = st.conns.get_mut(&conn).unwrap();
        for (i, b) in c.bufs[other].drain(..n).enumerate() {
            buf[i] = b;
        }
        st.trace_line(me, format_args!("read fd {fd} -> {n}"));
        Ok(n)
    }

    fn write(&mut self, fd: Fd, buf: &[u8]) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        if !st.conns[&conn].open[1 - side] {
            st.trace_line(me, format_args!("write fd {fd} -> EPIPE"));
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = STREAM_CAPACITY - st.conns[&conn].bufs[side].len();
        if room == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = room.min(buf.len());
        let rate = st.config.faults.short_write;
        if n > 1 && st.fault(rate) {
            n = 1 + st.below(n as u64 - 1) as usize;
        }
        st.conns.get_mut(&conn).unwrap().bufs[side].extend(&buf[..n]);
        st.trace_line(me, format_args!("write fd {fd} -> {n}"));
        Ok(n)
    }

    /// A simulated process only has the descriptors the world gave it, so a
    /// number it was not given names nothing and its close does nothing.
    fn close(&mut self, fd: Fd) {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.procs[&me].signal_fd == Some(fd.0) {
            st.proc(me).signal_fd = None;
        }
        st.close_fd(me, fd.0);
        st.trace_line(me, format_args!("close fd {fd}"));
    }

    fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        let rate = st.config.faults.poll_interrupted;
        let interrupted = st.fault(rate);
        let scan = |st: &State, fds: &mut [PollFd]| {
            let mut n = 0;
            for p in fds.iter_mut() {
                p.ready = st.readiness(me, p.fd.0, p.interest);
                if !p.ready.is_empty() {
                    n += 1;
                }
            }
            n
        };
        if interrupted {
            for p in fds.iter_mut() {
                p.ready = Ready::NONE;
            }
            st.trace_line(me, format_args!("poll -> EINTR"));
            return Ok(0);
        }
        let mut n = scan(&st, fds);
        let expired = deadline.is_some_and(|d| st.clock >= d.0);
        if n == 0 && !expired {
            let wait =
                Wait::Poll { fds: fds.iter().map(|p| (p.fd.0, p.interest)).collect(), deadline: deadline.map(|d| d.0) };
            st = self.block(st, wait);
            n = scan(&st, fds);
        }
        st.trace_line(me, format_args!("poll -> {n}"));
        Ok(n)
    }

    fn shm_create(&mut self, len: usize) -> io::Result<Region> {
        let me = self.pid.0;
        let mut st = self.enter();
        let rate = st.config.faults.shm_fails;
        if st.fault(rate) {
            st.trace_line(me, format_args!("shm_create -> fault ENOMEM"));
            return Err(io::Error::from_raw_os_error(12));
        }
        let words = len.div_ceil(8).max(1);
        let buf: Arc<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let id = st.next_region;
        st.next_region += 1;
        st.regions.insert(id, BTreeSet::from([me]));
        st.proc(me).regions.insert(id);
        st.trace_line(me, format_args!("shm_create {len} -> region {id}"));
        Ok(Region::from_buffer(buf, id))
    }

    fn shm_keep_from_children(&mut self, region: &Region) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        if !st.procs[&me].regions.contains(&region.id()) {
            return Err(io::Error::from_raw_os_error(12)); // ENOMEM: not mapped
        }
        st.dont_fork.insert((me, region.id()));
        st.trace_line(me, format_args!("madvise dontfork region {}", region.id()));
        Ok(())
    }

    unsafe fn shm_unmap(&mut self, region: Region) {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.proc(me).regions.remove(&region.id()) {
            st.unmap(me, region.id());
        }
        st.trace_line(me, format_args!("shm_unmap region {}", region.id()));
    }

    fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError> {
        let me = self.pid.0;
        let mut st = self.enter();
        let (uid, umask) = (st.procs[&me].uid, st.procs[&me].umask);
        let fresh = FileNode::Regular { content: Vec::new(), lock: None, uid, mode: 0o600 & !umask };
        // The real arm's rules, in its order: what is at the path is judged
        // before anything is done to it, and a refused file is left alone.
        let held = match st.files.entry(path.to_path_buf()).or_insert(fresh) {
            FileNode::Symlink { .. } => Err(PidFileError::Unsafe("is a symbolic link".into())),
            FileNode::Socket { .. } => Err(PidFileError::Io(io::Error::from_raw_os_error(6))), // ENXIO
            FileNode::Regular { uid: owner, .. } if *owner != uid => {
                Err(PidFileError::Unsafe(format!("owned by uid {owner}, not this daemon's user ({uid})")))
            }
            FileNode::Regular { content, lock, mode, .. } => {
                if *mode & 0o077 != 0 {
                    *mode = 0o600;
                }
                Ok(lock.map(|_| std::str::from_utf8(content).ok().and_then(|s| s.trim().parse::<i32>().ok())))
            }
        };
        let refusal = match held {
            Err(e) => Some(e),
            Ok(None) => None,
            // As `kill(pid, 0)` tells it: a zombie not yet reaped still runs.
            Ok(Some(Some(pid))) if pid > 0 && st.procs.contains_key(&pid) => Some(PidFileError::Locked(Some(pid))),
            Ok(Some(named)) => Some(PidFileError::LockedByOther(named)),
        };
        if let Some(e) = refusal {
            st.trace_line(me, format_args!("lock {} -> {e}", path.display()));
            return Err(e);
        }
        let id = st.new_object(Object::PidLock { path: path.to_path_buf() });
        if let Some(FileNode::Regular { content, lock, .. }) = st.files.get_mut(path) {
            *lock = Some(id);
            *content = format!("{me}\n").into_bytes();
        }
        let fd = st.install_fd(me, id);
        st.trace_line(me, format_args!("lock {} -> fd {fd}", path.display()));
        Ok(fd)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.trace_line(me, format_args!("unlink {}", path.display()));
        match st.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(2)),
        }
    }

    fn file_exists(&self, path: &Path) -> bool {
        self.shared.lock().files.contains_key(path)
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        self.shared.lock().files.get(path).map(FileNode::kind)
    }

    fn read_private_file(&mut self, path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let me = self.pid.0;
        let mut st = self.enter();
        let uid = st.procs[&me].uid;
        let denied = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        let result = match st.files.get(path) {
            None => Ok(None),
            Some(FileNode::Symlink { .. }) => denied("is a symbolic link".into()),
            Some(FileNode::Socket { .. }) => denied("not a regular file".into()),
            Some(FileNode::Regular { uid: owner, .. }) if *owner != uid => {
                denied(format!("owned by uid {owner}, not this daemon's user ({uid})"))
            }
            Some(FileNode::Regular { mode, .. }) if mode & 0o077 != 0 => {
                denied(format!("readable or writable by others (mode {mode:04o})"))
            }
            Some(FileNode::Regular { content, .. }) if content.len() > limit => {
                Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")))
            }
            Some(FileNode::Regular { content, .. }) => Ok(Some(content.clone())),
        };
        let outcome = match &result {
            Ok(Some(data)) => format!("{} bytes", data.len()),
            Ok(None) => "none".to_string(),
            Err(e) => e.to_string(),
        };
        st.trace_line(me, format_args!("read private {} -> {outcome}", path.display()));
        result
    }

    fn write_private_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.files.contains_key(path) {
            st.trace_line(me, format_args!("write private {} -> exists", path.display()));
            return Err(io::Error::from_raw_os_error(17)); // EEXIST
        }
        let uid = st.procs[&me].uid;
        st.files.insert(path.to_path_buf(), FileNode::Regular { content: data.to_vec(), lock: None, uid, mode: 0o600 });
        st.trace_line(me, format_args!("write private {} -> {} bytes", path.display(), data.len()));
        Ok(())
    }

    fn uid(&self) -> u32 {
        self.shared.lock().procs[&self.pid.0].uid
    }

    fn peer(&mut self, fd: Fd) -> io::Result<Peer> {
        let me = self.pid.0;
        let st = self.enter();
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        Ok(match st.conns[&conn].ends[1 - side] {
            End::Unix { pid, uid, gid } => Peer::Unix { pid, uid, gid },
            End::Tcp(addr) => Peer::Tcp(addr),
        })
    }

    /// Drawn from the world's generator, so a seed replays its secrets too.
    fn random_bytes(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        for chunk in buf.chunks_mut(8) {
            let word = st.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        st.trace_line(me, format_args!("random {} bytes", buf.len()));
        Ok(())
    }

    fn note(&mut self, event: std::fmt::Arguments<'_>) {
        let me = self.pid.0;
        let mut st = self.shared.lock();
        st.trace_line(me, event);
    }
}

/// Helpers for tests and harnesses: they act on the world directly, not
/// through an `Os` call a real process could make, to set up what a
/// scenario needs (another user's file, a process of another user).
impl SimOs {
    /// Puts a regular file at `path`, owned by `uid`, with permission bits
    /// `mode` and `content`, replacing whatever was there: what another
    /// user or a careless tool may have left for the daemon to find.
    pub fn plant_file(&mut self, path: &Path, uid: u32, mode: u32, content: &[u8]) {
        let me = self.pid.0;
        let mut st = self.enter();
        let node = FileNode::Regular { content: content.to_vec(), lock: None, uid, mode: mode & 0o7777 };
        st.files.insert(path.to_path_buf(), node);
        st.trace_line(me, format_args!("plant file {} uid {uid} mode {mode:04o}", path.display()));
    }

    /// Puts a symbolic link to `target` at `path`, replacing whatever was
    /// there. The world follows it where the kernel would (`connect`) and
    /// refuses it where `O_NOFOLLOW` would.
    pub fn plant_symlink(&mut self, path: &Path, target: &Path) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.files.insert(path.to_path_buf(), FileNode::Symlink { target: target.to_path_buf() });
        st.trace_line(me, format_args!("plant symlink {} -> {}", path.display(), target.display()));
    }

    /// Sets the permission bits of the regular file or socket at `path`
    /// (`chmod`, which follows no link here); `false` if there is none.
    pub fn set_file_mode(&mut self, path: &Path, mode: u32) -> bool {
        let mut st = self.enter();
        match st.files.get_mut(path) {
            Some(FileNode::Regular { mode: m, .. } | FileNode::Socket { mode: m }) => {
                *m = mode & 0o7777;
                true
            }
            _ => false,
        }
    }

    /// The permission bits of what is at `path` (`lstat`: a link's own are
    /// 0777), for tests.
    pub fn file_mode(&self, path: &Path) -> Option<u32> {
        self.shared.lock().files.get(path).map(|node| match node {
            FileNode::Regular { mode, .. } | FileNode::Socket { mode } => *mode,
            FileNode::Symlink { .. } => 0o777,
        })
    }

    /// Makes the calling process run as user `uid` from now on; the
    /// children it spawns afterwards inherit it. A harness client calls it
    /// to connect "as another user": the daemon's `peer` then tells that
    /// uid.
    pub fn set_uid(&mut self, uid: u32) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).uid = uid;
        st.trace_line(me, format_args!("set uid {uid}"));
    }

    /// As [`SimOs::set_uid`], for the process's group.
    pub fn set_gid(&mut self, gid: u32) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).gid = gid;
        st.trace_line(me, format_args!("set gid {gid}"));
    }

    /// Sets the calling process's umask and returns the previous one
    /// (children inherit it). It shapes the files the world creates for it
    /// as the kernel's does: a new pid file gets `0600 & !umask`; a unix
    /// socket and a private file get their own mode whatever it is.
    pub fn set_umask(&mut self, umask: u32) -> u32 {
        let me = self.pid.0;
        let mut st = self.enter();
        std::mem::replace(&mut st.proc(me).umask, umask & 0o777)
    }

    /// The content of a simulated file, for tests.
    pub fn file_content(&self, path: &Path) -> Option<Vec<u8>> {
        match self.shared.lock().files.get(path) {
            Some(FileNode::Regular { content, .. }) => Some(content.clone()),
            _ => None,
        }
    }

    /// Regions this process maps now, for leak checks.
    pub fn mapped_regions(&self) -> Vec<u64> {
        self.shared.lock().procs[&self.pid.0].regions.iter().copied().collect()
    }

    /// Descriptors this process holds now, for leak checks.
    pub fn open_fds(&self) -> Vec<Fd> {
        self.shared.lock().procs[&self.pid.0].fds.keys().map(|f| Fd(*f)).collect()
    }

    /// Pids of the live processes of the world, for leak checks.
    pub fn live_processes(&self) -> Vec<Pid> {
        self.shared.lock().procs.values().filter(|p| p.alive()).map(|p| p.pid).collect()
    }

    /// Changes the world's fault rates from now on: a harness turns faults
    /// off once its chaos phase is over, so that liveness is checked in a
    /// world that lets progress happen (TigerBeetle's VOPR does the same).
    pub fn set_faults(&mut self, faults: Faults) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.config.faults = faults;
        st.trace_line(me, format_args!("faults {faults:?}"));
    }

    /// A number from the world's seeded generator, for simulated workloads.
    pub fn random(&mut self, below: u64) -> u64 {
        let mut st = self.enter();
        st.below(below)
    }
}
