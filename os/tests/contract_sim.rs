//! The contract suite against the simulation: each check runs as the root
//! process of several seeded worlds, and must pass in every one of them.

use forkd_os::sim::{Outcome, World};
use forkd_os::{for_each_check, ExitStatus};

const SEEDS: u64 = 12;

fn run(name: &str, check: fn(&mut forkd_os::sim::SimOs, &std::path::Path)) {
    for seed in 0..SEEDS {
        let mut config = forkd_os::sim::Config::new(seed);
        config.env.insert("PATH".into(), "/usr/bin:/bin".into());
        let report = World::with_config(config).run(move |os| {
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

/// What `contract::deadlines_fire_in_order` cannot ask of the kernel, where
/// a sleeper may wake late: in a simulated world every deadline is met
/// exactly, so sleepers wake in the order of their deadlines, at them.
#[test]
fn simulated_sleepers_wake_exactly_at_their_deadlines_in_their_order() {
    use forkd_os::contract::{read_to_end, reap_n, write_all};
    use forkd_os::{Os, Signal, SpawnOptions};
    use std::time::Duration;

    run("simulated_sleepers_wake_exactly_at_their_deadlines_in_their_order", |os, _| {
        let sig = os.install_signals(&[Signal::Chld]).unwrap();
        let (here, there) = os.socket_pair().unwrap();
        let start = os.now();
        for i in [3u8, 1, 2] {
            let deadline = start + Duration::from_millis(60 * u64::from(i));
            os.spawn(
                SpawnOptions::default(),
                Box::new(move |os: &mut forkd_os::sim::SimOs| {
                    os.sleep_until(deadline);
                    write_all(os, there, &[i, u8::from(os.now() == deadline)]);
                    0
                }),
            )
            .unwrap();
        }
        os.close(there);
        assert_eq!(read_to_end(os, here), vec![1, 1, 2, 1, 3, 1], "(child, woke at its deadline), in order");
        assert_eq!(reap_n(os, sig, 3).len(), 3);
        os.close(here);
    });
}
