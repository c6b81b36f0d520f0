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
//! than `intensity` starts within `period` mark the instance failed, and then
//! the daemon stops, or keeps running without it, as configured.

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
    /// At most this many starts ...
    pub intensity: u32,
    /// ... within this period, or the instance is failed.
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
    /// Asked to stop; `stage` counts the escalations sent so far.
    Stopping {
        pid: Pid,
        since: Instant,
        stage: u8,
    },
    /// Exited and not to be restarted.
    Stopped,
    /// Restarted too often.
    Failed,
}

impl InstanceState {
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            InstanceState::Running { pid } | InstanceState::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
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
    starts: VecDeque<Instant>,
    backoff: Duration,
    /// Set when the instance should not come back once it exits (scaled down).
    retiring: bool,
    /// Set by `restart`: the instance comes back at once when it exits,
    /// whatever its restart policy.
    restarting: bool,
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

pub struct Supervisor {
    specs: Vec<WorkerSpec>,
    policy: RestartPolicy,
    instances: Vec<Instance>,
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
            retiring: false,
            restarting: false,
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
        (0..self.instances.len()).filter(move |&i| self.instances[i].worker == w && !self.instances[i].retiring)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether some instance still has a process.
    /// How many worker processes there could be at once once worker `w` is
    /// scaled to `n` instances: those of the other workers that run or will,
    /// the `n`, and every retired instance whose process is still stopping.
    pub fn processes_after_scale(&self, w: usize, n: u32) -> usize {
        let others = self.instances.iter().filter(|i| i.worker != w && !i.retiring && i.state != InstanceState::Failed);
        let stopping = self.instances.iter().filter(|i| i.retiring && i.state.pid().is_some());
        others.count() + stopping.count() + n as usize
    }

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
        let inst = &mut self.instances[id];
        inst.state = InstanceState::Running { pid };
        inst.started_at = Some(now);
        inst.starts.push_back(now);
        if self.stopping || inst.retiring {
            self.request_stop(id, now);
        }
    }

    /// The loop could not spawn instance `id` (fork failed, no shared
    /// memory): it is tried again after a backoff, counted as a start.
    pub fn spawn_failed(&mut self, id: usize, now: Instant) {
        let inst = &mut self.instances[id];
        inst.starts.push_back(now);
        inst.last_exit = None;
        self.schedule_restart(id, now);
    }

