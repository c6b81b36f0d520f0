//! `worker.reload` and SIGHUP's default: rolling reloads as a caller sees
//! them.
//!
//! The supervisor replaces one worker's instances (`supervisor/rollout.rs`);
//! here a call becomes a queue of workers reloaded one after another, its
//! deferred answer is completed when the last one is done or the first one
//! fails, and the supervisor's notes become events on the bus
//! (`reload.started`, `reload.replaced`, `reload.done`, `reload.failed`).
//!
//! Decisions: one rollout per worker at a time, and a worker under reload
//! refuses `worker.scale` and `worker.restart` with [`codes::RELOADING`]
//! (its pool is in motion; pause, resume and messages still reach its
//! members). A reload of every worker that meets one under reload by
//! another call fails there. A daemon that stops abandons its reloads:
//! their callers get [`codes::STOPPING`].

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::builtins::with_errors;
use super::control::{codes, Ctl};
use crate::event::{Event, ReloadEventKind};
use crate::rpc::{DeferId, Method, ParamType, Reply, RpcError};
use crate::supervisor::{Replaced, RolloutNote, RolloutRefused};

/// The largest `batch` a call may ask for.
pub const MAX_BATCH: i64 = 1024;

/// A reload asked for (by a call, or by SIGHUP), worker after worker.
#[derive(Debug)]
pub(crate) struct ReloadCall {
    /// The deferred answer, when a call asked for it.
    defer: Option<DeferId>,
    /// The workers still to reload, in order.
    queue: VecDeque<usize>,
    /// The worker being reloaded.
    current: Option<usize>,
    /// The call's own batch, over each worker's configured one.
    batch: Option<u32>,
    /// What was replaced so far, as the answer lists it.
    replaced: Vec<Value>,
}

/// `worker.reload`.
pub(crate) fn worker_reload() -> Method<Ctl> {
    let m = Method::new("worker.reload", |ctl: &mut Ctl, args| {
        let batch = match args.get("batch") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64().filter(|n| (1..=MAX_BATCH).contains(n)) {
                Some(n) => Some(n as u32),
                None => {
                    return Reply::Error(RpcError::invalid_params(format!(
                        "param 'batch' must be an integer between 1 and {MAX_BATCH}"
                    )))
                }
            },
        };
        let name = args.get_str("name").map(str::to_string);
        let defer = ctl.defer();
        match ctl.reload(name.as_deref(), batch, Some(defer)) {
            Ok(()) => Reply::Deferred(defer),
            Err(e) => {
                ctl.routes.remove(&defer);
                Reply::Error(e)
            }
        }
    })
    .defers()
    .help(
        "Reload a worker (every worker, one after another, without a name) with no loss of capacity: start new \
         instances beside the old ones, batch at a time (the worker's reload batch, 1 by default), and stop an old \
         instance only once its replacement is ready. Answer once done: an array of {name, instance, old_pid, \
         new_pid}. A new instance that fails or is not ready in time stops the reload, the old instances that \
         remain keep running, and the error says which and why.",
    )
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::String, "name")
    .param(ParamType::Int, "batch")
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::Int, "batch")
    .returns(ParamType::Array);
    with_errors(
        m,
        &[codes::UNKNOWN_WORKER, codes::STOPPING, codes::RELOADING, codes::WORKER_ERROR, codes::TOO_MANY_WORKERS],
    )
}

impl Ctl {
    /// Reloads worker `name` (every worker, one after another, when
    /// `None`) by rolling replacement, `batch` instances at a time (each
    /// worker's configured reload batch when `None`). SIGHUP's default
    /// calls it; `worker.reload` too, with its deferred answer as `defer`.
    /// An error says why it cannot begin; how it ends is told on the bus
    /// (`reload.done`, `reload.failed`).
    pub fn reload(&mut self, name: Option<&str>, batch: Option<u32>, defer: Option<DeferId>) -> Result<(), RpcError> {
        if self.is_stopping() {
            return Err(RpcError::new(codes::STOPPING, "the daemon is stopping"));
        }
        let workers: Vec<usize> = match name {
            Some(n) => vec![self.worker(n)?],
            None => (0..self.sup.specs().len()).collect(),
        };
        for &w in &workers {
            self.refuse_if_reloading(w)?;
            let spec = &self.sup.specs()[w];
            let batch = batch.unwrap_or(spec.reload_batch).max(1);
            let members = self.sup.instances_of(w).count() as u32;
            let total = self.sup.processes_after_scale(w, members.saturating_add(batch));
            if total > self.max_workers {
                return Err(RpcError::new(
                    codes::TOO_MANY_WORKERS,
                    format!(
                        "reloading {} {batch} at a time would make {total} worker processes: at most {}",
                        spec.name, self.max_workers
                    ),
                ));
            }
        }
        let id = self.next_reload;
        self.next_reload += 1;
        let call = ReloadCall { defer, queue: workers.into(), current: None, batch, replaced: Vec::new() };
        self.reloads.insert(id, call);
        self.next_rollout(id);
        Ok(())
    }

