//! Daemonizing with readiness: `-d` returns only once the daemon is ready,
//! and fails with the daemon's own error if it could not start.
//!
//! The classic double fork: the launcher forks; the child becomes a session
//! leader (`setsid`) and forks again, so that the daemon is not a session
//! leader and can never reacquire a controlling terminal; the daemon sets
//! its umask, moves to `/`, and points fds 0–2 at `/dev/null` (never leaving
//! them closed, or the next socket would become someone's stdout).
//!
//! Readiness travels on a pipe made before the first fork: the daemon
//! writes `ok` once it is ready, or `err MESSAGE` if it failed to start; the
//! launcher reads that one line and exits 0 or 1 with the message. A daemon
//! that dies before it writes closes the pipe, and the launcher says so. The
//! launcher reads one line, not to end of file, because workers forked
//! before readiness inherit the pipe's write end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use forkd_os::real::RealOs;
use forkd_os::Os;
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, setsid, ForkResult};

/// The daemon's end of the readiness pipe.
pub(crate) struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    pub(crate) fn raw_fd(&self) -> Option<i32> {
        self.pipe.as_ref().map(|f| f.as_raw_fd())
    }

    /// Tells the launcher the daemon is ready.
    pub(crate) fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"ok\n");
        }
    }

    /// Tells the launcher why the daemon could not start.
    pub(crate) fn failed(&mut self, message: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(format!("err {}\n", message.replace('\n', " ")).as_bytes());
        }
    }
}

/// Who returns from `daemonize`.
pub(crate) enum Side {
    /// The launcher, with the exit code it must exit with (after printing
    /// the daemon's error, if any).
    Launcher(u8),
    /// The daemon, detached.
    Daemon(Readiness),
}

pub(crate) fn daemonize() -> io::Result<Side> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // Safety: the process is single-threaded (checked by the caller), and
    // each child either execs nothing and runs on, or `_exit`s.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => {
            drop(write_end);
            // The first child exits as soon as it has forked the daemon.
            let _ = waitpid(child, None);
            Ok(Side::Launcher(wait_ready(read_end)))
        }
        ForkResult::Child => {
            drop(read_end);
            if setsid().is_err() {
                unsafe { libc::_exit(1) };
            }
            // Safety: as above.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Child) => {}
                Err(_) => unsafe { libc::_exit(1) },
            }
            // A fresh Os: the one of the process that forked knows the
            // launcher's pid.
            let mut os = RealOs::new()?;
            restrict_umask(&mut os);
            os.chdir_root()?;
            os.redirect_stdio_to_null()?;
            Ok(Side::Daemon(Readiness { pipe: Some(File::from(write_end)) }))
        }
    }
}

/// The daemon's umask, in the foreground as under `-d`: 027, so that what
/// it creates (pid file, socket, token, logs, workers' files) is never
/// writable by its group nor accessible to others. Set before the daemon
/// creates anything.
pub(crate) fn restrict_umask<O: Os>(os: &mut O) {
    os.set_umask(UMASK);
}

const UMASK: u32 = 0o027;

fn wait_ready(read_end: OwnedFd) -> u8 {
    let mut line = String::new();
    let mut reader = BufReader::new(File::from(read_end));
    match reader.read_line(&mut line) {
        Ok(_) if line.trim_end() == "ok" => 0,
        Ok(_) if line.starts_with("err ") => {
            eprintln!("error: {}", line[4..].trim_end());
            1
        }
        _ => {
            eprintln!("error: the daemon exited before it was ready");
            1
        }
    }
}
