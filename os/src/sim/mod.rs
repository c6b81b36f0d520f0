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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::{ExitStatus, Fd, Instant, Pid};

mod exec;
mod files;
mod net;
mod os_impl;
mod process;
mod sched;
mod state;
mod trace;

pub use trace::{TraceEvent, TraceLine};

use process::Proc;
use sched::{install_panic_hook, start_thread};
use state::State;

/// A program `Os::spawn_exec` can execute in a world: given its
/// arguments, the entry its process runs. Installed at a path with
/// [`SimOs::install_program`].
pub type Program = Arc<dyn Fn(Vec<OsString>) -> crate::Entry<SimOs> + Send + Sync>;

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
    /// The master seed: every scheduling choice and fault of the run derives
    /// from it, so one seed replays one run.
    pub seed: u64,
    /// How often each kind of fault is injected; none by default.
    pub faults: Faults,
    /// The run is cut short past this many scheduling points.
    pub max_steps: u64,
    /// The run is cut short past this much virtual time.
    pub max_time: Duration,
    /// Keep a trace of every call (always on for replays; off saves memory).
    pub trace: bool,
    /// The environment every simulated process sees (`Os::env_var`).
    pub env: BTreeMap<String, OsString>,
}

impl Config {
    /// The default set-up for `seed`: no faults, cut at 2,000,000 scheduling
    /// points or one hour of virtual time, trace on, empty environment.
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            faults: Faults::default(),
            max_steps: 2_000_000,
            max_time: Duration::from_secs(3600),
            trace: true,
            env: BTreeMap::new(),
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
    /// Whether every process finished, the run deadlocked, or it was cut.
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
    /// Every datagram sent (`Os::send_datagram`), in order: who sent it,
    /// to what address, what it said.
    pub datagrams: Vec<(Pid, OsString, Vec<u8>)>,
    /// The trace, one event a line.
    pub trace: Vec<TraceLine>,
    /// Virtual time at the end.
    pub now: Instant,
    /// How many scheduling points the run went through.
    pub steps: u64,
}

impl Report {
    /// A 64-bit FNV-1a hash of the trace, to compare runs cheaply.
    pub fn trace_hash(&self) -> u64 {
        let mut h = crate::rng::Fnv1a::default();
        for line in &self.trace {
            h.write(line.to_string().as_bytes());
            h.write(b"\n");
        }
        h.finish()
    }
}

/// What a process had not released when it exited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Descriptors still open, each with what it was (`stream 3.0`,
    /// `listener unix:///…`, `signal pipe`, `pid file …`).
    pub fds: Vec<(Fd, String)>,
    /// The world's numbers of the shared regions still mapped.
    pub regions: Vec<u64>,
}

/// A deterministic simulated world.
pub struct World {
    config: Config,
}

impl World {
    /// A world with the default set-up for `seed` ([`Config::new`]).
    ///
    /// ```
    /// use forkd_os::sim::{Outcome, World};
    /// use forkd_os::{ExitStatus, Os, SpawnOptions};
    ///
    /// let report = World::new(7).run(|os| {
    ///     let child = os.spawn(SpawnOptions::default(), Box::new(|_| 3)).unwrap();
    ///     loop {
    ///         if let Some((pid, status)) = os.try_reap().unwrap() {
    ///             assert_eq!(pid, child);
    ///             return if status == ExitStatus::Exited(3) { 0 } else { 1 };
    ///         }
    ///         os.sleep_until(os.now() + std::time::Duration::from_millis(1));
    ///     }
    /// });
    /// assert_eq!(report.outcome, Outcome::Finished);
    /// assert_eq!(report.root_status, Some(ExitStatus::Exited(0)));
    /// ```
    pub fn new(seed: u64) -> World {
        World { config: Config::new(seed) }
    }

    /// A world set up by `config`.
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
            st.record(ROOT_PID.0, TraceEvent::Start);
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
