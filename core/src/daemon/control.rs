//! `Ctl`, the handle on the daemon that RPC methods and event listeners get
//! (the built-in `daemon.*` and `worker.*` methods use it too; they live in
//! `builtins`).
//!
//! `Ctl` never performs I/O. What a method asks of the daemon — stop, send a
//! command to a worker, raise an event — is recorded here and carried out by
//! the loop after the method returns, so that methods stay plain functions
//! and the loop stays the only place that touches the `Os`. A method that
//! must wait for a worker answers with `Reply::Deferred`; the loop completes
//! the answer when the worker acknowledges.

use std::collections::{BTreeMap, BTreeSet};

use forkd_os::{ExitStatus, Instant, Pid};
use serde_json::{json, Value};

use crate::event::Event;
use crate::rpc::{DeferId, Reply, RpcError};
use crate::supervisor::{Instance, InstanceState, Supervisor};
use crate::worker::{Command, WorkerState};

/// forkd's error codes: the standard ones, forkd's own server errors
/// (JSON-RPC reserves -32000..-32099 for them), their table, and how an
/// error message quotes a client's input.
pub mod codes {
    pub use crate::rpc::codes::{
        quote, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, LIMIT, MAX_QUOTE, METHOD_NOT_FOUND, PARSE_ERROR,
        RELOADING, STOPPING, TABLE, TOO_MANY_WORKERS, UNAUTHORIZED, UNKNOWN_WORKER, UPGRADE_FAILED, WORKER_ERROR,
        WORKER_NOT_RUNNING,
    };
}

/// What the daemon tells about itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Info {
    /// The daemon's process id (after `-d`, the detached process's).
    pub pid: Pid,
    /// The daemon's one-line description, as configured.
    pub description: String,
    /// The daemon's own version, as configured.
    pub version: String,
    /// The address it listens on, as `unix://…` or `tcp://…`.
    pub address: String,
    /// When its loop started, on the `Os` monotonic clock.
    pub started: Instant,
}

/// A command a method asked to send to a worker instance.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub instance: usize,
    pub command: Command,
    pub join: u64,
}

/// An answer that waits for several instances' acknowledgements.
#[derive(Debug)]
pub(crate) struct Join {
    pub defer: DeferId,
    /// How the answer is made of the instances' acknowledgements.
    pub kind: JoinKind,
    pub waiting: BTreeSet<usize>,
    /// Each instance's outcome, by (worker name, instance number): the
    /// order of the answer.
    pub results: BTreeMap<(String, u32), Result<Value, InstanceError>>,
}

/// How a join answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinKind {
    /// Pause or resume of every worker: one entry per instance, each
    /// saying whether it acted (an instance's failure is in its entry).
    Every,
    /// Pause or resume of one worker: one entry per instance; any failure
    /// is the call's error.
    Named,
    /// A custom message: the worker's own answer.
    Answer,
}

/// Why an instance did not act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InstanceError {
    NotRunning(String),
    Worker(String),
}

/// The handle on the daemon that methods and listeners act through.
pub struct Ctl {
    pub(crate) info: Info,
    pub(crate) now: Instant,
    pub(crate) sup: Supervisor,
    /// Per instance: its state as last read from its channel, its loop count.
    pub(crate) views: Vec<InstanceView>,
    pub(crate) stop: Option<String>,
    pub(crate) reap: bool,
    pub(crate) reopen_log: bool,
    pub(crate) outgoing: Vec<Outgoing>,
    pub(crate) joins: BTreeMap<u64, Join>,
    pub(crate) next_join: u64,
    /// Upgrades asked for since the loop last looked: each with the
    /// deferred answer of its caller (none for a signal).
    pub(crate) upgrades: Vec<Option<DeferId>>,
    pub(crate) next_defer: u64,
    /// Deferred answers ready for the loop to deliver.
    pub(crate) completions: Vec<(DeferId, Result<Value, RpcError>)>,
    pub(crate) events: Vec<Event>,
    /// The connection whose request is being dispatched.
    pub(crate) current_conn: u64,
    pub(crate) routes: BTreeMap<DeferId, u64>,
    /// The deferred calls' method (as the metrics label it) and start, so
    /// that their outcome and latency are counted when they complete.
    pub(crate) deferred_calls: BTreeMap<DeferId, (String, Instant)>,
    /// The global cap on worker processes (`Config::max_workers`).
    pub(crate) max_workers: usize,
    /// What the daemon counts about itself (metrics, the page's history).
    pub(crate) stats: crate::daemon::stats::Stats,
    /// The processes' resources, read by the loop just before a scrape.
    pub(crate) procs: BTreeMap<Pid, forkd_os::ProcessStats>,
    /// The user's own metrics.
    pub(crate) user_metrics: crate::daemon::UserMetrics,
    /// The rolling reloads under way, by number.
    pub(crate) reloads: BTreeMap<u64, crate::daemon::reload::ReloadCall>,
    pub(crate) next_reload: u64,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("info", &self.info)
            .field("now", &self.now)
            .field("stopping", &self.stop)
            .field("instances", &self.sup.instances().len())
            .finish_non_exhaustive()
    }
}

