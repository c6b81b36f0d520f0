//! Smoke tests of `RealOs` against the real kernel.
//!
//! libtest runs every test on a thread of its own, so even alone in its
//! process (as under nextest) a test runs in a process of two threads, where
//! `RealOs::spawn` rightly refuses to fork. A test that spawns therefore runs
//! its scenario through `isolated`: a raw fork of the test thread, which is
//! the only thread of the new process. The test thread waits for that
//! process with a bound and fails if the scenario panicked or hung.
//!
//! Nothing here sleeps to synchronise: a parent learns that its child exited
//! from SIGCHLD waking the signal descriptor, and every wait has a deadline a
//! few seconds away, after which the test fails instead of hanging.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::panic;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use forkd_os::real::{thread_count, RealOs};

mod support;
use forkd_os::{
    Address, ExitStatus, Fd, Instant, KillTarget, ListenOptions, Os, Pid, PidFileError, PollFd, Ready, Signal,
    SpawnOptions,
};
use support::TempDir;

/// How long any single wait in a scenario may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long the test thread waits for an isolated scenario as a whole.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20);

// --- helpers -----------------------------------------------------------------

fn isolated(scenario: fn()) {
    forkd_os::real::isolated(SCENARIO_TIMEOUT, scenario);
}

fn deadline(os: &RealOs) -> Instant {
    os.now() + TIMEOUT
}

/// Waits until `fd` is ready for `interest`, failing after `TIMEOUT`.
fn wait_ready(os: &mut RealOs, fd: Fd, interest: Ready) -> Ready {
    let deadline = deadline(os);
    loop {
        let mut fds = [PollFd::new(fd, interest)];
        if os.poll(&mut fds, Some(deadline)).expect("poll") > 0 {
            return fds[0].ready;
        }
        assert!(os.now() < deadline, "fd {fd} not ready within {TIMEOUT:?}");
    }
}

/// Reaps `child`, woken by SIGCHLD on `signal_fd` (installed before the
/// spawn, so that an exit cannot slip by unnoticed).
fn wait_for_exit(os: &mut RealOs, signal_fd: Fd, child: Pid) -> ExitStatus {
    let deadline = deadline(os);
    loop {
        if let Some((pid, status)) = os.try_reap().expect("try_reap") {
            assert_eq!(pid, child, "reaped a child nobody spawned");
            return status;
        }
        assert!(os.now() < deadline, "child {child} did not exit within {TIMEOUT:?}");
        let mut fds = [PollFd::new(signal_fd, Ready::READ)];
        os.poll(&mut fds, Some(deadline)).expect("poll");
        os.take_signals().expect("take_signals");
    }
}

/// Spawns `entry` and returns how it ended.
fn run_child(opts: SpawnOptions, entry: impl FnOnce(&mut RealOs) -> i32 + Send + 'static) -> ExitStatus {
    let mut os = RealOs::new().expect("RealOs::new");
    let signal_fd = os.install_signals(&[Signal::Chld]).expect("install");
    let child = os.spawn(opts, Box::new(entry)).expect("spawn");
    let status = wait_for_exit(&mut os, signal_fd, child);
    assert_eq!(os.try_reap().expect("try_reap"), None);
    status
}

fn write_all(os: &mut RealOs, fd: Fd, mut data: &[u8]) {
    while !data.is_empty() {
        match os.write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_ready(os, fd, Ready::WRITE);
            }
            Err(e) => panic!("write to fd {fd}: {e}"),
        }
    }
}

fn read_exact(os: &mut RealOs, fd: Fd, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    let mut got = 0;
    while got < len {
        match os.read(fd, &mut out[got..]) {
            Ok(0) => panic!("end of file on fd {fd} after {got} of {len} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_ready(os, fd, Ready::READ);
            }
            Err(e) => panic!("read from fd {fd}: {e}"),
        }
    }
    out
}

