//! The worker scenarios (`forkd_core::worker::checks`) against the kernel.
//! Each forks, so each runs in a single-threaded process forked from its
//! test thread (`forkd_os::real::isolated`); run them with cargo-nextest,
//! which gives every test its own process.

use std::time::Duration;

use forkd_core::worker::checks;
use forkd_os::real::{isolated, RealOs};

/// Short enough for a quick test (a scenario waits a few looptimes).
const LOOPTIME: Duration = Duration::from_millis(200);

fn run(scenario: impl FnOnce(&mut RealOs)) {
    isolated(Duration::from_secs(60), move || {
        let mut os = RealOs::new().expect("real os");
        scenario(&mut os);
    });
}

#[test]
fn pause_resume_message_stop() {
    // The scenario checks that the pause is acknowledged before another
    // iteration runs. That it comes from the wake-up byte at once is checked
    // in virtual time by worker_sim.rs, on the same worker code; how soon on
    // the kernel is `cargo xtask bench`'s pause latency.
    run(|os| {
        checks::pause_resume_stop(os, LOOPTIME);
    });
}

#[test]
fn daemon_gone_makes_the_worker_spin_down() {
    run(|os| checks::daemon_gone(os, LOOPTIME));
}

#[test]
fn sigterm_stops_gracefully() {
    run(|os| checks::term_stops(os, LOOPTIME));
}

#[test]
fn sigterm_during_long_work_reaches_should_stop() {
    run(|os| checks::term_during_long_work(os, LOOPTIME));
}

#[test]
fn killed_in_user_code_dies_of_the_signal() {
    run(|os| checks::killed_in_work(os, LOOPTIME));
}

#[test]
fn panic_in_work_exits_70() {
    run(|os| checks::panic_in_work(os, LOOPTIME));
}

#[test]
fn spinup_error_exits_1_without_looping() {
    run(|os| checks::spinup_fails(os, LOOPTIME));
}

#[test]
fn ready_at_the_first_loop_or_when_spinup_says_so() {
    run(|os| checks::ready_at_first_loop_or_when_said(os, LOOPTIME));
}

#[test]
fn orphan_at_start_exits_at_once() {
    run(|os| checks::orphan_at_start(os, LOOPTIME));
}
