//! Worker processes: reaping them, carrying out the supervisor's actions,
//! and spawning an instance with its region and socket.

use super::*;
use crate::daemon::stats::ExitReason;

impl Loop<'_> {
    pub(super) fn reap<O: Os>(&mut self, os: &mut O) {
        loop {
            match os.try_reap() {
                Ok(Some((pid, status))) => {
                    let now = os.now();
                    let why =
                        self.ctl.sup.id_of_pid(pid).map(|id| exit_reason(&self.ctl.sup.instance(id).state, status));
                    // Its number before the exit is handled: a reload may
                    // give the freed entry to a new instance at once.
                    // Its link goes first, too: the commands it can no
                    // longer answer are answered under that number.
                    let index = self.ctl.sup.id_of_pid(pid).map(|id| self.ctl.sup.instance(id).index);
                    if let Some(id) = self.ctl.sup.id_of_pid(pid) {
                        self.unlink(os, id);
                    }
                    match self.ctl.sup.handle_exit(pid, status, now) {
                        Ok(id) => {
                            log::info!("worker {} (pid {pid}) exited: {status}", self.worker_name(id));
                            let name = self.worker_name(id);
                            let instance = index.unwrap_or(self.ctl.sup.instance(id).index);
                            let why = why.unwrap_or(ExitReason::Exit);
                            let restart = matches!(self.ctl.sup.instance(id).state, InstanceState::Waiting { .. });
                            if restart {
                                self.ctl.stats.restart_scheduled(id, why);
                            }
                            self.ctl.stats.exit_seen(restart, now);
                            let mut data = crate::daemon::control::exit_json(status);
                            data["reason"] = why.name().into();
                            let data = Some(data);
                            self.publish(Event::Worker { name, instance, event: WorkerEventKind::Exited, data });
                            if self.ctl.sup.instance(id).state == InstanceState::Failed {
                                let name = self.worker_name(id);
                                log::error!("worker {name} failed: restarted too often");
                                // A failure is the stop's cause only when the
                                // policy stops the daemon for it; kept running,
                                // a later stop is a clean one.
                                if self.ctl.sup.policy().on_failure == crate::supervisor::OnFailure::StopDaemon {
                                    self.failure.get_or_insert_with(|| format!("worker {name} failed"));
                                }
                                self.publish(Event::Worker {
                                    name,
                                    instance,
                                    event: WorkerEventKind::Failed,
                                    data: None,
                                });
                            }
                        }
                        Err(unknown) => self.reaped_other(os, unknown.0, status),
                    }
                    if crate::planted::active(crate::planted::Bug::ReapOne) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("reap: {e}");
                    break;
                }
            }
        }
    }

    pub(super) fn worker_name(&self, id: usize) -> String {
        self.ctl.sup.specs()[self.ctl.sup.instance(id).worker].name.clone()
    }

    /// Carries out what methods and listeners asked and the supervisor's
    /// actions, until there is nothing left to do.
    pub(super) fn supervise<O: Os>(&mut self, os: &mut O) {
        let now = os.now();
        let hang = self.config.restart.hang_timeout;
        if hang.is_some() {
            for link in self.links.values_mut() {
                link.refresh_beat(now);
            }
        }
        let links = &self.links;
        self.ctl.sup.handle_timeout(now, |id| match (hang, links.get(&id)) {
            (Some(h), Some(link)) => now >= link.hang_deadline(h),
            _ => false,
        });
        for (id, link) in self.links.iter_mut() {
            if let Some((seq, join, sent)) = link.in_flight {
                if join != 0 && now >= sent + COMMAND_TIMEOUT {
                    // The worker keeps the mailbox until it answers or dies;
                    // its caller is answered now.
                    link.in_flight = Some((seq, 0, sent));
                    let msg = format!("the worker did not answer within {}s", COMMAND_TIMEOUT.as_secs());
                    self.ctl.acknowledge(join, id, Err(msg));
                }
            }
            while link.queue.front().is_some_and(|(_, join, queued)| *join != 0 && now >= *queued + COMMAND_TIMEOUT) {
                let (_, join, _) = link.queue.pop_front().unwrap();
                let msg = format!("the worker did not take the command within {}s", COMMAND_TIMEOUT.as_secs());
                self.ctl.acknowledge(join, id, Err(msg));
            }
        }
        for out in std::mem::take(&mut self.ctl.outgoing) {
            match self.links.get_mut(&out.instance) {
                Some(link) => {
                    link.queue.push_back((out.command, out.join, now));
                    self.send_queued(os, out.instance);
                }
                None => self.ctl.acknowledge(out.join, out.instance, Err("worker is not running".into())),
            }
        }
        self.note_rollouts(os);
        while let Some(action) = self.ctl.sup.poll_action() {
            match action {
                Action::Spawn(id) => self.spawn(os, id),
                Action::RequestStop(id) => {
                    if let Some(link) = self.links.get_mut(&id) {
                        // Stop overtakes whatever waits in the queue.
                        link.queue.push_front((Command::Stop, 0, now));
                        self.send_queued(os, id);
                    }
                }
                Action::Signal(target, sig) => {
                    // A pid that was already reaped is never signalled: the
                    // supervisor only names pids of instances it still runs.
                    if let Err(e) = os.kill(target, sig) {
                        log::debug!("kill {target:?} {sig}: {e}");
                    }
                }
                Action::StopDaemon(reason) => {
                    log::warn!("stopping: {reason}");
                    self.ctl.stop(reason);
                }
            }
            // A spawn or an exit may end a rollout, which may begin the
            // next one and ask for spawns in turn.
            self.note_rollouts(os);
        }
        self.publish_raised();
        if self.ctl.views.len() < self.ctl.sup.instances().len() {
            self.ctl.views.resize(self.ctl.sup.instances().len(), InstanceView::default());
        }
    }

    /// Takes the rollouts' notes (their events and answers), each noted in
    /// the world's trace, and publishes their events at once: before the
    /// events of the spawns and exits that follow.
    fn note_rollouts<O: Os>(&mut self, os: &mut O) {
        for line in self.ctl.take_rollout_notes() {
            os.note(format_args!("{line}"));
        }
        self.publish_raised();
    }

    pub(super) fn spawn<O: Os>(&mut self, os: &mut O, id: usize) {
        let now = os.now();
        let inst = self.ctl.sup.instance(id).clone();
        let spec = self.ctl.sup.specs()[inst.worker].clone();
        let capacity = slots::Slots::capacity(self.config.max_workers);
        let (slot_index, slot) = match self.slots.take(os, capacity) {
            Ok(s) => s,
            Err(e) => {
                log::error!("worker {}: no slot for its channel: {e}", spec.name);
                self.ctl.sup.spawn_failed(id, now);
                return;
            }
        };
        let (region_at, region) = match self.regions.take(os) {
            Ok(r) => r,
            Err(e) => {
                log::error!("worker {}: cannot create shared memory: {e}", spec.name);
                self.slots.give_back(slot_index);
                self.ctl.sup.spawn_failed(id, now);
                return;
            }
        };
        let channel = Channel::create_in(region.clone(), slot.clone());
        // The heartbeat starts at the spawn, written before the child exists
        // (so it has no other writer yet): a fresh channel's zero would read
        // as a heartbeat older than any hang timeout, and the next turn of
        // the loop would kill the new worker as hung before it could beat.
        channel.beat(now);
        let (ours, theirs) = match os.socket_pair() {
            Ok(p) => p,
            Err(e) => {
                log::error!("worker {}: socketpair: {e}", spec.name);
                self.regions.give_back(os, region_at);
                self.slots.give_back(slot_index);
                self.ctl.sup.spawn_failed(id, now);
                return;
            }
        };
        let close_fds = self.inherited_fds(ours);
        let process = WorkerProcess {
            name: spec.name.clone(),
            instance: inst.index,
            looptime: spec.looptime,
            worker: (self.factories[inst.worker])(),
            channel: Channel::attach_in(region.clone(), slot),
            wake: theirs,
            daemon_pid: os.pid(),
            close_fds,
            reopen_log: self.reopen_log,
        };
        match os.spawn(SpawnOptions { new_group: true }, Box::new(move |os: &mut O| run_worker(os, process))) {
            Ok(pid) => {
                os.close(theirs);
                let link = Link {
                    slot: slot_index,
                    region: region_at,
                    channel,
                    wake: ours,
                    eof: false,
                    queue: Default::default(),
                    in_flight: None,
                    beat: (now.as_nanos(), now),
                    broken: false,
                    warned: WarnLimit::default(),
                };
                self.adopt(os, id, pid, link, now);
            }
            Err(e) => {
                log::error!("worker {}: cannot fork: {e}", spec.name);
                os.close(ours);
                os.close(theirs);
                self.regions.give_back(os, region_at);
                self.slots.give_back(slot_index);
                self.ctl.sup.spawn_failed(id, now);
            }
        }
    }

    /// What a new worker inherits but must not keep: the daemon's own
    /// descriptors, the other workers' links, and `ours`, the daemon's end
    /// of its own link.
    fn inherited_fds(&self, ours: Fd) -> Vec<Fd> {
        let mut close_fds = vec![ours];
        close_fds.extend(self.pid_lock);
        close_fds.extend(self.listener);
        close_fds.extend(self.clients.values().map(|c| c.fd));
        close_fds.extend(self.links.values().map(|l| l.wake));
        close_fds.extend(self.private_fds.iter().copied());
        // An upgrade's channel, on either side: a worker that kept it would
        // hide its master's death from the other master.
        close_fds.extend(self.upgrade.as_ref().map(|u| u.channel_fd()));
        close_fds.extend(self.handover_fd);
        close_fds
    }

    /// Takes up instance `id`, spawned as `pid`: its link, a fresh view,
    /// the supervisor told, and the event published.
    fn adopt<O: Os>(&mut self, os: &mut O, id: usize, pid: Pid, link: Link, now: Instant) {
        let inst = self.ctl.sup.instance(id).clone();
        let name = self.ctl.sup.specs()[inst.worker].name.clone();
        log::debug!("worker {name} instance {} started as pid {pid}", inst.index);
        self.links.insert(id, link);
        if self.ctl.views.len() <= id {
            self.ctl.views.resize(id + 1, InstanceView::default());
        }
        self.ctl.views[id] = InstanceView::default();
        self.ctl.sup.spawned(id, pid, now);
        os.note(format_args!("worker {name}.{} started: pid {pid}", inst.index));
        if matches!(self.ctl.sup.instance(id).state, InstanceState::Joining { .. }) {
            os.note(format_args!("reload {name}.{} new: pid {pid}", inst.index));
        }
        let started = if inst.restarts > 0 { WorkerEventKind::Restarted } else { WorkerEventKind::Started };
        self.publish(Event::Worker { name, instance: inst.index, event: started, data: None });
    }
}

/// Why an instance in `state` exited with `status`: the daemon stopped or
/// retired it, asked it to restart, killed it as hung, or it died on its
/// own (by a signal or with an exit code).
fn exit_reason(state: &InstanceState, status: forkd_os::ExitStatus) -> ExitReason {
    use crate::supervisor::AfterStop;
    match state {
        InstanceState::Stopping { then: AfterStop::Restart, .. } => ExitReason::Manual,
        InstanceState::Stopping { then: AfterStop::Recover, .. } => ExitReason::Hang,
        InstanceState::Stopping { then: AfterStop::Stop, .. } => ExitReason::Stop,
        InstanceState::Stopping { then: AfterStop::Retire, .. } => ExitReason::Retire,
        InstanceState::Stopping { then: AfterStop::Replace, .. } => ExitReason::Reload,
        InstanceState::Running { .. }
        | InstanceState::Joining { .. }
        | InstanceState::Waiting { .. }
        | InstanceState::Stopped
        | InstanceState::Retired
        | InstanceState::Failed => match status {
            forkd_os::ExitStatus::Signaled(_) => ExitReason::Signal,
            forkd_os::ExitStatus::Exited(_) => ExitReason::Exit,
        },
    }
}