fn signal_disposition(signal: Signal) -> libc::sighandler_t {
    // Safety: all zeroes is a valid sigaction; a null new action only asks.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal.number(), std::ptr::null(), &mut current), 0);
        current.sa_sigaction
    }
}

// --- processes ---------------------------------------------------------------

#[test]
fn a_child_exit_code_is_reaped() {
    isolated(|| {
        assert_eq!(run_child(SpawnOptions::default(), |_| 7), ExitStatus::Exited(7));
    });
}

#[test]
fn a_child_killed_by_a_signal_is_reaped_as_signaled() {
    isolated(|| {
        let status = run_child(SpawnOptions::default(), |os| {
            let me = os.pid();
            let _ = os.kill(KillTarget::Process(me), Signal::Kill);
            0
        });
        assert_eq!(status, ExitStatus::Signaled(9));
    });
}

#[test]
fn a_panicking_child_exits_with_101() {
    isolated(|| {
        assert_eq!(run_child(SpawnOptions::default(), |_| panic!("on purpose")), ExitStatus::Exited(101));
    });
}

#[test]
fn a_child_knows_its_own_pid_and_its_parent() {
    isolated(|| {
        let parent = RealOs::new().expect("RealOs::new").pid();
        assert_eq!(parent, Pid(std::process::id() as i32));
        let status = run_child(SpawnOptions::default(), move |os| {
            let own = os.pid() == Pid(std::process::id() as i32);
            i32::from(!(own && os.parent_pid() == parent))
        });
        assert_eq!(status, ExitStatus::Exited(0));
    });
}

#[test]
fn spawn_refuses_a_multi_threaded_process() {
    let (stop, stopped) = mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = stopped.recv();
    });
    let mut os = RealOs::new().expect("RealOs::new");
    let err = os.spawn(SpawnOptions::default(), Box::new(|_| 0)).expect_err("forked a multi-threaded process");
    assert_eq!(err.kind(), ErrorKind::Other);
    assert!(err.to_string().starts_with("cannot fork: the process has "), "{err}");
    drop(stop);
    helper.join().expect("helper thread");
}

#[test]
fn thread_count_counts_the_threads() {
    let before = thread_count().expect("thread_count");
    assert!(before >= 1);
    let (stop, stopped) = mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = stopped.recv();
    });
    assert_eq!(thread_count().expect("thread_count"), before + 1);
    drop(stop);
    helper.join().expect("helper thread");
}

#[test]
fn a_new_group_child_leads_its_group() {
    isolated(|| {
        let opts = SpawnOptions { new_group: true };
        let status = run_child(opts, |os| {
            // Safety: getpgrp only reads.
            i32::from(unsafe { libc::getpgrp() } != os.pid().0)
        });
        assert_eq!(status, ExitStatus::Exited(0));
    });
}

#[test]
fn a_new_group_can_be_signalled_as_soon_as_spawn_returns() {
    isolated(|| {
        let mut os = RealOs::new().expect("RealOs::new");
        let signal_fd = os.install_signals(&[Signal::Chld]).expect("install");
        let opts = SpawnOptions { new_group: true };
        // The child waits on a pipe that nobody writes to (it holds the
        // write end itself): only the kill ends it.
        let (never, _writer) = os.pipe().expect("pipe");
        let child = os
            .spawn(
                opts,
                Box::new(move |os| {
                    let _ = os.poll(&mut [PollFd::new(never, Ready::READ)], None);
                    3
                }),
            )
            .expect("spawn");
        os.kill(KillTarget::Group(child), Signal::Kill).expect("kill the new group");
        assert_eq!(wait_for_exit(&mut os, signal_fd, child), ExitStatus::Signaled(9));
    });
}

