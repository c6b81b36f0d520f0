//! Rolling reloads: replacing a worker's instances a batch at a time, each
//! new one ready before the one it replaces is told to stop.
//!
//! A rollout walks a worker's pool in index order. For each batch it takes
//! up to `batch` running members, and for each of them makes a new entry
//! with the same index in [`InstanceState::Joining`]: spawned beside the
//! old one, not a member of the pool until it is ready. Readiness is read by
//! the loop from the new instance's channel (its first loop began, or it
//! said so with `Context::ready`) and comes in through
//! [`Supervisor::handle_ready`]: the new instance becomes `Running`, and
//! the old one is asked to stop with its normal spindown, then retired
//! (`AfterStop::Replace`). Once every old instance of the batch has exited,
//! the next batch begins; so the worker never has more than its size plus
//! `batch` processes, and never fewer than its size minus `batch` looping.
//!
//! A new instance that cannot spawn, exits before it is ready, or is not
//! ready within the worker's reload timeout fails the rollout: it (and any
//! other new instance of the batch not yet ready) is stopped and reaped,
//! the old instances that remain are never touched, and the note that ends
//! the rollout says which instance failed and why. A daemon that stops
//! abandons its rollouts.
//!
//! What a rollout does goes out as [`RolloutNote`]s, which the loop turns
//! into events on the bus and into the deferred answer of `worker.reload`.
//! Nothing here touches the world: like the rest of the supervisor, it only
//! moves states and queues actions.

use std::collections::VecDeque;
use std::fmt;

use forkd_os::{Instant, Pid};

use super::{Event, Instance, InstanceState, Supervisor};

/// One old instance replaced by a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The instance's number in its pool (both processes had it).
    pub index: u32,
    /// The old entry's id (an index into `instances()`).
    pub old: usize,
    /// The new entry's id.
    pub new: usize,
    /// The old process.
    pub old_pid: Pid,
    /// The new process.
    pub new_pid: Pid,
}

/// What a rollout did, in order; the loop polls them with
/// [`Supervisor::poll_note`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutNote {
    /// Worker `worker`'s rollout began: `instances` to replace, `batch` at
    /// a time.
    Started {
        /// The worker's index.
        worker: usize,
        /// How many running instances it is to replace.
        instances: usize,
        /// How many at a time.
        batch: u32,
    },
    /// A new instance is ready and the old one is asked to stop.
    Replaced {
        /// The worker's index.
        worker: usize,
        /// Which.
        replaced: Replaced,
    },
    /// Every instance was replaced, and the old ones have exited.
    Done {
        /// The worker's index.
        worker: usize,
        /// Which, in the order they were.
        replaced: Vec<Replaced>,
    },
    /// The rollout stopped: a new instance failed, or the daemon stops.
    /// The instances not replaced keep running.
    Failed {
        /// The worker's index.
        worker: usize,
        /// The index of the instance whose replacement failed, if one did.
        index: Option<u32>,
        /// The failed new instance's entry, if one failed (its last error
        /// may say more).
        failed: Option<usize>,
        /// Why.
        reason: String,
        /// What was replaced before it stopped.
        replaced: Vec<Replaced>,
    },
}

/// Why a rollout cannot begin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutRefused {
    /// One runs for this worker already.
    InProgress,
    /// The daemon is stopping.
    Stopping,
}

impl fmt::Display for RolloutRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutRefused::InProgress => f.write_str("a reload of this worker is in progress"),
            RolloutRefused::Stopping => f.write_str("the daemon is stopping"),
        }
    }
}

/// One old instance and the new one that is to take its place.
#[derive(Clone, Debug)]
struct Pair {
    old: usize,
    new: usize,
    old_pid: Pid,
    ready: bool,
}

/// A worker's rollout under way.
#[derive(Clone, Debug)]
pub(super) struct Rollout {
    batch: u32,
    /// The old instances still to replace, in index order.
    pending: VecDeque<usize>,
    /// The batch under way.
    current: Vec<Pair>,
    replaced: Vec<Replaced>,
    /// The first failure: the new entry, its index and why.
    failure: Option<(usize, u32, String)>,
}

impl Supervisor {
    /// Begins a rolling reload of worker `w`, `batch` instances at a time
    /// (at least 1). Its progress and end come out as notes.
    pub fn begin_rollout(&mut self, w: usize, batch: u32, now: Instant) -> Result<(), RolloutRefused> {
        if self.stopping {
            return Err(RolloutRefused::Stopping);
        }
        if self.rollouts.contains_key(&w) {
            return Err(RolloutRefused::InProgress);
        }
        let mut pending: Vec<usize> = self
            .instances_of(w)
            .filter(|&id| matches!(self.instances[id].state, InstanceState::Running { .. }))
            .collect();
        pending.sort_by_key(|&id| self.instances[id].index);
        let batch = batch.max(1);
        self.notes.push_back(RolloutNote::Started { worker: w, instances: pending.len(), batch });
        let rollout =
            Rollout { batch, pending: pending.into(), current: Vec::new(), replaced: Vec::new(), failure: None };
        self.rollouts.insert(w, rollout);
        self.drive_rollouts(now);
        Ok(())
    }

    /// Whether a rollout of worker `w` is under way.
    pub fn rollout_active(&self, w: usize) -> bool {
        self.rollouts.contains_key(&w)
    }

    /// The next thing a rollout did, in order.
    pub fn poll_note(&mut self) -> Option<RolloutNote> {
        self.notes.pop_front()
    }