/// What the daemon knows of an instance's process from its channel.
#[derive(Clone, Debug, Default)]
pub(crate) struct InstanceView {
    pub state: Option<WorkerState>,
    pub loops: u64,
    pub last_error: Option<String>,
    /// The version of `last_error` read last (see `Channel::last_error_version`).
    pub error_version: u64,
}

impl Ctl {
    pub(crate) fn new(info: Info, sup: Supervisor, now: Instant) -> Ctl {
        let views = vec![InstanceView::default(); sup.instances().len()];
        let info_started = info.started;
        Ctl {
            info,
            now,
            sup,
            views,
            stop: None,
            reap: false,
            reopen_log: false,
            outgoing: Vec::new(),
            joins: BTreeMap::new(),
            next_join: 1,
            upgrades: Vec::new(),
            next_defer: 1,
            completions: Vec::new(),
            events: Vec::new(),
            current_conn: 0,
            routes: BTreeMap::new(),
            deferred_calls: BTreeMap::new(),
            max_workers: usize::MAX,
            stats: crate::daemon::stats::Stats::new(info_started),
            procs: BTreeMap::new(),
            user_metrics: Default::default(),
            reloads: BTreeMap::new(),
            next_reload: 1,
        }
    }

    /// The time the loop last read the clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What the daemon tells about itself: pid, description, address,
    /// start time.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Asks the daemon to stop gracefully; the first reason given is kept.
    pub fn stop(&mut self, reason: impl Into<String>) {
        self.stop.get_or_insert_with(|| reason.into());
    }

