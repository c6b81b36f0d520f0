//! Upgrading the master in place: the old master's side (execute the
//! binary again, hand it the socket, wait for its word, then step down) and
//! the new master's (say it is ready).
//!
//! The old master executes [`Config::upgrade`]'s program with, by the
//! numbers the new one finds them at:
//!
//! | fd | what |
//! | --- | --- |
//! | 3 | the listening socket (`LISTEN_FDS=1`, `LISTEN_FDNAMES=forkd`, `LISTEN_PID`) |
//! | 4 | the new master's end of the upgrade channel (a socket pair) |
//! | 5 | a copy of the pid file's lock: the same open file, so the same `flock` |
//! | 6 | the handover pipe: the token and what the new master must know, then end of file |
//!
//! `FORKD_UPGRADE=4,5,6` names them. The token never goes in the
//! environment or the arguments: a pipe only the two processes hold.
//!
//! The new master writes `ready VERSION` on the channel once its workers
//! are spawned, and waits for the answer. The old one then makes the pid
//! file name the new pid (through its lock, which the new master shares,
//! so that the file is never unlocked), closes its copy of the lock, tells
//! systemd `MAINPID=` the new pid (it is still the main process), writes
//! `go`, answers its callers with the new pid, and stops. Only on `go`
//! does the new master tell systemd it is ready; if the channel ends
//! instead (the old master was killed meanwhile), it rewrites the pid file
//! itself and goes on: nobody else will. The old master
//! closes its listener (the new master's copy still accepts),
//! drains its connections, spins its workers down and exits 0, without
//! `STOPPING=1` (the unit goes on under the new `MAINPID`) and leaving the
//! socket file and the token file to its successor.
//!
//! A new master that exits, closes the pipe, or is not ready within
//! [`Config::upgrade_timeout`] is killed (its workers follow it: their
//! parent-death signal and the end of file on their socket), the old one
//! serves on with its lock, and the callers get the reason. One upgrade
//! runs at a time.

use super::*;
use crate::rpc::codes;
use crate::rpc::{DeferId, RpcError};
use serde_json::json;

/// The descriptor numbers a new master finds what it was handed at.
const FD_LISTENER: i32 = 3;
const FD_READY: i32 = 4;
const FD_LOCK: i32 = 5;
const FD_STATE: i32 = 6;

/// The environment variable naming the handover's descriptors.
pub const UPGRADE_ENV: &str = "FORKD_UPGRADE";

/// The longest line a new master's readiness may be.
const MAX_READY_LINE: usize = 256;

/// An upgrade under way: the new master, and who waits for it.
pub(super) struct Upgrade {
    pid: Pid,
    ready: Fd,
    line: Vec<u8>,
    /// The new master closed its end without a word: its exit, reaped
    /// soon, says why.
    closed: bool,
    deadline: Instant,
    callers: Vec<DeferId>,
}

impl Upgrade {
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The channel from the new master, open or not: a worker must not
    /// keep it.
    pub(super) fn channel_fd(&self) -> Fd {
        self.ready
    }

    /// The channel from the new master, while it is open.
    pub(super) fn ready_fd(&self) -> Option<Fd> {
        (!self.closed).then_some(self.ready)
    }
}

/// What the old master tells the new one on the handover pipe.
fn state_text(token: Option<&str>, token_made: bool, socket_bound: bool) -> String {
    let mut text = format!("token_made {}\nsocket_bound {}\n", u8::from(token_made), u8::from(socket_bound));
    if let Some(t) = token {
        text.push_str(&format!("token {t}\n"));
    }
    text
}

/// The new master's side: what the handover pipe said. Unknown lines are
/// ignored, so that an older build can read a newer one's.
pub fn parse_state(text: &str, ready: Fd, pid_lock: Fd) -> crate::daemon::HandOver {
    let mut h = crate::daemon::HandOver { ready, pid_lock, token: None, token_made: false, socket_bound: false };
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("token", t)) if !t.is_empty() => h.token = Some(t.to_string()),
            Some(("token_made", v)) => h.token_made = v == "1",
            Some(("socket_bound", v)) => h.socket_bound = v == "1",
            _ => {}
        }
    }
    h
}

