//! The pid file, and the little else a daemon asks of the file system.
//!
//! The pid file is locked with `flock`, which the kernel releases when the
//! holder dies however it dies, so a stale file never blocks a new daemon:
//! only a live lock does. A process that fails to get the lock must leave the
//! file as it found it, since it belongs to the live holder; so the file is
//! opened without `O_TRUNC`, and emptied only once the lock is ours.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use crate::real::sys::c_path;
use crate::{Fd, Pid, PidFileError};

/// The most of a pid file that is read back: a pid is at most ten digits.
const PID_FILE_READ_LIMIT: usize = 64;

pub(super) fn lock_pid_file(path: &Path, pid: Pid) -> Result<Fd, PidFileError> {
    let file = open(path).map_err(PidFileError::Io)?;
    if let Err(e) = syscall!(flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)) {
        if e.kind() == io::ErrorKind::WouldBlock {
            // Dropping `file` closes it, and the holder keeps its lock.
            return Err(PidFileError::Locked(read_pid(&file)));
        }
        return Err(PidFileError::Io(e));
    }
    write_pid(&file, pid).map_err(PidFileError::Io)?;
    Ok(Fd(file.into_raw_fd()))
}

fn open(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC;
    // Safety: `path` is a nul-terminated string.
    let raw = syscall!(open(path.as_ptr(), flags, 0o644 as libc::c_uint))?;
    // Safety: open has just returned this descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The pid in a locked file, if it holds one.
fn read_pid(file: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; PID_FILE_READ_LIMIT];
    let mut len = 0;
    while len < buf.len() {
        let rest = &mut buf[len..];
        // Safety: `rest` is valid for `rest.len()` bytes of writing.
        match syscall!(pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), len as libc::off_t)) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n as usize,
        }
    }
    std::str::from_utf8(&buf[..len]).ok()?.trim().parse().ok()
}

fn write_pid(file: &OwnedFd, pid: Pid) -> io::Result<()> {
    syscall!(ftruncate(file.as_raw_fd(), 0))?;
    let text = format!("{pid}\n");
    let mut written = 0;
    while written < text.len() {
        let rest = &text.as_bytes()[written..];
        // Safety: `rest` is valid for `rest.len()` bytes of reading.
        let n = syscall!(pwrite(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), written as libc::off_t))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n as usize;
    }
    Ok(())
}

pub(super) fn remove_file(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // Safety: `path` is a nul-terminated string.
    syscall!(unlink(path.as_ptr()))?;
    Ok(())
}

pub(super) fn file_exists(path: &Path) -> bool {
    // lstat, not stat: a dangling symlink still occupies the path.
    std::fs::symlink_metadata(path).is_ok()
}