#[test]
fn kill_refuses_pids_that_mean_more_than_one_process() {
    let mut os = RealOs::new().expect("RealOs::new");
    for target in [KillTarget::Process(Pid(0)), KillTarget::Process(Pid(-1)), KillTarget::Group(Pid(0))] {
        let err = os.kill(target, Signal::Term).expect_err("kill");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
}

// --- signals -----------------------------------------------------------------

#[test]
fn a_signal_sent_to_self_is_taken_once() {
    isolated(|| {
        let mut os = RealOs::new().expect("RealOs::new");
        let fd = os.install_signals(&[Signal::Usr1]).expect("install");
        assert_eq!(os.install_signals(&[Signal::Usr2]).expect("install again"), fd);
        let me = os.pid();
        os.kill(KillTarget::Process(me), Signal::Usr1).expect("kill");
        assert!(wait_ready(&mut os, fd, Ready::READ).contains(Ready::READ));
        let taken = os.take_signals().expect("take_signals");
        assert!(taken.contains(Signal::Usr1), "{taken:?}");
        assert!(!taken.contains(Signal::Usr2), "{taken:?}");
        assert!(os.take_signals().expect("take_signals").is_empty());
        let mut fds = [PollFd::new(fd, Ready::READ)];
        assert_eq!(os.poll(&mut fds, Some(os.now())).expect("poll"), 0);
    });
}

#[test]
fn signals_cannot_catch_kill() {
    let mut os = RealOs::new().expect("RealOs::new");
    let err = os.install_signals(&[Signal::Kill]).expect_err("caught SIGKILL");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_child_starts_with_default_handlers_and_can_catch_them_again() {
    isolated(|| {
        let mut os = RealOs::new().expect("RealOs::new");
        let signal_fd = os.install_signals(&[Signal::Chld, Signal::Term]).expect("install");
        assert_ne!(signal_disposition(Signal::Term), libc::SIG_DFL);
        let child = os
            .spawn(
                SpawnOptions::default(),
                Box::new(|os| {
                    if signal_disposition(Signal::Term) != libc::SIG_DFL
                        || signal_disposition(Signal::Chld) != libc::SIG_DFL
                    {
                        return 1;
                    }
                    if !os.take_signals().expect("take_signals").is_empty() {
                        return 2;
                    }
                    // signal-hook remembers that it installed SIGTERM's
                    // handler in the parent: catching it again must still
                    // install it in the kernel.
                    let fd = os.install_signals(&[Signal::Term]).expect("install");
                    let me = os.pid();
                    os.kill(KillTarget::Process(me), Signal::Term).expect("kill");
                    wait_ready(os, fd, Ready::READ);
                    if !os.take_signals().expect("take").contains(Signal::Term) {
                        return 3;
                    }
                    0
                }),
            )
            .expect("spawn");
        assert_eq!(wait_for_exit(&mut os, signal_fd, child), ExitStatus::Exited(0));
    });
}

// --- sockets -----------------------------------------------------------------

#[test]
fn a_socket_pair_carries_bytes_both_ways_then_end_of_file() {
    let mut os = RealOs::new().expect("RealOs::new");
    let (a, b) = os.socket_pair().expect("socket_pair");
    write_all(&mut os, a, b"ping");
    assert_eq!(read_exact(&mut os, b, 4), b"ping");
    write_all(&mut os, b, b"pong");
    assert_eq!(read_exact(&mut os, a, 4), b"pong");
    let mut buf = [0u8; 8];
    assert_eq!(os.read(a, &mut buf).expect_err("read").kind(), ErrorKind::WouldBlock);
    os.close(b);
    assert!(wait_ready(&mut os, a, Ready::READ).contains(Ready::READ));
    assert_eq!(os.read(a, &mut buf).expect("read"), 0);
    os.close(a);
}

#[test]
fn a_write_to_a_closed_peer_is_broken_pipe_not_sigpipe() {
    isolated(|| {
        // The Rust runtime ignores SIGPIPE; give it back its killing default
        // to see that a socket write never raises it.
        // Safety: setting a default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let mut os = RealOs::new().expect("RealOs::new");
        let (a, b) = os.socket_pair().expect("socket_pair");
        os.close(b);
        let err = os.write(a, b"x").expect_err("write to a closed peer");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        os.close(a);

        // A pipe is no socket: its write raises SIGPIPE unless ignored, which
        // installing signals does.
        os.install_signals(&[]).expect("install");
        let mut ends = [0; 2];
        // Safety: `ends` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        os.adopt(Fd(ends[0]));
        os.adopt(Fd(ends[1]));
        os.close(Fd(ends[0]));
        let err = os.write(Fd(ends[1]), b"x").expect_err("write to a pipe");
        assert_eq!(err.kind(), ErrorKind::BrokenPipe);
        os.close(Fd(ends[1]));
    });
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn a_unix_listener_has_its_mode_and_accepts() {
    let dir = TempDir::new("os");
    let path = dir.join("d.sock");
    let addr = Address::Unix(path.clone());
    let mut os = RealOs::new().expect("RealOs::new");
    let listener = os.listen(&addr, ListenOptions::default()).expect("listen");
    assert!(os.file_exists(&path));
    assert_eq!(mode_of(&path), 0o600);

    let client = os.connect(&addr).expect("connect");
    wait_ready(&mut os, listener, Ready::READ);
    let server = os.accept(listener).expect("accept");
    write_all(&mut os, client, b"hello");
    assert_eq!(read_exact(&mut os, server, 5), b"hello");
    assert_eq!(os.accept(listener).expect_err("accept").kind(), ErrorKind::WouldBlock);

    let again = os.listen(&addr, ListenOptions::default());
    assert_eq!(again.expect_err("listen twice").kind(), ErrorKind::AddrInUse);

    for fd in [client, server, listener] {
        os.close(fd);
    }
    os.remove_file(&path).expect("remove_file");
    assert!(!os.file_exists(&path));
    let missing = os.connect(&addr).expect_err("connect to nothing");
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[test]
fn a_unix_listener_takes_the_mode_it_is_given() {
    let dir = TempDir::new("os");
    let path = dir.join("group.sock");
    let mut os = RealOs::new().expect("RealOs::new");
    let opts = ListenOptions { backlog: 1_000_000, unix_mode: 0o660 };
    let listener = os.listen(&Address::Unix(path.clone()), opts).expect("listen");
    assert_eq!(mode_of(&path), 0o660);
    os.close(listener);
}

fn local_port(fd: Fd) -> u16 {
    let addr: nix::sys::socket::SockaddrIn = nix::sys::socket::getsockname(fd.0).expect("getsockname");
    addr.port()
}

fn nodelay(fd: Fd) -> bool {
    // Safety: `fd` is open for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.0) };
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::TcpNoDelay).expect("getsockopt")
}

#[test]
fn a_tcp_listener_accepts_streams_without_delay() {
    let mut os = RealOs::new().expect("RealOs::new");
    let any_port = Address::Tcp("127.0.0.1:0".parse().expect("address"));
    let listener = os.listen(&any_port, ListenOptions::default()).expect("listen");
    let port = local_port(listener);
    let addr = Address::Tcp(format!("127.0.0.1:{port}").parse().expect("address"));

    let client = os.connect(&addr).expect("connect");
    wait_ready(&mut os, listener, Ready::READ);
    let server = os.accept(listener).expect("accept");
    assert!(nodelay(client) && nodelay(server));
    write_all(&mut os, server, b"tcp");
    assert_eq!(read_exact(&mut os, client, 3), b"tcp");

    for fd in [client, server, listener] {
        os.close(fd);
    }
    let refused = os.connect(&addr).expect_err("connect to a closed port");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_tcp_listener_binds_ipv6() {
    let mut os = RealOs::new().expect("RealOs::new");
    let addr = Address::Tcp("[::1]:0".parse().expect("address"));
    match os.listen(&addr, ListenOptions::default()) {
        Ok(listener) => os.close(listener),
        // A machine without IPv6 has nothing to bind.
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {}
        Err(e) => panic!("listen on {addr}: {e}"),
    }
}

// --- time --------------------------------------------------------------------

#[test]
fn poll_and_sleep_never_return_before_their_deadline() {
    let mut os = RealOs::new().expect("RealOs::new");
    let deadline = os.now() + Duration::from_micros(1500);
    assert_eq!(os.poll(&mut [], Some(deadline)).expect("poll"), 0);
    assert!(os.now() >= deadline);

    let deadline = os.now() + Duration::from_micros(700);
    os.sleep_until(deadline);
    assert!(os.now() >= deadline);

    let past = Instant::ZERO;
    assert_eq!(os.poll(&mut [], Some(past)).expect("poll"), 0);
}

// --- shared memory -----------------------------------------------------------

#[test]
fn a_shared_region_is_zeroed_and_whole_words() {
    let mut os = RealOs::new().expect("RealOs::new");
    let region = os.shm_create(100).expect("shm_create");
    assert!(region.len() >= 100);
    assert_eq!(region.len() % 8, 0);
    for i in 0..region.len() / 8 {
        assert_eq!(region.load(i, Ordering::Relaxed), 0);
    }
    // Safety: the only handle, not used after.
    unsafe { os.shm_unmap(region) };
}

#[test]
fn a_shared_region_written_by_a_child_is_read_by_its_parent() {
    isolated(|| {
        let mut os = RealOs::new().expect("RealOs::new");
        let region = os.shm_create(64).expect("shm_create");
        let in_child = region.clone();
        let status = run_child_with(&mut os, move |_| {
            in_child.store(3, 0xf0_4c_d0, Ordering::Release);
            in_child.write_bytes(0, b"child");
            0
        });
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(region.load(3, Ordering::Acquire), 0xf0_4c_d0);
        let mut bytes = [0u8; 5];
        region.read_bytes(0, &mut bytes);
        assert_eq!(&bytes, b"child");
        // Safety: the child's clone went with the child; nothing is used after.
        unsafe { os.shm_unmap(region) };
    });
}

/// As `run_child`, with an `os` the caller has already set up.
fn run_child_with(os: &mut RealOs, entry: impl FnOnce(&mut RealOs) -> i32 + Send + 'static) -> ExitStatus {
    let signal_fd = os.install_signals(&[Signal::Chld]).expect("install");
    let child = os.spawn(SpawnOptions::default(), Box::new(entry)).expect("spawn");
    wait_for_exit(os, signal_fd, child)
}

// --- the pid file ------------------------------------------------------------

#[test]
fn a_locked_pid_file_cannot_be_locked_by_a_child_and_stays_intact() {
    isolated(|| {
        let dir = TempDir::new("os");
        let path = dir.join("d.pid");
        let mut os = RealOs::new().expect("RealOs::new");
        let lock = os.lock_pid_file(&path).expect("lock_pid_file");
        let parent = os.pid();
        let expected = format!("{parent}\n");
        assert_eq!(fs::read_to_string(&path).expect("read"), expected);

        let in_child = path.clone();
        let status = run_child_with(&mut os, move |os| match os.lock_pid_file(&in_child) {
            Err(PidFileError::Locked(Some(pid))) if pid == parent.0 => 0,
            _ => 1,
        });
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(fs::read_to_string(&path).expect("read"), expected);
        os.close(lock);
    });
}

#[test]
fn a_stale_pid_file_is_taken_over_and_rewritten() {
    let dir = TempDir::new("os");
    let path = dir.join("stale.pid");
    fs::write(&path, "999999999\nand a long tail of junk\n").expect("write");
    let mut os = RealOs::new().expect("RealOs::new");
    let lock = os.lock_pid_file(&path).expect("lock_pid_file");
    assert_eq!(fs::read_to_string(&path).expect("read"), format!("{}\n", os.pid()));
    // The lock is per open file: even this process cannot take it twice.
    match os.lock_pid_file(&path) {
        Err(PidFileError::Locked(Some(pid))) => assert_eq!(pid, os.pid().0),
        other => panic!("locked the pid file twice: {other:?}"),
    }
    os.close(lock);
    let again = os.lock_pid_file(&path).expect("lock after close");
    os.close(again);
}
