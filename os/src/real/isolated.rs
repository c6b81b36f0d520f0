//! Running code in a single-threaded process from a test.
//!
//! libtest runs every test on a thread of its own, so even alone in its
//! process (as under nextest) a test runs in a process of two threads, where
//! `RealOs::spawn` rightly refuses to fork. A test that forks therefore runs
//! its scenario through [`isolated`]: a raw fork of the test thread, which is
//! the only thread of the new process. The test thread waits for that
//! process with a bound, and fails if the scenario panicked or hung.

use std::io::{ErrorKind, Write};
use std::panic;
use std::time::Duration;

/// Runs `scenario` in a process forked from the calling thread and panics if
/// it panics or does not finish within `timeout`.
pub fn isolated<F: FnOnce()>(timeout: Duration, scenario: F) {
    // Safety: the child runs only `scenario`, then `_exit`s; it never returns
    // into the caller's frames, and the caller's other threads do not exist
    // in it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // libtest may capture the test thread's output into a buffer that
        // dies with this process: report panics on stderr itself.
        panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "isolated scenario: {info}");
        }));
        let code = match panic::catch_unwind(panic::AssertUnwindSafe(scenario)) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // Safety: ends this process without running the caller's code.
        unsafe { libc::_exit(code) };
    }
    match wait_for_process(pid, timeout) {
        Some(0) => {}
        Some(code) => panic!("the isolated scenario failed (status {code:#x}; see stderr)"),
        None => panic!("the isolated scenario did not finish within {timeout:?}"),
    }
}

/// Waits for `pid` through a pidfd, so that the wait is bounded; kills it
/// when time runs out. The raw wait status, `None` on timeout.
fn wait_for_process(pid: libc::pid_t, timeout: Duration) -> Option<libc::c_int> {
    // Safety: pidfd_open takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let mut pollfd = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
    let millis = timeout.as_millis() as libc::c_int;
    let ready = loop {
        // Safety: one valid pollfd. EINTR restarts the whole timeout, which
        // only makes a hung test take a little longer to fail.
        let n = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if n >= 0 {
            break n > 0;
        }
        assert_eq!(std::io::Error::last_os_error().kind(), ErrorKind::Interrupted);
    };
    let mut status = 0;
    // Safety: plain calls on a child of ours and our own pidfd.
    unsafe {
        if !ready {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
        libc::close(pidfd);
    }
    if !ready {
        return None;
    }
    Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 0x100 | libc::WTERMSIG(status) })
}