    /// An error if worker `w` is being reloaded (or waits its turn in a
    /// reload): what refuses a second reload, a scale and a restart.
    pub(crate) fn refuse_if_reloading(&self, w: usize) -> Result<(), RpcError> {
        let queued = self.reloads.values().any(|c| c.current == Some(w) || c.queue.contains(&w));
        if self.sup.rollout_active(w) || queued {
            let name = &self.sup.specs()[w].name;
            return Err(RpcError::new(codes::RELOADING, format!("worker {name} is being reloaded")));
        }
        Ok(())
    }

    /// Begins the next worker's rollout of reload `id`, or answers it once
    /// none is left.
    fn next_rollout(&mut self, id: u64) {
        let now = self.now;
        let Some(call) = self.reloads.get_mut(&id) else { return };
        let Some(w) = call.queue.pop_front() else {
            let call = self.reloads.remove(&id).expect("looked up above");
            if let Some(defer) = call.defer {
                self.complete(defer, Ok(Value::Array(call.replaced)));
            }
            return;
        };
        call.current = Some(w);
        let batch = call.batch.unwrap_or(self.sup.specs()[w].reload_batch);
        if let Err(e) = self.sup.begin_rollout(w, batch, now) {
            let name = self.sup.specs()[w].name.clone();
            let error = match e {
                RolloutRefused::InProgress => {
                    RpcError::new(codes::RELOADING, format!("worker {name} is being reloaded"))
                }
                RolloutRefused::Stopping => RpcError::new(codes::STOPPING, "the daemon is stopping"),
            };
            self.fail_reload(id, error);
        }
    }

    fn fail_reload(&mut self, id: u64, error: RpcError) {
        let Some(call) = self.reloads.remove(&id) else { return };
        if let Some(defer) = call.defer {
            self.complete(defer, Err(error.with_data(json!({ "replaced": call.replaced }))));
        }
    }

    /// Takes the supervisor's rollout notes: each becomes an event, and an
    /// ended rollout moves its reload on to its next worker or answers it.
    /// Returns a line for each, for the loop to note in the world's trace.
    pub(crate) fn take_rollout_notes(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(note) = self.sup.poll_note() {
            let (worker, kind, data) = match &note {
                RolloutNote::Started { worker, instances, batch } => {
                    (*worker, ReloadEventKind::Started, json!({ "instances": instances, "batch": batch }))
                }
                RolloutNote::Replaced { worker, replaced } => {
                    self.stats.replaced(replaced.old, replaced.new);
                    (*worker, ReloadEventKind::Replaced, self.replaced_json(*worker, replaced))
                }
                RolloutNote::Done { worker, replaced } => {
                    let list: Vec<Value> = replaced.iter().map(|r| self.replaced_json(*worker, r)).collect();
                    (*worker, ReloadEventKind::Done, json!({ "replaced": list }))
                }
                RolloutNote::Failed { worker, index, failed, reason, replaced } => {
                    let list: Vec<Value> = replaced.iter().map(|r| self.replaced_json(*worker, r)).collect();
                    // What the failed instance said of itself, if anything.
                    let said = failed.and_then(|id| self.views.get(id)?.last_error.clone());
                    let reason = match said {
                        Some(e) => format!("{reason}: {e}"),
                        None => reason.clone(),
                    };
                    (*worker, ReloadEventKind::Failed, json!({ "instance": index, "reason": reason, "replaced": list }))
                }
            };
            let name = self.sup.specs()[worker].name.clone();
            lines.push(match &note {
                RolloutNote::Replaced { replaced: r, .. } => {
                    format!("worker {name}.{} replaced: pid {} by pid {}", r.index, r.old_pid, r.new_pid)
                }
                RolloutNote::Started { batch, .. } => format!("reload {name} started: batch {batch}"),
                RolloutNote::Done { .. } | RolloutNote::Failed { .. } => format!("reload {name} ended"),
            });
            self.events.push(Event::Reload { name: name.clone(), kind, data: data.clone() });
            let call = self.reloads.iter().find(|(_, c)| c.current == Some(worker)).map(|(id, _)| *id);
            let Some(id) = call else { continue };
            match note {
                RolloutNote::Started { .. } | RolloutNote::Replaced { .. } => {}
                RolloutNote::Done { .. } => {
                    let call = self.reloads.get_mut(&id).expect("found above");
                    call.current = None;
                    call.replaced.extend(data["replaced"].as_array().cloned().unwrap_or_default());
                    self.next_rollout(id);
                }
                RolloutNote::Failed { index, .. } => {
                    let reason = data["reason"].as_str().unwrap_or_default().to_string();
                    let call = self.reloads.get_mut(&id).expect("found above");
                    call.replaced.extend(data["replaced"].as_array().cloned().unwrap_or_default());
                    let error = match index {
                        Some(i) => RpcError::new(
                            codes::WORKER_ERROR,
                            format!("reload of worker {name} stopped: its new instance {i} {reason}"),
                        ),
                        None => RpcError::new(codes::STOPPING, format!("reload of worker {name} abandoned: {reason}")),
                    };
                    self.fail_reload(id, error);
                }
            }
        }
        lines
    }

    fn replaced_json(&self, worker: usize, r: &Replaced) -> Value {
        let name = &self.sup.specs()[worker].name;
        json!({ "name": name, "instance": r.index, "old_pid": r.old_pid.0, "new_pid": r.new_pid.0 })
    }
}
