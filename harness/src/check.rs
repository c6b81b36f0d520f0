//! The invariants, judged on a finished run: its report, its trace, and
//! what the probe recorded.
//!
//! Some invariants are checked as the run goes, by the processes that see
//! them break (a client that gets a wrong answer notes a `VIOLATION` at
//! once). The rest need the whole run in view, and are judged here from the
//! trace, which holds every `Os` call of every process in order, with the
//! virtual time:
//!
//! - every request gets exactly one correct answer, or its client saw a
//!   close after a protocol error, or the daemon had begun to stop (the
//!   clients' `CHECK` notes, judged against the `daemon stopping` note);
//! - every worker starts, and forever workers are running again after an
//!   exit, within the restart policy's bounds (the `worker N.I started: pid
//!   P` notes and the `exit` lines of the pids), unless they failed by the
//!   policy's own rule;
//! - a non-forever exit leads to a clean stop;
//! - a hung worker is killed within the hang timeout;
//! - the pid lock is held exactly while the daemon runs (the `CHECK
//!   pidlock` notes, judged against the daemon's life);
//! - the stop ends within its bound, and nothing of the daemon outlives it:
//!   no process, socket, pid file or region, none still mapped by the
//!   daemon when it exits;
//! - the daemon never panics;
//! - a refused call never takes effect: the daemon stops by
//!   `daemon.shutdown` only after an allowed client sent one (refused
//!   clients send it too), and a worker exits for a restart only when an
//!   allowed client asked (refused ones do not note theirs).
//!
//! - rolling reloads (`check/rollout.rs`): no worker runs more processes
//!   than its size plus the rollout's batch, never fewer than its size
//!   minus the batch are up during a rollout (faults aside), and an old
//!   instance is asked to stop only once its replacement is up; the exits
//!   a reload causes are not restarts owed. That every `worker.reload`
//!   call is answered exactly once is the clients' judgment, as for every
//!   request.
//!
//! A run may hold several daemons: one killed on purpose and the one
//! started after it over its stale files. Each is judged over its own life;
//! a killed one is not asked to have cleaned up.

use std::collections::BTreeMap;
use std::time::Duration;

use forkd_core::supervisor::OnFailure;
use std::path::Path;

use forkd_os::sim::{Outcome, Report, TraceEvent, TraceLine};
use forkd_os::{ExitStatus, Fd, KillTarget, Pid, Signal};

use crate::conductor::{stop_bound, ORPHAN_BOUND, SLACK};
use crate::scenario::{Scenario, PID_FILE};
use crate::workers::{Probe, CRASH_SITE};

mod rollout;

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn secs(t: u64) -> String {
    format!("{}.{:06}", t / 1_000_000_000, (t % 1_000_000_000) / 1000)
}

/// What the trace says about one daemon.
#[derive(Default, Debug)]
struct Daemon {
    pid: i32,
    /// When the conductor started it.
    born: u64,
    locked: Option<u64>,
    stopping: Option<(u64, String)>,
    exit: Option<u64>,
    /// Killed on purpose by the chaos process.
    crashed: bool,
    /// Its worker processes: pid to (name, instance, started).
    workers: BTreeMap<i32, (String, u32, u64)>,
    /// Every child it spawned, and when.
    children: BTreeMap<i32, u64>,
    /// When its forks or shared memory failed.
    spawn_faults: Vec<u64>,
    /// Its client connections: (accepted, closed).
    conns: Vec<(u64, Option<u64>)>,
    /// Old worker processes a reload replaced: pid to (when, new pid).
    replaced: BTreeMap<i32, (u64, i32)>,
    /// Reloads' new processes, by pid.
    joining: std::collections::BTreeSet<i32>,
    /// Its rollouts: (worker, batch, began, ended).
    rollouts: Vec<(String, u32, u64, Option<u64>)>,
    /// The SIGKILLs it sent to a worker's group: (when, pid).
    kills: Vec<(u64, i32)>,
    /// Its open client connections: descriptor to index in `conns`.
    open_conns: BTreeMap<Fd, usize>,
}

