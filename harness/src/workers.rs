//! The workers the simulated daemon runs, and the faults they meet.
//!
//! Each process of a worker gets a [`Fate`], drawn from the worker's seed
//! and the number of processes the factory has made so far, so that a
//! restarted worker may fail differently. The faults are expressed the way
//! user code can express them, since a `Worker` never sees the `Os`:
//!
//! - a *panic in user code* is a `panic!`: `run_worker` catches it and the
//!   process exits with code 70;
//! - a *crash* is an unwinding with a payload that is not a panic message
//!   (`panic_any(Crash)`): `run_worker` lets it through, as it does the
//!   unwinding of a killed process, so the process dies at once without
//!   spindown or cleanup, as after a segfault (the world records exit 101).
//!   The chaos process adds crashes from outside with SIGKILL;
//! - an error from `spinup` is an `Err`: exit code 1;
//! - a *hang* and a *slow* step are `Context::stall`, the one hook core
//!   gives user code for this: it blocks in virtual time without reading
//!   commands or beating. A busy loop could not do it: the simulated clock
//!   only moves at `Os` calls.
//!
//! Workers also watch one invariant from the inside: a paused worker runs
//! no loop body. A worker tracks pause and resume from the events its
//! context reports, and a body that runs while paused is reported to the
//! [`Probe`].

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkd_core::daemon::WorkerFactory;
use forkd_core::worker::{BoxError, Context, Worker, WorkerEvent};
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::scenario::WorkerPlan;

/// The harness's instrument inside the world: what worker user code saw,
/// having no `Os` to note it in the trace with. It records and is never
/// read by simulated code, so it cannot change what the world does; one
/// process runs at a time, so its order is the world's order.
#[derive(Clone, Debug, Default)]
pub struct Probe(Arc<Mutex<ProbeLog>>);

#[derive(Clone, Debug, Default)]
pub struct ProbeLog {
    pub violations: Vec<String>,
    /// Worker processes that hung: they must be killed within the hang
    /// timeout, if there is one.
    pub hung: Vec<i32>,
}

impl Probe {
    pub fn violation(&self, what: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).violations.push(what);
    }

    pub fn violations(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).violations.clone()
    }

    pub fn hung(&self) -> Vec<i32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).hung.clone()
    }

    /// Records that the calling worker process hangs from now on. User code
    /// does not know its pid; the simulation names each process's thread
    /// `sim-PID`, which is the one thing it is read from.
    fn hang(&self) {
        let pid = std::thread::current().name().and_then(|n| n.strip_prefix("sim-")).and_then(|p| p.parse().ok());
        match pid {
            Some(pid) => self.0.lock().unwrap_or_else(|e| e.into_inner()).hung.push(pid),
            None => self.violation("a hung worker cannot tell its pid: the simulation names threads otherwise".into()),
        }
    }
}

/// The payload of a crash: not a panic message, so nothing catches it.
#[derive(Debug)]
pub struct Crash;

/// Where a panic of a crash comes from, to tell it from a real panic in the
/// report (the world records both).
pub const CRASH_SITE: &str = "workers.rs";

/// A very long time: a stall this long is a hang (the daemon's hang
/// detection or its stop escalation ends it).
const FOREVER: Duration = Duration::from_secs(1000);

/// What happens to one worker process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Healthy,
    SpinupErr,
    SpinupPanic,
    SpinupCrash,
    SlowSpinup(Duration),
    SpinupHang,
    /// At the given iteration of the loop body.
    LoopPanic(u64),
    LoopCrash(u64),
    LoopHang(u64),
    /// Every body returns `Err` (the loop goes on).
    LoopErr,
    /// Every body takes this long.
    SlowLoop(Duration),
    SpindownPanic,
    SpindownCrash,
    SlowSpindown(Duration),
    /// `on_message` panics.
    MessagePanic,
}

