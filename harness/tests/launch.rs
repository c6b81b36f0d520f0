//! `-d` and systemd on the simulation: every ending of a launch is judged
//! right on a range of seeds, and the seeds reach every ending.

use forkd::testing::Mode;
use forkd_harness::launch::{self, Ending};
use forkd_os::ExitStatus;

#[test]
fn launches_of_many_seeds_are_judged_right_and_reach_every_ending() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..120 {
        let run = launch::run(seed);
        assert!(run.failures.is_empty(), "seed {seed}: {:#?}", run.failures);
        let l = launch::Launch::from_seed(seed);
        let what = match (l.mode, l.ending, run.verdict) {
            (Mode::Detached, Ending::Killed(_), Some(ExitStatus::Exited(0))) => "detached, killed once ready",
            (Mode::Detached, Ending::Killed(_), Some(ExitStatus::Exited(1))) => "detached, killed before ready",
            (Mode::Detached, Ending::Serves, _) => "detached, served",
            (Mode::Detached, Ending::AddressTaken, _) => "detached, address taken",
            (Mode::Foreground, Ending::Serves, _) if l.watchdog.is_some() => "foreground with a watchdog, served",
            (Mode::Foreground, _, _) => "foreground, other",
            _ => "other",
        };
        seen.insert(what);
    }
    for want in [
        "detached, killed once ready",
        "detached, killed before ready",
        "detached, served",
        "detached, address taken",
        "foreground with a watchdog, served",
    ] {
        assert!(seen.contains(want), "no seed gave {want:?}: {seen:?}");
    }
}
