//! The master's upgrade in place, simulated: the binary's serving path
//! (`forkd::testing::serve`), detached or in the foreground, executes
//! itself again (`Os::spawn_exec` of a program installed in the world)
//! while clients load the socket, in a world of its own per seed.
//!
//! Each seed draws the launch (`-d` or not, `NOTIFY_SOCKET` or not, 0 to 2
//! workers, 1 to 3 clients) and what becomes of the upgrade: it succeeds;
//! the new build exits at start; the new build never says ready (the old
//! master's timeout kills it); or the old master is killed at a drawn
//! moment of the handover. What must hold:
//! - the caller is answered with the new master's pid and version on
//!   success, and with `UpgradeFailed` when the new master failed; the
//!   daemon then answers with that pid, and its pid file names it;
//! - at most one master accepts at any moment, the one the pid file
//!   names: a master that handed over accepts no connection after it
//!   rewrote the pid file, and a new one none before; the one that handed
//!   over sends no `STOPPING=1`; a new master says `MAINPID=` before its
//!   `READY=1`;
//! - a connect is never refused while a master lives, and every call is
//!   answered once, by its id, or its connection closed before the answer
//!   began: then it is sent again on a fresh connection, which must answer;
//! - whatever happened, no process of the daemon outlives its stop.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use forkd::testing::{exit_code, serve, Mode};
use forkd_core::daemon::{Config, Daemon, UpgradeCommand};
use forkd_core::supervisor::{Restart, WorkerSpec};
use forkd_core::worker::Worker;
use forkd_os::sim::{Config as WorldConfig, Report, SimOs, TraceEvent, World};
use forkd_os::{Address, ExitStatus, Fd, Instant, KillTarget, Os, Pid, Signal, SpawnOptions};

use crate::conductor::ORPHAN_BOUND;
use crate::launch::{daemon_pid, verdict_of, wait_exit, Idle, BOUND, NOTIFY_SOCKET, PID_FILE, SOCKET};
use crate::rng::Rng;
use crate::wire;

/// Where the daemon's binary is installed in the world.
const PROGRAM: &str = "/usr/bin/upgrade-daemon";
/// How long a new master has to say it is ready.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long the clients load the socket once the upgrade was asked for.
const LOAD_FOR: Duration = Duration::from_millis(400);

/// How often a client calls.
const PACE: Duration = Duration::from_millis(3);

/// What becomes of the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The new master takes over.
    Succeeds,
    /// The new build exits 3 at once.
    DiesAtStart,
    /// The new build never says it is ready.
    NeverReady,
    /// SIGKILL reaches the old master this long after the call.
    OldKilled(Duration),
}

/// One upgrade world, drawn from a seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub world_seed: u64,
    pub mode: Mode,
    pub notify: bool,
    pub workers: u32,
    pub clients: u32,
    /// How close together the clients' first calls come.
    pub pace: Duration,
    pub fate: Fate,
}

impl Plan {
    pub fn from_seed(seed: u64) -> Plan {
        let mut r = Rng::derive(seed, "upgrade");
        let mode = if r.chance(50) { Mode::Foreground } else { Mode::Detached };
        let notify = r.chance(50);
        let workers = r.below(3) as u32;
        let clients = 1 + r.below(3) as u32;
        let pace = Duration::from_micros(r.range(1, 40));
        let fate = match r.weighted(&[55, 15, 10, 20]) {
            0 => Fate::Succeeds,
            1 => Fate::DiesAtStart,
            2 => Fate::NeverReady,
            _ => Fate::OldKilled(Duration::from_micros(r.range(0, 3000))),
        };
        Plan { world_seed: r.next_u64(), mode, notify, workers, clients, pace, fate }
    }
}

/// What an upgrade world gives back to the seed's result.
pub struct UpgradeRun {
    pub failures: Vec<String>,
    pub report: Report,
}

