//! The supervisor: which worker processes should exist, and what to do when
//! one exits, hangs or must stop.
//!
//! It is a pure state machine in quinn's manner: exits come in through
//! [`Supervisor::handle_exit`], time through [`Supervisor::handle_timeout`],
//! the next deadline goes out through [`Supervisor::poll_timeout`], and the
//! work to do (spawn, signal) goes out as [`Action`]s that only the daemon's
//! loop executes. It never forks, signals or reads a clock itself, so the
//! same code decides in the simulation and for real.
//!
//! The restart policy goes beyond the seed's watchdog, in OTP's and
//! systemd's manner: a `forever` worker that dies is restarted at once the
//! first time, then after an exponential backoff with jitter, capped; the
//! backoff resets once an instance has stayed up for a stable period. More
//! than `intensity` starts of one instance within `period` mark that
//! instance failed (starts are counted per instance, also in a pool), and
//! then the daemon stops, or keeps running without it, as configured.
//!
//! Each instance is in one [`InstanceState`]; every input (a spawn's answer,
//! an exit, time, a command) becomes an event for one instance, and one
//! `match (state, event)` without a catch-all arm decides what it does.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use forkd_os::rng::SplitMix64;
use forkd_os::{ExitStatus, Instant, KillTarget, Pid, Signal};

/// How a worker is installed (the seed's `install($worker, $looptime, $forever)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    pub name: String,
    pub looptime: Duration,
    /// Restarted when it dies; otherwise its exit stops the daemon.
    pub forever: bool,
    /// How many instances run (a pool); changed at runtime by `worker.scale`.
    pub instances: u32,
}

/// What happens when an instance has used up its restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    StopDaemon,
    KeepRunning,
}

/// Bounds on restarts and waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The second restart in a row waits this long; each one after doubles it.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// An instance up this long has its backoff reset.
    pub stable_after: Duration,
    /// At most this many starts of one instance ...
    pub intensity: u32,
    /// ... within this period, or that instance is failed. Starts are
    /// counted per instance, a pool's included: a pool of 32 whose members
    /// each crash now and then is not failed because together they restart
    /// often; one member that crash-loops is.
    pub period: Duration,
    pub on_failure: OnFailure,
    /// An instance whose heartbeat is older than this is killed (and
    /// restarted if `forever`); `None` disables hang detection.
    pub hang_timeout: Option<Duration>,
    /// How long a stopping instance gets after the stop command before
    /// SIGTERM, and as long again before SIGKILL.
    pub stop_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // No stricter than systemd's default start limit: 5 starts in 10 s.
        RestartPolicy {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
            intensity: 5,
            period: Duration::from_secs(10),
            on_failure: OnFailure::StopDaemon,
            hang_timeout: None,
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Where an instance is in its life, from the supervisor's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Waiting to be spawned (at once, or after a backoff).
    Waiting {
        at: Instant,
    },
    Running {
        pid: Pid,
    },
    /// Its process is being stopped; `then` says what follows its exit.
    Stopping {
        pid: Pid,
        since: Instant,
        step: StopStep,
        then: AfterStop,
    },
    /// Exited and not to be restarted.
    Stopped,
    /// Scaled away and its process gone: it may be taken again by a scale up.
    Retired,
    /// Restarted too often.
    Failed,
}

/// How far a stop has escalated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Asked through its channel; SIGTERM follows after the stop timeout.
    Asked,
    /// Sent SIGTERM; SIGKILL follows after the stop timeout again.
    Termed,
    /// Sent SIGKILL: nothing is left to send, only the exit to wait for.
    Killed,
}

/// What becomes of an instance once its stopping process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterStop {
    /// Spawned again at once, whatever its restart policy (`restart`).
    Restart,
    /// Treated like a crash, by the restart policy (a hung instance killed).
    Recover,
    /// Retired (scaled down).
    Retire,
    /// Stopped (the daemon is going down).
    Stop,
}

impl InstanceState {
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            InstanceState::Running { pid } | InstanceState::Stopping { pid, .. } => Some(pid),
            InstanceState::Waiting { .. } | InstanceState::Stopped | InstanceState::Retired | InstanceState::Failed => {
                None
            }
        }
    }

    /// Whether the instance is scaled away, or will be once its process exits.
    pub fn is_retired(&self) -> bool {
        matches!(self, InstanceState::Retired | InstanceState::Stopping { then: AfterStop::Retire, .. })
    }
}

/// One process of a worker (one of a pool's).
#[derive(Clone, Debug)]
pub struct Instance {
    pub worker: usize,
    pub index: u32,
    pub state: InstanceState,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub started_at: Option<Instant>,
    /// This instance's starts within the policy's period: intensity is
    /// counted per instance, never per worker or pool.
    starts: VecDeque<Instant>,
    backoff: Duration,
}

/// Work for the daemon's loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Spawn instance `id` (an index into `instances()`); report the pid
    /// with `spawned`, or the failure with `spawn_failed`.
    Spawn(usize),
    /// Ask instance `id` to stop through its channel.
    RequestStop(usize),
    Signal(KillTarget, Signal),
    /// The daemon should stop (a non-forever worker exited, or one failed).
    StopDaemon(String),
}

