//! The chaos process: signals to the daemon at random moments, storms of
//! them, crashes of worker processes, and probes of the pid lock.
//!
//! It acts from outside, as an administrator (or the OOM killer) would: it
//! knows the daemon's pid and which processes are the harness's own, and
//! takes any other live process for a worker.

use std::path::Path;
use std::time::Duration;

use forkd_os::sim::SimOs;
use forkd_os::{Instant, KillTarget, Os, Pid, PidFileError, Signal, SpawnOptions};

use crate::rng::Rng;
use crate::scenario::{Chaos, Scenario, PID_FILE};
use crate::workers::Probe;

/// What the chaos process knows.
pub struct ChaosCtx {
    pub scenario: Scenario,
    pub probe: Probe,
    pub daemon: Pid,
    /// The harness's processes: anything else alive is a worker.
    pub harness: Vec<Pid>,
    /// When the chaos phase started (the plan's offsets count from it).
    pub epoch: Instant,
    pub seed: u64,
}

/// The entry of the chaos process.
pub fn run(os: &mut SimOs, ctx: ChaosCtx) -> i32 {
    let ChaosCtx { scenario, probe, daemon, harness, epoch, seed } = ctx;
    let mut r = Rng::new(seed);
    let mut harness = harness;
    for (at, what) in scenario.chaos.clone() {
        os.sleep_until(epoch + at);
        match what {
            Chaos::Signal(sig) => {
                let _ = os.kill(KillTarget::Process(daemon), sig);
            }
            Chaos::Storm(sigs) => {
                for sig in sigs {
                    let _ = os.kill(KillTarget::Process(daemon), sig);
                }
            }
            Chaos::KillWorker | Chaos::TermWorker => {
                let victims = workers(os, &harness);
                if !victims.is_empty() {
                    let victim = *r.pick(&victims);
                    let sig = if what == Chaos::KillWorker { Signal::Kill } else { Signal::Term };
                    let _ = os.kill(KillTarget::Process(victim), sig);
                }
            }
            Chaos::KillAll => {
                for victim in workers(os, &harness) {
                    let _ = os.kill(KillTarget::Process(victim), Signal::Kill);
                }
            }
            Chaos::ProbePidLock => probe_pid_lock(os, daemon, "chaos"),
            Chaos::KillDaemon => {
                os.note(format_args!("harness killed the daemon {daemon}"));
                let _ = os.kill(KillTarget::Process(daemon), Signal::Kill);
            }
            Chaos::SecondDaemon => {
                let (sc, pr) = (scenario.clone(), probe.clone());
                let entry = Box::new(move |os: &mut SimOs| crate::conductor::second_daemon_main(os, sc, pr, daemon));
                let Ok(second) = os.spawn(SpawnOptions::default(), entry) else { continue };
                harness.push(second);
                os.note(format_args!("harness second pid={second}"));
                // Waited for here: it must give up at once, or stop itself.
                let deadline = os.now() + Duration::from_secs(30);
                loop {
                    if matches!(os.try_reap(), Ok(Some((pid, _))) if pid == second) {
                        break;
                    }
                    if os.now() >= deadline {
                        os.note(format_args!("VIOLATION chaos: the second daemon {second} did not end"));
                        let _ = os.kill(KillTarget::Process(second), Signal::Kill);
                        break;
                    }
                    let until = os.now() + Duration::from_millis(1);
                    os.sleep_until(until);
                }
            }
        }
    }
    0
}

/// The live processes that are not the harness's: the daemon's workers.
fn workers(os: &SimOs, harness: &[Pid]) -> Vec<Pid> {
    let me = os.pid();
    os.live_processes().into_iter().filter(|p| *p != me && !harness.contains(p)).collect()
}

/// Tries to take the daemon's pid lock. Taking it is noted for the checker,
/// which knows whether the daemon was running then; the lock taken is given
/// back at once, and the file it made removed.
pub fn probe_pid_lock(os: &mut SimOs, daemon: Pid, who: &str) {
    let path = Path::new(PID_FILE);
    match os.lock_pid_file(path) {
        Ok(fd) => {
            os.note(format_args!("CHECK pidlock acquired by {who}"));
            let _ = os.remove_file(path);
            os.close(fd);
        }
        Err(PidFileError::Locked(Some(pid))) if pid == daemon.0 => {}
        Err(PidFileError::Locked(other)) => os.note(format_args!(
            "VIOLATION {who}: the pid file is locked, and names {other:?}, not the daemon {daemon}"
        )),
        Err(e @ (PidFileError::Io(_) | PidFileError::LockedByOther(_) | PidFileError::Unsafe(_))) => {
            os.note(format_args!("VIOLATION {who}: pid file: {e}"))
        }
    }
}
