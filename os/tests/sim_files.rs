//! Sim-only checks of what the simulation's helpers set up: another
//! user's files and processes, and secrets replayed from a seed. Their
//! real counterparts are in `real_files.rs` (which needs root to `chown`).

use std::io::ErrorKind;
use std::path::Path;

use forkd_os::contract::{reap_n, wait_ready};
use forkd_os::sim::{SimOs, World};
use forkd_os::{Address, ExitStatus, ListenOptions, Os, Peer, PidFileError, Ready, Signal, SpawnOptions};

/// Runs `scenario` as the root process of a world of `seed` and fails if
/// it panicked or did not exit 0.
fn check(seed: u64, scenario: fn(&mut SimOs)) -> forkd_os::sim::Report {
    let report = World::new(seed).run(move |os| {
        scenario(os);
        0
    });
    assert!(report.panics.is_empty(), "seed {seed}: {:?}", report.panics);
    assert_eq!(report.root_status, Some(ExitStatus::Exited(0)), "seed {seed}");
    report
}

#[test]
fn another_users_pid_file_is_refused_and_left_as_it_was() {
    check(1, |os| {
        let path = Path::new("/sim/nobody.pid");
        os.plant_file(path, 65534, 0o644, b"4242\n");
        match os.lock_pid_file(path) {
            Err(PidFileError::Unsafe(why)) => assert_eq!(why, "owned by uid 65534, not this daemon's user (0)"),
            other => panic!("locked another user's pid file: {other:?}"),
        }
        assert_eq!(os.file_content(path).as_deref(), Some(&b"4242\n"[..]));
        assert_eq!(os.file_mode(path), Some(0o644));
    });
}

#[test]
fn a_stale_pid_file_of_ours_readable_by_others_is_made_0600() {
    check(2, |os| {
        let path = Path::new("/sim/open.pid");
        os.plant_file(path, 0, 0o644, b"999\n");
        let lock = os.lock_pid_file(path).expect("lock");
        assert_eq!(os.file_mode(path), Some(0o600));
        os.close(lock);
    });
}

#[test]
fn a_process_of_another_user_reads_no_private_file_of_ours() {
    check(3, |os| {
        let path = Path::new("/sim/secret.token");
        os.write_private_file(path, b"s3cr3t").expect("write");
        os.set_uid(1000);
        let err = os.read_private_file(path, 64).expect_err("read as another user");
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "owned by uid 0, not this daemon's user (1000)");
        assert_eq!(os.uid(), 1000);
    });
}

#[test]
fn a_client_of_another_user_is_told_as_that_user() {
    check(4, |os| {
        let sig = os.install_signals(&[Signal::Chld]).expect("install");
        let addr = Address::Unix("/sim/d.sock".into());
        let listener = os.listen(&addr, ListenOptions::default()).expect("listen");
        let child_addr = addr.clone();
        let child = os
            .spawn(
                SpawnOptions::default(),
                Box::new(move |os: &mut SimOs| {
                    os.set_uid(1000);
                    os.set_gid(100);
                    let fd = os.connect(&child_addr).expect("connect");
                    os.close(fd);
                    0
                }),
            )
            .expect("spawn");
        wait_ready(os, listener, Ready::READ);
        let server = os.accept(listener).expect("accept");
        assert_eq!(os.peer(server).expect("peer"), Peer::Unix { pid: child, uid: 1000, gid: 100 });
        assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(0))]);
        assert_eq!(os.uid(), 0, "the parent's user is its own");
        os.close(server);
        os.close(listener);
    });
}

#[test]
fn a_tcp_peer_is_a_loopback_address() {
    check(5, |os| {
        let addr = Address::Tcp("127.0.0.1:7000".parse().expect("address"));
        let listener = os.listen(&addr, ListenOptions::default()).expect("listen");
        let client = os.connect(&addr).expect("connect");
        wait_ready(os, listener, Ready::READ);
        let server = os.accept(listener).expect("accept");
        match os.peer(server).expect("peer") {
            Peer::Tcp(sa) => assert!(sa.ip().is_loopback() && sa.port() != 0, "peer {sa}"),
            other => panic!("a tcp peer told as {other:?}"),
        }
        assert_eq!(os.peer(client).expect("peer"), Peer::Tcp("127.0.0.1:7000".parse().expect("address")));
        for fd in [client, server, listener] {
            os.close(fd);
        }
    });
}

#[test]
fn random_bytes_replay_with_their_seed() {
    fn draw(os: &mut SimOs) {
        let mut buf = [0u8; 32];
        os.random_bytes(&mut buf).expect("random");
        os.note(format_args!("drew {buf:02x?}"));
    }
    let drawn = |seed| check(seed, draw).trace.into_iter().filter(|l| l.contains("drew")).collect::<Vec<_>>();
    assert_eq!(drawn(7), drawn(7), "a seed draws the same bytes again");
    assert_ne!(drawn(7), drawn(8), "another seed draws others");
}