impl Daemon {
    fn stopped_by(&self, t: u64) -> bool {
        self.stopping.as_ref().is_some_and(|(s, _)| *s <= t) || self.exit.is_some_and(|e| e <= t)
    }

    fn end(&self) -> u64 {
        self.exit.unwrap_or(u64::MAX)
    }

    fn stop_t(&self) -> Option<u64> {
        self.stopping.as_ref().map(|(t, _)| *t)
    }
}

/// What the trace says about the run.
#[derive(Default, Debug)]
struct Facts {
    daemons: Vec<Daemon>,
    /// Second daemons, started while the first ran.
    seconds: Vec<i32>,
    harness: Vec<i32>,
    stop_requested: Option<u64>,
    exits: BTreeMap<i32, (u64, ExitStatus)>,
    violations: Vec<String>,
    checks: Vec<(u64, String)>,
    /// `worker.restart` calls the clients sent: when the daemon could first
    /// see them (not before their connection was accepted), and for which
    /// worker.
    restarts_asked: Vec<(u64, String)>,
    /// Clients' connections: (when, client pid, connection id).
    connects: Vec<(u64, i32, u64)>,
    /// When a daemon accepted each connection.
    accepts: BTreeMap<u64, u64>,
    /// Restarts asked on connections not yet accepted: (when, conn, name).
    pending_restarts: Vec<(u64, u64, String)>,
    /// When a client allowed to call `daemon.shutdown` sent it.
    shutdowns_asked: Vec<u64>,
    /// Workers that outlived a killed daemon: (when seen, pid).
    orphans: Vec<(u64, i32)>,
    /// Each process's last line before its exit.
    last_line: BTreeMap<i32, u64>,
    /// Each worker process's states as it noted them: (when, state).
    states: BTreeMap<i32, Vec<(u64, String)>>,
}

impl Facts {
    /// The daemon that was current at `t`: the last started before it.
    fn current(&self, t: u64) -> Option<&Daemon> {
        self.daemons.iter().rev().find(|d| d.born <= t)
    }
}

fn facts(trace: &[TraceLine]) -> Facts {
    let mut f = Facts::default();
    for line in trace {
        let (t, pid) = (line.at.0, line.pid.0);
        match &line.event {
            TraceEvent::Exit(status) => {
                f.exits.insert(pid, (t, *status));
                if let Some(d) = f.daemons.iter_mut().find(|d| d.pid == pid) {
                    d.exit = Some(t);
                }
                continue;
            }
            TraceEvent::Note(text) => f.note(t, pid, text),
            TraceEvent::Connect { conn, .. } => f.connects.push((t, pid, *conn)),
            TraceEvent::Accept { conn, .. } => f.accepted(t, *conn),
            _ => {}
        }
        f.last_line.insert(pid, t);
        if let Some(d) = f.daemons.iter_mut().find(|d| d.pid == pid) {
            d.event(t, &line.event);
        }
    }
    f
}

impl Facts {
    /// A note of the harness's or a client's; a daemon's own notes are its
    /// [`Daemon::event`]s.
    fn note(&mut self, t: u64, pid: i32, text: &str) {
        if let Some(rest) = text.strip_prefix("harness ") {
            self.harness_note(t, rest);
        } else if let Some(v) = text.strip_prefix("VIOLATION ") {
            self.violations.push(format!("at {}: {v}", secs(t)));
        } else if let Some(c) = text.strip_prefix("CHECK ") {
            self.check_note(t, pid, c);
        } else if let Some((_, state)) = text.strip_prefix("worker ").and_then(|r| r.rsplit_once(": ")) {
            if ["spinup", "looping", "paused", "spindown", "exited"].contains(&state) {
                self.states.entry(pid).or_default().push((t, state.to_string()));
            }
        }
    }

