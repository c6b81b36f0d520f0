//! forkd-harness: whole daemons run on the simulated `Os`, from one seed.
//!
//! A run is a simulated world (`forkd_os::sim::World`) whose first process,
//! the [`conductor`], starts the daemon — `forkd_core::daemon::run`, the
//! code that runs for real, with its control socket, its lifecycle and its
//! workers — then client processes that send it valid, invalid, pipelined
//! and batched requests, disconnect mid-request or never read, and a
//! [`chaos`] process that sends it signals and crashes its workers. The
//! workers themselves are given faults ([`workers`]), and the world injects
//! the operating system's (fork failing, interrupted calls, short reads and
//! writes, accept out of descriptors, shared memory refused). Everything
//! follows from one master seed ([`scenario`]), so a failure is replayed by
//! its seed alone.
//!
//! The control plane's refusals are driven too: on about half the seeds
//! the daemon listens on tcp with its token, which well-behaved clients
//! read from its file and present; other clients call without it, forge
//! browser requests, pass `max_batch`, trickle a request past the request
//! timeout, or connect to the unix socket as another user. Each must get
//! exactly its refusal, no refused call may take effect, and everyone
//! else's answers must stay as they were.
//!
//! Invariants are checked as the run goes by the processes that see them
//! break, and at the end by [`check`] over the world's report and trace.
//! Now and then the daemon is killed (its workers must end by themselves,
//! and a new daemon must start over its stale socket and pid file), or a
//! second daemon is started beside it (and must refuse).
//!
//! Each seed also runs one [`launch`] in a world of its own: the binary's
//! serving path with `-d` (its launcher, readiness pipe and double fork,
//! all through the `Os`) or in the foreground, with systemd's notify
//! socket and watchdog or without, ending served, refused or killed
//! before or after it was ready. And one [`upgrade`] of the master in
//! place, in a third world: a new build that takes over under load, one
//! that exits at start or is never ready, an old master killed during the
//! handover.
//!
//! Swarm testing: each seed turns each fault on or off, with a rate of its
//! own ([`scenario`]). The rates stay below the point where they would
//! starve progress; then, as VOPR does, the [`conductor`] turns every fault
//! off (`SimOs::set_faults`) before the liveness client of the last phase,
//! which must be answered in a world that lets progress happen.
//!
//! Not covered yet: XML-RPC, `worker.scale` (the checker would have to know
//! which instances a scale retired), and signals that arrive before the
//! daemon has installed its handlers (their default action kills it, as it
//! would any process).
//!
//! What this crate must never do: let anything outside the seed in. No
//! clock, no entropy, no `HashMap` order in anything observable: the same
//! seed gives the same trace, whatever thread runs it and however many run
//! beside it.

pub mod chaos;
pub mod check;
pub mod client;
pub mod conductor;
pub mod launch;
pub mod rng;
pub mod scenario;
pub mod upgrade;
pub mod wire;
pub mod workers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use forkd_os::sim::{Config, Report, TraceLine, World};

pub use scenario::Scenario;
use workers::Probe;

/// The outcome of one run.
#[derive(Debug)]
pub struct RunResult {
    pub seed: u64,
    /// Every invariant broken, one line each; empty when the run passed.
    pub failures: Vec<String>,
    pub trace_hash: u64,
    pub steps: u64,
    /// Virtual time at the end, in nanoseconds.
    pub virtual_nanos: u64,
    /// The trace, when it was asked for.
    pub trace: Option<Vec<TraceLine>>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs a scenario to its end and judges it.
pub fn run_scenario(sc: Scenario, keep_trace: bool) -> RunResult {
    let probe = Probe::default();
    let config = Config {
        seed: sc.world_seed,
        faults: sc.faults,
        max_steps: sc.max_steps,
        max_time: Duration::from_secs(600),
        trace: true,
        env: Default::default(),
    };
    let world_sc = sc.clone();
    let world_probe = probe.clone();
    let report: Report = World::with_config(config).run(move |os| conductor::run(os, world_sc, world_probe));
    let failures = check::check(&sc, &report, &probe);
    RunResult {
        seed: sc.seed,
        failures,
        trace_hash: report.trace_hash(),
        steps: report.steps,
        virtual_nanos: report.now.as_nanos(),
        trace: keep_trace.then_some(report.trace),
    }
}

/// Runs the scenario of `seed`.
/// Runs a seed: its scenario, then its launch (`-d` and systemd, in a
/// world of its own, see [`launch`]), then its master upgrade (see
/// [`upgrade`]).
pub fn run_seed(seed: u64, keep_trace: bool) -> RunResult {
    let mut result = run_scenario(Scenario::from_seed(seed), keep_trace);
    let launched = launch::run(seed);
    result.failures.extend(launched.failures);
    result.trace_hash = result.trace_hash.rotate_left(1) ^ launched.report.trace_hash();
    result.steps += launched.report.steps;
    result.virtual_nanos += launched.report.now.as_nanos();
    if let Some(trace) = &mut result.trace {
        trace.extend(launched.report.trace);
    }
    let upgraded = upgrade::run(seed);
    result.failures.extend(upgraded.failures);
    result.trace_hash = result.trace_hash.rotate_left(1) ^ upgraded.report.trace_hash();
    result.steps += upgraded.report.steps;
    result.virtual_nanos += upgraded.report.now.as_nanos();
    if let Some(trace) = &mut result.trace {
        trace.extend(upgraded.report.trace);
    }
    result
}

/// Runs `seeds` on `threads` threads; results in seed order. Each world is
/// independent, so the results do not depend on the number of threads.
/// `stop_early` stops handing out seeds after the first failure.
pub fn run_seeds(seeds: &[u64], threads: usize, stop_early: bool) -> Vec<RunResult> {
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Mutex<Vec<RunResult>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                if stop_early && failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let r = run_seed(seed, false);
                if !r.passed() {
                    failed.store(true, Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.seed);
    results
}

/// The command that replays a seed (of a build without planted bugs).
pub fn replay_command(seed: u64) -> String {
    format!("cargo xtask sim --seed {seed}")
}
