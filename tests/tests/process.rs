//! Real processes: what the daemon's supervision rests on, end to end.

use std::time::Duration;

use forkd_os::contract::reap_n;
use forkd_os::real::{isolated, RealOs};
use forkd_os::{ExitStatus, KillTarget, Os, Signal, SpawnOptions};

#[test]
fn a_spawned_child_is_reaped_with_its_status() {
    isolated(Duration::from_secs(20), || {
        let mut os = RealOs::new().unwrap();
        let sig = os.install_signals(&[Signal::Chld]).unwrap();
        let exits = os.spawn(SpawnOptions::default(), Box::new(|_: &mut RealOs| 42)).unwrap();
        let sleeper = os
            .spawn(
                SpawnOptions { new_group: true },
                Box::new(|os: &mut RealOs| {
                    os.sleep_until(os.now() + Duration::from_secs(60));
                    0
                }),
            )
            .unwrap();
        os.kill(KillTarget::Group(sleeper), Signal::Kill).unwrap();
        let mut reaped = reap_n(&mut os, sig, 2);
        reaped.sort();
        let mut expected = vec![(exits, ExitStatus::Exited(42)), (sleeper, ExitStatus::Signaled(9))];
        expected.sort();
        assert_eq!(reaped, expected);
    });
}