    /// The loop read instance `id` ready on its channel. Only a reload's
    /// new instance cares: it joins its pool, and the instance it replaces
    /// is asked to stop.
    pub fn handle_ready(&mut self, id: usize, now: Instant) {
        let InstanceState::Joining { pid: Some(new_pid), .. } = self.instances[id].state else { return };
        self.step(id, Event::Ready, now);
        let w = self.instances[id].worker;
        let Some(pair) = self.rollouts.get_mut(&w).and_then(|r| r.current.iter_mut().find(|p| p.new == id)) else {
            return;
        };
        pair.ready = true;
        let (old, old_pid) = (pair.old, self.instances[pair.old].state.pid().unwrap_or(pair.old_pid));
        // The new process continues the old one's line: its restarts go on.
        self.instances[id].restarts = self.instances[old].restarts + 1;
        self.step(old, Event::Replace, now);
        let replaced = Replaced { index: self.instances[id].index, old, new: id, old_pid, new_pid };
        self.notes.push_back(RolloutNote::Replaced { worker: w, replaced: replaced.clone() });
        if let Some(r) = self.rollouts.get_mut(&w) {
            r.replaced.push(replaced);
        }
        self.drive_rollouts(now);
    }

    /// Ends every rollout as failed for `reason` (the daemon stops): their
    /// instances are taken care of by the stop itself.
    pub fn abandon_rollouts(&mut self, reason: &str) {
        self.join_failures.clear();
        for (worker, r) in std::mem::take(&mut self.rollouts) {
            let replaced = r.replaced;
            let reason = reason.into();
            self.notes.push_back(RolloutNote::Failed { worker, index: None, failed: None, reason, replaced });
        }
    }

    /// Moves every rollout on as far as it goes now: records its new
    /// instances' failures, gives up on the rest of a failed batch, and
    /// once a batch is settled ends the rollout or begins the next batch.
    pub(super) fn drive_rollouts(&mut self, now: Instant) {
        let failures = std::mem::take(&mut self.join_failures);
        let workers: Vec<usize> = self.rollouts.keys().copied().collect();
        for w in workers {
            for (id, why) in &failures {
                let r = self.rollouts.get_mut(&w).expect("listed above");
                if r.failure.is_none() && r.current.iter().any(|p| p.new == *id) {
                    r.failure = Some((*id, self.instances[*id].index, why.clone()));
                }
            }
            self.drive(w, now);
        }
    }

    fn drive(&mut self, w: usize, now: Instant) {
        let Some(r) = self.rollouts.get(&w) else { return };
        let failed = r.failure.is_some();
        let joining: Vec<usize> = r
            .current
            .iter()
            .filter(|p| matches!(self.instances[p.new].state, InstanceState::Joining { .. }))
            .map(|p| p.new)
            .collect();
        if failed {
            for id in joining {
                self.step(id, Event::Retire, now);
            }
        }
        let r = &self.rollouts[&w];
        // A pair is settled once its old process is gone (the new one was
        // ready), or its new one failed and is gone (not one that waits for
        // its spawn, which has no process yet either).
        let settled = r.current.iter().all(|p| {
            let gone = |id: usize| self.instances[id].state.pid().is_none();
            let joining = matches!(self.instances[p.new].state, InstanceState::Joining { .. });
            if p.ready {
                gone(p.old) || crate::planted::active(crate::planted::Bug::ReloadNoWait)
            } else {
                !joining && gone(p.new)
            }
        });
        if !settled {
            return;
        }
        let r = self.rollouts.get_mut(&w).expect("looked up above");
        r.current.clear();
        if let Some((id, index, reason)) = r.failure.take() {
            let r = self.rollouts.remove(&w).expect("looked up above");
            let (index, failed, replaced) = (Some(index), Some(id), r.replaced);
            self.notes.push_back(RolloutNote::Failed { worker: w, index, failed, reason, replaced });
            return;
        }
        let mut olds = Vec::new();
        while olds.len() < r.batch as usize {
            let Some(old) = r.pending.pop_front() else { break };
            // One that crashed, stopped or was killed since the rollout
            // began comes back, if it does, with the new code anyway.
            if let InstanceState::Running { pid } = self.instances[old].state {
                olds.push((old, pid));
            }
        }
        if olds.is_empty() {
            let r = self.rollouts.remove(&w).expect("looked up above");
            self.notes.push_back(RolloutNote::Done { worker: w, replaced: r.replaced });
            return;
        }
        for (old, old_pid) in olds {
            let new = self.joining_entry(w, self.instances[old].index, now);
            self.rollouts.get_mut(&w).expect("looked up above").current.push(Pair { old, new, old_pid, ready: false });
        }
    }

    /// An entry for a new instance of worker `w` numbered `index`, its
    /// spawn asked for: a retired entry of the worker's whose process is
    /// gone, or a new one (so reloads do not grow the table).
    fn joining_entry(&mut self, w: usize, index: u32, now: Instant) -> usize {
        let free = (0..self.instances.len())
            .find(|&i| self.instances[i].worker == w && self.instances[i].state == InstanceState::Retired);
        let id = free.unwrap_or_else(|| {
            self.instances.push(Instance {
                worker: w,
                index,
                state: InstanceState::Retired,
                restarts: 0,
                last_exit: None,
                started_at: None,
                starts: VecDeque::new(),
                backoff: std::time::Duration::ZERO,
            });
            self.instances.len() - 1
        });
        let inst = &mut self.instances[id];
        inst.index = index;
        inst.state = InstanceState::Joining { pid: None, since: now };
        inst.restarts = 0;
        inst.last_exit = None;
        inst.started_at = None;
        inst.starts.clear();
        inst.backoff = std::time::Duration::ZERO;
        self.actions.push_back(super::Action::Spawn(id));
        id
    }
}
