//! The world's first process: it starts the daemon, the clients and the
//! chaos process, runs the liveness client once the chaos phase is over,
//! stops the daemon, and checks what only it can see at the end.
//!
//! Order of a run:
//! 1. spawn the daemon (`forkd_core::daemon::run`, the code that runs for
//!    real) and wait for its readiness byte;
//! 2. spawn the clients and the chaos process, and reap them all;
//! 3. spawn the liveness client, which must be answered (and may stop the
//!    daemon with `daemon.shutdown`);
//! 4. stop the daemon (SIGTERM or SIGINT, unless the shutdown did), probing
//!    the pid lock while it stops;
//! 5. once it is reaped: nothing of it may be left alive, and its pid lock
//!    must be free.
//!
//! Every process it spawns is noted as `harness ...` in the trace, so that
//! the checker can tell the harness's processes from the daemon's workers.

use std::time::Duration;

/// How long a reload's new instance has to be ready, in every scenario.
pub(crate) const RELOAD_TIMEOUT: Duration = Duration::from_secs(1);

use forkd_core::daemon::{Config, Daemon, Hooks, StartError};
use forkd_core::rpc::{Method, ParamType, Reply};
use forkd_core::supervisor::{Restart, WorkerSpec};
use forkd_os::sim::SimOs;
use forkd_os::{Entry, ExitStatus, Fd, Instant, KillTarget, Os, Pid, PollFd, Ready, Signal, SpawnOptions};

use crate::chaos;
use crate::client::{self, ClientCtx};
use crate::scenario::{ClientPlan, Scenario, StopBy, DESCRIPTION, HOST, PID_FILE, TOKEN_FILE};
use crate::wire;
use crate::workers::{self, Probe};

/// How long the workers of a killed daemon have to notice and end.
pub const ORPHAN_BOUND: Duration = Duration::from_secs(1);

/// Slack on every bound the harness checks: the daemon's loop is quick in
/// virtual time, but it is one process among several.
pub const SLACK: Duration = Duration::from_millis(100);

/// How long a stop may take: the workers' escalation (stop command, then
/// SIGTERM, then SIGKILL, `stop_timeout` apart), the daemon's own grace,
/// and its bounded wait for what it killed.
pub fn stop_bound(sc: &Scenario) -> Duration {
    sc.daemon.restart.stop_timeout * 2 + Duration::from_secs(2) + Duration::from_millis(500)
}

/// The daemon of a scenario: the echo method, the workers, the config.
pub fn build_daemon(sc: &Scenario, probe: &Probe) -> Daemon {
    let mut config = Config::new(DESCRIPTION);
    config.address = sc.daemon.address();
    config.max_batch = sc.daemon.max_batch;
    config.request_timeout = sc.daemon.request_timeout;
    config.pid_file = PID_FILE.into();
    config.socket_buffer = sc.daemon.socket_buffer;
    config.idle_timeout = sc.daemon.idle_timeout;
    config.max_connections = sc.daemon.max_connections;
    config.max_request = sc.daemon.max_request;
    config.restart = sc.daemon.restart.clone();
    // The clients' HTTP requests name the daemon `forkd`: the allow-list
    // of Host names is exercised by every HTTP request.
    config.allowed_hosts = vec![HOST.into()];
    let mut daemon = Daemon::new(config);
    daemon
        .registry
        .add(
            Method::new("my.echo", |_ctl, args| Reply::Value(args.get("message").cloned().unwrap_or_default()))
                .help("Answer the message.")
                .param(ParamType::String, "message")
                .returns(ParamType::String),
        )
        .expect("my.echo is not taken");
    for w in &sc.workers {
        let spec = WorkerSpec {
            name: w.name.clone(),
            looptime: w.looptime,
            restart: if w.forever { Restart::Always } else { Restart::Never },
            instances: w.instances,
            reload_timeout: RELOAD_TIMEOUT,
            ..WorkerSpec::new(w.name.clone(), w.instances)
        };
        daemon.workers.push((spec, workers::factory(w, probe.clone())));
    }
    daemon
}

/// The daemon's hooks: one byte on a socket when it is ready.
struct ReadyHooks {
    fd: Option<Fd>,
}

impl Hooks<SimOs> for ReadyHooks {
    fn ready(&mut self, os: &mut SimOs) {
        if let Some(fd) = self.fd.take() {
            let _ = os.write(fd, b"r");
            os.close(fd);
        }
    }

