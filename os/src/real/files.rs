//! The pid file, small private files, and the little else a daemon asks of
//! the file system.
//!
//! The pid file is locked with `flock`, which the kernel releases when the
//! holder dies however it dies, so a stale file never blocks a new daemon:
//! only a live lock does. A process that fails to get the lock must leave the
//! file as it found it, since it belongs to the live holder; so the file is
//! opened without `O_TRUNC`, and emptied only once the lock is ours.
//!
//! Every file here is opened with `O_NOFOLLOW` and judged by `fstat` of the
//! descriptor, never by a `stat` of the path: between a check of the path
//! and the open, someone who can write the directory could swap a symbolic
//! link or another user's file in. A pid file must be a regular file of the
//! daemon's user with one name; a private file (a token) a regular file of
//! the daemon's user that nobody else may read or write.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use crate::real::sys::c_path;
use crate::{Fd, FileKind, Pid, PidFileError};

/// The most of a pid file that is read back: a pid is at most ten digits.
const PID_FILE_READ_LIMIT: usize = 64;

pub(super) fn lock_pid_file(path: &Path, pid: Pid) -> Result<Fd, PidFileError> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let file = match open(path, flags, 0o600) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PidFileError::Unsafe("is a symbolic link".into()));
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return Err(PidFileError::Unsafe("not a regular file".into()));
        }
        Err(e) => return Err(PidFileError::Io(e)),
    };
    // Judged before anything else is done to it: a file that fails here
    // is left exactly as it was.
    let st = fstat(&file).map_err(PidFileError::Io)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(PidFileError::Unsafe("not a regular file".into()));
    }
    let me = euid();
    if st.st_uid != me {
        return Err(PidFileError::Unsafe(not_ours(st.st_uid, me)));
    }
    if st.st_nlink != 1 {
        return Err(PidFileError::Unsafe(format!("has {} hard links", st.st_nlink)));
    }
    if st.st_mode & 0o077 != 0 {
        // Ours, left readable by others by an older run or another tool.
        syscall!(fchmod(file.as_raw_fd(), 0o600)).map_err(PidFileError::Io)?;
    }
    if let Err(e) = syscall!(flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)) {
        if e.kind() == io::ErrorKind::WouldBlock {
            // Dropping `file` closes it, and the holder keeps its lock.
            return Err(match (read_pid(&file), lock_holders(st.st_ino)) {
                // Linux says who took the lock: the daemon the file names
                // (if it still runs: a dead daemon's children may hold its
                // lock on, and the list still names the daemon), or some
                // other process.
                (Some(pid), Some(holders)) if holders.contains(&pid) && is_running(pid) => {
                    PidFileError::Locked(Some(pid))
                }
                (named, Some(_)) => PidFileError::LockedByOther(named),
                (Some(pid), None) if is_running(pid) => PidFileError::Locked(Some(pid)),
                (named, None) => PidFileError::LockedByOther(named),
            });
        }
        return Err(PidFileError::Io(e));
    }
    write_pid(&file, pid).map_err(PidFileError::Io)?;
    Ok(Fd(file.into_raw_fd()))
}

fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    // Safety: `path` is a nul-terminated string.
    let raw = syscall!(open(path.as_ptr(), flags, libc::c_uint::from(mode)))?;
    // Safety: open has just returned this descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn fstat(file: &OwnedFd) -> io::Result<libc::stat> {
    // Safety: all zeroes is a valid stat, which fstat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // Safety: `st` is valid for writing.
    syscall!(fstat(file.as_raw_fd(), &mut st))?;
    Ok(st)
}

pub(super) fn euid() -> u32 {
    // Safety: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn not_ours(owner: u32, me: u32) -> String {
    format!("owned by uid {owner}, not this daemon's user ({me})")
}

/// Whether `pid` names a process: one we may not signal exists too.
/// The processes that hold a lock on the file of inode `ino`, from
/// `/proc/locks` (lines such as `1: FLOCK  ADVISORY  WRITE 4242
/// 08:01:1835012 0 EOF`; waiters, marked `->`, hold nothing). `None` when
/// the kernel cannot be asked.
fn lock_holders(ino: libc::ino_t) -> Option<Vec<i32>> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let holders = locks
        .lines()
        .filter(|line| !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (pid, file) = (fields.get(4)?, fields.get(5)?);
            let inode = file.rsplit(':').next()?.parse::<u64>().ok()?;
            (inode == ino).then(|| pid.parse().ok()).flatten()
        })
        .collect();
    Some(holders)
}