    /// A child exited. Returns the instance it was, or `UnknownPid` for a
    /// child that is not a worker (an adopted orphan when running as PID 1).
    pub fn handle_exit(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Result<usize, UnknownPid> {
        let id = self.id_of_pid(pid).ok_or(UnknownPid(pid))?;
        let inst = &mut self.instances[id];
        inst.last_exit = Some(status);
        let forever = self.specs[inst.worker].forever;
        if self.stopping || inst.retiring {
            inst.state = InstanceState::Stopped;
            return Ok(id);
        }
        if std::mem::take(&mut inst.restarting) {
            inst.restarts += 1;
            inst.state = InstanceState::Waiting { at: now };
            self.actions.push_back(Action::Spawn(id));
            return Ok(id);
        }
        if !forever {
            inst.state = InstanceState::Stopped;
            let name = self.specs[inst.worker].name.clone();
            self.actions.push_back(Action::StopDaemon(format!("worker {name} exited ({status})")));
            return Ok(id);
        }
        if crate::planted::active(crate::planted::Bug::NoRestart) {
            inst.state = InstanceState::Stopped;
            return Ok(id);
        }
        self.schedule_restart(id, now);
        Ok(id)
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

    /// The earliest moment `handle_timeout` has something to do.
    pub fn poll_timeout(&self, heartbeat_deadlines: impl Fn(usize) -> Option<Instant>) -> Option<Instant> {
        let stop = self.policy.stop_timeout;
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(id, i)| match i.state {
                InstanceState::Waiting { at } if !self.actions.contains(&Action::Spawn(id)) => Some(at),
                InstanceState::Stopping { since, stage, .. } => Some(since + stop * (u32::from(stage) + 1)),
                InstanceState::Running { .. } => heartbeat_deadlines(id),
                _ => None,
            })
            .min()
    }

    /// Time has come to `now`: spawn what waited out its backoff, escalate
    /// stops, kill what hangs. `hung(id)` says whether an instance's
    /// heartbeat is older than the hang timeout.
    pub fn handle_timeout(&mut self, now: Instant, hung: impl Fn(usize) -> bool) {
        let stop = self.policy.stop_timeout;
        for id in 0..self.instances.len() {
            match self.instances[id].state {
                InstanceState::Waiting { at }
                    if at <= now && !self.stopping && !self.actions.contains(&Action::Spawn(id)) =>
                {
                    self.actions.push_back(Action::Spawn(id));
                }
                InstanceState::Stopping { pid, since, stage } => {
                    let due = since + stop * (u32::from(stage) + 1);
                    if now >= due && stage < 2 {
                        let sig = if stage == 0 { Signal::Term } else { Signal::Kill };
                        self.instances[id].state = InstanceState::Stopping { pid, since, stage: stage + 1 };
                        self.actions.push_back(Action::Signal(KillTarget::Group(pid), sig));
                    }
                }
                InstanceState::Running { pid }
                    if hung(id) && !crate::planted::active(crate::planted::Bug::NoHangKill) =>
                {
                    // Killed once, then waited for like a crash: the last
                    // escalation stage, so that nothing signals it again.
                    self.instances[id].state = InstanceState::Stopping { pid, since: now, stage: 2 };
                    self.actions.push_back(Action::Signal(KillTarget::Group(pid), Signal::Kill));
                }
                _ => {}
            }
        }
    }

    /// Stops every instance: the daemon is going down. Nothing is restarted
    /// from now on.
    pub fn stop_all(&mut self, now: Instant) {
        self.stopping = true;
        for id in 0..self.instances.len() {
            match self.instances[id].state {
                InstanceState::Running { .. } => self.request_stop(id, now),
                InstanceState::Waiting { .. } => self.instances[id].state = InstanceState::Stopped,
                _ => {}
            }
        }
        self.actions.retain(|a| !matches!(a, Action::Spawn(_)));
    }

    fn request_stop(&mut self, id: usize, now: Instant) {
        if let InstanceState::Running { pid } = self.instances[id].state {
            self.instances[id].state = InstanceState::Stopping { pid, since: now, stage: 0 };
            self.actions.push_back(Action::RequestStop(id));
        }
    }

    /// Restarts one instance: stop it; it comes back as soon as it exited.
    pub fn restart(&mut self, id: usize, now: Instant) {
        if self.stopping || self.instances[id].retiring {
            return;
        }
        match self.instances[id].state {
            InstanceState::Running { pid } => {
                self.instances[id].restarting = true;
                self.instances[id].state = InstanceState::Stopping { pid, since: now, stage: 0 };
                self.actions.push_back(Action::RequestStop(id));
            }
            InstanceState::Failed | InstanceState::Stopped => {
                let inst = &mut self.instances[id];
                inst.starts.clear();
                inst.backoff = Duration::ZERO;
                inst.state = InstanceState::Waiting { at: now };
                self.actions.push_back(Action::Spawn(id));
            }
            _ => {}
        }
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
                    .filter(|&i| {
                        let inst = &self.instances[i];
                        inst.worker == w && inst.retiring && inst.state == InstanceState::Stopped
                    })
                    .min_by_key(|&i| self.instances[i].index);
                match reusable {
                    Some(id) => {
                        let inst = &mut self.instances[id];
                        inst.retiring = false;
                        inst.restarting = false;
                        inst.starts.clear();
                        inst.backoff = Duration::ZERO;
                        inst.state = InstanceState::Waiting { at: now };
                        self.actions.push_back(Action::Spawn(id));
                    }
                    None => {
                        let index =
                            self.instances.iter().filter(|i| i.worker == w).map(|i| i.index + 1).max().unwrap_or(0);
                        self.add_instance(w, index, now);
                    }
                }
            }
        } else {
            for &id in live.iter().rev().take((have - n) as usize) {
                self.instances[id].retiring = true;
                match self.instances[id].state {
                    InstanceState::Running { .. } => self.request_stop(id, now),
                    InstanceState::Waiting { .. } => {
                        self.instances[id].state = InstanceState::Stopped;
                        self.actions.retain(|a| *a != Action::Spawn(id));
                    }
                    _ => {}
                }
            }
        }
        self.specs[w].instances = n;
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

    fn start(s: &mut Supervisor, pid: i32, now: Instant) -> usize {
        match s.poll_action() {
            Some(Action::Spawn(id)) => {
                s.spawned(id, Pid(pid), now);
                id
            }
            other => panic!("expected a spawn, got {other:?}"),
        }
    }