    fn private_fds(&self) -> Vec<Fd> {
        self.fd.into_iter().collect()
    }
}

/// The entry of the daemon process.
fn daemon_main(os: &mut SimOs, sc: Scenario, probe: Probe, ready: Fd, inherited: Fd) -> i32 {
    os.close(inherited);
    let daemon = build_daemon(&sc, &probe);
    let mut hooks = ReadyHooks { fd: Some(ready) };
    let code = match forkd_core::daemon::run(os, daemon, &mut hooks) {
        Ok(stopped) => {
            os.note(format_args!("harness daemon returned: {stopped:?}"));
            0
        }
        Err(e) => {
            os.note(format_args!("VIOLATION daemon: did not start: {e}"));
            2
        }
    };
    if let Some(fd) = hooks.fd.take() {
        os.close(fd);
    }
    code
}

/// The hooks of a second daemon that got to start: it says so, and stops.
struct SecondHooks;

impl Hooks<SimOs> for SecondHooks {
    fn ready(&mut self, os: &mut SimOs) {
        os.note(format_args!("CHECK pidlock acquired by a second daemon"));
        let me = os.pid();
        let _ = os.kill(KillTarget::Process(me), Signal::Term);
    }
}

/// The entry of a second daemon, started while the first may run: while
/// the first holds its pid lock, it must refuse to start, naming the first,
/// and leave everything as it found it.
pub fn second_daemon_main(os: &mut SimOs, mut sc: Scenario, probe: Probe, first: Pid) -> i32 {
    sc.workers.clear();
    let daemon = build_daemon(&sc, &probe);
    match forkd_core::daemon::run(os, daemon, &mut SecondHooks) {
        Err(StartError::AlreadyRunning(Some(pid))) if pid == first.0 => 0,
        Ok(_) => 0,
        Err(StartError::AddressAnswers(_)) => {
            // It got the lock, the first being on its way out.
            os.note(format_args!("CHECK pidlock acquired by a second daemon (the address answers)"));
            0
        }
        Err(e) => {
            os.note(format_args!("VIOLATION second daemon: {e:?}"));
            1
        }
    }
}

/// Spawns, trying again while the world says EAGAIN (the faults apply to
/// the harness's forks too).
fn spawn(os: &mut SimOs, make: impl Fn() -> Entry<SimOs>) -> Option<Pid> {
    for _ in 0..1000 {
        match os.spawn(SpawnOptions::default(), make()) {
            Ok(pid) => return Some(pid),
            Err(_) => {
                let until = os.now() + Duration::from_millis(1);
                os.sleep_until(until);
            }
        }
    }
    os.note(format_args!("VIOLATION conductor: cannot spawn"));
    None
}

/// The children the conductor waits for, and how they ended.
struct Children {
    signal_fd: Fd,
    exits: Vec<(Pid, ExitStatus)>,
}

impl Children {
    fn reap(&mut self, os: &mut SimOs) {
        while let Ok(Some(exit)) = os.try_reap() {
            self.exits.push(exit);
        }
    }

    fn exited(&self, pid: Pid) -> Option<ExitStatus> {
        self.exits.iter().find(|(p, _)| *p == pid).map(|(_, s)| *s)
    }

    /// Waits until every one of `pids` has exited, or `deadline`; calls
    /// `tick` at least every `every` meanwhile.
    fn wait_all(
        &mut self,
        os: &mut SimOs,
        pids: &[Pid],
        deadline: Instant,
        every: Option<Duration>,
        tick: &mut dyn FnMut(&mut SimOs, &Children),
    ) -> bool {
        loop {
            self.reap(os);
            if pids.iter().all(|p| self.exited(*p).is_some()) {
                return true;
            }
            if os.now() >= deadline {
                return false;
            }
            tick(os, self);
            let wake = every.map_or(deadline, |d| (os.now() + d).min(deadline));
            let mut fds = [PollFd::new(self.signal_fd, Ready::READ)];
            let _ = os.poll(&mut fds, Some(wake));
            let _ = os.take_signals();
        }
    }
}

