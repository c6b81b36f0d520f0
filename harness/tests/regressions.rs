//! Bugs the harness found in forkd-core, each pinned by the smallest world
//! that showed it, named after what it guards.

use std::time::Duration;

use forkd_harness::run_scenario;
use forkd_harness::scenario::{Req, Scenario, Step, WorkerCall};

fn check(steps: Vec<Step>) {
    let r = run_scenario(Scenario::machine(3, steps), false);
    assert!(r.passed(), "{}", r.failures.join("\n"));
}

/// A worker spawned once the daemon had run longer than the hang timeout
/// was killed as hung at the next turn of the loop: its fresh channel's
/// heartbeat read zero until the child first beat.
#[test]
fn a_new_worker_is_not_taken_for_a_hung_one_before_its_first_beat() {
    for victim in 0..3 {
        check(vec![
            Step::Sleep(Duration::from_millis(2100)),
            Step::KillWorker(victim),
            Step::Sleep(Duration::from_millis(100)),
            Step::Send(vec![Req::Worker(WorkerCall::List)]),
            Step::Await,
        ]);
    }
}
