//! The one place where a system call's failure becomes an `io::Error`.
//!
//! Every fallible call `RealOs` makes to the kernel goes through [`retry`],
//! directly or through the `syscall!` macro, as every call in mio goes
//! through its own `syscall!` (the few made through `std`, which retries
//! `EINTR` itself, aside). That is where `EINTR` is retried, so no caller has
//! to remember it and none can forget it. The only calls that must not retry are
//! `poll`, whose contract is to return early on a signal, `close`, which has
//! already freed the descriptor when it reports `EINTR` on Linux, and
//! `connect`, which carries on in the background once interrupted; each of
//! them says so where it is made.
//!
//! This module must never decide what an error means: it only converts.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

/// Calls a `libc` function that returns `-1` and sets `errno` on failure,
/// retrying it while it fails with `EINTR`: `syscall!(read(fd, ptr, len))`.
/// The caller answers for the arguments, as with any `libc` call.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {
        $crate::real::sys::retry(|| {
            // Safety: the caller passes arguments valid for this call.
            let result = unsafe { libc::$fn($($arg),*) };
            nix::errno::Errno::result(result)
        })
    };
}

/// Runs `call` again while it fails with `EINTR`, and converts its error.
pub(crate) fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// A path as the kernel takes it. A path with a NUL byte inside cannot name
/// a file.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("path {} contains a nul byte", path.display()))
    })
}