/// Starts a daemon and waits for its readiness byte; `None` (with a
/// violation noted) if it does not become ready.
fn start_daemon(os: &mut SimOs, sc: &Scenario, probe: &Probe, children: &mut Children) -> Option<Pid> {
    let (here, there) = os.socket_pair().expect("socket pair");
    let daemon = {
        let sc = sc.clone();
        let probe = probe.clone();
        spawn(os, move || {
            let (sc, probe) = (sc.clone(), probe.clone());
            Box::new(move |os: &mut SimOs| daemon_main(os, sc, probe, there, here))
        })
    };
    os.close(there);
    let Some(daemon) = daemon else {
        os.close(here);
        return None;
    };
    os.note(format_args!("harness daemon pid={daemon}"));
    let ready = os.now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    let ok = matches!(wire::read_some(os, here, &mut byte, ready), Ok(1));
    os.close(here);
    if !ok {
        os.note(format_args!("VIOLATION conductor: the daemon did not become ready"));
        let _ = os.kill(KillTarget::Process(daemon), Signal::Kill);
        children.wait_all(os, &[daemon], os.now() + Duration::from_secs(30), None, &mut |_, _| {});
        return None;
    }
    Some(daemon)
}

/// The entry of the world's first process.
pub fn run(os: &mut SimOs, sc: Scenario, probe: Probe) -> i32 {
    let signal_fd = os.install_signals(&[Signal::Chld]).expect("install SIGCHLD");
    let mut children = Children { signal_fd, exits: Vec::new() };
    let me = os.pid();

    // 1. the daemon
    let Some(mut daemon) = start_daemon(os, &sc, &probe, &mut children) else { return 1 };

    // 2. clients and chaos
    let epoch = os.now();
    let worker_list: Vec<(String, u32)> = sc.workers.iter().map(|w| (w.name.clone(), w.instances)).collect();
    let mut harness = vec![me, daemon];
    let mut waited = Vec::new();
    let ctx_of = |plan: &ClientPlan, harness: &Vec<Pid>, daemon: Pid, epoch: Instant| ClientCtx {
        plan: plan.clone(),
        daemon_pid: daemon,
        daemon: sc.daemon.clone(),
        workers: worker_list.clone(),
        harness: harness.clone(),
        epoch,
    };
    for plan in &sc.clients {
        let Some(pid) = spawn_client(os, ctx_of(plan, &harness, daemon, epoch)) else { return 1 };
        os.note(format_args!("harness client={} pid={pid}", plan.id));
        harness.push(pid);
        waited.push(pid);
    }
    if !sc.chaos.is_empty() {
        let Some(pid) = spawn_chaos(os, &sc, &probe, daemon, &harness, epoch) else { return 1 };
        harness.push(pid);
        waited.push(pid);
    }
    let phase_end = os.now() + Duration::from_secs(120);
    if !children.wait_all(os, &waited, phase_end, None, &mut |_, _| {}) {
        os.note(format_args!("VIOLATION conductor: the clients did not finish"));
    }

    // 2b. after a crash of the daemon: its workers end by themselves, and a
    // new daemon starts over the files it left. (A process killed dies at
    // its next call: a moment lets it.)
    let until = os.now() + Duration::from_millis(10);
    os.sleep_until(until);
    children.reap(os);
    let crashed = children.exited(daemon) == Some(ExitStatus::Signaled(Signal::Kill.number()));
    if crashed {
        let Some(second) = start_over(os, &sc, &probe, &mut children, &harness) else { return 1 };
        daemon = second;
        harness.push(daemon);
    }

    // 3. the liveness client, with faults off: progress must now happen.
    os.set_faults(forkd_os::sim::Faults::default());
    if children.exited(daemon).is_none() {
        let ctx = ctx_of(&sc.last, &harness, daemon, os.now());
        if let Some(pid) = spawn_client(os, ctx) {
            os.note(format_args!("harness last pid={pid}"));
            harness.push(pid);
            if !children.wait_all(os, &[pid], os.now() + Duration::from_secs(60), None, &mut |_, _| {}) {
                os.note(format_args!("VIOLATION conductor: the liveness client did not finish"));
            }
        }
    }

    // 4. the stop
    stop_daemon(os, &sc, daemon, &mut children);

    // 5. what is left
    check_what_is_left(os, daemon, &children, &harness, crashed);
    // Whatever else of the harness is still around.
    let rest: Vec<Pid> = harness.iter().copied().filter(|p| *p != me).collect();
    children.wait_all(os, &rest, os.now() + Duration::from_secs(60), None, &mut |_, _| {});
    os.close(signal_fd);
    0
}

