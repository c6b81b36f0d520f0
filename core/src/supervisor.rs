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

mod backoff;
mod policy;
mod rollout;
mod state;

pub use policy::{OnFailure, Restart, RestartPolicy, WorkerSpec, DEFAULT_RELOAD_TIMEOUT};
pub use rollout::{Replaced, RolloutNote, RolloutRefused};
pub use state::{AfterStop, Instance, InstanceState, StopStep};

/// Work for the daemon's loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Spawn instance `id` (an index into `instances()`); report the pid
    /// with `spawned`, or the failure with `spawn_failed`.
    Spawn(usize),
    /// Ask instance `id` to stop through its channel.
    RequestStop(usize),
    /// Send this signal to this process or group.
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
    /// The loop read it ready (a reload's new instance).
    Ready,
    /// A reload's new instance is ready to take its place.
    Replace,
}

/// The supervisor: every worker instance's state, what to do next, and
/// when. Pure: the daemon's loop feeds it exits and time and carries out
/// the actions it returns.
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
    /// The rolling reloads under way, by worker index: at most one each.
    rollouts: std::collections::BTreeMap<usize, rollout::Rollout>,
    /// What the reloads did, for the loop to tell (events, answers).
    notes: VecDeque<RolloutNote>,
    /// Reloads' new instances that failed, and why: the table records
    /// them, the rollouts act on them.
    join_failures: Vec<(usize, String)>,
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
            rollouts: Default::default(),
            notes: VecDeque::new(),
            join_failures: Vec::new(),
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

    /// The installed workers.
    pub fn specs(&self) -> &[WorkerSpec] {
        &self.specs
    }

    /// The restart policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Every instance, retired ones included (an id is an index here).
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Instance `id`.
    pub fn instance(&self, id: usize) -> &Instance {
        &self.instances[id]
    }

    /// The index of the worker called `name`.
    pub fn worker_index(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// The members of worker `w`'s pool: its instances that are neither
    /// retired nor a reload's new ones that are not ready yet.
    pub fn instances_of(&self, w: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.instances.len()).filter(move |&i| self.instances[i].worker == w && self.instances[i].state.is_member())
    }

    /// Whether the daemon is stopping: nothing new is started.
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

    /// The instance whose process is `pid`.
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
        self.drive_rollouts(now);
    }

    /// A child exited. Returns the instance it was, or `UnknownPid` for a
    /// child that is not a worker (an adopted orphan when running as PID 1).
    pub fn handle_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Result<usize, UnknownPid> {
        let id = self.id_of_pid(pid).ok_or(UnknownPid(pid))?;
        self.step(id, Event::Exited(status), now);
        self.drive_rollouts(now);
        Ok(id)
    }

    /// The earliest moment `handle_timeout` has something to do.
    pub fn poll_timeout(&self, heartbeat_deadlines: impl Fn(usize) -> Option<Instant>) -> Option<Instant> {
        let stop = self.policy.stop_timeout;
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(id, i)| match i.state {
                InstanceState::Joining { pid, since } => {
                    let ready_by = pid.map(|_| since + self.specs[i.worker].reload_timeout);
                    ready_by.into_iter().chain(pid.and_then(|_| heartbeat_deadlines(id))).min()
                }
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
            let with_process = matches!(
                self.instances[id].state,
                InstanceState::Running { .. } | InstanceState::Joining { pid: Some(_), .. }
            );
            let hung = with_process && hung(id);
            self.step(id, Event::Timeout { hung }, now);
        }
        self.drive_rollouts(now);
    }

    /// Stops every instance: the daemon is going down. Nothing is restarted
    /// from now on.
    pub fn stop_all(&mut self, now: Instant) {
        self.stopping = true;
        for id in 0..self.instances.len() {
            self.step(id, Event::StopAll, now);
        }
        self.actions.retain(|a| !matches!(a, Action::Spawn(_)));
        self.abandon_rollouts("the daemon is stopping");
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
        let restart = self.specs[self.instances[id].worker].restart;
        let reload_timeout = self.specs[self.instances[id].worker].reload_timeout;
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
            // A reload's new instance spins up until it reads ready; its
            // start is counted as any other.
            (S::Joining { .. }, E::Spawned(pid)) => {
                self.start(id, pid, now);
                self.instances[id].state = S::Joining { pid: Some(pid), since: now };
                if daemon_stopping {
                    self.ask_stop(id, now, Then::Stop);
                }
            }
            // A failed spawn counts as a start and is tried again after a
            // backoff, as s6 does, instead of taking the daemon down.
            (S::Waiting { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped | S::Failed, E::SpawnFailed) => {
                inst.starts.push_back(now);
                inst.last_exit = None;
                self.schedule_restart(id, now);
            }
            // Nothing to try again for an instance scaled away; a reload's
            // new instance that cannot spawn fails the reload.
            (S::Retired, E::SpawnFailed) => {}
            (S::Joining { .. }, E::SpawnFailed) => {
                inst.state = S::Retired;
                self.join_failures.push((id, "cannot be spawned".into()));
            }

            // Exits. Only an instance with a process has a pid to exit with.
            (S::Running { .. } | S::Stopping { then: Then::Recover, .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                if daemon_stopping {
                    inst.state = S::Stopped;
                } else if restart == Restart::Never {
                    inst.state = S::Stopped;
                    let name = self.specs[inst.worker].name.clone();
                    self.actions.push_back(Action::StopDaemon(format!("worker {name} exited ({status})")));
                } else if restart == Restart::OnFailure && status == ExitStatus::Exited(0) {
                    // Done, and nothing went wrong.
                    inst.state = S::Stopped;
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
            // A reload's new instance that exits before it is ready fails
            // the reload; its entry is free again.
            (S::Joining { .. }, E::Exited(status)) => {
                inst.last_exit = Some(status);
                inst.state = S::Retired;
                self.join_failures.push((id, format!("exited before it was ready ({status})")));
            }
            (S::Stopping { then: Then::Retire | Then::Replace, .. }, E::Exited(status)) => {
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
            // A new instance that hangs in its spinup is killed, as any
            // other would be, and fails the reload.
            (S::Joining { pid: Some(pid), .. }, E::Timeout { hung: true }) => {
                inst.state = S::Stopping { pid, since: now, step: StopStep::Killed, then: Then::Retire };
                self.actions.push_back(Action::Signal(KillTarget::Group(pid), Signal::Kill));
                self.join_failures.push((id, "hung before it was ready".into()));
            }
            (S::Joining { pid: Some(pid), since }, E::Timeout { hung: false }) => {
                if now >= since + reload_timeout {
                    inst.state = S::Stopping { pid, since: now, step: StopStep::Asked, then: Then::Retire };
                    self.actions.push_back(Action::RequestStop(id));
                    self.join_failures.push((id, format!("not ready within {reload_timeout:?}")));
                }
            }
            (S::Joining { pid: None, .. } | S::Stopped | S::Retired | S::Failed, E::Timeout { .. }) => {}

            // The daemon goes down: what runs is asked to stop, what waits
            // never starts, and what stops already is not to come back.
            (S::Running { .. }, E::StopAll) => self.ask_stop(id, now, Then::Stop),
            (S::Waiting { .. }, E::StopAll) => inst.state = S::Stopped,
            (S::Joining { pid: Some(_), .. }, E::StopAll) => self.ask_stop(id, now, Then::Stop),
            (S::Joining { pid: None, .. }, E::StopAll) => inst.state = S::Retired,
            (S::Stopping { pid, since, step, then }, E::StopAll) => {
                let then = match then {
                    Then::Retire | Then::Replace => Then::Retire,
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
            // Already on its way up or down, or scaled away (a worker under
            // reload is refused a restart before it gets here).
            (S::Waiting { .. } | S::Joining { .. } | S::Stopping { .. } | S::Retired, E::Restart) => {}

            // Scaled down.
            // (A reload gives up on its new instance the same way.)
            (S::Running { .. } | S::Joining { pid: Some(_), .. }, E::Retire) => self.ask_stop(id, now, Then::Retire),
            (S::Waiting { .. } | S::Joining { pid: None, .. }, E::Retire) => {
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
            (
                S::Waiting { .. } | S::Joining { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped | S::Failed,
                E::Reuse,
            ) => {
                unreachable!("scale reuses only retired instances, not instance {id}")
            }

            // A reload's new instance is ready: a member of its pool now.
            (S::Joining { pid: Some(pid), .. }, E::Ready) => inst.state = S::Running { pid },
            (
                S::Joining { pid: None, .. }
                | S::Waiting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Stopped
                | S::Retired
                | S::Failed,
                E::Ready,
            ) => {}

            // Its replacement is ready: stopped gracefully, then retired. One
            // that crashed meanwhile is not started again; one that stops
            // already is retired once it exited.
            (S::Running { .. }, E::Replace) => self.ask_stop(id, now, Then::Replace),
            (S::Waiting { .. }, E::Replace) => {
                inst.state = S::Retired;
                self.actions.retain(|a| *a != Action::Spawn(id));
            }
            (S::Stopping { pid, since, step, then }, E::Replace) => {
                let then = if then == Then::Stop { Then::Stop } else { Then::Replace };
                inst.state = S::Stopping { pid, since, step, then };
            }
            (S::Stopped | S::Failed | S::Retired, E::Replace) => inst.state = S::Retired,
            (S::Joining { .. }, E::Replace) => {}
        }
    }

    fn start(&mut self, id: usize, pid: Pid, now: Instant) {
        let inst = &mut self.instances[id];
        inst.state = InstanceState::Running { pid };
        inst.started_at = Some(now);
        inst.starts.push_back(now);
    }

    fn ask_stop(&mut self, id: usize, now: Instant, then: AfterStop) {
        if let InstanceState::Running { pid } | InstanceState::Joining { pid: Some(pid), .. } = self.instances[id].state
        {
            self.instances[id].state = InstanceState::Stopping { pid, since: now, step: StopStep::Asked, then };
            self.actions.push_back(Action::RequestStop(id));
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
mod tests;
