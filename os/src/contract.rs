//! The contract suite: what every `Os` implementation must do alike.
//!
//! Each check here is written once, generic over `O: Os`, and run twice: by
//! `os/tests/contract_real.rs` against the kernel and by
//! `os/tests/contract_sim.rs` inside simulated worlds. A check that passes on
//! one and fails on the other is a bug in the fake (turmoil's rule). The list
//! of checks is [`for_each_check!`](crate::for_each_check), so that neither arm can forget one.
//!
//! Checks wait for conditions with deadlines (`poll`), never with sleeps,
//! and panic with a message saying what differed.
//!
//! Where the simulation cannot match the kernel, the check says so:
//! - the simulated stream buffers exactly `sim::STREAM_CAPACITY` bytes a
//!   direction, the kernel a size it chooses; checks only rely on "some, then
//!   `WouldBlock`";
//! - simulated time only passes when every process waits, so a deadline is
//!   met exactly there and "at or after" it on the kernel.
//!
//! A few checks must set up what no `Os` call makes — a file others may
//! read, a symbolic link — or look at what no call tells (a file's
//! mode). They do it through [`Tamper`], implemented once per arm (with
//! `std::fs` on the kernel, with the simulation's helpers in a world), so
//! that the checks themselves are still written once.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use crate::{
    Address, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, PidFileError, PollFd, Ready,
    Signal, SpawnOptions,
};

mod exec;
mod stats;
mod tamper;
pub use exec::{
    pid_file_rewritten_through_its_lock, remove_env_drops_a_variable_for_the_process_and_its_children,
    spawn_exec_hands_over_descriptors_and_environment, spawn_exec_of_nothing_exits_127,
};
pub use stats::{process_stats_of_self_and_a_child, trim_memory_gives_back_what_was_freed};
pub use tamper::Tamper;

/// Calls `$m!(name)` for every check of the suite.
#[macro_export]
macro_rules! for_each_check {
    ($m:ident) => {
        $m!(eof_after_peer_close);
        $m!(epipe_after_peer_close);
        $m!(partial_writes);
        $m!(exited_child_is_reaped);
        $m!(killed_child_is_reaped);
        $m!(several_exits_are_all_reaped);
        $m!(wait_gone_waits_for_the_exit);
        $m!(pipe_carries_a_line_from_a_child);
        $m!(pipe_ends_when_its_writer_dies_unwritten);
        $m!(signal_to_self_arrives);
        $m!(signals_coalesce);
        $m!(shared_region_child_to_parent);
        $m!(shared_region_parent_to_child);
        $m!(pid_file_lock_is_exclusive);
        $m!(deadlines_fire_in_order);
        $m!(unix_socket_round_trip);
        $m!(stale_unix_socket_refuses);
        $m!(group_kill_reaches_grandchildren);
        $m!(private_file_round_trip);
        $m!(private_file_refused_when_others_may_read);
        $m!(pid_file_through_a_symlink_is_refused);
        $m!(pid_file_held_by_an_heir_is_locked_by_other);
        $m!(unix_peer_is_the_connecting_process);
        $m!(random_bytes_fill_and_differ);
        $m!(unix_socket_mode_ignores_the_umask);
        $m!(file_kind_tells_kinds_apart);
        $m!(process_stats_of_self_and_a_child);
        $m!(detach_runs_the_launcher_and_goes_on_elsewhere);
        $m!(close_inherited_closes_all_but_what_it_keeps);
        $m!(close_all_closes_exactly_what_it_is_given);
        $m!(trim_memory_gives_back_what_was_freed);
        $m!(a_discarded_part_of_a_region_is_zero_everywhere);
        $m!(spawn_exec_hands_over_descriptors_and_environment);
        $m!(spawn_exec_of_nothing_exits_127);
        $m!(pid_file_rewritten_through_its_lock);
        $m!(remove_env_drops_a_variable_for_the_process_and_its_children);
    };
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `fd` is ready for `interest`, or panics at the deadline.
pub fn wait_ready<O: Os>(os: &mut O, fd: Fd, interest: Ready) -> Ready {
    let deadline = os.now() + TIMEOUT;
    loop {
        let mut fds = [PollFd::new(fd, interest)];
        os.poll(&mut fds, Some(deadline)).expect("poll");
        if !fds[0].ready.is_empty() {
            return fds[0].ready;
        }
        assert!(os.now() < deadline, "fd {fd} not ready for {interest:?} within {TIMEOUT:?}");
    }
}

/// Reaps children until `n` have been reaped, waiting on SIGCHLD. The signal
/// must already be installed.
pub fn reap_n<O: Os>(os: &mut O, signal_fd: Fd, n: usize) -> Vec<(crate::Pid, ExitStatus)> {
    let mut reaped = Vec::new();
    let deadline = os.now() + TIMEOUT;
    while reaped.len() < n {
        while let Some(r) = os.try_reap().expect("reap") {
            reaped.push(r);
        }
        if reaped.len() >= n {
            break;
        }
        let mut fds = [PollFd::new(signal_fd, Ready::READ)];
        os.poll(&mut fds, Some(deadline)).expect("poll");
        os.take_signals().expect("take signals");
        assert!(os.now() < deadline, "reaped {} of {n} children within {TIMEOUT:?}", reaped.len());
    }
    reaped
}

/// Reads until end of file, waiting for data; returns what was read.
pub fn read_to_end<O: Os>(os: &mut O, fd: Fd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match os.read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_ready(os, fd, Ready::READ);
            }
            Err(e) => panic!("read fd {fd}: {e}"),
        }
    }
}

