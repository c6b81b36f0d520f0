//! Real-only checks of the pid file and private files: what the
//! simulation does not model (hard links, `flock` held by a process that
//! is not a daemon) or what needs root to set up (another user's file).
//! The tests run as root, which may `chown` a file to `nobody` (65534).
//!
//! A test that forks runs through `isolated`; a child tells the parent it
//! holds its lock with a byte on a socket pair, never a sleep.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use forkd_os::contract::{read_to_end, reap_n, wait_ready, write_all};
use forkd_os::real::{isolated, RealOs};
use forkd_os::{ExitStatus, Os, PidFileError, Signal, SpawnOptions};

mod support;
use support::TempDir;

const NOBODY: u32 = 65534;

/// Content, owner, mode and link count: what "left as it was" compares.
fn snapshot(path: &Path) -> (Vec<u8>, u32, u32, u64) {
    let meta = fs::symlink_metadata(path).expect("lstat");
    (fs::read(path).expect("read"), meta.uid(), meta.permissions().mode() & 0o7777, meta.nlink())
}

fn unsafe_reason(result: Result<forkd_os::Fd, PidFileError>) -> String {
    match result {
        Err(PidFileError::Unsafe(why)) => why,
        other => panic!("expected an unsafe pid file, got {other:?}"),
    }
}

#[test]
fn another_users_pid_file_is_refused_and_left_as_it_was() {
    let dir = TempDir::new("os");
    let path = dir.join("nobody.pid");
    fs::write(&path, "4242\n").expect("write");
    std::os::unix::fs::chown(&path, Some(NOBODY), None).expect("chown (the tests run as root)");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let before = snapshot(&path);
    let mut os = RealOs::new().expect("RealOs::new");
    let why = unsafe_reason(os.lock_pid_file(&path));
    assert_eq!(why, format!("owned by uid {NOBODY}, not this daemon's user ({})", os.uid()));
    assert_eq!(snapshot(&path), before, "neither content, owner nor mode changed");
}

#[test]
fn another_users_private_file_is_refused() {
    let dir = TempDir::new("os");
    let path = dir.join("nobody.token");
    let mut os = RealOs::new().expect("RealOs::new");
    os.write_private_file(&path, b"s3cr3t").expect("write_private_file");
    std::os::unix::fs::chown(&path, Some(NOBODY), None).expect("chown (the tests run as root)");
    let err = os.read_private_file(&path, 64).expect_err("read another user's file");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(err.to_string(), format!("owned by uid {NOBODY}, not this daemon's user ({})", os.uid()));
}

#[test]
fn a_private_file_is_0600_whatever_the_umask() {
    isolated(Duration::from_secs(20), || {
        let dir = TempDir::new("os");
        let path = dir.join("umask.token");
        // Safety: umask cannot fail; this process is the test's own.
        unsafe { libc::umask(0) };
        let mut os = RealOs::new().expect("RealOs::new");
        os.write_private_file(&path, b"x").expect("write_private_file");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o7777, 0o600);
    });
}

#[test]
fn a_stale_pid_file_of_ours_readable_by_others_is_made_0600() {
    let dir = TempDir::new("os");
    let path = dir.join("open.pid");
    fs::write(&path, "999999999\n").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut os = RealOs::new().expect("RealOs::new");
    let lock = os.lock_pid_file(&path).expect("lock_pid_file");
    let (content, _, mode, _) = snapshot(&path);
    assert_eq!(mode, 0o600);
    assert_eq!(content, format!("{}\n", os.pid()).into_bytes());
    os.close(lock);
}

#[test]
fn a_new_pid_file_is_0600() {
    let dir = TempDir::new("os");
    let path = dir.join("new.pid");
    let mut os = RealOs::new().expect("RealOs::new");
    let lock = os.lock_pid_file(&path).expect("lock_pid_file");
    assert_eq!(snapshot(&path).2, 0o600);
    os.close(lock);
}

#[test]
fn a_hard_linked_private_file_is_refused() {
    let dir = TempDir::new("os");
    let path = dir.join("linked.token");
    let mut os = RealOs::new().expect("RealOs::new");
    os.write_private_file(&path, b"s3cr3t").expect("write_private_file");
    fs::hard_link(&path, dir.join("elsewhere")).expect("link");
    let err = os.read_private_file(&path, 64).expect_err("read a hard-linked file");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(err.to_string(), "has 2 hard links");
}

#[test]
fn a_hard_linked_pid_file_is_refused() {
    let dir = TempDir::new("os");
    let path = dir.join("linked.pid");
    fs::write(&path, "999999999\n").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::hard_link(&path, dir.join("elsewhere")).expect("link");
    let before = snapshot(&path);
    let mut os = RealOs::new().expect("RealOs::new");
    assert_eq!(unsafe_reason(os.lock_pid_file(&path)), "has 2 hard links");
    assert_eq!(snapshot(&path), before);
}

#[test]
fn a_directory_at_the_pid_file_path_is_refused() {
    let dir = TempDir::new("os");
    let path = dir.join("dir.pid");
    fs::create_dir(&path).expect("mkdir");
    let mut os = RealOs::new().expect("RealOs::new");
    assert_eq!(unsafe_reason(os.lock_pid_file(&path)), "not a regular file");
}

#[test]
fn a_pid_file_locked_by_a_process_it_does_not_name_is_locked_by_other() {
    // No process has this pid: it is past any pid_max.
    locked_by_a_reader(999_999_999);
}

#[test]
fn a_pid_file_naming_a_live_process_but_locked_by_another_is_locked_by_other() {
    // Init is alive, and holds no lock on the file: the kernel's list of
    // locks says who does.
    locked_by_a_reader(1);
}

/// A child that is no daemon holds a shared lock on a pid file that names
/// `named`: taking the file is refused as locked by another process, and
/// the file is left as it was.
fn locked_by_a_reader(named: i32) {
    isolated(Duration::from_secs(20), move || {
        let dir = TempDir::new("os");
        let path = dir.join("held.pid");
        fs::write(&path, format!("{named}\n")).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut os = RealOs::new().expect("RealOs::new");
        let sig = os.install_signals(&[Signal::Chld]).expect("install");
        let (here, there) = os.socket_pair().expect("socket_pair");
        let held = path.clone();
        let child = os
            .spawn(
                SpawnOptions::default(),
                Box::new(move |os: &mut RealOs| {
                    os.close(here);
                    // A reader, not a daemon: it never writes its pid.
                    let file = fs::File::open(&held).expect("open");
                    // Safety: flock on a descriptor `file` keeps open.
                    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
                        return 1;
                    }
                    write_all(os, there, b"held");
                    // Holds the lock until the parent closes its end.
                    read_to_end(os, there);
                    drop(file);
                    0
                }),
            )
            .expect("spawn");
        os.close(there);
        wait_ready(&mut os, here, forkd_os::Ready::READ);
        // Read, so that closing `here` later is an end of file to the child
        // rather than a reset.
        let mut buf = [0u8; 4];
        assert_eq!(os.read(here, &mut buf).expect("read"), 4, "the child holds the lock");
        let before = snapshot(&path);
        match os.lock_pid_file(&path) {
            Err(PidFileError::LockedByOther(Some(pid))) if pid == named => {}
            other => panic!("expected a lock held by another process, got {other:?}"),
        }
        assert_eq!(snapshot(&path), before, "the holder's file is unchanged");
        os.close(here);
        assert_eq!(reap_n(&mut os, sig, 1), vec![(child, ExitStatus::Exited(0))]);
        let lock = os.lock_pid_file(&path).expect("lock once released");
        os.close(lock);
    });
}
