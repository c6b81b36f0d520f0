//! Daemons under test: each started in a directory of its own with its own
//! socket and pid file, pinned to a CPU from its first instruction, and
//! killed with everything it forked when its handle is dropped, whether the
//! benchmark finished or failed.
//!
//! A daemon is asked to die with the bench, too: the `pre_exec` hook sets
//! `PR_SET_PDEATHSIG`, so a bench killed outright does not leave a daemon
//! behind (a `forkd` master passes the signal on to its workers; so does
//! supervisord to its programs).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forkd_os::Address;
use forkd_tests::Wake;

use super::sys;
use super::wire::{Request, Wire};

/// The longest any daemon gets to start or stop before the bench gives up.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A bench's own directory, removed when dropped.
pub use forkd_tests::TempDir as Dir;

/// Makes a bench directory, `TMP/forkd-bench-PID-N-NAME`.
pub fn bench_dir(name: &str) -> Result<Dir, String> {
    Dir::with_prefix("forkd-bench", name).map_err(|e| format!("create a directory for {name}: {e}"))
}

/// Removes the directories of benches that were killed before they could
/// clean up (their pid, in the name, is gone).
pub fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("forkd-bench-").and_then(|r| r.split('-').next()?.parse::<i32>().ok()) else {
            continue;
        };
        if !sys::alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Starts `cmd` pinned to `cpu`, in a process group of its own, its stderr