impl Fate {
    /// The fate of a process of a worker whose processes are `faulty`
    /// percent faulty.
    pub fn draw(r: &mut Rng, faulty: u64) -> Fate {
        if !r.chance(faulty) {
            return Fate::Healthy;
        }
        let iteration = r.range(0, 20);
        let slow = Duration::from_millis(r.range(5, 400));
        // Hangs weigh more: they take a hang timeout to matter, which half
        // the seeds have.
        match r.weighted(&[1, 1, 1, 1, 3, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1]) {
            0 => Fate::SpinupErr,
            1 => Fate::SpinupPanic,
            2 => Fate::SpinupCrash,
            3 => Fate::SlowSpinup(slow),
            4 => Fate::SpinupHang,
            5 => Fate::LoopPanic(iteration),
            6 => Fate::LoopCrash(iteration),
            7 => Fate::LoopHang(iteration),
            8 => Fate::LoopErr,
            9 => Fate::SlowLoop(slow / 4),
            10 => Fate::SpindownPanic,
            11 => Fate::SpindownCrash,
            12 => Fate::SlowSpindown(slow),
            13 => Fate::MessagePanic,
            _ => Fate::SlowSpindown(slow * 2),
        }
    }
}

/// A worker that lives out its fate.
pub struct TestWorker {
    fate: Fate,
    probe: Probe,
    paused: bool,
}

impl TestWorker {
    pub fn new(fate: Fate, probe: Probe) -> TestWorker {
        TestWorker { fate, probe, paused: false }
    }

    /// Follows pause and resume through the events since the last call.
    fn observe(&mut self, ctx: &Context<'_>) {
        for e in ctx.events() {
            match e {
                WorkerEvent::Pause => self.paused = true,
                WorkerEvent::Resume => self.paused = false,
                _ => {}
            }
        }
    }
}

impl Worker for TestWorker {
    fn spinup(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        self.observe(ctx);
        match self.fate {
            Fate::SpinupErr => Err("spinup refused (planned)".into()),
            Fate::SpinupPanic => panic!("spinup panicked (planned)"),
            Fate::SpinupCrash => std::panic::panic_any(Crash),
            Fate::SlowSpinup(d) => {
                ctx.stall(d);
                Ok(())
            }
            Fate::SpinupHang => {
                self.probe.hang();
                ctx.stall(FOREVER);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        self.observe(ctx);
        if self.paused {
            self.probe.violation(format!(
                "worker {}.{} ran its loop body (iteration {}) while paused",
                ctx.name(),
                ctx.instance(),
                ctx.loops()
            ));
        }
        let at = ctx.loops();
        match self.fate {
            Fate::LoopPanic(n) if at == n => panic!("loop body panicked (planned)"),
            Fate::LoopCrash(n) if at == n => std::panic::panic_any(Crash),
            Fate::LoopHang(n) if at == n => {
                self.probe.hang();
                ctx.stall(FOREVER);
                Ok(())
            }
            Fate::LoopErr => Err(format!("iteration {at} failed (planned)").into()),
            Fate::SlowLoop(d) => {
                ctx.stall(d);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn spindown(&mut self, ctx: &mut Context<'_>) {
        self.observe(ctx);
        match self.fate {
            Fate::SpindownPanic => panic!("spindown panicked (planned)"),
            Fate::SpindownCrash => std::panic::panic_any(Crash),
            Fate::SlowSpindown(d) => ctx.stall(d),
            _ => {}
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, msg: Value) -> Result<Value, BoxError> {
        self.observe(ctx);
        if self.fate == Fate::MessagePanic {
            panic!("on_message panicked (planned)");
        }
        Ok(json!({ "echo": msg }))
    }
}

/// The factory of a worker: each call (one per process, in the daemon just
/// before its fork) draws the next process's fate.
pub fn factory(plan: &WorkerPlan, probe: Probe) -> WorkerFactory {
    let seed = plan.seed;
    let faulty = plan.faulty;
    let made = Cell::new(0u64);
    Box::new(move || {
        let n = made.get();
        made.set(n + 1);
        let mut r = Rng::new(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Box::new(TestWorker::new(Fate::draw(&mut r, faulty), probe.clone()))
    })
}
