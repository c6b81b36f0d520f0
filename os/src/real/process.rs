//! Forking children, reaping them, and the calls that shape a process.
//!
//! A fork copies only the calling thread, so a child of a multi-threaded
//! process may find a lock held forever by a thread that no longer exists
//! (the allocator's, stdout's, signal-hook's). `spawn` therefore refuses to
//! fork unless the process has exactly one thread, as counted by the kernel.
//!
//! Signals are blocked across the fork so that no handler runs in the child
//! before it has reset the parent's handlers to their defaults: a signal the
//! child receives in between would otherwise write to the parent's pipe.
//!
//! The child runs its entry and leaves with `_exit`. It must never return
//! into the caller's stack frames, which belong to the parent's logic, nor run
//! the parent's destructors or flush the parent's buffers: a panic is caught
//! and becomes exit code 101, like the panic of a `main`.

use std::io;
use std::panic::{self, AssertUnwindSafe};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::unistd::{self, ForkResult};

use crate::real::sys::retry;
use crate::real::{time, RealOs};
use crate::{Entry, ExitStatus, Instant, KillTarget, Pid, Signal, SpawnOptions};

/// The exit code of a child whose entry panicked.
const PANIC_EXIT_CODE: i32 = 101;

/// How many threads the calling process has, from `/proc/self/status`.
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no thread count in /proc/self/status"))
}

pub(super) fn spawn(os: &mut RealOs, opts: SpawnOptions, entry: Entry<RealOs>) -> io::Result<Pid> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot fork: the process has {threads} threads (fork a daemon before starting threads)"
        )));
    }
    let mut old_mask = SigSet::empty();
    retry(|| pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old_mask)))?;
    // Safety: the process has one thread, so the child starts in a
    // consistent state, and it leaves through `run_child`, never returning.
    let forked = retry(|| unsafe { unistd::fork() });
    match forked {
        Ok(ForkResult::Child) => run_child(os, opts, &old_mask, entry),
        Ok(ForkResult::Parent { child }) => {
            if opts.new_group {
                // The child moves itself too; doing it on both sides means the
                // group exists when spawn returns, whichever runs first, so
                // that signalling the group at once reaches the child. An
                // error only means the child has already exited.
                let _ = unistd::setpgid(child, child);
            }
            restore_mask(&old_mask);
            Ok(Pid(child.as_raw()))
        }
        Err(e) => {
            restore_mask(&old_mask);
            Err(e)
        }
    }
}

pub(super) fn detach(os: &mut RealOs, launcher: Entry<RealOs>) -> io::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!("cannot detach: the process has {threads} threads")));
    }
    // Safety: one thread; each side either returns into the caller's code
    // (the daemon, which is the caller's continuation) or leaves by `_exit`.
    match retry(|| unsafe { unistd::fork() })? {
        ForkResult::Parent { child } => {
            // The first child exits as soon as it has forked the daemon.
            let _ = retry(|| nix::sys::wait::waitpid(child, None));
            let code = panic::catch_unwind(AssertUnwindSafe(move || launcher(os))).unwrap_or(PANIC_EXIT_CODE);
            use std::io::Write;
            let _ = io::stdout().flush();
            // Safety: the launcher's work is done; nothing of the caller's
            // runs on, in this process.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {
            if setsid().is_err() {
                // Safety: as above, in a child that is nobody's yet.
                unsafe { libc::_exit(1) };
            }
            // Safety: one thread still.
            match retry(|| unsafe { unistd::fork() }) {
                Ok(ForkResult::Child) => {}
                // Safety: as above.
                Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
                // Safety: as above; the launcher reads the pipe's end.
                Err(_) => unsafe { libc::_exit(1) },
            }
            os.pid = Pid(unistd::getpid().as_raw());
            Ok(())
        }
    }
}

fn restore_mask(old_mask: &SigSet) {
    retry(|| pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None))
        .expect("a saved signal mask can always be restored");
}

/// The child's side of `spawn`: becomes a child, runs `entry`, exits.
fn run_child(os: &mut RealOs, opts: SpawnOptions, old_mask: &SigSet, entry: Entry<RealOs>) -> ! {
    let result = panic::catch_unwind(AssertUnwindSafe(move || {
        if let Err(e) = become_child(os, opts, old_mask) {
            panic!("spawned child setup failed: {e}");
        }
        entry(os)
    }));
    let code = match result {
        Ok(code) => code,
        Err(payload) => {
            // Dropping a payload can panic again, outside any catch.
            std::mem::forget(payload);
            PANIC_EXIT_CODE
        }
    };
    // Safety: `_exit` ends the process without touching the parent's state.
    unsafe { libc::_exit(code) }
}

fn become_child(os: &mut RealOs, opts: SpawnOptions, old_mask: &SigSet) -> io::Result<()> {
    if opts.new_group {
        retry(|| unistd::setpgid(unistd::Pid::from_raw(0), unistd::Pid::from_raw(0)))?;
    }
    if let Some(mut signals) = os.signals.take() {
        signals.uninstall()?;
        // Dropping it closes the parent's pipe in the child.
    }
    os.statm.close_in_child();
    os.pid = Pid(unistd::getpid().as_raw());
    retry(|| pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None))
}

