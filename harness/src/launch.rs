//! `-d` and systemd, simulated: the binary's own serving path
//! (`forkd::testing::serve`), launcher and all, in a world of its own.
//!
//! Each seed also draws one launch: detached (`-d`) or in the foreground,
//! with or without `NOTIFY_SOCKET` and a watchdog, and one of three
//! endings: the daemon serves and is stopped; its address is taken, so it
//! fails to start; or it is killed at a drawn moment, before or after it
//! became ready. What must hold:
//! - the launcher of `-d` exits 0 only once the daemon is ready, 1 with
//!   the daemon's own error if it failed to start, and 1 with "the daemon
//!   exited before it was ready" if it died first; it never hangs;
//! - the detached daemon is another process than the launcher, says
//!   nothing on the launcher's console, answers calls, and names itself in
//!   its pid file;
//! - systemd hears `READY=1` once, then only `WATCHDOG=1` at the watchdog's
//!   pace, then `STOPPING=1` (and keep-alives while it stops), all from the
//!   daemon's pid; nothing when it did
//!   not ask, and no `READY=1` from a daemon that never got ready;
//! - whatever the ending, nothing of the daemon is left: no process, and
//!   after a clean stop no pid file or socket.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use forkd::testing::{exit_code, serve, Mode};
use forkd_core::daemon::{Config, Daemon};
use forkd_core::supervisor::{Restart, WorkerSpec};
use forkd_core::worker::{BoxError, Context, Worker};
use forkd_os::sim::{Config as WorldConfig, Report, SimOs, TraceEvent, TraceLine, World};
use forkd_os::{Address, ExitStatus, Fd, Instant, KillTarget, ListenOptions, Os, Pid, Signal, SpawnOptions};

use crate::conductor::ORPHAN_BOUND;
use crate::rng::Rng;
use crate::wire;

pub(crate) const SOCKET: &str = "/run/launch.sock";
pub(crate) const PID_FILE: &str = "/run/launch.pid";
pub(crate) const NOTIFY_SOCKET: &str = "/run/systemd/notify";
/// What the launcher says of a daemon that died before it was ready.
const NOT_READY: &str = "error: the daemon exited before it was ready\n";
/// How long a served daemon runs before it is stopped: long enough for
/// several watchdog keep-alives.
const SERVE_FOR: Duration = Duration::from_millis(300);
/// The bound on every wait of the launch's conductor.
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// How a launch ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It serves a call, then a SIGTERM stops it.
    Serves,
    /// Its address answers already: it must refuse to start.
    AddressTaken,
    /// SIGKILL reaches it this long after the launch.
    Killed(Duration),
}

/// One launch, drawn from a seed.
#[derive(Clone, Debug)]
pub struct Launch {
    pub world_seed: u64,
    pub mode: Mode,
    /// Whether `NOTIFY_SOCKET` is set.
    pub notify: bool,
    /// `WATCHDOG_USEC`, if set.
    pub watchdog: Option<Duration>,
    pub workers: u32,
    pub ending: Ending,
}

impl Launch {
    pub fn from_seed(seed: u64) -> Launch {
        let mut r = Rng::derive(seed, "launch");
        let mode = if r.chance(30) { Mode::Foreground } else { Mode::Detached };
        let notify = mode == Mode::Foreground || r.chance(50);
        let watchdog = (notify && r.chance(50)).then(|| Duration::from_millis(r.range(20, 120)));
        let workers = r.below(3) as u32;
        let ending = match r.weighted(&[50, 20, 30]) {
            0 => Ending::Serves,
            1 => Ending::AddressTaken,
            _ => Ending::Killed(Duration::from_micros(r.range(0, 120))),
        };
        Launch { world_seed: r.next_u64(), mode, notify, watchdog, workers, ending }
    }
}

/// What a launch's run gives back to the seed's result.
pub struct LaunchRun {
    pub failures: Vec<String>,
    pub report: Report,
    /// The launcher's exit code (or the foreground daemon's status), as
    /// the conductor saw it.
    pub verdict: Option<ExitStatus>,
}