    fn harness_note(&mut self, t: u64, rest: &str) {
        let last = rest.rsplit(' ').next().unwrap_or_default();
        if let Some(pid) = last.strip_prefix("pid=").and_then(|p| p.parse::<i32>().ok()) {
            if rest.starts_with("daemon") {
                self.daemons.push(Daemon { pid, born: t, ..Daemon::default() });
            }
            if rest.starts_with("second") {
                self.seconds.push(pid);
            }
            self.harness.push(pid);
        }
        if rest.starts_with("stop requested") {
            self.stop_requested = Some(t);
        }
        if let Some(pid) = rest.strip_prefix("killed the daemon ").and_then(|p| p.parse::<i32>().ok()) {
            if let Some(d) = self.daemons.iter_mut().find(|d| d.pid == pid) {
                d.crashed = true;
            }
        }
        if let Some(pid) = rest.strip_prefix("orphan ").and_then(|p| p.parse::<i32>().ok()) {
            self.orphans.push((t, pid));
        }
    }

    fn check_note(&mut self, t: u64, pid: i32, c: &str) {
        match c.strip_prefix("restart-requested ") {
            Some(name) => {
                // On the connection the client opened last; a request
                // waiting in the listen backlog is not seen yet.
                let conn = self.connects.iter().rev().find(|(_, p, _)| *p == pid).map(|(_, _, c)| *c);
                if let Some(accepted) = conn.and_then(|c| self.accepts.get(&c)) {
                    self.restarts_asked.push((t.max(*accepted), name.to_string()));
                } else if let Some(c) = conn {
                    self.pending_restarts.push((t, c, name.to_string()));
                }
            }
            None if c == "shutdown-requested" => self.shutdowns_asked.push(t),
            None => self.checks.push((t, c.to_string())),
        }
    }

    fn accepted(&mut self, t: u64, conn: u64) {
        self.accepts.insert(conn, t);
        // Restarts asked on it before it was accepted count from now.
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending_restarts).into_iter().partition(|(_, c, _)| *c == conn);
        self.pending_restarts = waiting;
        self.restarts_asked.extend(ready.into_iter().map(|(_, _, n)| (t, n)));
    }
}

impl Daemon {
    /// One of the daemon's own events.
    fn event(&mut self, t: u64, event: &TraceEvent) {
        match event {
            TraceEvent::PidLock { path, .. } if path == Path::new(PID_FILE) => {
                self.locked.get_or_insert(t);
            }
            TraceEvent::Spawn(child) => {
                self.children.insert(child.0, t);
            }
            TraceEvent::SpawnFault | TraceEvent::ShmFault => self.spawn_faults.push(t),
            TraceEvent::Kill { target: KillTarget::Group(group), signal: Signal::Kill, .. } => {
                self.kills.push((t, group.0));
            }
            TraceEvent::Accept { fd, .. } => {
                self.open_conns.insert(*fd, self.conns.len());
                self.conns.push((t, None));
            }
            TraceEvent::Close(fd) => {
                if let Some(i) = self.open_conns.remove(fd) {
                    self.conns[i].1 = Some(t);
                }
            }
            TraceEvent::Note(text) => self.note(t, text),
            _ => {}
        }
    }

    fn note(&mut self, t: u64, text: &str) {
        if let Some(reason) = text.strip_prefix("daemon stopping: ") {
            self.stopping.get_or_insert((t, reason.to_string()));
        } else if rollout::note(self, t, text) {
        } else if let Some(rest) = text.strip_prefix("worker ") {
            if let Some((who, pid)) = rest.split_once(" started: pid ") {
                if let (Some((name, inst)), Ok(pid)) = (who.rsplit_once('.'), pid.parse::<i32>()) {
                    self.workers.insert(pid, (name.to_string(), inst.parse().unwrap_or(0), t));
                }
            }
        }
    }
}

/// Judges a finished run; every failure is one line.
pub fn check(sc: &Scenario, report: &Report, probe: &Probe) -> Vec<String> {
    let mut out = Vec::new();
    match &report.outcome {
        Outcome::Finished => {}
        Outcome::Deadlock => out.push("the world deadlocked".to_string()),
        Outcome::Cut(why) => out.push(format!("the run was cut: {why}")),
    }
    if report.root_status != Some(ExitStatus::Exited(0)) {
        out.push(format!("the conductor ended with {:?}", report.root_status));
    }
    let f = facts(&report.trace);
    if f.daemons.is_empty() {
        out.push("the daemon never started".into());
        return out;
    }
    out.extend(f.violations.iter().cloned());
    out.extend(probe.violations().into_iter().map(|v| format!("probe: {v}")));
    let hung = probe.hung();
    judge_panics(report, &f, &mut out);
    judge_leftovers(report, &f, &hung, &mut out);
    judge_checks(sc, &f, &mut out);
    for d in &f.daemons {
        judge_daemon(sc, &f, d, &hung, &mut out);
    }
    out
}