pub(super) fn try_reap() -> io::Result<Option<(Pid, ExitStatus)>> {
    loop {
        let mut status = 0;
        // The raw call rather than nix's, whose decoding fails on a signal it
        // has no name for after the child is already reaped.
        // Safety: `status` is valid for writing.
        match syscall!(waitpid(-1, &mut status, libc::WNOHANG)) {
            Ok(0) => return Ok(None),
            Ok(pid) => {
                if libc::WIFEXITED(status) {
                    return Ok(Some((Pid(pid), ExitStatus::Exited(libc::WEXITSTATUS(status)))));
                }
                if libc::WIFSIGNALED(status) {
                    return Ok(Some((Pid(pid), ExitStatus::Signaled(libc::WTERMSIG(status)))));
                }
                // Stopped or continued: not an exit, look for another.
            }
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn kill(target: KillTarget, signal: Signal) -> io::Result<()> {
    let (KillTarget::Process(pid) | KillTarget::Group(pid)) = target;
    // kill(0) and kill(-1) mean "my group" and "everyone I may signal": a
    // zero or negative pid here is a bug, which must not reach the kernel.
    if pid.0 <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("kill: invalid pid {pid}")));
    }
    match target {
        KillTarget::Process(pid) => syscall!(kill(pid.0, signal.number()))?,
        KillTarget::Group(pid) => syscall!(killpg(pid.0, signal.number()))?,
    };
    Ok(())
}

/// How often a kernel without pidfds is asked whether the process is gone.
const GONE_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

pub(super) fn wait_gone(pid: Pid, deadline: Instant) -> io::Result<bool> {
    if pid.0 <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("wait: invalid pid {pid}")));
    }
    // Safety: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = match retry(|| nix::errno::Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.0, 0) })) {
        Ok(fd) => fd as i32,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return wait_gone_by_kill(pid, deadline),
        Err(e) => return Err(e),
    };
    let result = loop {
        let mut fds = [libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 }];
        let left = deadline.saturating_duration_since(time::now());
        // Rounded up, so that a wait does not end a fraction of a millisecond
        // early and spin.
        let timeout = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
        // Safety: `fds` is valid for one entry. A signal interrupts the
        // wait, which goes on with what is left of it.
        match nix::errno::Errno::result(unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout) }) {
            Ok(0) if time::now() >= deadline => break Ok(false),
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => break Ok(true),
            Err(e) => break Err(io::Error::from(e)),
        }
    };
    // Safety: our own descriptor, closed once.
    unsafe { libc::close(pidfd) };
    result
}

/// `wait_gone` on a kernel older than pidfds (Linux 5.3): asks `kill(pid,
/// 0)`, which a zombie still answers, until it fails with `ESRCH`.
fn wait_gone_by_kill(pid: Pid, deadline: Instant) -> io::Result<bool> {
    loop {
        match syscall!(kill(pid.0, 0)) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
        let now = time::now();
        if now >= deadline {
            return Ok(false);
        }
        time::sleep_until((now + GONE_POLL_INTERVAL).min(deadline));
    }
}

/// The descriptors the process has open, from `/proc/self/fd` (read to
/// the end first, so that the directory's own descriptor is gone by the
/// time the caller acts on the list).
pub(super) fn open_descriptors() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    fds.into_iter().filter(|&fd| syscall!(fcntl(fd, libc::F_GETFD)).is_ok()).collect()
}

pub(super) fn setsid() -> io::Result<()> {
    retry(unistd::setsid)?;
    Ok(())
}

pub(super) fn set_umask(umask: u32) -> u32 {
    // Safety: umask cannot fail; it only swaps the process's mask.
    unsafe { libc::umask(umask as libc::mode_t) as u32 }
}

pub(super) fn chdir_root() -> io::Result<()> {
    retry(|| unistd::chdir("/"))
}

pub(super) fn redirect_stdio_to_null() -> io::Result<()> {
    // Safety: the path is a valid C string.
    let null = syscall!(open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC))?;
    let mut result = Ok(());
    for fd in 0..3 {
        if fd != null {
            // dup2 clears close-on-exec on the copy, as standard descriptors want.
            if let Err(e) = syscall!(dup2(null, fd)) {
                result = Err(e);
                break;
            }
        }
    }
    if null > 2 {
        // Safety: our own descriptor, no longer needed.
        unsafe { libc::close(null) };
    }
    result
}

pub(super) fn set_niceness(niceness: i32) -> io::Result<()> {
    syscall!(setpriority(libc::PRIO_PROCESS, 0, niceness))?;
    Ok(())
}

pub(super) fn set_parent_death_signal(signal: Signal) -> io::Result<()> {
    let number = signal.number() as libc::c_ulong;
    syscall!(prctl(libc::PR_SET_PDEATHSIG, number, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong))?;
    Ok(())
}