/// Runs the upgrade world of `seed` and judges it.
pub fn run(seed: u64) -> UpgradeRun {
    let plan = Plan::from_seed(seed);
    let mut config = WorldConfig::new(plan.world_seed);
    if plan.notify {
        config.env.insert("NOTIFY_SOCKET".to_string(), OsString::from(NOTIFY_SOCKET));
    }
    config.max_time = Duration::from_secs(600);
    config.trace = true;
    let world_plan = plan.clone();
    let report = World::with_config(config).run(move |os| conductor(os, world_plan));
    let failures = judge(&plan, &report).into_iter().map(|f| format!("upgrade ({plan:?}): {f}")).collect();
    UpgradeRun { failures, report }
}

fn build(plan: &Plan, version: &str) -> Daemon {
    let mut config = Config::new("Upgrade");
    config.address = Address::Unix(SOCKET.into());
    config.pid_file = PID_FILE.into();
    config.version = version.to_string();
    config.upgrade = Some(UpgradeCommand { program: PROGRAM.into(), ..UpgradeCommand::default() });
    config.upgrade_timeout = TIMEOUT;
    let mut daemon = Daemon::new(config);
    if plan.workers > 0 {
        let spec = WorkerSpec {
            name: "idle".into(),
            looptime: Duration::from_millis(50),
            restart: Restart::Always,
            ..WorkerSpec::new("idle", plan.workers)
        };
        daemon.workers.push((spec, Box::new(|| Box::new(Idle) as Box<dyn Worker>)));
    }
    daemon
}

/// The binary as installed: version 2, or a broken build.
fn install(os: &mut SimOs, plan: &Plan) {
    let plan = plan.clone();
    os.install_program(
        Path::new(PROGRAM),
        Arc::new(move |_args: Vec<OsString>| {
            let plan = plan.clone();
            Box::new(move |os: &mut SimOs| match plan.fate {
                Fate::DiesAtStart => 3,
                Fate::NeverReady => {
                    let until = os.now() + TIMEOUT * 20;
                    os.sleep_until(until);
                    0
                }
                Fate::Succeeds | Fate::OldKilled(_) => i32::from(exit_code(&serve(os, build(&plan, "2"), plan.mode)).0),
            })
        }),
    );
}

/// The world's first process: starts the daemon, loads it, upgrades it,
/// checks what came of it, and stops whatever master is left.
fn conductor(os: &mut SimOs, plan: Plan) -> i32 {
    let sig = os.install_signals(&[Signal::Chld]).expect("install SIGCHLD");
    install(os, &plan);
    let first = plan.clone();
    let shell_main = move |os: &mut SimOs| i32::from(exit_code(&serve(os, build(&first, "1"), first.mode)).0);
    let Ok(shell) = os.spawn(SpawnOptions::default(), Box::new(shell_main)) else {
        os.note(format_args!("VIOLATION upgrade: cannot spawn the shell"));
        return 1;
    };
    let mut exits = Vec::new();
    let mut harness = vec![os.pid(), shell];
    if plan.mode == Mode::Detached && wait_exit(os, sig, shell, &mut exits) != Some(ExitStatus::Exited(0)) {
        os.note(format_args!("VIOLATION upgrade: the launcher did not say ready"));
    }
    let deadline = os.now() + BOUND;
    while call(os, "daemon.info", deadline).is_none() && os.now() < deadline {
        let until = os.now() + Duration::from_millis(1);
        os.sleep_until(until);
    }
    let Some(old) = daemon_pid(os) else {
        os.note(format_args!("VIOLATION upgrade: no pid file once the daemon answered"));
        return 1;
    };
    os.note(format_args!("harness upgrade old={old}"));
    let until = os.now() + LOAD_FOR;
    for n in 0..plan.clients {
        match os.spawn(SpawnOptions::default(), Box::new(move |os: &mut SimOs| load(os, n, until, plan.pace))) {
            Ok(pid) => harness.push(pid),
            Err(_) => os.note(format_args!("VIOLATION upgrade: cannot spawn client {n}")),
        }
    }
    if let Fate::OldKilled(after) = plan.fate {
        let at = os.now() + after;
        let killer = move |os: &mut SimOs| {
            os.sleep_until(at);
            let _ = os.kill(KillTarget::Process(old), Signal::Kill);
            0
        };
        match os.spawn(SpawnOptions::default(), Box::new(killer)) {
            Ok(pid) => harness.push(pid),
            Err(_) => os.note(format_args!("VIOLATION upgrade: cannot spawn the killer")),
        }
    }
    let answer = call(os, "daemon.upgrade", os.now() + BOUND);
    check_outcome(os, &plan, old, answer.as_deref());
    for &p in &harness[2..] {
        wait_exit(os, sig, p, &mut exits);
    }
    stop_what_is_left(os, &plan, sig, shell, &mut exits);
    let left: Vec<Pid> = os.live_processes().into_iter().filter(|p| !harness.contains(p)).collect();
    if !left.is_empty() {
        os.note(format_args!("VIOLATION upgrade: processes {left:?} outlived the daemon"));
        for p in left {
            let _ = os.kill(KillTarget::Process(p), Signal::Kill);
        }
    }
    os.close(sig);
    0
}