/// The descriptors `FORKD_UPGRADE` names: ready, lock, state.
pub fn parse_env(value: &str) -> Option<(Fd, Fd, Fd)> {
    let mut it = value.split(',').map(|n| n.trim().parse::<i32>().ok().filter(|&n| n > 2));
    let (ready, lock, state) = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some((Fd(ready), Fd(lock), Fd(state)))
}

impl Loop<'_> {
    /// Whether this master bound its socket itself (or its first master
    /// did): its file is then its to remove at the last stop.
    pub(super) fn socket_ours(&self) -> bool {
        self.config.listen_fd.is_none() || self.config.handed_over.as_ref().is_some_and(|h| h.socket_bound)
    }

    /// The loop's turn for upgrades: what the new master said, its
    /// deadline, the upgrades asked for.
    pub(super) fn step_upgrade<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, ready: &BTreeMap<Fd, Ready>) {
        if self.upgrade.as_ref().and_then(Upgrade::ready_fd).is_some_and(|fd| ready.contains_key(&fd)) {
            self.read_upgrade(os, hooks);
        }
        self.check_upgrade_deadline(os, self.ctl.now);
        self.take_upgrades(os);
    }

    /// Takes the upgrades asked for: starts one, or refuses it (the daemon
    /// is stopping, one is already under way, it cannot start).
    fn take_upgrades<O: Os>(&mut self, os: &mut O) {
        for caller in std::mem::take(&mut self.ctl.upgrades) {
            let refusal = if self.phase != Phase::Running || self.successor.is_some() {
                Some(RpcError::new(codes::STOPPING, "the daemon is stopping"))
            } else if let Some(u) = &self.upgrade {
                Some(RpcError::new(
                    codes::UPGRADE_FAILED,
                    format!("an upgrade is already under way (new master pid {})", u.pid),
                ))
            } else {
                match self.begin_upgrade(os) {
                    Ok(mut u) => {
                        u.callers.extend(caller);
                        self.upgrade = Some(u);
                        None
                    }
                    Err(why) => Some(RpcError::new(codes::UPGRADE_FAILED, format!("upgrade: {why}"))),
                }
            };
            if let Some(e) = refusal {
                log::warn!("{}", e.message);
                if let Some(id) = caller {
                    self.ctl.complete(id, Err(e));
                }
            }
        }
    }

    /// Executes the new master with what it is handed.
    fn begin_upgrade<O: Os>(&mut self, os: &mut O) -> Result<Upgrade, String> {
        let Some(command) = self.config.upgrade.clone() else {
            return Err("this daemon was not started by a binary it can execute again".into());
        };
        let (Some(listener), Some(lock)) = (self.listener, self.pid_lock) else {
            return Err("no listener or pid lock to hand over".into());
        };
        let (ready_r, ready_w) = os.socket_pair().map_err(|e| format!("socket pair: {e}"))?;
        let state = match self.state_pipe(os) {
            Ok(fd) => fd,
            Err(e) => {
                os.close(ready_r);
                os.close(ready_w);
                return Err(format!("pipe: {e}"));
            }
        };
        let mut env_set = command.env_set.clone();
        env_set.push(("LISTEN_FDS".into(), "1".into()));
        env_set.push(("LISTEN_FDNAMES".into(), "forkd".into()));
        env_set.push((UPGRADE_ENV.into(), format!("{FD_READY},{FD_LOCK},{FD_STATE}").into()));
        let spec = ExecSpec {
            program: command.program.clone(),
            args: command.args.clone(),
            env_set,
            // The watchdog follows MAINPID; a pid of the old master's would
            // keep the new one from sending keep-alives.
            env_unset: vec!["WATCHDOG_PID".into()],
            fds: vec![(listener, FD_LISTENER), (ready_w, FD_READY), (lock, FD_LOCK), (state, FD_STATE)],
            listen_pid: true,
        };
        let spawned = os.spawn_exec(&spec);
        os.close(ready_w);
        os.close(state);
        match spawned {
            Ok(pid) => {
                log::info!("upgrading: new master {} is pid {pid}", command.program.display());
                os.note(format_args!("upgrade started: new master {pid}"));
                let deadline = os.now() + self.config.upgrade_timeout;
                Ok(Upgrade { pid, ready: ready_r, line: Vec::new(), closed: false, deadline, callers: Vec::new() })
            }
            Err(e) => {
                os.close(ready_r);
                Err(format!("execute {}: {}", command.program.display(), crate::daemon::short_io(&e)))
            }
        }
    }

    /// The handover pipe's read end, everything already written into it
    /// and its write end closed (a few bytes fit any pipe).
    fn state_pipe<O: Os>(&mut self, os: &mut O) -> io::Result<Fd> {
        let (r, w) = os.pipe()?;
        let token = self.tcp_policy.token.clone();
        let text = state_text(token.as_deref(), self.token_made.is_some(), self.socket_ours());
        let mut data = text.as_bytes();
        while !data.is_empty() {
            match os.write(w, data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    os.close(r);
                    os.close(w);
                    return Err(e);
                }
            }
        }
        os.close(w);
        Ok(r)
    }

    /// Reads what the new master said; acts on a whole line or the end.
    fn read_upgrade<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        let Some(u) = &mut self.upgrade else { return };
        let mut buf = [0u8; 128];
        let outcome = loop {
            match os.read(u.ready, &mut buf) {
                Ok(0) => {
                    // Its exit, reaped next, says why (an exec that failed
                    // is 127); a process that closed it and lives on is
                    // killed at the deadline.
                    u.closed = true;
                    break None;
                }
                Ok(n) => {
                    u.line.extend_from_slice(&buf[..n]);
                    if let Some(end) = u.line.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&u.line[..end]).into_owned();
                        break Some(match line.strip_prefix("ready") {
                            Some(version) => Ok(version.trim().to_string()),
                            None => Err(format!("the new master said {:?}", crate::rpc::codes::quote(&line))),
                        });
                    }
                    if u.line.len() > MAX_READY_LINE {
                        break Some(Err("the new master said too much".to_string()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Some(Err(format!("read the upgrade channel: {e}"))),
            }
        };
        match outcome {
            Some(Ok(version)) => self.hand_over(os, hooks, version),
            Some(Err(why)) => self.upgrade_failed(os, &why),
            None => {}
        }
    }

    /// The upgrade's deadline passed: the new master is killed.
    fn check_upgrade_deadline<O: Os>(&mut self, os: &mut O, now: Instant) {
        if self.upgrade.as_ref().is_some_and(|u| now >= u.deadline) {
            let secs = self.config.upgrade_timeout.as_secs_f64();
            let closed = self.upgrade.as_ref().is_some_and(|u| u.closed);
            let what = if closed { "closed its channel and" } else { "was" };
            self.upgrade_failed(os, &format!("the new master {what} not ready within {secs} s"));
        }
    }

    /// A child that is no worker was reaped: the new master, maybe.
    pub(super) fn reaped_other<O: Os>(&mut self, os: &mut O, pid: Pid, status: ExitStatus) {
        if self.upgrade.as_ref().is_some_and(|u| u.pid == pid) {
            // Even if it wrote its line first: a master that is gone
            // cannot take over.
            let hint = match status {
                ExitStatus::Exited(127) => {
                    ": its program could not be executed (missing, not executable, or no program)"
                }
                _ => "",
            };
            self.upgrade_failed(os, &format!("the new master exited before it took over ({status}){hint}"));
        } else if self.successor == Some(pid) {
            log::warn!("the new master (pid {pid}) exited: {status}");
        } else {
            log::debug!("reaped {}: {status}", pid.0);
        }
    }

    /// Kills the new master and answers its callers with `why`; the old
    /// master serves on and keeps its lock.
    pub(super) fn upgrade_failed<O: Os>(&mut self, os: &mut O, why: &str) {
        let Some(u) = self.upgrade.take() else { return };
        log::error!("upgrade failed: {why}");
        os.note(format_args!("upgrade failed: {why}"));
        // Reaped by the next SIGCHLD's turn; its workers follow it.
        let _ = os.kill(KillTarget::Process(u.pid), Signal::Kill);
        os.close(u.ready);
        for id in u.callers {
            self.ctl.complete(id, Err(RpcError::new(codes::UPGRADE_FAILED, format!("upgrade failed: {why}"))));
        }
    }

    /// The new master is ready: the pid file names it, the lock is its
    /// alone, the callers learn its pid, and this master stops.
    fn hand_over<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, version: String) {
        let Some(u) = self.upgrade.take() else { return };
        if let Some(lock) = self.pid_lock.take() {
            if let Err(e) = os.rewrite_pid_file(lock, u.pid) {
                log::warn!("pid file {}: {e}", self.config.pid_file.display());
            }
            os.close(lock);
        }
        hooks.handing_over(os, u.pid);
        // Three bytes on a fresh socket: they fit.
        if !matches!(os.write(u.ready, b"go\n"), Ok(3)) {
            log::warn!("the new master (pid {}) did not take the word to go", u.pid);
        }
        os.close(u.ready);
        log::info!("upgraded: new master pid {} (version {version}) serves", u.pid);
        os.note(format_args!("upgrade handed over to {}", u.pid));
        self.successor = Some(u.pid);
        let answer = json!({ "pid": u.pid.0, "version": version, "previous": os.pid().0 });
        for id in u.callers {
            self.ctl.complete(id, Ok(answer.clone()));
        }
        self.ctl.stop(format!("upgraded to pid {}", u.pid));
    }

    /// The new master's side, before it says it is ready: waits until each
    /// of its workers is ready (its first loop began, or `Context::ready`),
    /// so that the old master's workers are spun down only once the new
    /// ones work. Each becoming ready wakes this wait with a byte on its
    /// socket. It gives up at half the upgrade's timeout, or when the
    /// daemon is asked to stop, and the master says it is ready anyway:
    /// what is slow to start must not cost the upgrade.
    pub(super) fn await_workers<O: Os>(&mut self, os: &mut O) {
        if self.handover_fd.is_none() {
            return;
        }
        let deadline = os.now() + self.config.upgrade_timeout / 2;
        loop {
            let waiting: Vec<Fd> = self
                .links
                .iter()
                .filter(|(id, l)| {
                    matches!(self.ctl.sup.instance(*id).state, InstanceState::Running { .. })
                        && l.channel.ready() != Ok(true)
                })
                .map(|(_, l)| l.wake)
                .collect();
            if waiting.is_empty() || self.ctl.stop.is_some() {
                return;
            }
            if os.now() >= deadline {
                log::warn!("{} workers not ready yet: saying ready all the same", waiting.len());
                return;
            }
            let mut fds: Vec<PollFd> =
                self.links.values().filter(|l| !l.eof).map(|l| PollFd::new(l.wake, Ready::READ)).collect();
            fds.push(PollFd::new(self.signal_fd, Ready::READ));
            if let Err(e) = os.poll(&mut fds, Some(deadline)) {
                log::debug!("poll: {e}");
            }
            let woken: Vec<usize> = self
                .links
                .iter()
                .filter(|(_, l)| fds.iter().any(|p| p.fd == l.wake && !p.ready.is_empty()))
                .map(|(id, _)| id)
                .collect();
            for id in woken {
                self.drain_link(os, id);
            }
            if fds.last().is_some_and(|p| !p.ready.is_empty()) {
                self.take_signals(os);
                self.reap(os);
                self.supervise(os);
            }
        }
    }

    /// The new master's side, once its workers are spawned: tells the old
    /// one it is ready and waits for the word to go (at most the upgrade's
    /// timeout, past which the old one would have killed it). If the old
    /// one is gone instead (killed during the handover), the pid file is
    /// made to name this one here: nobody else will.
    pub(super) fn tell_old_master<O: Os>(&mut self, os: &mut O) {
        let Some(fd) = self.handover_fd.take() else { return };
        let line = format!("ready {}\n", self.config.version);
        let go = matches!(os.write(fd, line.as_bytes()), Ok(n) if n == line.len())
            && wait_for_go(os, fd, os.now() + self.config.upgrade_timeout);
        os.close(fd);
        if !go {
            log::warn!("the old master is gone: this one takes over the pid file");
            if let Some(lock) = self.pid_lock {
                let _ = os.rewrite_pid_file(lock, os.pid());
            }
        }
    }
}

/// Reads the old master's `go`; false on anything else, its end, or the
/// deadline.
fn wait_for_go<O: Os>(os: &mut O, fd: Fd, deadline: Instant) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while !got.contains(&b'\n') && got.len() < 16 {
        match os.read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(fd, Ready::READ)];
                if os.poll(&mut fds, Some(deadline)).is_err() || os.now() >= deadline {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    got.starts_with(b"go\n")
}