    /// Whether a stop was asked for, by [`Ctl::stop`] or by the
    /// supervisor; the daemon then finishes the calls in flight and exits.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_some() || self.sup.is_stopping()
    }

    /// Asks the loop to reap exited children (the watchdog's job on SIGCHLD).
    pub fn reap_children(&mut self) {
        self.reap = true;
    }

    /// Asks the logger to reopen its file (SIGUSR1's default).
    pub fn reopen_log(&mut self) {
        self.reopen_log = true;
    }

    /// Sets the user gauge `forkd_user_NAME` of the daemon's metrics.
    pub fn set_metric(&mut self, name: &str, value: f64) -> Result<(), crate::daemon::MetricError> {
        self.user_metrics.set(name, None, value)
    }

    /// Raises an event on the bus, after the current method or listener.
    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Asks the loop to upgrade the master in place: execute the binary
    /// again, hand it the socket, and stop once it is ready. `caller`, if
    /// any, is completed with the new master's pid and version, or with
    /// the reason it failed ([`codes::UPGRADE_FAILED`]).
    pub fn upgrade(&mut self, caller: Option<DeferId>) {
        self.upgrades.push(caller);
    }

    /// A deferred answer for the request being dispatched; complete it with
    /// `complete`.
    pub fn defer(&mut self) -> DeferId {
        let id = DeferId(self.next_defer);
        self.next_defer += 1;
        self.routes.insert(id, self.current_conn);
        id
    }

    /// Completes a deferred answer.
    pub fn complete(&mut self, id: DeferId, result: Result<Value, RpcError>) {
        self.completions.push((id, result));
    }

    /// Names of the installed workers.
    pub fn worker_names(&self) -> Vec<String> {
        self.sup.specs().iter().map(|s| s.name.clone()).collect()
    }

    /// Sends a custom message to worker `name` (its first instance) and
    /// answers with the worker's reply: the seed's `handyman.changename`.
    pub fn message_worker(&mut self, name: &str, message: Value) -> Reply {
        let w = match self.worker(name) {
            Ok(w) => w,
            Err(e) => return Reply::Error(e),
        };
        let Some(id) = self.sup.instances_of(w).find(|&i| self.sup.instance(i).state.pid().is_some()) else {
            return Reply::Error(RpcError::new(codes::WORKER_NOT_RUNNING, format!("worker {name} is not running")));
        };
        self.command(vec![id], Command::Message(message), JoinKind::Answer)
    }

    pub(crate) fn worker(&self, name: &str) -> Result<usize, RpcError> {
        self.sup.worker_index(name).ok_or_else(|| {
            RpcError::new(codes::UNKNOWN_WORKER, format!("unknown worker {:?}", crate::rpc::codes::quote(name)))
        })
    }

    /// Sends `command` to `instances` and answers once all acknowledged.
    pub(crate) fn command(&mut self, instances: Vec<usize>, command: Command, kind: JoinKind) -> Reply {
        if self.is_stopping() {
            return Reply::Error(RpcError::new(codes::STOPPING, "the daemon is stopping"));
        }
        let defer = self.defer();
        let join_id = self.next_join;
        self.next_join += 1;
        let mut join = Join { defer, kind, waiting: BTreeSet::new(), results: BTreeMap::new() };
        for id in instances {
            if self.sup.instance(id).state.pid().is_none() {
                let msg = format!("worker {} is not running", self.instance_key(id));
                join.results.insert(self.instance_order(id), Err(InstanceError::NotRunning(msg)));
                continue;
            }
            join.waiting.insert(id);
            self.outgoing.push(Outgoing { instance: id, command: command.clone(), join: join_id });
        }
        self.joins.insert(join_id, join);
        self.settle(join_id);
        Reply::Deferred(defer)
    }

    /// An instance answered (or can no longer answer) a command of `join`.
    pub(crate) fn acknowledge(&mut self, join: u64, instance: usize, result: Result<Value, String>) {
        let key = self.instance_order(instance);
        if let Some(j) = self.joins.get_mut(&join) {
            if j.waiting.remove(&instance) {
                j.results.insert(key, result.map_err(InstanceError::Worker));
            }
        }
        self.settle(join);
    }

    fn settle(&mut self, join: u64) {
        let done = self.joins.get(&join).is_some_and(|j| j.waiting.is_empty());
        if !done {
            return;
        }
        let j = self.joins.remove(&join).unwrap();
        let error = |e: InstanceError| match e {
            InstanceError::NotRunning(m) => RpcError::new(codes::WORKER_NOT_RUNNING, m),
            InstanceError::Worker(m) => RpcError::new(codes::WORKER_ERROR, m),
        };
        let entry = |(name, instance): (String, u32), outcome: Result<(), String>| match outcome {
            Ok(()) => json!({ "name": name, "instance": instance, "ok": true }),
            Err(e) => json!({ "name": name, "instance": instance, "ok": false, "error": e }),
        };
        let result = match j.kind {
            JoinKind::Answer => match j.results.into_values().next() {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(error(e)),
                None => Ok(Value::Null),
            },
            JoinKind::Named => match j.results.values().find_map(|r| r.clone().err()) {
                Some(e) => Err(error(e)),
                None => Ok(Value::Array(j.results.into_keys().map(|k| entry(k, Ok(()))).collect())),
            },
            JoinKind::Every => Ok(Value::Array(
                j.results
                    .into_iter()
                    .map(|(k, r)| {
                        let outcome = r.map(drop).map_err(|e| match e {
                            InstanceError::NotRunning(m) | InstanceError::Worker(m) => m,
                        });
                        entry(k, outcome)
                    })
                    .collect(),
            )),
        };
        self.completions.push((j.defer, result));
    }

    /// Where instance `id` goes in an answer: by worker name, then by
    /// instance number (`w/2` before `w/10`).
    pub(crate) fn instance_order(&self, id: usize) -> (String, u32) {
        let inst = self.sup.instance(id);
        (self.sup.specs()[inst.worker].name.clone(), inst.index)
    }

    /// How an instance is named in answers keyed by worker: its worker's
    /// name, or `name/INDEX` for the instances of a pool.
    pub(crate) fn instance_key(&self, id: usize) -> String {
        let inst = self.sup.instance(id);
        let name = &self.sup.specs()[inst.worker].name;
        if self.sup.specs()[inst.worker].instances > 1 {
            format!("{name}/{}", inst.index)
        } else {
            name.clone()
        }
    }

    pub(crate) fn instance_json(&self, id: usize) -> Value {
        let inst: &Instance = self.sup.instance(id);
        let spec = &self.sup.specs()[inst.worker];
        let view = &self.views[id];
        json!({
            "name": spec.name,
            "instance": inst.index,
            "pid": inst.state.pid().map(|p| p.0),
            "state": self.state_name(id),
            "looptime": spec.looptime.as_secs_f64(),
            "uptime": inst.state.pid().and(inst.started_at).map(|t| self.now.saturating_duration_since(t).as_secs_f64()),
            "restart": spec.restart.name(),
            "loops": view.loops,
            "restarts": inst.restarts,
            "last_exit": inst.last_exit.map(exit_json),
            "last_error": view.last_error,
        })
    }

    /// The state a client sees: the worker's own while it runs, the
    /// supervisor's once it does not.
    pub(crate) fn state_name(&self, id: usize) -> &'static str {
        match self.sup.instance(id).state {
            InstanceState::Failed => "failed",
            InstanceState::Stopped | InstanceState::Retired | InstanceState::Waiting { .. } => "stopped",
            InstanceState::Running { .. } | InstanceState::Joining { .. } | InstanceState::Stopping { .. } => {
                match self.views[id].state {
                    Some(s) => s.name(),
                    None => "spinup",
                }
            }
        }
    }

    pub(crate) fn targets(&self, name: Option<&str>) -> Result<(Vec<usize>, bool), RpcError> {
        match name {
            Some(n) => {
                let w = self.worker(n)?;
                Ok((self.sup.instances_of(w).collect(), false))
            }
            None => {
                let all =
                    (0..self.sup.specs().len()).flat_map(|w| self.sup.instances_of(w).collect::<Vec<_>>()).collect();
                Ok((all, true))
            }
        }
    }
}

pub(crate) fn exit_json(status: ExitStatus) -> Value {
    match status {
        ExitStatus::Exited(code) => json!({ "code": code }),
        ExitStatus::Signaled(n) => json!({
            "signal": forkd_os::Signal::from_number(n).map(|s| s.name().to_string()).unwrap_or_else(|| n.to_string())
        }),
    }
}
