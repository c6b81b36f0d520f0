//! Waits on events, each with a deadline: nothing here sleeps, and nothing
//! looks again before something happened that could change the answer.
//!
//! A condition on a test's daemon depends on what the daemon does, and the
//! daemon says what it does: every test daemon runs with `-f -v` in the
//! test's own directory and logs there, and it creates and removes its
//! socket and pid file there. So a [`Wake`] watches, with inotify, every
//! live [`TempDir`](crate::TempDir) for files written, created, removed or
//! moved, and the pidfd of each process the condition waits on; the
//! condition is looked at again after each event. The deadline bounds the
//! wait and fails it with a message: it is not what the test checks.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The directories of the live test directories, which every wait watches.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// What in a watched directory wakes a wait: a file written, created,
/// removed, renamed or changed in its mode. Not an open or a read: the
/// conditions read files, and must not wake themselves.
const CHANGES: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB;

fn dirs() -> MutexGuard<'static, Vec<PathBuf>> {
    DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Has every wait watch `dir` from now on.
pub(crate) fn watch_dir(dir: PathBuf) {
    dirs().push(dir);
}

/// Stops watching `dir` (it is being removed).
pub(crate) fn unwatch_dir(dir: &std::path::Path) {
    dirs().retain(|d| d != dir);
}

/// A descriptor that turns readable when process `pid` ends (a zombie has
/// ended), or `None` when there is no such process.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // Safety: pidfd_open takes a pid and flags, and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
    // Safety: a descriptor just opened, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Polls `fds` for reading until one is ready or `left` has passed.
fn poll_read(fds: &mut [libc::pollfd], left: Duration) {
    for fd in fds.iter_mut() {
        fd.events = libc::POLLIN;
        fd.revents = 0;
    }
    // Round up: a wait of less than a millisecond must not become a
    // zero-timeout look.
    let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    // Safety: a valid array of pollfds. EINTR only means: look again.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// The events a wait wakes on: changes in the live test directories, and
/// the ends of the processes it was given.
pub struct Wake {
    inotify: OwnedFd,
    /// Processes not yet seen to end: once one has, its pidfd stays
    /// readable, so it is dropped from the set.
    pidfds: Vec<OwnedFd>,
}

impl Default for Wake {
    fn default() -> Wake {
        Wake::new()
    }
}

impl Wake {
    /// Wakes on a change in any live test directory.
    pub fn new() -> Wake {
        let flags = libc::IN_CLOEXEC | libc::IN_NONBLOCK;
        // Safety: inotify_init1 takes flags and returns a new descriptor.
        let fd = unsafe { libc::inotify_init1(flags) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        // Safety: a descriptor just opened, owned by nothing else.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        for dir in dirs().iter() {
            let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else { continue };
            // Safety: a valid descriptor and a NUL-terminated path. A
            // directory removed meanwhile only has nothing to watch.
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), CHANGES) };
        }
        Wake { inotify, pidfds: Vec::new() }
    }

    /// Wakes also when process `pid` ends (any process, not only a child).
    pub fn process(mut self, pid: i32) -> Wake {
        self.pidfds.extend(pidfd(pid));
        self
    }

    /// Wakes also when any of `pids` ends.
    pub fn processes(self, pids: impl IntoIterator<Item = i32>) -> Wake {
        pids.into_iter().fold(self, Wake::process)
    }

    /// Looks at `cond` now and after each event until it holds, failing
    /// with `what` once `deadline` has passed.
    pub fn until(self, what: &str, deadline: Duration, cond: impl FnMut() -> bool) {
        assert!(
            self.within(deadline, cond),
            "timed out after {deadline:?} waiting for {what} (a wait looks again on a change in a test's \
             directory, such as a line the daemon logs, and on the end of a process given to it)"
        );
    }

    /// Looks at `cond` now and after each event until it holds (`true`) or
    /// `deadline` has passed (`false`).
    pub fn within(mut self, deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + deadline;
        while !cond() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.wait(left);
        }
        true
    }

    /// Waits for the next event, at most `left`.
    fn wait(&mut self, left: Duration) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(&self.inotify)
            .chain(&self.pidfds)
            .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: 0, revents: 0 })
            .collect();
        poll_read(&mut fds, left);
        if fds[0].revents != 0 {
            self.drain();
        }
        let ended: Vec<bool> = fds[1..].iter().map(|fd| fd.revents != 0).collect();
        let mut ended = ended.into_iter();
        self.pidfds.retain(|_| !ended.next().unwrap_or(false));
    }

    /// Reads the queued inotify events: only their coming matters.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            // Safety: reads into a buffer of its length.
            let n = unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }
}

/// Looks at `cond` now and after each change in a live test directory until
/// it holds, failing with `what` after `deadline`. A condition on processes
/// ending waits with [`wait_gone`], or with [`Wake::process`].
pub fn wait_until(what: &str, deadline: Duration, cond: impl FnMut() -> bool) {
    Wake::new().until(what, deadline, cond);
}

/// Waits until every one of `pids` is gone (a zombie counts as gone),
/// failing with `what` after `deadline`.
pub fn wait_gone(what: &str, deadline: Duration, pids: &[i32]) {
    Wake::new().processes(pids.iter().copied()).until(what, deadline, || !pids.iter().any(|&p| crate::alive(p)));
}

/// Waits until `child` exits, at most `deadline`: on a pidfd, which turns
/// readable when the process ends, so nothing polls or sleeps. `None` when
/// it is still running then.
pub fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let Some(pidfd) = pidfd(child.id() as i32) else {
        // Already reaped, or the kernel has no pidfd: ask directly.
        return child.try_wait().expect("wait for the child");
    };
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        poll_read(&mut [libc::pollfd { fd: pidfd.as_raw_fd(), events: 0, revents: 0 }], left);
    }
}

/// A count that one thread raises and others wait on, such as how much a
/// writer got into a socket, and whether the writer is done.
#[derive(Default)]
pub struct Progress {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the count.
    pub fn set(&self, n: usize) {
        self.lock().0 = n;
        self.changed.notify_all();
    }

    /// Says that the count will not change any more.
    pub fn finish(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }

    /// The count.
    pub fn get(&self) -> usize {
        self.lock().0
    }

    /// Waits until `cond(count, finished)` holds, failing with `what` after
    /// `deadline`.
    pub fn wait_until(&self, what: &str, deadline: Duration, mut cond: impl FnMut(usize, bool) -> bool) {
        let (_state, timeout) = self
            .changed
            .wait_timeout_while(self.lock(), deadline, |&mut (n, done)| !cond(n, done))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(!timeout.timed_out(), "timed out after {deadline:?} waiting for {what}");
    }
}