/// What the caller and the daemon say after the upgrade.
fn check_outcome(os: &mut SimOs, plan: &Plan, old: Pid, answer: Option<&str>) {
    let info = call(os, "daemon.info", os.now() + BOUND);
    let named = daemon_pid(os);
    match plan.fate {
        Fate::Succeeds => {
            let new = answer.and_then(|a| number_after(a, "\"pid\":")).map(Pid);
            let Some(new) = new.filter(|n| *n != old) else {
                os.note(format_args!("VIOLATION upgrade: a good build answered {answer:?}"));
                return;
            };
            if !answer.is_some_and(|a| a.contains("\"version\":\"2\"")) {
                os.note(format_args!("VIOLATION upgrade: no new version in {answer:?}"));
            }
            if !os.wait_gone(old, os.now() + BOUND).unwrap_or(false) {
                os.note(format_args!("VIOLATION upgrade: the old master {old} is still there"));
            }
            let info = call(os, "daemon.info", os.now() + BOUND);
            if named != Some(new) || !info.as_deref().is_some_and(|i| i.contains(&format!("\"pid\":{}", new.0))) {
                os.note(format_args!("VIOLATION upgrade: after it, the pid file names {named:?}, info {info:?}"));
            }
        }
        Fate::DiesAtStart | Fate::NeverReady => {
            if !answer.is_some_and(|a| a.contains("-32009")) {
                os.note(format_args!("VIOLATION upgrade: a failed upgrade answered {answer:?}"));
            }
            let serving = info.as_deref().is_some_and(|i| i.contains(&format!("\"pid\":{}", old.0)));
            if named != Some(old) || !serving {
                os.note(format_args!(
                    "VIOLATION upgrade: after a failure, the pid file names {named:?}, info {info:?}"
                ));
            }
        }
        // Either master may be the one left: whichever answers must be
        // the one the pid file names.
        Fate::OldKilled(_) => {
            let settle = os.now() + TIMEOUT * 2;
            os.sleep_until(settle);
            let named = daemon_pid(os);
            if let Some(info) = call(os, "daemon.info", os.now() + BOUND) {
                if !named.is_some_and(|p| info.contains(&format!("\"pid\":{}", p.0))) {
                    os.note(format_args!("VIOLATION upgrade: {info:?} answers, the pid file names {named:?}"));
                }
            }
        }
    }
}

/// Stops the master the pid file names, if one lives, and waits for the
/// shell (the first master, in the foreground); then leaves the workers
/// their bound to notice.
fn stop_what_is_left(os: &mut SimOs, plan: &Plan, sig: Fd, shell: Pid, exits: &mut Vec<(Pid, ExitStatus)>) {
    if let Some(pid) = daemon_pid(os) {
        os.note(format_args!("harness upgrade stop {pid}"));
        if os.kill(KillTarget::Process(pid), Signal::Term).is_ok()
            && !os.wait_gone(pid, os.now() + BOUND).unwrap_or(false)
        {
            os.note(format_args!("VIOLATION upgrade: master {pid} did not stop"));
        }
    }
    if plan.mode == Mode::Foreground {
        let code = wait_exit(os, sig, shell, exits);
        os.note(format_args!("harness launch verdict {code:?}"));
    }
    let until = os.now() + ORPHAN_BOUND + Duration::from_millis(100);
    os.sleep_until(until);
    let killed = matches!(plan.fate, Fate::OldKilled(_));
    for left in [PID_FILE, SOCKET] {
        if !killed && os.file_exists(Path::new(left)) {
            os.note(format_args!("VIOLATION upgrade: {left} is left after the stop"));
        }
    }
}

