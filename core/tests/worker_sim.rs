//! The worker scenarios (`forkd_core::worker::checks`) in simulated worlds:
//! each runs as the root process of many seeded worlds and must pass in
//! every one, without leaking a descriptor or a region.

use std::time::Duration;

use forkd_core::worker::checks;
use forkd_os::sim::{Outcome, Report, SimOs, World};
use forkd_os::{ExitStatus, Pid};

const SEEDS: u64 = 20;

/// Long enough that a command answered "at once" cannot be confused with one
/// picked up at the next iteration.
const LOOPTIME: Duration = Duration::from_secs(10);

fn run_seed(seed: u64, scenario: fn(&mut SimOs)) -> Report {
    World::new(seed).run(move |os| {
        scenario(os);
        0
    })
}

/// Runs `scenario` in `SEEDS` worlds and checks what each left behind.
fn check(name: &str, scenario: fn(&mut SimOs)) {
    for seed in 0..SEEDS {
        let report = run_seed(seed, scenario);
        let replay = format!("replay: cargo nextest run -p forkd-core --test worker_sim {name} (seed {seed})");
        assert!(
            report.panics.is_empty() && report.root_status == Some(ExitStatus::Exited(0)),
            "{name} failed with seed {seed}: {:?}\n{replay}",
            report.panics
        );
        assert_eq!(report.outcome, Outcome::Finished, "{name}, seed {seed}\n{replay}");
        assert_eq!(report.live_regions, 0, "{name}, seed {seed}: a region outlived every process");
        // Each process that exited may still hold its signal pipe (the Os
        // owns it); nothing else. One that was killed had no say.
        let killed = |pid: &Pid| report.exits.iter().any(|(p, s)| p == pid && matches!(s, ExitStatus::Signaled(_)));
        for (pid, held) in report.held_at_exit.iter().filter(|(pid, _)| !killed(pid)) {
            assert!(
                held.regions.is_empty() && held.fds.iter().all(|(_, what)| what == "signal pipe"),
                "{name}, seed {seed}: process {pid} leaked {held:?}\n{replay}"
            );
        }
    }
}

#[test]
fn pause_resume_message_stop() {
    check("pause_resume_message_stop", |os| {
        let seen = checks::pause_resume_stop(os, LOOPTIME);
        assert!(
            seen.pause_ack <= Duration::from_millis(1),
            "pause acknowledged {:?} after its wake-up byte, with a looptime of {LOOPTIME:?}",
            seen.pause_ack
        );
        assert!(seen.loops_at_pause >= 1);
    });
}

#[test]
fn daemon_gone_makes_the_worker_spin_down() {
    check("daemon_gone_makes_the_worker_spin_down", |os| checks::daemon_gone(os, LOOPTIME));
}

#[test]
fn sigterm_stops_gracefully() {
    check("sigterm_stops_gracefully", |os| checks::term_stops(os, LOOPTIME));
}

#[test]
fn sigterm_during_long_work_reaches_should_stop() {
    check("sigterm_during_long_work_reaches_should_stop", |os| checks::term_during_long_work(os, LOOPTIME));
}

#[test]
fn killed_in_user_code_dies_of_the_signal() {
    check("killed_in_user_code_dies_of_the_signal", |os| checks::killed_in_work(os, LOOPTIME));
}

#[test]
fn panic_in_work_exits_70() {
    check("panic_in_work_exits_70", |os| checks::panic_in_work(os, LOOPTIME));
}

#[test]
fn spinup_error_exits_1_without_looping() {
    check("spinup_error_exits_1_without_looping", |os| checks::spinup_fails(os, LOOPTIME));
}

#[test]
fn ready_at_the_first_loop_or_when_spinup_says_so() {
    check("ready_at_the_first_loop_or_when_spinup_says_so", |os| {
        checks::ready_at_first_loop_or_when_said(os, LOOPTIME)
    });
}

#[test]
fn orphan_at_start_exits_at_once() {
    check("orphan_at_start_exits_at_once", |os| checks::orphan_at_start(os, LOOPTIME));
}

#[test]
fn short_looptime_counts_loops_on_schedule() {
    // A looptime shorter than the heartbeat: the body sets the pace.
    check("short_looptime_counts_loops_on_schedule", |os| {
        checks::pause_resume_stop(os, Duration::from_millis(20));
    });
}

#[test]
fn a_seed_replays_identically() {
    let scenario: fn(&mut SimOs) = |os| {
        checks::pause_resume_stop(os, LOOPTIME);
    };
    let a = run_seed(7, scenario);
    let b = run_seed(7, scenario);
    assert_eq!(a.trace_hash(), b.trace_hash(), "seed 7 ran two different traces");
    assert!(a.trace.iter().any(|l| l.contains("worker probe.0: paused")), "the worker notes its states");
}
