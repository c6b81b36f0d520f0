//! Reading, writing, closing and polling descriptors.
//!
//! Writes go through `send(MSG_NOSIGNAL)` so that a write to a socket whose
//! peer has gone is `EPIPE` (`BrokenPipe`) and never a `SIGPIPE`, whatever
//! the process's disposition for that signal; a descriptor that is not a
//! socket falls back to `write`, which `install_signals` protects by ignoring
//! `SIGPIPE`.
//!
//! `poll` is the one call that must not retry `EINTR`: a signal ends the wait
//! with nothing ready, so that the caller looks at its signals at once.

use std::io;

use nix::errno::Errno;

use crate::{Fd, Instant, PollFd, Ready};

pub(super) fn read(fd: Fd, buf: &mut [u8]) -> io::Result<usize> {
    // Safety: `buf` is valid for `buf.len()` bytes of writing.
    let n = syscall!(read(fd.0, buf.as_mut_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

pub(super) fn write(fd: Fd, buf: &[u8]) -> io::Result<usize> {
    // Safety: `buf` is valid for `buf.len()` bytes of reading.
    let n = match syscall!(send(fd.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => syscall!(write(fd.0, buf.as_ptr().cast(), buf.len()))?,
        result => result?,
    };
    Ok(n as usize)
}

pub(super) fn close(fd: Fd) {
    // Not retried: on Linux the descriptor is released even when close
    // reports EINTR, and closing it again could close a descriptor another
    // call has just been given. Any error is the caller's bug (see `Os`).
    // Safety: closing a descriptor number touches no memory.
    unsafe { libc::close(fd.0) };
}

/// Closes descriptors `first` to `last`, both included, in one call where
/// the kernel has `close_range` (Linux 5.9), one by one where not.
pub(super) fn close_range(first: i32, last: i32) {
    let (Ok(lo), Ok(hi)) = (libc::c_uint::try_from(first), libc::c_uint::try_from(last)) else { return };
    // Safety: closing descriptor numbers touches no memory.
    if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } == 0 {
        return;
    }
    for fd in first..=last {
        close(Fd(fd));
    }
}

/// Waits for the descriptors with `timeout` milliseconds as `poll(2)` takes
/// it, and fills each entry's `ready`.
pub(super) fn poll(fds: &mut [PollFd], timeout: libc::c_int) -> io::Result<usize> {
    let mut raw: Vec<libc::pollfd> =
        fds.iter().map(|p| libc::pollfd { fd: p.fd.0, events: events(p.interest), revents: 0 }).collect();
    // Safety: `raw` holds `raw.len()` initialised entries.
    let result = Errno::result(unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, timeout) });
    match result {
        Err(Errno::EINTR) => {
            for p in fds.iter_mut() {
                p.ready = Ready::NONE;
            }
            Ok(0)
        }
        Err(e) => Err(e.into()),
        Ok(_) => {
            let mut count = 0;
            for (p, r) in fds.iter_mut().zip(&raw) {
                p.ready = ready(p.interest, r.revents);
                if !p.ready.is_empty() {
                    count += 1;
                }
            }
            Ok(count)
        }
    }
}

/// The `poll(2)` timeout for `deadline`: the time left rounded up to whole
/// milliseconds, since rounding a positive remainder down to zero would make
/// the caller spin until the deadline; `-1` for no deadline.
pub(super) fn timeout_millis(now: Instant, deadline: Option<Instant>) -> libc::c_int {
    let Some(deadline) = deadline else {
        return -1;
    };
    let nanos = deadline.as_nanos().saturating_sub(now.as_nanos());
    let millis = nanos.div_ceil(1_000_000);
    libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX)
}

fn events(interest: Ready) -> libc::c_short {
    let mut events = 0;
    if interest.contains(Ready::READ) {
        events |= libc::POLLIN;
    }
    if interest.contains(Ready::WRITE) {
        events |= libc::POLLOUT;
    }
    events
}

fn ready(interest: Ready, revents: libc::c_short) -> Ready {
    let mut ready = Ready::NONE;
    if revents & libc::POLLIN != 0 {
        ready |= Ready::READ;
    }
    if revents & libc::POLLOUT != 0 {
        ready |= Ready::WRITE;
    }
    if revents & libc::POLLHUP != 0 {
        ready |= Ready::HUP;
        // A hung-up stream may not report POLLIN, yet a read returns the end
        // of file: a reader must be woken to see it.
        if interest.contains(Ready::READ) {
            ready |= Ready::READ;
        }
    }
    if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        ready |= Ready::ERROR;
    }
    ready
}

/// Makes a descriptor the process inherited non-blocking and close-on-exec,
/// as every descriptor `RealOs` makes is from the start.
pub(super) fn make_nonblocking_cloexec(fd: Fd) -> io::Result<()> {
    let flags = syscall!(fcntl(fd.0, libc::F_GETFL))?;
    syscall!(fcntl(fd.0, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    syscall!(fcntl(fd.0, libc::F_SETFD, libc::FD_CLOEXEC))?;
    Ok(())
}

/// A pipe, both ends non-blocking and close-on-exec from the start.
pub(super) fn pipe() -> io::Result<(Fd, Fd)> {
    let mut fds = [0; 2];
    // Safety: `fds` is valid for two descriptors.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK))?;
    Ok((Fd(fds[0]), Fd(fds[1])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        let now = Instant::from_nanos(10_000_000_000);
        let after = |nanos| Some(Instant::from_nanos(now.as_nanos() + nanos));
        assert_eq!(timeout_millis(now, None), -1);
        assert_eq!(timeout_millis(now, Some(Instant::ZERO)), 0);
        assert_eq!(timeout_millis(now, Some(now)), 0);
        assert_eq!(timeout_millis(now, after(1)), 1);
        assert_eq!(timeout_millis(now, after(1_000_000)), 1);
        assert_eq!(timeout_millis(now, after(1_000_001)), 2);
        assert_eq!(timeout_millis(now, Some(Instant::from_nanos(u64::MAX))), libc::c_int::MAX);
    }

    #[test]
    fn hang_up_wakes_a_reader_but_not_a_writer() {
        assert_eq!(ready(Ready::READ, libc::POLLHUP), Ready::READ | Ready::HUP);
        assert_eq!(ready(Ready::WRITE, libc::POLLHUP), Ready::HUP);
        assert_eq!(ready(Ready::WRITE, libc::POLLOUT | libc::POLLERR), Ready::WRITE | Ready::ERROR);
        assert_eq!(ready(Ready::READ, libc::POLLNVAL), Ready::ERROR);
    }
}