/// The first number after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<i32> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One call on a fresh connection: its answer line, or `None` if the
/// connection ended first.
fn call(os: &mut SimOs, method: &str, deadline: Instant) -> Option<String> {
    let fd = os.connect(&Address::Unix(SOCKET.into())).ok()?;
    let answer = exchange(os, fd, 1, method, deadline);
    os.close(fd);
    answer.ok()
}

/// How one exchange on a connection ended.
enum Ended {
    /// Closed before the answer began: safe to send again.
    Unanswered,
    /// Anything else: a wrong or partial answer, a deadline.
    Broken(String),
}

/// Sends request `id` on `fd` and reads its answer line.
fn exchange(os: &mut SimOs, fd: Fd, id: u64, method: &str, deadline: Instant) -> Result<String, Ended> {
    let request = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\"}}\n");
    if let Err((_, short)) = wire::write_all(os, fd, request.as_bytes(), deadline) {
        return match short {
            wire::Short::Closed => Err(Ended::Unanswered),
            other => Err(Ended::Broken(format!("write: {other:?}"))),
        };
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.contains(&b'\n') {
        match wire::read_some(os, fd, &mut buf, deadline) {
            Ok(0) if answer.is_empty() => return Err(Ended::Unanswered),
            Ok(0) => return Err(Ended::Broken("closed mid-answer".into())),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(wire::Short::Closed) if answer.is_empty() => return Err(Ended::Unanswered),
            Err(e) => return Err(Ended::Broken(format!("read: {e:?}"))),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    if !text.contains(&format!("\"id\":{id}")) {
        return Err(Ended::Broken(format!("answer {text:?}")));
    }
    Ok(text)
}

/// A client that loads the socket until `until`: on one kept connection
/// (client 0) or a fresh one for every call. A call whose connection closed
/// before its answer began is sent once more on a fresh connection. While
/// a master lives, nothing else may happen; once none does (the old one
/// killed before it handed over), the client stops.
fn load(os: &mut SimOs, n: u32, until: Instant, pace: Duration) -> i32 {
    let mut kept: Option<Fd> = None;
    let mut id = 0u64;
    while os.now() < until {
        id += 1;
        let deadline = os.now() + BOUND;
        let mut tries = 0;
        loop {
            tries += 1;
            let fd = match kept.take() {
                Some(fd) => fd,
                None => match os.connect(&Address::Unix(SOCKET.into())) {
                    Ok(fd) => fd,
                    Err(e) => {
                        if master_lives(os) {
                            os.note(format_args!("VIOLATION upgrade: client {n}: connect refused: {e}"));
                        }
                        return 0;
                    }
                },
            };
            match exchange(os, fd, id, "daemon.info", deadline) {
                Ok(text) if !text.contains("\"result\"") => {
                    os.note(format_args!("VIOLATION upgrade: client {n}: call {id} answered {text:?}"));
                    os.close(fd);
                    return 0;
                }
                Ok(_) if n == 0 => {
                    kept = Some(fd);
                    break;
                }
                Ok(_) => {
                    os.close(fd);
                    break;
                }
                Err(Ended::Unanswered) if tries < 2 => os.close(fd),
                Err(Ended::Unanswered) | Err(Ended::Broken(_)) if !master_lives(os) => {
                    os.close(fd);
                    return 0;
                }
                Err(Ended::Unanswered) => {
                    os.note(format_args!("VIOLATION upgrade: client {n}: call {id} unanswered twice"));
                    os.close(fd);
                    return 0;
                }
                Err(Ended::Broken(why)) => {
                    os.note(format_args!("VIOLATION upgrade: client {n}: call {id}: {why}"));
                    os.close(fd);
                    return 0;
                }
            }
        }
        // The handover happens among the calls: at first they come close
        // together, then every few milliseconds.
        let pause = os.now() + if id < 50 { pace } else { PACE };
        os.sleep_until(pause);
    }
    if let Some(fd) = kept {
        os.close(fd);
    }
    0
}

/// Whether a master the pid file names lives (an old one killed before it
/// handed over leaves a pid file naming nobody).
fn master_lives(os: &mut SimOs) -> bool {
    daemon_pid(os).is_some_and(|p| os.live_processes().contains(&p))
}

/// Judges the world from its trace: the violations noted, the handover's
/// order, the notifications.
fn judge(plan: &Plan, report: &Report) -> Vec<String> {
    let mut out = crate::launch::world_faults(report);
    // A master that named its successor in the pid file accepts no more.
    for (i, line) in report.trace.iter().enumerate() {
        let TraceEvent::PidRewrite { pid } = line.event else { continue };
        if pid == line.pid {
            continue;
        }
        let late = report.trace[i..].iter().any(|l| l.pid == line.pid && matches!(l.event, TraceEvent::Accept { .. }));
        if late {
            out.push(format!("{} accepted after it handed over to {pid}", line.pid));
        }
    }
    // A new master accepts only once the pid file names it: never two
    // masters accepting at once, nor one that does not hold the file.
    for line in &report.trace {
        let TraceEvent::Exec { child, .. } = line.event else { continue };
        let named = report.trace.iter().position(|l| matches!(l.event, TraceEvent::PidRewrite { pid } if pid == child));
        let accepted = report.trace.iter().position(|l| l.pid == child && matches!(l.event, TraceEvent::Accept { .. }));
        let early = match (accepted, named) {
            (Some(a), Some(n)) => a < n,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if early {
            out.push(format!("the new master {child} accepted before the pid file named it"));
        }
    }
    if plan.notify {
        judge_notifications(report, &mut out);
    }
    if plan.mode == Mode::Foreground {
        let verdict = verdict_of(report);
        let fine = match plan.fate {
            Fate::OldKilled(_) => matches!(verdict, Some(ExitStatus::Exited(0)) | Some(ExitStatus::Signaled(9))),
            _ => verdict == Some(ExitStatus::Exited(0)),
        };
        if !fine {
            out.push(format!("the first master ended with {verdict:?}"));
        }
    }
    out
}

/// Each master says `READY=1` once; a new one says `MAINPID=` with its
/// own pid first; one that hands over names its successor in `MAINPID=`
/// and says no `STOPPING=1`.
fn judge_notifications(report: &Report, out: &mut Vec<String>) {
    let handed: Vec<Pid> = report
        .trace
        .iter()
        .filter_map(|l| match l.event {
            TraceEvent::PidRewrite { pid } if pid != l.pid => Some(l.pid),
            _ => None,
        })
        .collect();
    let mut senders: Vec<Pid> = report.datagrams.iter().map(|(p, _, _)| *p).collect();
    senders.dedup();
    for pid in senders {
        let said: Vec<String> = report
            .datagrams
            .iter()
            .filter(|(p, _, _)| *p == pid)
            .map(|(_, _, d)| String::from_utf8_lossy(d).into_owned())
            .collect();
        let ready = said.iter().filter(|s| *s == "READY=1").count();
        if ready > 1 {
            out.push(format!("{pid} said READY=1 {ready} times"));
        }
        // A master names its successor (once it rewrote the pid file for
        // it), or itself before it says ready.
        let successor = report.trace.iter().find_map(|l| match l.event {
            TraceEvent::PidRewrite { pid: new } if l.pid == pid && new != pid => Some(new),
            _ => None,
        });
        for (i, s) in said.iter().enumerate() {
            let Some(named) = s.strip_prefix("MAINPID=") else { continue };
            let own = named == pid.0.to_string() && said[i..].iter().any(|s| s == "READY=1");
            let next = successor.is_some_and(|n| named == n.0.to_string());
            if !own && !next {
                out.push(format!("{pid} said {said:?}"));
            }
        }
        if handed.contains(&pid) && said.iter().any(|s| s == "STOPPING=1") {
            out.push(format!("{pid} said STOPPING=1 after it handed over: {said:?}"));
        }
    }
}
