//! Real processes: what the daemon's supervision rests on, end to end.

use std::time::Duration;

use forkd_os::contract::reap_n;
use forkd_os::real::{isolated, RealOs};
use forkd_os::{ExitStatus, KillTarget, Os, PollFd, Ready, Signal, SpawnOptions};

#[test]
fn a_spawned_child_is_reaped_with_its_status() {
    isolated(Duration::from_secs(20), || {
        let mut os = RealOs::new().unwrap();
        let sig = os.install_signals(&[Signal::Chld]).unwrap();
        let exits = os.spawn(SpawnOptions::default(), Box::new(|_: &mut RealOs| 42)).unwrap();
        // A pipe that nobody writes to: the child waits on it for good, and
        // holds its write end itself, so no end of file comes either.
        let (never, _writer) = os.pipe().unwrap();
        let waiter = os
            .spawn(
                SpawnOptions { new_group: true },
                Box::new(move |os: &mut RealOs| {
                    let _ = os.poll(&mut [PollFd::new(never, Ready::READ)], None);
                    0
                }),
            )
            .unwrap();
        os.kill(KillTarget::Group(waiter), Signal::Kill).unwrap();
        let mut reaped = reap_n(&mut os, sig, 2);
        reaped.sort();
        let mut expected = vec![(exits, ExitStatus::Exited(42)), (waiter, ExitStatus::Signaled(9))];
        expected.sort();
        assert_eq!(reaped, expected);
    });
}