/// Panics: a daemon never; a worker only by a planned crash.
fn judge_panics(report: &Report, f: &Facts, out: &mut Vec<String>) {
    for (pid, msg) in &report.panics {
        if f.daemons.iter().any(|d| d.pid == pid.0) {
            out.push(format!("the daemon {pid} panicked: {msg}"));
        } else if f.harness.contains(&pid.0) || *pid == forkd_os::sim::ROOT_PID {
            out.push(format!("harness process {pid} panicked: {msg}"));
        } else if !msg.contains(CRASH_SITE) {
            out.push(format!("worker process {pid} panicked outside user code: {msg}"));
        }
    }
}

/// Nothing left behind: no descriptor or region held by a daemon at its
/// exit, no file, no region, no worker of a killed daemon.
fn judge_leftovers(report: &Report, f: &Facts, hung: &[i32], out: &mut Vec<String>) {
    for pid in f.daemons.iter().filter(|d| !d.crashed).map(|d| d.pid).chain(f.seconds.iter().copied()) {
        if let Some(held) = report.held_at_exit.get(&Pid(pid)) {
            out.push(format!("the daemon {pid} exited still holding {:?} and regions {:?}", held.fds, held.regions));
        }
    }
    if !report.files.is_empty() {
        out.push(format!("files left behind: {:?}", report.files));
    }
    if report.live_regions != 0 {
        out.push(format!("{} shared regions left", report.live_regions));
    }
    // Workers left by a killed daemon must end by themselves, unless they
    // hang (then nothing of theirs can act on the parent's death).
    for (t, pid) in &f.orphans {
        if !hung.contains(pid) {
            out.push(format!(
                "worker {pid} was still alive {ORPHAN_BOUND:?} after its daemon was killed (at {})",
                secs(*t)
            ));
        }
    }
}

/// Answers: what the clients could not judge alone.
fn judge_checks(sc: &Scenario, f: &Facts, out: &mut Vec<String>) {
    for (t, c) in &f.checks {
        let Some(d) = f.current(*t) else { continue };
        let stopped = d.stopped_by(*t);
        let bad = if c.starts_with("eof-unanswered") || c.starts_with("refused") || c.starts_with("gave-up last") {
            !stopped
        } else if c.starts_with("gave-up simple") || c.starts_with("gave-up deferred") {
            sc.strict_liveness && !stopped
        } else if c.starts_with("pidlock acquired") {
            let running = d.locked.is_some_and(|l| l <= *t) && *t < d.end();
            let alive = |(start, stop): (u64, Option<u64>)| start <= *t && !matches!(stop, Some(s) if s <= *t);
            let workers_alive =
                d.children.iter().any(|(pid, start)| alive((*start, f.exits.get(pid).map(|(e, _)| *e))));
            let conns_open = d.conns.iter().any(|c| alive(*c));
            running && (!stopped || workers_alive || conns_open)
        } else {
            false
        };
        if bad {
            out.push(format!("at {}: {c} while the daemon ran", secs(*t)));
        }
    }
}

/// The invariants of one daemon's life.
fn judge_daemon(sc: &Scenario, f: &Facts, d: &Daemon, hung: &[i32], out: &mut Vec<String>) {
    judge_restarts(sc, f, d, out);
    judge_first_starts(sc, d, out);
    judge_hangs(sc, f, d, hung, out);
    judge_kills(sc, f, d, hung, out);
    judge_shutdown_asked(f, d, out);
    rollout::judge(sc, f, d, out);
    if d.crashed {
        return;
    }
    judge_stop(sc, f, d, out);
}