fn is_running(pid: i32) -> bool {
    // kill(0) and kill(-n) name groups, not the process a file names.
    pid > 0
        && match syscall!(kill(pid, 0)) {
            Ok(_) => true,
            Err(e) => e.raw_os_error() == Some(libc::EPERM),
        }
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

/// `Os::rewrite_pid_file`: the pid file behind `lock` now names `pid`.
pub(super) fn rewrite_pid_file(lock: Fd, pid: Pid) -> io::Result<()> {
    // Safety: the caller's descriptor stays open for the call; it is only
    // borrowed.
    let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(lock.0) };
    write_pid(&file, pid)
}

fn write_pid(file: &impl AsRawFd, pid: Pid) -> io::Result<()> {
    syscall!(ftruncate(file.as_raw_fd(), 0))?;
    write_all_at(file, format!("{pid}\n").as_bytes())
}

/// Writes all of `data` from offset 0.
fn write_all_at(file: &impl AsRawFd, data: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < data.len() {
        let rest = &data[written..];
        // Safety: `rest` is valid for `rest.len()` bytes of reading.
        let n = syscall!(pwrite(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), written as libc::off_t))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n as usize;
    }
    Ok(())
}

fn denied(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

pub(super) fn read_private_file(path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>> {
    // O_NONBLOCK so that a FIFO put at the path cannot hang the open; a
    // regular file, the only kind accepted, ignores it.
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let file = match open(path, flags, 0) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(denied("is a symbolic link".into())),
        Err(e) => return Err(e),
    };
    let st = fstat(&file)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(denied("not a regular file".into()));
    }
    let me = euid();
    if st.st_uid != me {
        return Err(denied(not_ours(st.st_uid, me)));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(denied(format!("readable or writable by others (mode {mode:04o})")));
    }
    // Another name for the same file may be one that others can reach.
    if st.st_nlink != 1 {
        return Err(denied(format!("has {} hard links", st.st_nlink)));
    }
    // One byte past the limit tells a file that is too large. std's read
    // retries EINTR itself.
    let mut data = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    std::fs::File::from(file).take(cap).read_to_end(&mut data)?;
    if data.len() > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(Some(data))
}

pub(super) fn write_private_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let file = open(path, flags, 0o600)?;
    // The file is new and ours: whatever goes wrong from here, it goes.
    // fchmod, because the umask may have taken bits from the 0600 of open
    // but can never have added any; 0600 is then what it has.
    let written = syscall!(fchmod(file.as_raw_fd(), 0o600)).and_then(|_| write_all_at(&file, data));
    if let Err(e) = written {
        drop(file);
        let _ = remove_file(path);
        return Err(e);
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

pub(super) fn file_kind(path: &Path) -> Option<FileKind> {
    use std::os::unix::fs::FileTypeExt;
    // lstat: a symbolic link is reported as one, not followed.
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    Some(if kind.is_symlink() {
        FileKind::Symlink
    } else if kind.is_file() {
        FileKind::Regular
    } else if kind.is_dir() {
        FileKind::Directory
    } else if kind.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Other
    })
}

/// How [`open_regular`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenFor {
    /// For reading; the file must exist.
    Read,
    /// For appending, created with this mode (less the umask) if missing.
    Append {
        /// The permission bits of a file that is created.
        mode: u32,
    },
}

/// Why [`open_regular`] refused a path.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenRegularError {
    /// The path is a symbolic link, which is never followed.
    Symlink,
    /// The path names something other than a regular file (a FIFO, a
    /// device, a directory).
    NotRegular,
    /// Opening it, or asking the open descriptor what it is, failed.
    Io(io::Error),
}

impl std::fmt::Display for OpenRegularError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenRegularError::Symlink => f.write_str("is a symbolic link"),
            OpenRegularError::NotRegular => f.write_str("is not a regular file"),
            OpenRegularError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenRegularError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenRegularError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Opens a regular file without following a final symbolic link and
/// without blocking on a FIFO or taking a terminal, then checks what the
/// descriptor names: the caller judges the returned metadata (owner, mode)
/// of the very file it will read or write, which cannot be swapped in
/// between. For files outside a daemon's own `Os` (a log file, a client's
/// token file).
pub fn open_regular(path: &Path, how: OpenFor) -> Result<(std::fs::File, std::fs::Metadata), OpenRegularError> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    let (flags, mode) = match how {
        OpenFor::Read => (flags | libc::O_RDONLY, 0),
        OpenFor::Append { mode } => (flags | libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, mode),
    };
    let file = match open(path, flags, mode as libc::mode_t) {
        Ok(file) => std::fs::File::from(file),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(OpenRegularError::Symlink),
        // O_NONBLOCK on a FIFO with no reader, opened for writing.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(OpenRegularError::NotRegular),
        Err(e) => return Err(OpenRegularError::Io(e)),
    };
    let meta = file.metadata().map_err(OpenRegularError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenRegularError::NotRegular);
    }
    Ok((file, meta))
}

/// The effective user of this process.
pub fn effective_uid() -> u32 {
    euid()
}