/// Writes all of `data`, waiting for room.
pub fn write_all<O: Os>(os: &mut O, fd: Fd, mut data: &[u8]) {
    while !data.is_empty() {
        match os.write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_ready(os, fd, Ready::WRITE);
            }
            Err(e) => panic!("write fd {fd}: {e}"),
        }
    }
}

/// A stream whose peer wrote and closed is readable, yields the buffered
/// bytes, then end of file, and stays at end of file.
pub fn eof_after_peer_close<O: Os>(os: &mut O, _dir: &Path) {
    let (a, b) = os.socket_pair().unwrap();
    write_all(os, b, b"last words");
    os.close(b);
    let ready = wait_ready(os, a, Ready::READ);
    assert!(ready.contains(Ready::READ), "a closed peer makes the stream readable, got {ready:?}");
    assert_eq!(read_to_end(os, a), b"last words", "buffered data is read before end of file");
    let mut buf = [0u8; 8];
    assert_eq!(os.read(a, &mut buf).unwrap(), 0, "end of file stays end of file");
    os.close(a);
}

/// A write to a stream whose peer closed fails with `BrokenPipe` and
/// raises no `SIGPIPE`.
pub fn epipe_after_peer_close<O: Os>(os: &mut O, _dir: &Path) {
    let (a, b) = os.socket_pair().unwrap();
    os.close(b);
    let err = os.write(a, b"anyone?").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "a write to a closed peer is EPIPE, not a signal");
    os.close(a);
}

/// A write larger than the stream's buffer is partial, the next one
/// fails with `WouldBlock`, and every byte written arrives in order.
pub fn partial_writes<O: Os>(os: &mut O, _dir: &Path) {
    let (a, b) = os.socket_pair().unwrap();
    let big = vec![7u8; 8 << 20];
    let mut written = 0;
    let n = os.write(a, &big).unwrap();
    assert!(n > 0 && n < big.len(), "a write larger than the buffer is partial: wrote {n} of {}", big.len());
    written += n;
    loop {
        match os.write(a, &big[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
        assert!(written < big.len(), "a peer that never reads cannot take 8 MiB");
    }
    let ready = {
        let mut fds = [PollFd::new(a, Ready::WRITE)];
        os.poll(&mut fds, Some(os.now())).unwrap();
        fds[0].ready
    };
    assert!(!ready.contains(Ready::WRITE), "a full stream does not poll writable");
    os.close(a);
    let got = read_to_end(os, b);
    assert_eq!(got.len(), written, "the reader gets exactly what the partial writes took");
    os.close(b);
}

/// A child that exits with a code is reaped once, with that code, after
/// the `SIGCHLD` it raises.
pub fn exited_child_is_reaped<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let child = os.spawn(SpawnOptions::default(), Box::new(|_os: &mut O| 7)).unwrap();
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, ExitStatus::Exited(7))]);
    assert!(os.try_reap().unwrap().is_none(), "nothing is left to reap");
}