/// How long one try to start a worker may take: a backoff and half as
/// much again.
fn per_try(sc: &Scenario) -> Duration {
    let policy = &sc.daemon.restart;
    policy.backoff_max + policy.backoff_max / 2
}

/// How long a stop's escalation may take, from its `SIGTERM` to its
/// `SIGKILL` taking effect.
fn escalation(sc: &Scenario) -> u64 {
    nanos(sc.daemon.restart.stop_timeout * 2 + SLACK)
}

/// The last `worker.restart` of the worker `pid` asked between `from` and
/// `to`.
fn restart_asked(f: &Facts, d: &Daemon, pid: &i32, from: u64, to: u64) -> Option<u64> {
    let name = d.workers.get(pid).map(|(n, _, _)| n.as_str()).unwrap_or_default();
    f.restarts_asked.iter().filter(|(t, n)| n == name && from <= *t && *t <= to).map(|(t, _)| *t).max()
}

/// Workers: restarted within bounds, a non-forever exit stops the daemon.
fn judge_restarts(sc: &Scenario, f: &Facts, d: &Daemon, out: &mut Vec<String>) {
    let policy = &sc.daemon.restart;
    let per_try = per_try(sc);
    let stop_t = d.stop_t();
    let end = d.end();
    for (pid, (name, inst, _)) in &d.workers {
        let Some((t_exit, status)) = f.exits.get(pid) else { continue };
        let t_exit = *t_exit;
        if d.stopped_by(t_exit) || rollout::exit_planned(f, d, *pid, t_exit) {
            continue;
        }
        let Some(plan) = sc.workers.iter().find(|w| &w.name == name) else { continue };
        let next_start =
            d.workers.values().filter(|(n, i, s)| n == name && i == inst && *s >= t_exit).map(|(_, _, s)| *s).min();
        let who = format!("worker {name}.{inst} (pid {pid}, {status} at {})", secs(t_exit));
        // A restart asked for brings any worker back, as if it were forever.
        let restart_asked =
            f.restarts_asked.iter().any(|(t, n)| n == name && *t <= t_exit && t_exit <= *t + nanos(stop_bound(sc)));
        if !plan.forever && !restart_asked {
            let stop_soon = stop_t.is_some_and(|s| s <= t_exit + nanos(SLACK)) || end <= t_exit + nanos(SLACK);
            if !stop_soon {
                out.push(format!("{who} is not forever, and the daemon did not stop"));
            }
            continue;
        }
        let faults = d.spawn_faults.iter().filter(|t| **t >= t_exit).count() as u32;
        let bound = t_exit + nanos(per_try * (faults + 1) + SLACK);
        let ok_by = next_start.into_iter().chain(stop_t).chain(d.exit).min().is_some_and(|t| t <= bound);
        if ok_by {
            continue;
        }
        // Failed by the policy's rule: too many starts within the period.
        let since = t_exit.saturating_sub(nanos(policy.period));
        let starts = d.workers.values().filter(|(n, i, s)| n == name && i == inst && *s >= since).count()
            + d.spawn_faults.iter().filter(|t| **t >= since).count();
        if starts as u32 >= policy.intensity && policy.on_failure == OnFailure::KeepRunning {
            continue;
        }
        out.push(format!(
            "{who} is forever, and was not running again within {:?}",
            Duration::from_nanos(bound - t_exit)
        ));
    }
}

/// Every instance starts at first within the same bounds as a restart.
fn judge_first_starts(sc: &Scenario, d: &Daemon, out: &mut Vec<String>) {
    let per_try = per_try(sc);
    let stop_t = d.stop_t();
    if let Some(ready) = d.locked {
        for w in &sc.workers {
            for i in 0..w.instances {
                let first =
                    d.workers.values().filter(|(n, inst, _)| *n == w.name && *inst == i).map(|(_, _, s)| *s).min();
                let faults = d.spawn_faults.len() as u32;
                let bound = ready + nanos(per_try * (faults + 1) + SLACK);
                let ok = first.into_iter().chain(stop_t).chain(d.exit).min().is_some_and(|t| t <= bound);
                if !ok {
                    out.push(format!(
                        "worker {}.{i} did not start within {:?}",
                        w.name,
                        Duration::from_nanos(bound - ready)
                    ));
                }
            }
        }
    }
}