    #[test]
    fn forever_worker_restarts_at_once_then_backs_off() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.handle_exit(Pid(10), ExitStatus::Signaled(9), t(1)).unwrap();
        start(&mut s, 11, t(1));
        s.handle_exit(Pid(11), ExitStatus::Signaled(9), t(2)).unwrap();
        assert_eq!(s.poll_action(), None, "the second restart in a row waits");
        let at = s.poll_timeout(|_| None).unwrap();
        assert!(at >= t(12) && at <= t(17), "backoff of 10 ms plus jitter, got {at}");
        s.handle_timeout(at, |_| false);
        start(&mut s, 12, at);
        assert_eq!(s.instance(0).restarts, 2);
    }

    #[test]
    fn too_many_starts_fail_the_worker_and_stop_the_daemon() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        let mut now = t(0);
        let mut pid = 10;
        start(&mut s, pid, now);
        loop {
            s.handle_exit(Pid(pid), ExitStatus::Exited(1), now).unwrap();
            if let InstanceState::Failed = s.instance(0).state {
                break;
            }
            if let Some(at) = s.poll_timeout(|_| None) {
                now = now.max(at);
                s.handle_timeout(now, |_| false);
            }
            pid += 1;
            start(&mut s, pid, now);
            assert!(pid < 20, "never failed");
        }
        assert!(matches!(s.poll_action(), Some(Action::StopDaemon(_))));
        assert_eq!(pid - 10 + 1, 5, "five starts within the period");
    }

    #[test]
    fn a_non_forever_exit_stops_the_daemon() {
        let mut s = Supervisor::new(vec![spec(false)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.handle_exit(Pid(10), ExitStatus::Exited(0), t(5)).unwrap();
        assert!(matches!(s.poll_action(), Some(Action::StopDaemon(_))));
        assert_eq!(s.instance(0).state, InstanceState::Stopped);
    }

    #[test]
    fn stopping_escalates_to_term_then_kill_and_never_restarts() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.stop_all(t(100));
        assert_eq!(s.poll_action(), Some(Action::RequestStop(0)));
        let at = s.poll_timeout(|_| None).unwrap();
        assert_eq!(at, t(5100));
        s.handle_timeout(at, |_| false);
        assert_eq!(s.poll_action(), Some(Action::Signal(KillTarget::Group(Pid(10)), Signal::Term)));
        s.handle_timeout(t(10100), |_| false);
        assert_eq!(s.poll_action(), Some(Action::Signal(KillTarget::Group(Pid(10)), Signal::Kill)));
        s.handle_exit(Pid(10), ExitStatus::Signaled(9), t(10101)).unwrap();
        assert_eq!(s.poll_action(), None);
        assert!(!s.has_processes());
    }

    #[test]
    fn a_hung_instance_is_killed_once_and_restarted() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.handle_timeout(t(50), |_| true);
        assert_eq!(s.poll_action(), Some(Action::Signal(KillTarget::Group(Pid(10)), Signal::Kill)));
        s.handle_timeout(t(60), |_| true);
        assert_eq!(s.poll_action(), None, "killed once");
        s.handle_exit(Pid(10), ExitStatus::Signaled(9), t(61)).unwrap();
        start(&mut s, 11, t(61));
    }

    #[test]
    fn restart_brings_back_even_a_non_forever_worker_once() {
        let mut s = Supervisor::new(vec![spec(false)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.restart(0, t(1));
        assert_eq!(s.poll_action(), Some(Action::RequestStop(0)));
        s.handle_exit(Pid(10), ExitStatus::Exited(0), t(2)).unwrap();
        start(&mut s, 11, t(2));
        assert_eq!(s.poll_action(), None, "one spawn, and the daemon goes on");
        assert_eq!(s.instance(0).restarts, 1);
    }

    #[test]
    fn scale_adds_and_retires_instances() {
        let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
        start(&mut s, 10, t(0));
        s.scale(0, 3, t(1));
        start(&mut s, 11, t(1));
        start(&mut s, 12, t(1));
        assert_eq!(s.instances_of(0).count(), 3);
        s.scale(0, 1, t(2));
        assert_eq!(s.poll_action(), Some(Action::RequestStop(2)));
        assert_eq!(s.poll_action(), Some(Action::RequestStop(1)));
        s.handle_exit(Pid(12), ExitStatus::Exited(0), t(3)).unwrap();
        assert_eq!(s.poll_action(), None, "a retired instance is not restarted");
        assert_eq!(s.instances_of(0).count(), 1);
        s.handle_exit(Pid(11), ExitStatus::Exited(0), t(3)).unwrap();
        for round in 0..5 {
            s.scale(0, 3, t(4 + round));
            start(&mut s, 20, t(4 + round));
            start(&mut s, 21, t(4 + round));
            s.scale(0, 1, t(5 + round));
            while s.poll_action().is_some() {}
            s.handle_exit(Pid(20), ExitStatus::Exited(0), t(5 + round)).unwrap();
            s.handle_exit(Pid(21), ExitStatus::Exited(0), t(5 + round)).unwrap();
        }
        assert_eq!(s.instances().len(), 3, "scaling up and down reuses retired instances");
    }
}