/// A child killed by `SIGTERM` (the parent's handler reset in the child)
/// is reaped as `Signaled(15)`.
pub fn killed_child_is_reaped<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld, Signal::Term]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                // The parent's TERM handler is reset here: TERM kills. Tell the
                // parent we are up, then wait for a message that never comes.
                write_all(os, there, b"up");
                let mut fds = [PollFd::new(there, Ready::READ)];
                let _ = os.poll(&mut fds, None);
                let _ = os.poll(&mut fds, None);
                3
            }),
        )
        .unwrap();
    os.close(there);
    wait_ready(os, here, Ready::READ);
    os.kill(KillTarget::Process(child), Signal::Term).unwrap();
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, ExitStatus::Signaled(Signal::Term.number()))]);
    assert!(os.take_signals().unwrap().iter().all(|s| s != Signal::Term), "the parent did not get the child's TERM");
    os.close(here);
}

/// Six children that exit together are each reaped once with their own
/// status, however many `SIGCHLD`s they raised.
pub fn several_exits_are_all_reaped<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let mut expected = Vec::new();
    for code in 0..6 {
        let pid = os.spawn(SpawnOptions::default(), Box::new(move |_os: &mut O| code)).unwrap();
        expected.push((pid, ExitStatus::Exited(code)));
    }
    let mut reaped = reap_n(os, sig, 6);
    reaped.sort();
    expected.sort();
    assert_eq!(reaped, expected, "every child is reaped once, with its own status");
}

/// `wait_gone` says `false` at its deadline while the process runs, and
/// `true` once it has exited, reaped or not.
pub fn wait_gone_waits_for_the_exit<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                // Runs until the parent closes its end.
                os.close(here);
                let _ = read_to_end(os, there);
                0
            }),
        )
        .unwrap();
    os.close(there);
    let soon = os.now() + Duration::from_millis(20);
    assert!(!os.wait_gone(child, soon).unwrap(), "a running child is not gone");
    assert!(os.now() >= soon, "wait_gone returned before its deadline");
    os.close(here);
    let later = os.now() + TIMEOUT;
    assert!(os.wait_gone(child, later).unwrap(), "the child went");
    // Gone though not yet reaped: a zombie counts as gone.
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(0))]);
    assert!(os.wait_gone(child, later).unwrap(), "a reaped child is gone at once");
}

/// A line a child writes to a pipe reaches the parent.
pub fn pipe_carries_a_line_from_a_child<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (r, w) = os.pipe().unwrap();
    os.spawn(
        SpawnOptions::default(),
        Box::new(move |os: &mut O| {
            os.close(r);
            write_all(os, w, b"ok\n");
            0
        }),
    )
    .unwrap();
    os.close(w);
    assert_eq!(read_to_end(os, r), b"ok\n", "what the child wrote, then end of file");
    assert_eq!(reap_n(os, sig, 1).len(), 1);
    os.close(r);
}

/// A pipe reads end of file once its last writer has exited without
/// writing.
pub fn pipe_ends_when_its_writer_dies_unwritten<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (r, w) = os.pipe().unwrap();
    // The child exits holding the write end, and writes nothing.
    os.spawn(SpawnOptions::default(), Box::new(move |_os: &mut O| 1)).unwrap();
    os.close(w);
    assert_eq!(read_to_end(os, r), b"", "end of file once the last writer is gone");
    assert_eq!(reap_n(os, sig, 1).len(), 1);
    os.close(r);
}

/// A signal a process sends itself wakes its signal descriptor, and
/// `take_signals` returns it once.
pub fn signal_to_self_arrives<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Usr1, Signal::Hup]).unwrap();
    let me = os.pid();
    os.kill(KillTarget::Process(me), Signal::Usr1).unwrap();
    wait_ready(os, sig, Ready::READ);
    let set = os.take_signals().unwrap();
    assert!(set.contains(Signal::Usr1) && !set.contains(Signal::Hup), "got {set:?}");
    assert!(os.take_signals().unwrap().is_empty(), "taking clears the pending set");
}

/// Two deliveries of one signal before a take merge into one, and a take
/// drains the wake-up descriptor.
pub fn signals_coalesce<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Usr2]).unwrap();
    let me = os.pid();
    os.kill(KillTarget::Process(me), Signal::Usr2).unwrap();
    os.kill(KillTarget::Process(me), Signal::Usr2).unwrap();
    wait_ready(os, sig, Ready::READ);
    let set = os.take_signals().unwrap();
    assert_eq!(set.iter().collect::<Vec<_>>(), vec![Signal::Usr2], "two deliveries before a take merge into one");
    let mut fds = [PollFd::new(sig, Ready::READ)];
    os.poll(&mut fds, Some(os.now())).unwrap();
    assert!(fds[0].ready.is_empty(), "after a take the wake-up descriptor is drained");
}