/// A hung worker is killed once its heartbeat is older than the hang
/// timeout (a stopping daemon, or a restart, kills it by its stop
/// escalation instead).
fn judge_hangs(sc: &Scenario, f: &Facts, d: &Daemon, hung: &[i32], out: &mut Vec<String>) {
    let escalation = escalation(sc);
    let stop_t = d.stop_t();
    if let Some(h) = sc.daemon.restart.hang_timeout {
        for pid in hung.iter().filter(|p| d.children.contains_key(p)) {
            let last = f.last_line.get(pid).copied();
            let Some(since) = last else { continue };
            let mut bound = since + nanos(h + SLACK);
            if let Some(t) = restart_asked(f, d, pid, since, bound) {
                bound = bound.max(t + escalation);
            }
            // A reload that gave up on its new instance first stops it by
            // the stop escalation, as a restart does.
            if let Some((_, _, start)) = d.workers.get(pid).filter(|_| rollout::reload_stopped(d, *pid)) {
                let gave_up = start + nanos(crate::conductor::RELOAD_TIMEOUT);
                if gave_up < bound {
                    bound = bound.max(gave_up + escalation);
                }
            }
            let ended = f.exits.get(pid).map(|(t, _)| *t);
            let ok = ended.into_iter().chain(stop_t).chain(d.exit).min().is_some_and(|t| t <= bound);
            if !ok {
                out.push(format!("worker process {pid} hung at {} and was not killed within {h:?}", secs(since)));
            }
        }
    }
}

/// And only a hung worker is killed so: a running daemon kills nothing
/// else but a worker that did not obey a restart in time.
fn judge_kills(sc: &Scenario, f: &Facts, d: &Daemon, hung: &[i32], out: &mut Vec<String>) {
    let escalation = escalation(sc);
    for (t, pid) in &d.kills {
        let restarting = restart_asked(f, d, pid, t.saturating_sub(escalation), *t).is_some();
        let reloading = rollout::reload_stopped(d, *pid);
        if !d.stopped_by(*t) && !hung.contains(pid) && !restarting && !reloading {
            let name = d.workers.get(pid).map(|(n, i, _)| format!("{n}.{i}")).unwrap_or_default();
            out.push(format!("at {}: the daemon killed worker {name} (pid {pid}), which did not hang", secs(*t)));
        }
    }
}

/// A refused call never takes effect: a stop by `daemon.shutdown` was
/// asked by a client allowed to (refused ones are not noted).
fn judge_shutdown_asked(f: &Facts, d: &Daemon, out: &mut Vec<String>) {
    if let Some((t, reason)) = &d.stopping {
        if reason == "daemon.shutdown" && !f.shutdowns_asked.iter().any(|a| *a <= *t) {
            out.push(format!("at {}: the daemon stopped by a daemon.shutdown no allowed client sent", secs(*t)));
        }
    }
}

/// The stop: prompt, bounded, and nothing of the daemon outlives it.
fn judge_stop(sc: &Scenario, f: &Facts, d: &Daemon, out: &mut Vec<String>) {
    let stop_t = d.stop_t();
    if let (Some(req), Some(_)) = (f.stop_requested, d.exit) {
        if req >= d.born && !matches!(stop_t, Some(s) if s <= req + nanos(SLACK)) {
            out.push(format!("the daemon did not begin to stop within {SLACK:?} of being asked at {}", secs(req)));
        }
    }
    if let (Some(s), Some(e)) = (stop_t, d.exit) {
        if e - s > nanos(stop_bound(sc)) {
            out.push(format!("the stop took {:?}, over {:?}", Duration::from_nanos(e - s), stop_bound(sc)));
        }
    }
    match d.exit {
        Some(end) => {
            for pid in d.children.keys() {
                match f.exits.get(pid) {
                    Some((t, _)) if *t <= end => {}
                    _ => out.push(format!("worker process {pid} outlived the daemon")),
                }
            }
        }
        None => out.push(format!("the daemon {} never exited", d.pid)),
    }
}