/// Why `handle_exit` did not know a pid.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownPid(pub Pid);

impl fmt::Display for UnknownPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no worker has pid {}", self.0)
    }
}

/// What happens to one instance; every public input becomes one of these,
/// and [`Supervisor::step`] decides it for the instance's state.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The loop spawned it as this pid.
    Spawned(Pid),
    /// The loop could not spawn it.
    SpawnFailed,
    /// Its process exited.
    Exited(ExitStatus),
    /// Time has come to `now`; `hung` says whether its heartbeat is too old.
    Timeout { hung: bool },
    /// The daemon is going down (`stop_all`).
    StopAll,
    /// The `restart` command.
    Restart,
    /// Scaled down.
    Retire,
    /// Taken again by a scale up.
    Reuse,
}

pub struct Supervisor {
    specs: Vec<WorkerSpec>,
    policy: RestartPolicy,
    instances: Vec<Instance>,
    /// The daemon is going down: a mode of the whole supervisor, not of an
    /// instance. Nothing waiting is spawned from then on, and an instance
    /// that comes up anyway is stopped at once.
    stopping: bool,
    rng: SplitMix64,
    actions: VecDeque<Action>,
}

impl Supervisor {
    /// A supervisor for `specs`; `seed` feeds the backoff jitter.
    pub fn new(specs: Vec<WorkerSpec>, policy: RestartPolicy, seed: u64, now: Instant) -> Supervisor {
        let mut s = Supervisor {
            specs,
            policy,
            instances: Vec::new(),
            stopping: false,
            rng: SplitMix64::new(seed),
            actions: VecDeque::new(),
        };
        for w in 0..s.specs.len() {
            for index in 0..s.specs[w].instances {
                s.add_instance(w, index, now);
            }
        }
        s
    }

    fn add_instance(&mut self, worker: usize, index: u32, now: Instant) {
        let id = self.instances.len();
        self.instances.push(Instance {
            worker,
            index,
            state: InstanceState::Waiting { at: now },
            restarts: 0,
            last_exit: None,
            started_at: None,
            starts: VecDeque::new(),
            backoff: Duration::ZERO,
        });
        self.actions.push_back(Action::Spawn(id));
    }

