//! Forking a child that executes a program: what a master's upgrade does
//! to start the new build.
//!
//! Between `fork` and `execve` the child may only make calls that are
//! async-signal-safe: the parent's allocator or stdout may be locked by
//! nobody that still exists. So everything is built before the fork — the
//! program's path, its argument and environment arrays, the buffer that
//! will hold `LISTEN_PID` — and the child only moves descriptors, writes the
//! digits of its pid into that buffer, resets its signals and executes.
//!
//! Descriptors are moved in two steps: each one handed over is first
//! duplicated above every target number, then `dup2`ed to its target, so
//! that a source whose number is another's target is never overwritten
//! before it is copied. `dup2` leaves the copy without close-on-exec; every
//! other descriptor of the process has it, so the program gets exactly
//! what it was handed.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::unistd::{self, ForkResult};

use crate::real::process::thread_count;
use crate::real::sys::{c_path, retry};
use crate::{ExecSpec, Pid};

/// The exit code of a child whose program could not be executed.
const EXEC_FAILED: i32 = 127;

/// Room for `LISTEN_PID=` and the ten digits of any pid, and the nul.
const LISTEN_PID_ROOM: usize = 32;

/// The arrays `execve` takes, built before the fork.
struct Prepared {
    program: CString,
    /// Owns the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` and room for the digits, written in the child.
    listen_pid: Option<Box<[u8; LISTEN_PID_ROOM]>>,
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a nul byte in an exec argument"))
}

fn prepare(spec: &ExecSpec) -> io::Result<Prepared> {
    let program = c_path(&spec.program)?;
    let mut strings = vec![program.clone()];
    for a in &spec.args {
        strings.push(c_string(a.as_bytes())?);
    }
    let argc = strings.len();
    let replaced = |name: &OsString| {
        let name = name.to_string_lossy();
        spec.env_unset.iter().any(|u| *u == name)
            || spec.env_set.iter().any(|(n, _)| *n == name)
            || (spec.listen_pid && name == "LISTEN_PID")
    };
    for (name, value) in std::env::vars_os().filter(|(n, _)| !replaced(n)) {
        let mut entry = name.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        strings.push(c_string(&entry)?);
    }
    for (name, value) in &spec.env_set {
        let mut entry = format!("{name}=").into_bytes();
        entry.extend_from_slice(value.as_bytes());
        strings.push(c_string(&entry)?);
    }
    let mut argv: Vec<*const libc::c_char> = strings[..argc].iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = strings[argc..].iter().map(|s| s.as_ptr()).collect();
    let listen_pid = spec.listen_pid.then(|| {
        let mut buf = Box::new([0u8; LISTEN_PID_ROOM]);
        buf[..11].copy_from_slice(b"LISTEN_PID=");
        buf
    });
    if let Some(buf) = &listen_pid {
        envp.push(buf.as_ptr().cast());
    }
    envp.push(std::ptr::null());
    Ok(Prepared { program, _strings: strings, argv, envp, listen_pid })
}

pub(super) fn spawn_exec(spec: &ExecSpec) -> io::Result<Pid> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!("cannot fork: the process has {threads} threads")));
    }
    let mut prepared = prepare(spec)?;
    let above = spec.fds.iter().map(|(_, to)| *to).max().unwrap_or(2).max(2) + 1;
    let fds: Vec<(i32, i32)> = spec.fds.iter().map(|(from, to)| (from.0, *to)).collect();
    let listen_pid: *mut u8 = prepared.listen_pid.as_mut().map_or(std::ptr::null_mut(), |b| b.as_mut_ptr());
    let mut old_mask = SigSet::empty();
    retry(|| pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old_mask)))?;
    // Safety: one thread; the child makes only async-signal-safe calls on
    // what was prepared, and leaves by `execve` or `_exit`.
    let forked = retry(|| unsafe { unistd::fork() });
    match forked {
        Ok(ForkResult::Child) => unsafe { exec_child(&prepared, &fds, above, listen_pid, &old_mask) },
        Ok(ForkResult::Parent { child }) => {
            let _ = retry(|| pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None));
            Ok(Pid(child.as_raw()))
        }
        Err(e) => {
            let _ = retry(|| pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None));
            Err(e)
        }
    }
}

/// The child's side: moves the descriptors, fills in its pid, resets its
/// signals and executes; exits 127 if any step fails.
///
/// # Safety
/// Called in a freshly forked child of a single-threaded process, with
/// `listen_pid` null or pointing at `LISTEN_PID_ROOM` bytes of `prepared`.
unsafe fn exec_child(prepared: &Prepared, fds: &[(i32, i32)], above: i32, listen_pid: *mut u8, old_mask: &SigSet) -> ! {
    // At most a handful of descriptors are handed over.
    let mut moved = [-1i32; 16];
    if fds.len() > moved.len() {
        libc::_exit(EXEC_FAILED);
    }
    for (i, (from, _)) in fds.iter().enumerate() {
        moved[i] = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, above);
        if moved[i] < 0 {
            libc::_exit(EXEC_FAILED);
        }
    }
    for (i, (_, to)) in fds.iter().enumerate() {
        if libc::dup2(moved[i], *to) < 0 {
            libc::_exit(EXEC_FAILED);
        }
    }
    if !listen_pid.is_null() {
        write_digits(listen_pid.add(11), libc::getpid());
    }
    // Handlers are reset by the exec itself, but a signal that came before
    // it would run the parent's handler here: back to the defaults first,
    // then the mask the parent had before the fork.
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::pthread_sigmask(libc::SIG_SETMASK, old_mask.as_ref(), std::ptr::null_mut());
    libc::execve(prepared.program.as_ptr(), prepared.argv.as_ptr(), prepared.envp.as_ptr());
    libc::_exit(EXEC_FAILED)
}

/// Writes `n`'s decimal digits and a nul at `at`, without allocating.
///
/// # Safety
/// `at` has room for 11 bytes.
unsafe fn write_digits(at: *mut u8, n: i32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut n = n.max(0) as u32;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        *at.add(i) = digits[len - 1 - i];
    }
    *at.add(len) = 0;
}