/// in `stderr`, asked to get SIGTERM when the bench dies.
pub fn spawn(cmd: &mut Command, cpu: usize, stderr: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).process_group(0);
    // Safety: the hook makes two system calls and touches no memory of the
    // parent's that another thread could hold a lock on.
    unsafe {
        cmd.pre_exec(move || {
            sys::pin_current(cpu)?;
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("start {:?}: {e}", cmd.get_program()))
}

/// How to start a daemon and tell that it answers.
pub struct Launch {
    pub name: String,
    /// Its directory, which the daemon runs in and takes with it.
    pub dir: Dir,
    /// Where it serves: a unix socket in `dir`, or tcp.
    pub address: Address,
    pub pid_file: PathBuf,
    /// Whether the command detaches (`-d`): then the child is a launcher
    /// and the daemon's pid comes from the pid file.
    pub detached: bool,
    /// What the bench sends to see whether the daemon answers.
    pub probe: Request,
    pub cpu: usize,
}

/// A daemon started by the bench.
pub struct Running {
    pub name: String,
    pub address: Address,
    pub pid_file: PathBuf,
    /// The daemon's pid, once known (at once in the foreground; from the pid
    /// file once a detaching launcher has returned).
    pid: i32,
    /// The daemon itself in the foreground, or the launcher that detaches it.
    child: Option<Child>,
    detached: bool,
    /// Known to be gone, with every process it had: nothing to kill.
    gone: bool,
    /// What the bench sends to see whether the daemon answers.
    probe: Request,
    pub dir: Dir,
}

impl Running {
    /// Starts `cmd` (its arguments already naming the socket and pid file
    /// inside the directory) as `launch` says; returns at once, before it
    /// answers.
    pub fn start(cmd: &mut Command, launch: Launch) -> Result<Running, String> {
        let Launch { name, dir, address, pid_file, detached, probe, cpu } = launch;
        cmd.current_dir(dir.path());
        let child = spawn(cmd, cpu, &dir.join("stderr.log"))?;
        let pid = if detached { 0 } else { child.id() as i32 };
        Ok(Running { name, address, pid_file, pid, child: Some(child), detached, gone: false, probe, dir })
    }

    /// The daemon's pid. For a detached daemon, waits for its launcher to
    /// return, then reads the pid file.
    pub fn pid(&mut self) -> Result<i32, String> {
        if self.pid != 0 {
            return Ok(self.pid);
        }
        if let Some(launcher) = &mut self.child {
            // On the launcher's pidfd.
            match forkd_tests::wait_exit(launcher, DEADLINE) {
                Some(status) if status.success() => {}
                Some(status) => return Err(format!("{}: the launcher failed ({status}): {}", self.name, self.log())),
                None => return Err(format!("{}: the launcher hangs", self.name)),
            }
            self.child = None;
        }
        // A forkd launcher returns once the pid file is written; a peer's
        // may return before: the file then shows up in the directory, which
        // the wait watches.
        let mut pid = None;
        let found = Wake::new().within(DEADLINE, || {
            pid = std::fs::read_to_string(&self.pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok());
            pid.is_some()
        });
        match pid {
            Some(pid) if found => {
                self.pid = pid;
                Ok(pid)
            }
            _ => Err(format!("{}: no pid in {}", self.name, self.pid_file.display())),
        }
    }

    /// The daemon's stderr so far (the launcher's, when detached).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Whether the foreground daemon has exited (and reaps it).
    fn exited(&mut self) -> bool {
        if self.gone {
            return true;
        }
        let exited = match (&mut self.child, self.detached) {
            (Some(c), false) => !matches!(c.try_wait(), Ok(None)),
            _ => self.pid != 0 && !sys::alive(self.pid),
        };
        if exited && !self.detached {
            // Reaped: its pid may be reused from now on.
            self.child = None;
        }
        exited
    }

    /// Whether a detaching launcher has failed.
    fn launcher_failed(&mut self) -> Option<String> {
        let launcher = self.child.as_mut().filter(|_| self.detached)?;
        match launcher.try_wait() {
            Ok(Some(status)) if !status.success() => Some(format!("{status}")),
            _ => None,
        }
    }

    /// Probes until the daemon answers, as fast as the bench can ask; the
    /// time from now until it did.
    pub fn wait_answering(&mut self, deadline: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if let Ok(mut w) = Wire::connect(&self.address, self.probe.framing, deadline) {
                match w.call(&self.probe.bytes) {
                    Ok(_) => return Ok(start.elapsed()),
                    Err(e) if start.elapsed() > deadline => return Err(format!("{}: probe: {e}", self.name)),
                    Err(_) => {}
                }
            }
            if !self.detached && self.exited() {
                return Err(format!("{} exited before answering:\n{}", self.name, self.log()));
            }
            if let Some(status) = self.launcher_failed() {
                return Err(format!("{}: the launcher failed ({status}):\n{}", self.name, self.log()));
            }
            if start.elapsed() > deadline {
                return Err(format!("{} did not answer within {deadline:?}:\n{}", self.name, self.log()));
            }
            std::thread::yield_now();
        }
    }

    /// Sends SIGTERM and waits until the daemon and every process it had
    /// are gone; the time that took.
    pub fn terminate(&mut self, deadline: Duration) -> Result<Duration, String> {
        let pid = self.pid()?;
        let mut rest = sys::descendants(pid);
        let start = Instant::now();
        sys::signal(pid, libc::SIGTERM);
        while !self.exited() {
            if start.elapsed() > deadline {
                return Err(format!("{} still running {deadline:?} after SIGTERM", self.name));
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        loop {
            rest.retain(|p| sys::alive(*p));
            if rest.is_empty() {
                self.gone = true;
                return Ok(start.elapsed());
            }
            if start.elapsed() > deadline {
                for p in &rest {
                    sys::signal(*p, libc::SIGKILL);
                }
                return Err(format!("{}: {} processes left {deadline:?} after SIGTERM", self.name, rest.len()));
            }
            std::thread::yield_now();
        }
    }

    /// A control client (newline-delimited JSON-RPC) on the daemon's socket.
    pub fn client(&self) -> Result<forkd::Client, String> {
        forkd::Client::connect(&self.address, Duration::from_secs(30))
            .map_err(|e| format!("{}: connect: {e}", self.name))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.gone {
            return;
        }
        // The foreground daemon (not reaped yet), or the launcher.
        if let Some(c) = &self.child {
            sys::kill_tree(c.id() as i32);
        }
        if self.detached {
            if self.pid == 0 {
                self.pid =
                    std::fs::read_to_string(&self.pid_file).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
            }
            if self.pid != 0 && sys::alive(self.pid) {
                sys::kill_tree(self.pid);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Polls `cond` until it holds, `pause` apart (none: as fast as the bench
/// can ask), failing at `deadline`; the time it took.
///
/// The conditions polled are states that only the daemon's RPC tells, with
/// no event to wait on: forkd's `worker.list` and `worker.status` (its
/// workers' states live in memory shared with the master, and the daemon
/// never logs a worker looping; the bench runs daemons without `-v`, so
/// that logging does not weigh on the figures), and supervisord's
/// `getAllProcessInfo`. Polling them is the measurement method, and the
/// same for both: a zero pause for a latency, where the poll is the clock's
/// resolution; a short pause while a fleet launches, so that the polls do
/// not load the daemon being measured.
pub fn poll_until(
    what: &str,
    deadline: Duration,
    pause: Duration,
    mut cond: impl FnMut() -> Result<bool, String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        if pause.is_zero() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
        }
    }
}