/// Runs the launch of `seed` in a world of its own, and judges it.
pub fn run(seed: u64) -> LaunchRun {
    let launch = Launch::from_seed(seed);
    let mut env = std::collections::BTreeMap::new();
    if launch.notify {
        env.insert("NOTIFY_SOCKET".to_string(), OsString::from(NOTIFY_SOCKET));
    }
    if let Some(w) = launch.watchdog {
        env.insert("WATCHDOG_USEC".to_string(), OsString::from(w.as_micros().to_string()));
    }
    let mut config = WorldConfig::new(launch.world_seed);
    config.env = env;
    config.max_time = Duration::from_secs(600);
    config.trace = true;
    let plan = launch.clone();
    let report = World::with_config(config).run(move |os| conductor(os, plan));
    let mut failures = judge(&launch, &report);
    let verdict = verdict_of(&report);
    if verdict.is_none() {
        failures.push("launch: the conductor saw no verdict".into());
    }
    LaunchRun { failures: failures.into_iter().map(|f| format!("launch ({launch:?}): {f}")).collect(), report, verdict }
}

/// A worker that only loops.
pub(crate) struct Idle;

impl Worker for Idle {
    fn work(&mut self, _ctx: &mut Context<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

fn build(launch: &Launch) -> Daemon {
    let mut config = Config::new("Launch");
    config.address = Address::Unix(SOCKET.into());
    config.pid_file = PID_FILE.into();
    let mut daemon = Daemon::new(config);
    if launch.workers > 0 {
        let spec = WorkerSpec {
            name: "idle".into(),
            looptime: Duration::from_millis(50),
            restart: Restart::Always,
            instances: launch.workers,
            ..WorkerSpec::new("idle", launch.workers)
        };
        daemon.workers.push((spec, Box::new(|| Box::new(Idle) as Box<dyn Worker>)));
    }
    daemon
}

/// The world's first process: the shell that types the command, and then
/// the operator who checks on the daemon and stops it.
fn conductor(os: &mut SimOs, launch: Launch) -> i32 {
    let sig = os.install_signals(&[Signal::Chld]).expect("install SIGCHLD");
    let squatter = match launch.ending {
        Ending::AddressTaken => {
            Some(os.listen(&Address::Unix(SOCKET.into()), ListenOptions::default()).expect("listen"))
        }
        _ => None,
    };
    let plan = launch.clone();
    let shell_main = move |os: &mut SimOs| {
        // What the binary does with the outcome, on the simulated console.
        let (code, message) = exit_code(&serve(os, build(&plan), plan.mode));
        if let Some(message) = message {
            let _ = wire::write_all(os, Fd(2), message.as_bytes(), os.now() + BOUND);
        }
        i32::from(code)
    };
    let Ok(shell) = os.spawn(SpawnOptions::default(), Box::new(shell_main)) else {
        os.note(format_args!("VIOLATION launch: cannot spawn the shell"));
        return 1;
    };
    os.note(format_args!("harness launch shell={shell}"));
    let mut harness = vec![os.pid(), shell];
    if let Ending::Killed(after) = launch.ending {
        let spare = (launch.mode == Mode::Detached).then_some(shell);
        let until = os.now() + after;
        let root = os.pid();
        match os.spawn(SpawnOptions::default(), Box::new(move |os: &mut SimOs| kill_daemon(os, until, root, spare))) {
            Ok(pid) => harness.push(pid),
            Err(_) => os.note(format_args!("VIOLATION launch: cannot spawn the killer")),
        }
    }
    let mut exits = Vec::new();
    match launch.mode {
        Mode::Detached => {
            let code = wait_exit(os, sig, shell, &mut exits);
            os.note(format_args!("harness launch verdict {code:?}"));
            if launch.ending == Ending::Serves && code == Some(ExitStatus::Exited(0)) {
                check_served(os, None);
            }
        }
        Mode::Foreground => {
            if launch.ending == Ending::Serves {
                check_served(os, Some(shell));
            }
            let code = wait_exit(os, sig, shell, &mut exits);
            os.note(format_args!("harness launch verdict {code:?}"));
        }
    }
    // Whatever happened, nothing of the daemon outlives the bound its
    // workers have to notice their master is gone.
    let until = os.now() + ORPHAN_BOUND + Duration::from_millis(100);
    os.sleep_until(until);
    let left: Vec<Pid> = os.live_processes().into_iter().filter(|p| !harness.contains(p)).collect();
    if !left.is_empty() {
        os.note(format_args!("VIOLATION launch: processes {left:?} outlived the daemon"));
        for p in left {
            let _ = os.kill(KillTarget::Process(p), Signal::Kill);
        }
    }
    let rest: Vec<Pid> = harness.iter().copied().filter(|p| *p != os.pid() && *p != shell).collect();
    for p in rest {
        wait_exit(os, sig, p, &mut exits);
    }
    if let Some(fd) = squatter {
        os.close(fd);
    }
    os.close(sig);
    0
}

/// Waits for a child to exit, reaping every child that does meanwhile.
pub(crate) fn wait_exit(os: &mut SimOs, sig: Fd, pid: Pid, exits: &mut Vec<(Pid, ExitStatus)>) -> Option<ExitStatus> {
    let deadline = os.now() + BOUND;
    loop {
        while let Ok(Some(exit)) = os.try_reap() {
            exits.push(exit);
        }
        if let Some((_, status)) = exits.iter().find(|(p, _)| *p == pid) {
            return Some(*status);
        }
        if os.now() >= deadline {
            os.note(format_args!("VIOLATION launch: {pid} did not exit within {BOUND:?}"));
            return None;
        }
        let _ = wire::wait_ready(os, sig, forkd_os::Ready::READ, deadline);
        let _ = os.take_signals();
    }
}

/// The daemon's pid, from its pid file.
pub(crate) fn daemon_pid(os: &mut SimOs) -> Option<Pid> {
    let bytes = os.read_private_file(Path::new(PID_FILE), 64).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok().map(Pid)
}

/// Kills the daemon at `until`: the process its pid file names, or, before
/// it wrote one, every process that is not the harness's (`spare` is the
/// launcher, under `-d`).
fn kill_daemon(os: &mut SimOs, until: Instant, root: Pid, spare: Option<Pid>) -> i32 {
    os.sleep_until(until);
    let me = os.pid();
    // Before the shell has detached there is nobody to kill yet: look
    // again a moment later.
    let give_up = os.now() + BOUND;
    loop {
        let victims: Vec<Pid> = match daemon_pid(os) {
            Some(pid) => vec![pid],
            None => {
                os.live_processes().into_iter().filter(|p| ![Some(root), Some(me), spare].contains(&Some(*p))).collect()
            }
        };
        if !victims.is_empty() || os.now() >= give_up {
            for v in victims {
                let _ = os.kill(KillTarget::Process(v), Signal::Kill);
            }
            return 0;
        }
        let next = os.now() + Duration::from_micros(1);
        os.sleep_until(next);
    }
}

/// A served daemon: it answers `daemon.info` with the pid its pid file
/// names (not the launcher's), and once stopped leaves no file behind.
/// `foreground` is its pid when it runs in the foreground.
fn check_served(os: &mut SimOs, foreground: Option<Pid>) {
    let deadline = os.now() + BOUND;
    let answer = loop {
        match call_info(os, deadline) {
            Some(answer) => break Some(answer),
            None if os.now() >= deadline => break None,
            None => {
                let until = os.now() + Duration::from_millis(1);
                os.sleep_until(until);
            }
        }
    };
    let Some(answer) = answer else {
        os.note(format_args!("VIOLATION launch: the daemon never answered daemon.info"));
        return;
    };
    let Some(pid) = daemon_pid(os) else {
        os.note(format_args!("VIOLATION launch: no pid in the pid file of a ready daemon"));
        return;
    };
    if let Some(fg) = foreground {
        if pid != fg {
            os.note(format_args!("VIOLATION launch: the pid file names {pid}, the daemon is {fg}"));
        }
    }
    if !answer.contains(&format!("\"pid\":{}", pid.0)) {
        os.note(format_args!("VIOLATION launch: daemon.info answered {answer:?}, not pid {pid}"));
    }
    let until = os.now() + SERVE_FOR;
    os.sleep_until(until);
    os.note(format_args!("harness launch stop {pid}"));
    let _ = os.kill(KillTarget::Process(pid), Signal::Term);
    let gone = os.wait_gone(pid, os.now() + BOUND).unwrap_or(false);
    if !gone {
        os.note(format_args!("VIOLATION launch: the daemon did not stop"));
        return;
    }
    for left in [PID_FILE, SOCKET] {
        if os.file_exists(Path::new(left)) {
            os.note(format_args!("VIOLATION launch: {left} is left after the stop"));
        }
    }
}

/// One `daemon.info` call over the unix socket; its answer line.
pub(crate) fn call_info(os: &mut SimOs, deadline: Instant) -> Option<String> {
    let fd = os.connect(&Address::Unix(SOCKET.into())).ok()?;
    let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.info\"}\n";
    let mut answer = Vec::new();
    if wire::write_all(os, fd, request, deadline).is_ok() {
        let mut buf = [0u8; 1024];
        while !answer.contains(&b'\n') {
            match wire::read_some(os, fd, &mut buf, deadline) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    }
    os.close(fd);
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.contains("\"result\"").then_some(text)
}

/// The verdict the conductor noted.
pub(crate) fn verdict_of(report: &Report) -> Option<ExitStatus> {
    report.trace.iter().filter_map(TraceLine::note).find_map(|n| {
        let rest = n.strip_prefix("harness launch verdict Some(")?;
        let rest = rest.strip_suffix(')')?;
        if let Some(code) = rest.strip_prefix("Exited(") {
            return code.strip_suffix(')')?.parse().ok().map(ExitStatus::Exited);
        }
        let sig = rest.strip_prefix("Signaled(")?.strip_suffix(')')?;
        sig.parse().ok().map(ExitStatus::Signaled)
    })
}

/// What any world's report says went wrong by itself: an unfinished
/// world, the violations its processes noted, their panics.
pub(crate) fn world_faults(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if !matches!(report.outcome, forkd_os::sim::Outcome::Finished) {
        out.push(format!("the world ended with {:?}", report.outcome));
    }
    for line in &report.trace {
        if let Some(v) = line.note().and_then(|n| n.strip_prefix("VIOLATION ")) {
            out.push(v.to_string());
        }
    }
    for (pid, msg) in &report.panics {
        out.push(format!("{pid} panicked: {msg}"));
    }
    out
}

/// Judges a launch's world from its report.
fn judge(launch: &Launch, report: &Report) -> Vec<String> {
    let mut out = world_faults(report);
    let Some(shell) = shell_of(report) else {
        out.push("no shell was spawned".into());
        return out;
    };
    let daemon = match launch.mode {
        Mode::Foreground => Some(shell),
        Mode::Detached => report.trace.iter().find_map(|l| match l.event {
            TraceEvent::Detach { daemon } if l.pid == shell => Some(daemon),
            _ => None,
        }),
    };
    let console: String = report
        .trace
        .iter()
        .filter(|l| l.pid == shell)
        .filter_map(|l| match &l.event {
            TraceEvent::Console { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    judge_verdict(launch, verdict_of(report), &console, &mut out);
    if let (Some(d), Mode::Detached) = (daemon, launch.mode) {
        if report.trace.iter().any(|l| l.pid == d && matches!(l.event, TraceEvent::Console { .. })) {
            out.push(format!("the detached daemon {d} wrote to the launcher's console"));
        }
    }
    judge_notifications(launch, report, daemon, &mut out);
    if launch.mode == Mode::Detached && verdict_of(report) == Some(ExitStatus::Exited(0)) {
        // The launcher said ready: by then the daemon listened.
        let exit = report.trace.iter().position(|l| l.pid == shell && matches!(l.event, TraceEvent::Exit(_)));
        let listened =
            report.trace.iter().position(|l| Some(l.pid) == daemon && matches!(l.event, TraceEvent::Listen { .. }));
        if !matches!((listened, exit), (Some(l), Some(e)) if l < e) {
            out.push("the launcher said ready before the daemon listened".into());
        }
    }
    out
}

fn shell_of(report: &Report) -> Option<Pid> {
    report.trace.iter().filter_map(TraceLine::note).find_map(|n| {
        n.strip_prefix("harness launch shell=")?.trim_start_matches("Pid(").trim_end_matches(')').parse().ok().map(Pid)
    })
}

/// What the launcher (or the foreground daemon) must have exited with,
/// and said.
fn judge_verdict(launch: &Launch, verdict: Option<ExitStatus>, console: &str, out: &mut Vec<String>) {
    let Some(verdict) = verdict else { return };
    let fg = launch.mode == Mode::Foreground;
    match (launch.ending, verdict) {
        (Ending::Serves, ExitStatus::Exited(0)) if console.is_empty() => {}
        (Ending::AddressTaken, ExitStatus::Exited(1))
            if console.starts_with("error: ") && console != NOT_READY && console.contains(SOCKET) => {}
        // Killed before it was ready, or after: both are right, if said.
        (Ending::Killed(_), ExitStatus::Exited(0)) if !fg && console.is_empty() => {}
        (Ending::Killed(_), ExitStatus::Exited(1)) if !fg && console == NOT_READY => {}
        (Ending::Killed(_), ExitStatus::Signaled(9)) if fg => {}
        (ending, verdict) => out.push(format!("ending {ending:?} gave {verdict:?} with {console:?} on the console")),
    }
}

/// What systemd heard: from the daemon only, and only if it asked;
/// `READY=1` once and first, `STOPPING=1` last, keep-alives in between at
/// the watchdog's pace.
fn judge_notifications(launch: &Launch, report: &Report, daemon: Option<Pid>, out: &mut Vec<String>) {
    let times: Vec<Instant> =
        report.trace.iter().filter(|l| matches!(l.event, TraceEvent::Datagram { .. })).map(|l| l.at).collect();
    let sent: Vec<(Instant, Pid, String)> = report
        .datagrams
        .iter()
        .zip(times)
        .map(|((pid, to, data), at)| {
            if to != NOTIFY_SOCKET {
                out.push(format!("a datagram to {to:?}"));
            }
            (at, *pid, String::from_utf8_lossy(data).into_owned())
        })
        .collect();
    if !launch.notify {
        if !sent.is_empty() {
            out.push(format!("{} notifications without NOTIFY_SOCKET", sent.len()));
        }
        return;
    }
    if let Some((_, pid, _)) = sent.iter().find(|(_, pid, _)| Some(*pid) != daemon) {
        out.push(format!("a notification from {pid}, not the daemon {daemon:?}"));
    }
    let states: Vec<&str> = sent.iter().map(|(_, _, s)| s.as_str()).collect();
    let ready = states.iter().filter(|s| **s == "READY=1").count();
    match launch.ending {
        Ending::AddressTaken if ready > 0 => out.push("READY=1 from a daemon that failed to start".into()),
        // Keep-alives go on while it stops (systemd's watchdog runs until
        // the process is gone), but nothing else follows STOPPING=1.
        Ending::Serves
            if states.first() != Some(&"READY=1")
                || states.iter().rev().find(|s| **s != "WATCHDOG=1") != Some(&"STOPPING=1")
                || states.iter().filter(|s| **s == "STOPPING=1").count() != 1
                || ready != 1 =>
        {
            out.push(format!("the notifications of a served daemon: {states:?}"))
        }
        _ if ready > 1 => out.push(format!("READY=1 {ready} times")),
        _ => {}
    }
    if let (Some(w), Ending::Serves) = (launch.watchdog, launch.ending) {
        let at = |state: &str| sent.iter().find(|(_, _, s)| s == state).map(|(t, _, _)| *t);
        if let (Some(ready), Some(stop)) = (at("READY=1"), at("STOPPING=1")) {
            let served = stop.as_nanos().saturating_sub(ready.as_nanos());
            let interval = (w / 2).as_nanos() as u64;
            let expected = served / interval;
            let kept = states.iter().take_while(|s| **s != "STOPPING=1").filter(|s| **s == "WATCHDOG=1").count() as u64;
            if kept + 1 < expected || kept > expected + 1 {
                out.push(format!("{kept} keep-alives in {served} ns at one every {interval} ns"));
            }
        }
    }
}