    pub fn specs(&self) -> &[WorkerSpec] {
        &self.specs
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn instance(&self, id: usize) -> &Instance {
        &self.instances[id]
    }

    pub fn worker_index(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Instances of worker `w` that are not retired.
    pub fn instances_of(&self, w: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.instances.len())
            .filter(move |&i| self.instances[i].worker == w && !self.instances[i].state.is_retired())
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// How many worker processes there could be at once once worker `w` is
    /// scaled to `n` instances: those of the other workers that run or will,
    /// the `n`, and every retired instance whose process is still stopping.
    pub fn processes_after_scale(&self, w: usize, n: u32) -> usize {
        let others = self
            .instances
            .iter()
            .filter(|i| i.worker != w && !i.state.is_retired() && i.state != InstanceState::Failed);
        let stopping = self.instances.iter().filter(|i| i.state.is_retired() && i.state.pid().is_some());
        others.count() + stopping.count() + n as usize
    }

    /// Whether some instance still has a process.
    pub fn has_processes(&self) -> bool {
        self.instances.iter().any(|i| i.state.pid().is_some())
    }

    pub fn id_of_pid(&self, pid: Pid) -> Option<usize> {
        self.instances.iter().position(|i| i.state.pid() == Some(pid))
    }

    /// The next action to take, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The loop spawned instance `id` as `pid`.
    pub fn spawned(&mut self, id: usize, pid: Pid, now: Instant) {
        self.step(id, Event::Spawned(pid), now);
    }

    /// The loop could not spawn instance `id` (fork failed, no shared
    /// memory): it is tried again after a backoff, counted as a start.
    pub fn spawn_failed(&mut self, id: usize, now: Instant) {
        self.step(id, Event::SpawnFailed, now);
    }

    /// A child exited. Returns the instance it was, or `UnknownPid` for a
    /// child that is not a worker (an adopted orphan when running as PID 1).
    pub fn handle_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Result<usize, UnknownPid> {
        let id = self.id_of_pid(pid).ok_or(UnknownPid(pid))?;
        self.step(id, Event::Exited(status), now);
        Ok(id)
    }

    /// The earliest moment `handle_timeout` has something to do.
    pub fn poll_timeout(&self, heartbeat_deadlines: impl Fn(usize) -> Option<Instant>) -> Option<Instant> {
        let stop = self.policy.stop_timeout;
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(id, i)| match i.state {
                InstanceState::Waiting { at } => (!self.actions.contains(&Action::Spawn(id))).then_some(at),
                // A killed instance still gets a (needless) wake-up one stop
                // timeout after the SIGKILL's due time, as it always had.
                InstanceState::Stopping { since, step, .. } => Some(since + stop * (step.sent() + 1)),
                InstanceState::Running { .. } => heartbeat_deadlines(id),
                InstanceState::Stopped | InstanceState::Retired | InstanceState::Failed => None,
            })
            .min()
    }

    /// Time has come to `now`: spawn what waited out its backoff, escalate
    /// stops, kill what hangs. `hung(id)` says whether an instance's
    /// heartbeat is older than the hang timeout.
    pub fn handle_timeout(&mut self, now: Instant, hung: impl Fn(usize) -> bool) {
        for id in 0..self.instances.len() {
            let hung = matches!(self.instances[id].state, InstanceState::Running { .. }) && hung(id);
            self.step(id, Event::Timeout { hung }, now);
        }
    }

    /// Stops every instance: the daemon is going down. Nothing is restarted
    /// from now on.
    pub fn stop_all(&mut self, now: Instant) {
        self.stopping = true;
        for id in 0..self.instances.len() {
            self.step(id, Event::StopAll, now);
        }
        self.actions.retain(|a| !matches!(a, Action::Spawn(_)));
    }

    /// Restarts one instance: stop it; it comes back as soon as it exited.
    pub fn restart(&mut self, id: usize, now: Instant) {
        self.step(id, Event::Restart, now);
    }

    /// Resizes worker `w`'s pool to `n` instances.
    pub fn scale(&mut self, w: usize, n: u32, now: Instant) {
        let live: Vec<usize> = self.instances_of(w).collect();
        let have = live.len() as u32;
        if n > have {
            for _ in have..n {
                // A retired instance whose process is gone is taken again, so
                // that scaling up and down does not grow the table forever;
                // the pool's instances keep the lowest free indexes.
                let reusable = (0..self.instances.len())
                    .filter(|&i| self.instances[i].worker == w && self.instances[i].state == InstanceState::Retired)
                    .min_by_key(|&i| self.instances[i].index);
                match reusable {
                    Some(id) => self.step(id, Event::Reuse, now),
                    None => {
                        let index =
                            self.instances.iter().filter(|i| i.worker == w).map(|i| i.index + 1).max().unwrap_or(0);
                        self.add_instance(w, index, now);
                    }
                }
            }
        } else {
            for &id in live.iter().rev().take((have - n) as usize) {
                self.step(id, Event::Retire, now);
            }
        }
        self.specs[w].instances = n;
    }

    /// The supervisor's table: what `event` does to instance `id` in each
    /// state. Every pair is spelt out, so that a new state or event forces a
    /// decision for each of the others.
    fn step(&mut self, id: usize, event: Event, now: Instant) {
        use AfterStop as Then;
        use Event as E;
        use InstanceState as S;
        let stop_timeout = self.policy.stop_timeout;
        let daemon_stopping = self.stopping;
        let forever = self.specs[self.instances[id].worker].forever;
        let inst = &mut self.instances[id];
        match (inst.state, event) {
            // The answer to a spawn. Only a waiting instance is ever asked
            // for; an answer in another state takes the instance up all the
            // same (the loop did spawn a process), and stops it at once if
            // the daemon stops or the instance was retired meanwhile.
            (S::Waiting { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped | S::Failed, E::Spawned(pid)) => {
                self.start(id, pid, now);
                if daemon_stopping {
                    self.ask_stop(id, now, Then::Stop);
                }
            }
            (S::Retired, E::Spawned(pid)) => {
                self.start(id, pid, now);
                self.ask_stop(id, now, if daemon_stopping { Then::Stop } else { Then::Retire });
            }
            // A failed spawn counts as a start and is tried again after a
            // backoff, as s6 does, instead of taking the daemon down.
            (S::Waiting { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped | S::Failed, E::SpawnFailed) => {
                inst.starts.push_back(now);
                inst.last_exit = None;
                self.schedule_restart(id, now);
            }
            // Nothing to try again for an instance scaled away.
            (S::Retired, E::SpawnFailed) => {}

            // Exits. Only an instance with a process has a pid to exit with.
            (S::Running { .. } | S::Stopping { then: Then::Recover, .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                if daemon_stopping {
                    inst.state = S::Stopped;
                } else if !forever {
                    inst.state = S::Stopped;
                    let name = self.specs[inst.worker].name.clone();
                    self.actions.push_back(Action::StopDaemon(format!("worker {name} exited ({status})")));
                } else if crate::planted::active(crate::planted::Bug::NoRestart) {
                    inst.state = S::Stopped;
                } else {
                    self.schedule_restart(id, now);
                }
            }
            (S::Stopping { then: Then::Restart, .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                inst.restarts += 1;
                inst.state = S::Waiting { at: now };
                self.actions.push_back(Action::Spawn(id));
            }
            (S::Stopping { then: Then::Retire, .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                inst.state = S::Retired;
            }
            (S::Stopping { then: Then::Stop, .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                inst.state = S::Stopped;
            }
            (S::Waiting { .. } | S::Stopped | S::Retired | S::Failed, E::Exited(_)) => {
                unreachable!("handle_exit found instance {id} by a pid it does not have")
            }

            // Time.
            (S::Waiting { at }, E::Timeout { .. }) => {
                if at <= now && !daemon_stopping && !self.actions.contains(&Action::Spawn(id)) {
                    self.actions.push_back(Action::Spawn(id));
                }
            }
            (S::Running { pid }, E::Timeout { hung }) => {
                if hung && !crate::planted::active(crate::planted::Bug::NoHangKill) {
                    // Killed once, then waited for like a crash: the last
                    // escalation step, so that nothing signals it again.
                    inst.state = S::Stopping { pid, since: now, step: StopStep::Killed, then: Then::Recover };
                    self.actions.push_back(Action::Signal(KillTarget::Group(pid), Signal::Kill));
                }
            }
            (S::Stopping { pid, since, step, then }, E::Timeout { .. }) => {
                let next = match step {
                    StopStep::Asked => Some((StopStep::Termed, Signal::Term)),
                    StopStep::Termed => Some((StopStep::Killed, Signal::Kill)),
                    StopStep::Killed => None,
                };
                if let Some((next, sig)) = next {
                    if now >= since + stop_timeout * (step.sent() + 1) {
                        inst.state = S::Stopping { pid, since, step: next, then };
                        self.actions.push_back(Action::Signal(KillTarget::Group(pid), sig));
                    }
                }
            }
            (S::Stopped | S::Retired | S::Failed, E::Timeout { .. }) => {}

            // The daemon goes down: what runs is asked to stop, what waits
            // never starts, and what stops already is not to come back.
            (S::Running { .. }, E::StopAll) => self.ask_stop(id, now, Then::Stop),
            (S::Waiting { .. }, E::StopAll) => inst.state = S::Stopped,
            (S::Stopping { pid, since, step, then }, E::StopAll) => {
                let then = match then {
                    Then::Retire => Then::Retire,
                    Then::Restart | Then::Recover | Then::Stop => Then::Stop,
                };
                inst.state = S::Stopping { pid, since, step, then };
            }
            (S::Stopped | S::Retired | S::Failed, E::StopAll) => {}

            // The restart command, refused while the daemon stops.
            (S::Running { pid }, E::Restart) if !daemon_stopping => {
                inst.state = S::Stopping { pid, since: now, step: StopStep::Asked, then: Then::Restart };
                self.actions.push_back(Action::RequestStop(id));
            }
            (S::Stopped | S::Failed, E::Restart) if !daemon_stopping => {
                inst.starts.clear();
                inst.backoff = Duration::ZERO;
                inst.state = S::Waiting { at: now };
                self.actions.push_back(Action::Spawn(id));
            }
            (S::Running { .. } | S::Stopped | S::Failed, E::Restart) => {}
            // Already on its way up or down, or scaled away.
            (S::Waiting { .. } | S::Stopping { .. } | S::Retired, E::Restart) => {}

            // Scaled down.
            (S::Running { .. }, E::Retire) => self.ask_stop(id, now, Then::Retire),
            (S::Waiting { .. }, E::Retire) => {
                inst.state = S::Retired;
                self.actions.retain(|a| *a != Action::Spawn(id));
            }
            (S::Stopping { pid, since, step, .. }, E::Retire) => {
                inst.state = S::Stopping { pid, since, step, then: Then::Retire };
            }
            (S::Stopped | S::Failed | S::Retired, E::Retire) => inst.state = S::Retired,

            // Taken again by a scale up: a fresh start, its restart count kept.
            (S::Retired, E::Reuse) => {
                inst.starts.clear();
                inst.backoff = Duration::ZERO;
                inst.state = S::Waiting { at: now };
                self.actions.push_back(Action::Spawn(id));
            }
            (S::Waiting { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped | S::Failed, E::Reuse) => {
                unreachable!("scale reuses only retired instances, not instance {id}")
            }
        }
    }

    fn start(&mut self, id: usize, pid: Pid, now: Instant) {
        let inst = &mut self.instances[id];
        inst.state = InstanceState::Running { pid };
        inst.started_at = Some(now);
        inst.starts.push_back(now);
    }

    fn ask_stop(&mut self, id: usize, now: Instant, then: AfterStop) {
        if let InstanceState::Running { pid } = self.instances[id].state {
            self.instances[id].state = InstanceState::Stopping { pid, since: now, step: StopStep::Asked, then };
            self.actions.push_back(Action::RequestStop(id));
        }
    }

    fn schedule_restart(&mut self, id: usize, now: Instant) {
        let policy = self.policy.clone();
        let jitter = self.rng.next_u64();
        let inst = &mut self.instances[id];
        while inst.starts.front().is_some_and(|t| now.saturating_duration_since(*t) > policy.period) {
            inst.starts.pop_front();
        }
        if inst.starts.len() as u32 >= policy.intensity {
            inst.state = InstanceState::Failed;
            let name = &self.specs[inst.worker].name;
            if policy.on_failure == OnFailure::StopDaemon {
                self.actions.push_back(Action::StopDaemon(format!(
                    "worker {name} failed: {} starts within {:?}",
                    policy.intensity, policy.period
                )));
            }
            return;
        }
        let stable = inst.started_at.is_some_and(|t| now.saturating_duration_since(t) >= policy.stable_after);
        if stable {
            inst.backoff = Duration::ZERO;
        }
        // The first restart is immediate; later ones back off, with up to
        // half the backoff added as jitter so that a pool does not restart in
        // lockstep.
        let delay = if inst.backoff.is_zero() {
            Duration::ZERO
        } else {
            let half = inst.backoff.as_nanos() as u64 / 2;
            inst.backoff + Duration::from_nanos(if half == 0 { 0 } else { jitter % half })
        };
        inst.backoff =
            if inst.backoff.is_zero() { policy.backoff_initial } else { (inst.backoff * 2).min(policy.backoff_max) };
        inst.restarts += 1;
        inst.state = InstanceState::Waiting { at: now + delay };
        if delay.is_zero() {
            self.actions.push_back(Action::Spawn(id));
        }
    }
}

impl StopStep {
    /// How many escalations were sent before this step's deadline.
    fn sent(self) -> u32 {
        match self {
            StopStep::Asked => 0,
            StopStep::Termed => 1,
            StopStep::Killed => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(forever: bool) -> WorkerSpec {
        WorkerSpec { name: "w".into(), looptime: Duration::from_secs(1), forever, instances: 1 }
    }

    fn t(ms: u64) -> Instant {
        Instant(ms * 1_000_000)
    }

    /// One input to the supervisor in a test row.
    #[derive(Clone, Copy, Debug)]
    enum Ev {
        /// The loop answers instance `id`'s spawn with this pid.
        Spawned(usize, i32),
        SpawnFailed(usize),
        Exit(i32, ExitStatus),
        /// `handle_timeout` with no instance hung.
        Tick,
        /// `handle_timeout` with instance `id` hung.
        Hung(usize),
        StopAll,
        Restart(usize),
        /// `scale` of worker 0.
        Scale(u32),
    }
    use Ev::*;

    const KILLED: ExitStatus = ExitStatus::Signaled(9);
    const OK: ExitStatus = ExitStatus::Exited(0);

    fn show_action(a: &Action) -> String {
        match a {
            Action::Spawn(id) => format!("spawn {id}"),
            Action::RequestStop(id) => format!("ask {id}"),
            Action::Signal(KillTarget::Group(pid), Signal::Term) => format!("term {pid}"),
            Action::Signal(KillTarget::Group(pid), Signal::Kill) => format!("kill {pid}"),
            Action::Signal(target, sig) => format!("{sig} {target:?}"),
            Action::StopDaemon(why) => format!("stop daemon: {why}"),
        }
    }

    fn show_state(s: &InstanceState) -> String {
        match *s {
            InstanceState::Waiting { at } => format!("waiting@{:?}", Duration::from_nanos(at.0)),
            InstanceState::Running { pid } => format!("running {pid}"),
            InstanceState::Stopping { pid, step, then, .. } => {
                format!("stopping {pid} {step:?} then {then:?}").to_lowercase()
            }
            InstanceState::Stopped => "stopped".into(),
            InstanceState::Retired => "retired".into(),
            InstanceState::Failed => "failed".into(),
        }
    }

    /// Drives a supervisor of `workers` (default policy, created at 0 ms)
    /// through `rows`: each is (time in ms, the event, the actions it
    /// produced, the states of all instances after it and the next
    /// deadline). The first row's actions include those of `new`.
    fn check(workers: Vec<WorkerSpec>, rows: &[(u64, Ev, &str, &str)]) {
        let mut s = Supervisor::new(workers, RestartPolicy::default(), 1, t(0));
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &(ms, ev, actions, states) in rows {
            let now = t(ms);
            match ev {
                Spawned(id, pid) => s.spawned(id, Pid(pid), now),
                SpawnFailed(id) => s.spawn_failed(id, now),
                Exit(pid, status) => {
                    s.handle_exit(Pid(pid), status, now).unwrap();
                }
                Tick => s.handle_timeout(now, |_| false),
                Hung(id) => s.handle_timeout(now, |i| i == id),
                StopAll => s.stop_all(now),
                Restart(id) => s.restart(id, now),
                Scale(n) => s.scale(0, n, now),
            }
            // The deadline is read before the actions are taken: a queued
            // spawn is not waited for.
            let mut got_states: Vec<String> = s.instances().iter().map(|i| show_state(&i.state)).collect();
            if let Some(at) = s.poll_timeout(|_| None) {
                got_states.push(format!("next@{:?}", Duration::from_nanos(at.0)));
            }
            let got_actions: Vec<String> = std::iter::from_fn(|| s.poll_action()).map(|a| show_action(&a)).collect();
            got.push(format!("{ms} {ev:?} => [{}] {}", got_actions.join(", "), got_states.join("; ")));
            want.push(format!("{ms} {ev:?} => [{actions}] {states}"));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn exit_while_running_forever_restarts_at_once_then_backs_off() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (1, Exit(10, KILLED), "spawn 0", "waiting@1ms"),
                (1, Spawned(0, 11), "", "running 11"),
                (2, Exit(11, KILLED), "", "waiting@13.428519ms; next@13.428519ms"),
                (13, Tick, "", "waiting@13.428519ms; next@13.428519ms"),
                (14, Tick, "spawn 0", "waiting@13.428519ms"),
                (14, Spawned(0, 12), "", "running 12"),
            ],
        );
    }

    #[test]
    fn exit_while_running_not_forever_stops_the_daemon() {
        check(
            vec![spec(false)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (5, Exit(10, OK), "stop daemon: worker w exited (exit 0)", "stopped"),
                (6, Restart(0), "spawn 0", "waiting@6ms"),
            ],
        );
    }

    #[test]
    fn stop_all_escalates_to_term_then_kill_and_never_restarts() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (100, StopAll, "ask 0", "stopping 10 asked then stop; next@5.1s"),
                (5099, Tick, "", "stopping 10 asked then stop; next@5.1s"),
                (5100, Tick, "term 10", "stopping 10 termed then stop; next@10.1s"),
                (10100, Tick, "kill 10", "stopping 10 killed then stop; next@15.1s"),
                (15100, Tick, "", "stopping 10 killed then stop; next@15.1s"),
                (15101, Exit(10, KILLED), "", "stopped"),
                (15102, Restart(0), "", "stopped"),
            ],
        );
    }

    #[test]
    fn exit_while_stopping_at_each_step_is_final() {
        // Asked, termed and killed.
        for until in [0, 5100, 10100] {
            let mut rows = vec![
                (0, Tick, "spawn 0", "waiting@0ns".to_string()),
                (0, Spawned(0, 10), "", "running 10".into()),
                (100, StopAll, "ask 0", "stopping 10 asked then stop; next@5.1s".into()),
            ];
            if until >= 5100 {
                rows.push((5100, Tick, "term 10", "stopping 10 termed then stop; next@10.1s".into()));
            }
            if until >= 10100 {
                rows.push((10100, Tick, "kill 10", "stopping 10 killed then stop; next@15.1s".into()));
            }
            rows.push((until + 1, Exit(10, OK), "", "stopped".into()));
            let rows: Vec<_> = rows.iter().map(|(ms, ev, a, st)| (*ms, *ev, *a, st.as_str())).collect();
            check(vec![spec(true)], &rows);
        }
    }

    #[test]
    fn stop_all_in_every_state() {
        // Instance 0 runs, 1 restarts, 2 backs off, 3 is failed, 4 waits to
        // be spawned, 5 is retired on its way out.
        let mut pool = spec(true);
        pool.instances = 2;
        let mut rows = vec![(0, Tick, "spawn 0, spawn 1", "waiting@0ns; waiting@0ns".to_string())];
        rows.push((0, Spawned(0, 10), "", "running 10; waiting@0ns; next@0ns".into()));
        rows.push((0, Spawned(1, 11), "", "running 10; running 11".into()));
        rows.push((1, Restart(1), "ask 1", "running 10; stopping 11 asked then restart; next@5.001s".into()));
        rows.push((
            2,
            StopAll,
            "ask 0",
            "stopping 10 asked then stop; stopping 11 asked then stop; next@5.001s".into(),
        ));
        rows.push((3, Exit(11, OK), "", "stopping 10 asked then stop; stopped; next@5.002s".into()));
        rows.push((4, Exit(10, OK), "", "stopped; stopped".into()));
        rows.push((5, Restart(0), "", "stopped; stopped".into()));
        let rows: Vec<_> = rows.iter().map(|(ms, ev, a, st)| (*ms, *ev, *a, st.as_str())).collect();
        check(vec![pool], &rows);

        // Instance 0 is killed as hung, 1 backs off, 2 waits for the answer
        // to its spawn, which comes after the stop.
        check(
            vec![spec(true), spec(true), spec(true)],
            &[
                (0, Tick, "spawn 0, spawn 1, spawn 2", "waiting@0ns; waiting@0ns; waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10; waiting@0ns; waiting@0ns; next@0ns"),
                (0, Spawned(1, 11), "", "running 10; running 11; waiting@0ns; next@0ns"),
                (1, Exit(11, KILLED), "spawn 1", "running 10; waiting@1ms; waiting@0ns; next@0ns"),
                (1, Spawned(1, 12), "", "running 10; running 12; waiting@0ns; next@0ns"),
                (2, Exit(12, KILLED), "", "running 10; waiting@13.428519ms; waiting@0ns; next@0ns"),
                // A spawn taken but not answered is asked for again.
                (
                    3,
                    Hung(0),
                    "kill 10, spawn 2",
                    "stopping 10 killed then recover; waiting@13.428519ms; waiting@0ns; next@13.428519ms",
                ),
                (4, StopAll, "", "stopping 10 killed then stop; stopped; stopped; next@15.003s"),
                (20, Tick, "", "stopping 10 killed then stop; stopped; stopped; next@15.003s"),
                (21, Exit(10, KILLED), "", "stopped; stopped; stopped"),
                (22, Spawned(2, 13), "ask 2", "stopped; stopped; stopping 13 asked then stop; next@5.022s"),
                (23, Restart(2), "", "stopped; stopped; stopping 13 asked then stop; next@5.022s"),
            ],
        );
    }

    #[test]
    fn a_hung_instance_is_killed_once_and_restarted() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (50, Hung(0), "kill 10", "stopping 10 killed then recover; next@15.05s"),
                (60, Hung(0), "", "stopping 10 killed then recover; next@15.05s"),
                (61, Exit(10, KILLED), "spawn 0", "waiting@61ms"),
                (61, Spawned(0, 11), "", "running 11"),
            ],
        );
    }

    #[test]
    fn a_hung_instance_of_a_worker_not_forever_stops_the_daemon() {
        check(
            vec![spec(false)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (50, Hung(0), "kill 10", "stopping 10 killed then recover; next@15.05s"),
                (51, Exit(10, KILLED), "stop daemon: worker w exited (killed by SIGKILL)", "stopped"),
            ],
        );
    }

    #[test]
    fn restart_brings_back_even_a_non_forever_worker_once() {
        check(
            vec![spec(false)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (1, Restart(0), "ask 0", "stopping 10 asked then restart; next@5.001s"),
                (1, Restart(0), "", "stopping 10 asked then restart; next@5.001s"),
                (2, Exit(10, OK), "spawn 0", "waiting@2ms"),
                (2, Restart(0), "", "waiting@2ms; next@2ms"),
                (2, Spawned(0, 11), "", "running 11"),
            ],
        );
    }

    #[test]
    fn spawn_failures_back_off_and_count_as_starts() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, SpawnFailed(0), "spawn 0", "waiting@0ns"),
                (0, SpawnFailed(0), "", "waiting@11.428519ms; next@11.428519ms"),
                (15, Tick, "spawn 0", "waiting@11.428519ms"),
                (15, SpawnFailed(0), "", "waiting@37.89059ms; next@37.89059ms"),
                (39, Tick, "spawn 0", "waiting@37.89059ms"),
                (39, SpawnFailed(0), "", "waiting@80.780235ms; next@80.780235ms"),
                (84, Tick, "spawn 0", "waiting@80.780235ms"),
                (84, SpawnFailed(0), "stop daemon: worker w failed: 5 starts within 10s", "failed"),
                (90, Restart(0), "spawn 0", "waiting@90ms"),
                (90, Spawned(0, 10), "", "running 10"),
            ],
        );
    }

    #[test]
    fn stop_all_leaves_a_failed_instance_failed() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, SpawnFailed(0), "spawn 0", "waiting@0ns"),
                (0, SpawnFailed(0), "", "waiting@11.428519ms; next@11.428519ms"),
                (15, Tick, "spawn 0", "waiting@11.428519ms"),
                (15, SpawnFailed(0), "", "waiting@37.89059ms; next@37.89059ms"),
                (39, Tick, "spawn 0", "waiting@37.89059ms"),
                (39, SpawnFailed(0), "", "waiting@80.780235ms; next@80.780235ms"),
                (84, Tick, "spawn 0", "waiting@80.780235ms"),
                (84, SpawnFailed(0), "stop daemon: worker w failed: 5 starts within 10s", "failed"),
                (90, StopAll, "", "failed"),
                (91, Restart(0), "", "failed"),
            ],
        );
    }

    #[test]
    fn scale_retires_the_last_instances_and_reuses_them() {
        check(
            vec![spec(true)],
            &[
                (0, Tick, "spawn 0", "waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10"),
                (1, Scale(4), "spawn 1, spawn 2, spawn 3", "running 10; waiting@1ms; waiting@1ms; waiting@1ms"),
                (1, Spawned(1, 11), "", "running 10; running 11; waiting@1ms; waiting@1ms; next@1ms"),
                (1, Spawned(2, 12), "", "running 10; running 11; running 12; waiting@1ms; next@1ms"),
                // Instance 3 is retired before it was spawned, 2 while it
                // runs, 1 while it restarts.
                (
                    2,
                    Restart(1),
                    "ask 1",
                    "running 10; stopping 11 asked then restart; running 12; waiting@1ms; next@1ms",
                ),
                (
                    3,
                    Scale(1),
                    "ask 2",
                    "running 10; stopping 11 asked then retire; stopping 12 asked then retire; retired; next@5.002s",
                ),
                (
                    4,
                    Restart(2),
                    "",
                    "running 10; stopping 11 asked then retire; stopping 12 asked then retire; retired; next@5.002s",
                ),
                (5, Exit(12, OK), "", "running 10; stopping 11 asked then retire; retired; retired; next@5.002s"),
                (6, Exit(11, OK), "", "running 10; retired; retired; retired"),
                (7, Tick, "", "running 10; retired; retired; retired"),
                // The lowest indexes come back first.
                (8, Scale(3), "spawn 1, spawn 2", "running 10; waiting@8ms; waiting@8ms; retired"),
                (8, Spawned(1, 13), "", "running 10; running 13; waiting@8ms; retired; next@8ms"),
                (9, Scale(1), "ask 1", "running 10; stopping 13 asked then retire; retired; retired; next@5.009s"),
            ],
        );
    }

    #[test]
    fn scale_down_of_a_failed_instance_retires_it() {
        let mut pool = spec(true);
        pool.instances = 2;
        check(
            vec![pool],
            &[
                (0, Tick, "spawn 0, spawn 1", "waiting@0ns; waiting@0ns"),
                (0, Spawned(0, 10), "", "running 10; waiting@0ns; next@0ns"),
                (0, SpawnFailed(1), "spawn 1", "running 10; waiting@0ns"),
                (0, SpawnFailed(1), "", "running 10; waiting@11.428519ms; next@11.428519ms"),
                (1, Scale(1), "", "running 10; retired"),
                (20, Tick, "", "running 10; retired"),
                (21, Scale(2), "spawn 1", "running 10; waiting@21ms"),
            ],
        );
    }

    #[test]
    fn scaling_up_and_down_keeps_the_table_small() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        let mut sim = Sim::default();
        sim.answer(&mut s, t(0));
        for round in 0..5 {
            s.scale(0, 3, t(4 + round));
            sim.answer(&mut s, t(4 + round));
            s.scale(0, 1, t(5 + round));
            sim.answer(&mut s, t(5 + round));
            for pid in sim.pids.split_off(1) {
                s.handle_exit(pid, OK, t(5 + round)).unwrap();
            }
        }
        assert_eq!(s.instances().len(), 3, "scaling up and down reuses retired instances");
    }

    /// The daemon's loop in virtual time: spawns what the supervisor asks
    /// for, and remembers the pids.
    #[derive(Default)]
    struct Sim {
        next_pid: i32,
        pids: Vec<Pid>,
        stop_daemon: Option<String>,
    }

    impl Sim {
        fn answer(&mut self, s: &mut Supervisor, now: Instant) {
            while let Some(a) = s.poll_action() {
                match a {
                    Action::Spawn(id) => {
                        self.next_pid += 1;
                        let pid = Pid(100 + self.next_pid);
                        s.spawned(id, pid, now);
                        self.pids.push(pid);
                    }
                    Action::StopDaemon(why) => {
                        self.stop_daemon.get_or_insert(why);
                    }
                    Action::RequestStop(_) | Action::Signal(..) => {}
                }
            }
        }

        /// Kills instance `id`'s process if it has one, as SIGKILL would.
        fn kill(&mut self, s: &mut Supervisor, id: usize, now: Instant) {
            if let Some(pid) = s.instance(id).state.pid() {
                self.pids.retain(|&p| p != pid);
                s.handle_exit(pid, KILLED, now).unwrap();
            }
            self.answer(s, now);
        }

        /// Advances virtual time to `until`, waking at every deadline.
        fn run_until(&mut self, s: &mut Supervisor, until: Instant) {
            while let Some(at) = s.poll_timeout(|_| None).filter(|&at| at <= until) {
                s.handle_timeout(at, |_| false);
                self.answer(s, at);
            }
        }
    }

    #[test]
    fn a_pool_of_32_killed_round_robin_every_200_ms_for_60_s_is_never_failed() {
        let mut pool = spec(true);
        pool.instances = 32;
        let mut s = Supervisor::new(vec![pool], RestartPolicy::default(), 1, t(0));
        let mut sim = Sim::default();
        sim.answer(&mut s, t(0));
        let mut kills = 0;
        for k in 1..=300u64 {
            let now = t(k * 200);
            sim.run_until(&mut s, now);
            let id = (k as usize - 1) % 32;
            if s.instance(id).state.pid().is_some() {
                kills += 1;
            }
            sim.kill(&mut s, id, now);
            assert!(
                s.instances().iter().all(|i| i.state != InstanceState::Failed),
                "failed at {k}: {:?}",
                s.instance(id)
            );
            assert_eq!(sim.stop_daemon, None);
        }
        assert!(kills > 250, "most kills found a process: {kills}");
        assert!(s.instances().iter().all(|i| i.restarts >= 8));
    }

    #[test]
    fn a_single_instance_killed_six_times_within_10_s_is_failed() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        let mut sim = Sim::default();
        sim.answer(&mut s, t(0));
        for k in 1..=6u64 {
            let now = t(k * 1500);
            sim.run_until(&mut s, now);
            sim.kill(&mut s, 0, now);
        }
        // The fifth kill already fails it: five starts within 10 s.
        assert_eq!(s.instance(0).state, InstanceState::Failed);
        assert_eq!(s.instance(0).restarts, 4);
        assert_eq!(sim.stop_daemon.as_deref(), Some("worker w failed: 5 starts within 10s"));
        assert!(sim.pids.is_empty());
    }
}