/// What a child stores in a shared region, words and bytes, the parent
/// sees after the child has exited.
pub fn shared_region_child_to_parent<O: Os>(os: &mut O, _dir: &Path) {
    use std::sync::atomic::Ordering::*;
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let region = os.shm_create(4096).unwrap();
    let child_view = region.clone();
    os.spawn(
        SpawnOptions::default(),
        Box::new(move |os: &mut O| {
            child_view.store(3, 0xfeed, Release);
            child_view.write_bytes(64, b"from the child");
            // Safety: the child's only handle, not used after.
            unsafe { os.shm_unmap(child_view) };
            0
        }),
    )
    .unwrap();
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped[0].1, ExitStatus::Exited(0));
    assert_eq!(region.load(3, Acquire), 0xfeed);
    let mut buf = [0u8; 14];
    region.read_bytes(64, &mut buf);
    assert_eq!(&buf, b"from the child");
    // Safety: the child's clone went with the child; nothing is used after.
    unsafe { os.shm_unmap(region) };
}

/// A new region is zeroed, and what the parent stores after spawning is
/// seen by the child.
pub fn shared_region_parent_to_child<O: Os>(os: &mut O, _dir: &Path) {
    use std::sync::atomic::Ordering::*;
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let region = os.shm_create(64).unwrap();
    assert!(region.len() >= 64);
    assert_eq!(region.load(0, Acquire), 0, "a new region is zeroed");
    let child_view = region.clone();
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                // The parent's byte comes after its write to the region, so
                // the write must show once the byte is there.
                wait_ready(os, there, Ready::READ);
                if child_view.load(1, Acquire) != 42 {
                    return 1;
                }
                child_view.fetch_add(1, 1, AcqRel);
                0
            }),
        )
        .unwrap();
    region.store(1, 42, Release);
    write_all(os, here, &[1]);
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, ExitStatus::Exited(0))], "the child saw the parent's write");
    assert_eq!(region.load(1, Acquire), 43, "and the parent sees the child's");
    os.close(here);
    os.close(there);
    // Safety: the child's clone went with the child; nothing is used after.
    unsafe { os.shm_unmap(region) };
}

/// A locked pid file holds the locker's pid, and a second process is
/// refused with `Locked(Some(pid))` without rewriting it.
pub fn pid_file_lock_is_exclusive<O: Os>(os: &mut O, dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let path = dir.join("daemon.pid");
    let lock = os.lock_pid_file(&path).unwrap();
    let me = os.pid().0;
    let child_path = path.clone();
    os.spawn(
        SpawnOptions::default(),
        Box::new(move |os: &mut O| {
            // Twice: the first refusal must not have rewritten the file.
            for _ in 0..2 {
                match os.lock_pid_file(&child_path) {
                    Err(PidFileError::Locked(Some(pid))) if pid == me => {}
                    _ => return 1,
                }
            }
            0
        }),
    )
    .unwrap();
    assert_eq!(reap_n(os, sig, 1)[0].1, ExitStatus::Exited(0), "a second locker is refused with the holder's pid");
    os.close(lock);
    let child_path = path.clone();
    os.spawn(
        SpawnOptions::default(),
        Box::new(move |os: &mut O| match os.lock_pid_file(&child_path) {
            Ok(fd) => {
                os.close(fd);
                0
            }
            Err(_) => 1,
        }),
    )
    .unwrap();
    assert_eq!(reap_n(os, sig, 1)[0].1, ExitStatus::Exited(0), "once released, the lock can be taken");
    os.remove_file(&path).unwrap();
    assert!(!os.file_exists(&path));
}