/// The daemon's spawn of the chaos process, which acts on the daemon at
/// the scenario's offsets.
fn spawn_chaos(
    os: &mut SimOs,
    sc: &Scenario,
    probe: &Probe,
    daemon: Pid,
    harness: &[Pid],
    epoch: Instant,
) -> Option<Pid> {
    let (scenario, chaos_probe) = (sc.clone(), probe.clone());
    let harness_now = harness.to_vec();
    let seed = crate::rng::derive(sc.seed, "chaos");
    let pid = spawn(os, move || {
        let ctx = chaos::ChaosCtx {
            scenario: scenario.clone(),
            probe: chaos_probe.clone(),
            daemon,
            harness: harness_now.clone(),
            epoch,
            seed,
        };
        Box::new(move |os: &mut SimOs| chaos::run(os, ctx))
    })?;
    os.note(format_args!("harness chaos pid={pid}"));
    Some(pid)
}

/// Stops the daemon the scenario's way, signals it again while it stops,
/// and waits for it, probing its pid lock all the while.
fn stop_daemon(os: &mut SimOs, sc: &Scenario, daemon: Pid, children: &mut Children) {
    if children.exited(daemon).is_none() {
        let sig = match sc.stop {
            StopBy::Int => Signal::Int,
            StopBy::Term | StopBy::Shutdown => Signal::Term,
        };
        os.note(format_args!("harness stop requested ({sig})"));
        let _ = os.kill(KillTarget::Process(daemon), sig);
    }
    // Asked again while it stops, and again.
    for sig in &sc.stop_storm {
        let _ = os.kill(KillTarget::Process(daemon), *sig);
    }
    let deadline = os.now() + stop_bound(sc) + Duration::from_secs(5);
    let mut probe_lock = |os: &mut SimOs, ch: &Children| {
        if ch.exited(daemon).is_none() {
            chaos::probe_pid_lock(os, daemon, "conductor");
        }
    };
    if !children.wait_all(os, &[daemon], deadline, Some(Duration::from_millis(1)), &mut probe_lock) {
        os.note(format_args!("VIOLATION conductor: the daemon did not stop"));
        let _ = os.kill(KillTarget::Process(daemon), Signal::Kill);
        children.wait_all(os, &[daemon], os.now() + Duration::from_secs(10), None, &mut |_, _| {});
    }
}

/// After the stop: the daemon exited 0, and left no process, pid lock or
/// file behind.
fn check_what_is_left(os: &mut SimOs, daemon: Pid, children: &Children, harness: &[Pid], crashed: bool) {
    match children.exited(daemon) {
        Some(ExitStatus::Exited(0)) => {}
        other => os.note(format_args!("VIOLATION conductor: the daemon ended with {other:?}")),
    }
    let left: Vec<Pid> = os.live_processes().into_iter().filter(|p| !harness.contains(p)).collect();
    if !left.is_empty() {
        os.note(format_args!("VIOLATION conductor: processes {left:?} outlived the daemon"));
    }
    let path = std::path::Path::new(PID_FILE);
    match os.lock_pid_file(path) {
        Ok(fd) => {
            let _ = os.remove_file(path);
            os.close(fd);
        }
        Err(e) => os.note(format_args!("VIOLATION conductor: the pid lock outlived the daemon: {e}")),
    }
    // A token file left by a crashed daemon is used as it is by the next,
    // and so left in place at its stop, as documented: it is the
    // conductor's to remove. Any other left behind is the daemon's fault.
    if crashed && os.file_exists(std::path::Path::new(TOKEN_FILE)) {
        let _ = os.remove_file(std::path::Path::new(TOKEN_FILE));
    }
}

/// The daemon was killed: its orphaned workers must end by themselves
/// within a bound (any still there are noted and killed), and a new daemon
/// starts over the files it left.
fn start_over(os: &mut SimOs, sc: &Scenario, probe: &Probe, children: &mut Children, harness: &[Pid]) -> Option<Pid> {
    let until = os.now() + ORPHAN_BOUND;
    os.sleep_until(until);
    children.reap(os);
    for orphan in os.live_processes().into_iter().filter(|p| !harness.contains(p)) {
        os.note(format_args!("harness orphan {orphan}"));
        let _ = os.kill(KillTarget::Process(orphan), Signal::Kill);
    }
    start_daemon(os, sc, probe, children)
}

/// Spawns a scripted client.
fn spawn_client(os: &mut SimOs, ctx: ClientCtx) -> Option<Pid> {
    spawn(os, move || {
        let ctx = ctx.clone();
        Box::new(move |os: &mut SimOs| client::run(os, ctx))
    })
}
