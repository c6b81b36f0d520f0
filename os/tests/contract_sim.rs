//! The contract suite against the simulation: each check runs as the root
//! process of several seeded worlds, and must pass in every one of them.

use forkd_os::sim::{Outcome, World};
use forkd_os::{for_each_check, ExitStatus};

const SEEDS: u64 = 12;

fn run(name: &str, check: fn(&mut forkd_os::sim::SimOs, &std::path::Path)) {
    for seed in 0..SEEDS {
        let report = World::new(seed).run(move |os| {
            check(os, std::path::Path::new("/sim"));
            0
        });
        assert!(
            report.panics.is_empty() && report.root_status == Some(ExitStatus::Exited(0)),
            "sim: {name} failed with seed {seed}: {:?}\nreplay: cargo nextest run -p forkd-os --test contract_sim {name}",
            report.panics
        );
        assert_eq!(report.outcome, Outcome::Finished, "sim: {name}, seed {seed}");
        assert_eq!(report.live_regions, 0, "sim: {name}, seed {seed}: a region outlived every process");
    }
}

macro_rules! sim_check {
    ($name:ident) => {
        #[test]
        fn $name() {
            run(stringify!($name), forkd_os::contract::$name::<forkd_os::sim::SimOs>);
        }
    };
}

mod sim {
    use super::*;
    for_each_check!(sim_check);
}