/// Processes sleeping until different deadlines wake in deadline order,
/// at or after their deadlines.
pub fn deadlines_fire_in_order<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (here, there) = os.socket_pair().unwrap();
    let start = os.now();
    let deadline = move |i: u8| start + Duration::from_millis(60 * u64::from(i));
    // Spawned in the reverse of the order their deadlines fall in. Each
    // tells its number and the instant it woke, in one write.
    for i in [3u8, 1, 2] {
        os.spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                os.sleep_until(deadline(i));
                let woke = os.now();
                if woke < deadline(i) {
                    return 1;
                }
                let mut record = [i; 9];
                record[1..].copy_from_slice(&woke.0.to_le_bytes());
                write_all(os, there, &record);
                0
            }),
        )
        .unwrap();
    }
    os.close(there);
    let records = read_to_end(os, here);
    assert_eq!(records.len(), 27, "three children told when they woke");
    let woke: Vec<(u8, Instant)> =
        records.chunks(9).map(|r| (r[0], Instant(u64::from_le_bytes(r[1..].try_into().unwrap())))).collect();
    let mut numbers: Vec<u8> = woke.iter().map(|&(i, _)| i).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 3], "each child told once: {woke:?}");
    // A child may only come before one with an earlier deadline if that one
    // woke after the first one's deadline too: late, which a loaded kernel
    // may make any sleeper, but not woken out of order. No bound on how
    // late is assumed. The simulation meets every deadline exactly, so
    // there this is the order of the deadlines itself.
    for (n, &(first, _)) in woke.iter().enumerate() {
        for &(later, later_woke) in &woke[n + 1..] {
            assert!(
                first < later || later_woke >= deadline(first),
                "child {later} woke at {later_woke}, before child {first}'s deadline {}, yet came after it: {woke:?}",
                deadline(first)
            );
        }
    }
    let reaped = reap_n(os, sig, 3);
    assert!(reaped.iter().all(|(_, s)| s.success()), "no child woke before its deadline: {reaped:?}");
    let d = os.now() + Duration::from_millis(5);
    let mut none: [PollFd; 0] = [];
    assert_eq!(os.poll(&mut none, Some(d)).unwrap(), 0);
    assert!(os.now() >= d, "poll with a deadline and nothing to watch returns at the deadline");
    os.close(here);
}

/// A client connects to a unix listener, the listener accepts it, and
/// bytes go both ways; a second accept is `WouldBlock`.
pub fn unix_socket_round_trip<O: Os>(os: &mut O, dir: &Path) {
    let addr = Address::Unix(dir.join("rt.sock"));
    let listener = os.listen(&addr, ListenOptions::default()).unwrap();
    let client = os.connect(&addr).unwrap();
    wait_ready(os, listener, Ready::READ);
    let server = os.accept(listener).unwrap();
    assert_eq!(os.accept(listener).unwrap_err().kind(), ErrorKind::WouldBlock);
    write_all(os, client, b"ping\n");
    wait_ready(os, server, Ready::READ);
    let mut buf = [0u8; 16];
    let n = os.read(server, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping\n");
    write_all(os, server, b"pong\n");
    os.close(server);
    assert_eq!(read_to_end(os, client), b"pong\n");
    os.close(client);
    os.close(listener);
    os.remove_file(addr.unix_path().unwrap()).unwrap();
}

/// A unix socket file outlives its listener: a connect to it is
/// `ConnectionRefused` and a new bind to it `AddrInUse`.
pub fn stale_unix_socket_refuses<O: Os>(os: &mut O, dir: &Path) {
    let path = dir.join("stale.sock");
    let addr = Address::Unix(path.clone());
    let listener = os.listen(&addr, ListenOptions::default()).unwrap();
    assert_eq!(
        os.listen(&addr, ListenOptions::default()).unwrap_err().kind(),
        ErrorKind::AddrInUse,
        "a live socket file blocks a second bind"
    );
    os.close(listener);
    assert!(os.file_exists(&path), "the socket file outlives its listener");
    assert_eq!(os.connect(&addr).unwrap_err().kind(), ErrorKind::ConnectionRefused, "nobody answers a stale socket");
    assert_eq!(os.listen(&addr, ListenOptions::default()).unwrap_err().kind(), ErrorKind::AddrInUse);
    os.remove_file(&path).unwrap();
    let listener = os.listen(&addr, ListenOptions::default()).unwrap();
    os.close(listener);
    os.remove_file(&path).unwrap();
    assert_eq!(os.connect(&addr).unwrap_err().kind(), ErrorKind::NotFound);
}

mod descriptors;
mod files_and_peers;
mod groups;
mod memory;
pub use descriptors::*;
pub use files_and_peers::*;
pub use groups::*;
pub use memory::*;
