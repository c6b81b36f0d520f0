//! The contract's checks of process groups and sessions: a group kill
//! reaches grandchildren, and `detach` leaves the daemon in a process of its
//! own.

use super::*;

/// Killing a child's process group reaches the child's own children.
pub fn group_kill_reaches_grandchildren<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions { new_group: true },
            Box::new(move |os: &mut O| {
                // The grandchild keeps `there` open too: the parent sees end of
                // file only once both are dead.
                os.spawn(
                    SpawnOptions::default(),
                    Box::new(move |os: &mut O| {
                        write_all(os, there, b"g");
                        let mut fds = [PollFd::new(there, Ready::READ)];
                        loop {
                            let _ = os.poll(&mut fds, None);
                        }
                    }),
                )
                .unwrap();
                write_all(os, there, b"c");
                let mut fds = [PollFd::new(there, Ready::READ)];
                loop {
                    let _ = os.poll(&mut fds, None);
                }
            }),
        )
        .unwrap();
    os.close(there);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4];
    while seen.len() < 2 {
        wait_ready(os, here, Ready::READ);
        let n = os.read(here, &mut buf).unwrap();
        assert!(n > 0, "both are up before the kill");
        seen.extend_from_slice(&buf[..n]);
    }
    os.kill(KillTarget::Group(child), Signal::Term).unwrap();
    assert_eq!(read_to_end(os, here), b"", "killing the group ends the grandchild too");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, ExitStatus::Signaled(Signal::Term.number()))]);
    os.close(here);
}

/// `detach`, as `-d` uses it: the launcher stays behind with the caller's
/// pid and exits with its verdict on the readiness pipe, while the caller's
/// work goes on in a process that is neither it nor its child, and leads no
/// group.
pub fn detach_runs_the_launcher_and_goes_on_elsewhere<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                os.close(here);
                let (r, w) = os.pipe().unwrap();
                let caller = os.pid();
                os.detach(Box::new(move |os: &mut O| {
                    os.close(w);
                    os.close(there);
                    let line = read_to_end(os, r);
                    if line == b"ok\n" {
                        7
                    } else {
                        9
                    }
                }))
                .unwrap();
                os.close(r);
                let me = os.pid();
                let leads_a_group = os.kill(KillTarget::Group(me), Signal::Cont).is_ok();
                let report = format!("{} {} {} {}\n", caller.0, me.0, os.parent_pid().0, leads_a_group);
                write_all(os, there, report.as_bytes());
                os.close(there);
                write_all(os, w, b"ok\n");
                os.close(w);
                0
            }),
        )
        .unwrap();
    os.close(there);
    let report = String::from_utf8(read_to_end(os, here)).unwrap();
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "the daemon reports: {report:?}");
    assert_eq!(fields[0], child.0.to_string(), "detach was called in the spawned child");
    assert_ne!(fields[1], fields[0], "the daemon is another process than the caller");
    assert_ne!(fields[2], fields[0], "the daemon is not the launcher's child");
    assert_eq!(fields[3], "false", "the daemon leads no process group");
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(7))], "the launcher exits with its verdict");
    os.close(here);
}
