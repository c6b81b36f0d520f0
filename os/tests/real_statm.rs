//! The `statm` files `RealOs` keeps open between reads of its children's
//! memory stay the parent's: a child forked afterwards holds none of them.

use std::time::Duration;

use forkd_os::real::RealOs;
use forkd_os::{ExitStatus, Os, PollFd, Ready, Signal, SpawnOptions};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The descriptors of this process that are open on some `statm` file.
fn statm_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().ends_with("/statm"))
        .count()
}

fn scenario() {
    let mut os = RealOs::new().unwrap();
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let sleeper = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut RealOs| {
                os.close(here);
                // Ends when the parent closes its end.
                let mut fds = [PollFd::new(there, Ready::READ)];
                let _ = os.poll(&mut fds, None);
                0
            }),
        )
        .unwrap();
    os.close(there);
    let first = os.resident_memory(sleeper).expect("memory of a live child");
    let again = os.resident_memory(sleeper).expect("read again, from the open file");
    assert!(first >= 4096 && again >= 4096, "{first} {again}");
    assert_eq!(statm_descriptors(), 1, "the parent keeps the child's statm open");
    let counter =
        os.spawn(SpawnOptions::default(), Box::new(|_: &mut RealOs| i32::from(statm_descriptors() != 0))).unwrap();
    os.close(here);
    let deadline = os.now() + TIMEOUT;
    let mut ended = Vec::new();
    while ended.len() < 2 {
        assert!(os.now() < deadline, "children did not exit within {TIMEOUT:?}");
        while let Some(reaped) = os.try_reap().unwrap() {
            ended.push(reaped);
        }
        if ended.len() == 2 {
            break;
        }
        let mut fds = [PollFd::new(sig, Ready::READ)];
        os.poll(&mut fds, Some(deadline)).unwrap();
        os.take_signals().unwrap();
    }
    assert!(ended.contains(&(counter, ExitStatus::Exited(0))), "the forked child held a statm file: {ended:?}");
    assert!(os.resident_memory(sleeper).is_err(), "a reaped child has no memory");
    assert_eq!(statm_descriptors(), 0, "a reaped child's statm is closed");
}

#[test]
fn a_forked_child_inherits_none_of_the_kept_statm_files() {
    forkd_os::real::isolated(Duration::from_secs(20), scenario);
}
