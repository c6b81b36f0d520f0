//! Each running worker instance's link: its shared-memory channel and
//! wake-up socket, the commands queued for its mailbox, its heartbeat as the
//! daemon has seen it move, and what a worker that breaks its channel costs.

use super::*;

/// At most this many reads of a worker's wake-up socket in one turn: a
/// worker that floods it costs the loop a bounded amount per turn.
pub(super) const WAKE_READS_PER_TURN: usize = 16;

/// A worker's warnings (a broken channel, say) are logged at most once in
/// this period; the ones held back are counted in the next.
pub(super) const WARN_PERIOD: Duration = Duration::from_secs(10);

/// A running worker instance's link: its channel and its wake-up socket.
pub(super) struct Link {
    /// The channel's slot in the workers' table.
    pub(super) slot: usize,
    /// Where the channel's region lies in the arenas.
    pub(super) region: super::slots::RegionAt,
    pub(super) channel: Channel,
    pub(super) wake: Fd,
    pub(super) eof: bool,
    /// Commands waiting for the mailbox, with the answer each is owed to
    /// and when it was queued.
    pub(super) queue: std::collections::VecDeque<(Command, u64, Instant)>,
    /// The command in the mailbox: its sequence number, the answer it is
    /// owed to (0 once answered by a timeout), and when it was sent.
    pub(super) in_flight: Option<(u64, u64, Instant)>,
    /// The heartbeat word as last read, and when the daemon's own clock
    /// says it last moved: hang detection trusts the worker's word only as
    /// far as its moving, so a forged far-future beat cannot turn it off.
    pub(super) beat: (u64, Instant),
    /// The worker broke its channel and is being killed.
    pub(super) broken: bool,
    pub(super) warned: WarnLimit,
}

/// The links of the running instances, by instance id. Ids are the
/// supervisor's indexes, dense and reused by scale-ups, so a vector serves:
/// a thousand links cost a thousand entries, without a tree's nodes.
#[derive(Default)]
pub(super) struct Links {
    by_id: Vec<Option<Link>>,
}

impl Links {
    pub(super) fn get(&self, id: &usize) -> Option<&Link> {
        self.by_id.get(*id)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: &usize) -> Option<&mut Link> {
        self.by_id.get_mut(*id)?.as_mut()
    }

    pub(super) fn insert(&mut self, id: usize, link: Link) {
        if self.by_id.len() <= id {
            self.by_id.resize_with(id + 1, || None);
        }
        self.by_id[id] = Some(link);
    }

    pub(super) fn remove(&mut self, id: &usize) -> Option<Link> {
        self.by_id.get_mut(*id)?.take()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Link)> {
        self.by_id.iter().enumerate().filter_map(|(id, l)| Some((id, l.as_ref()?)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Link)> {
        self.by_id.iter_mut().enumerate().filter_map(|(id, l)| Some((id, l.as_mut()?)))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter().map(|(id, _)| id)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Link> {
        self.by_id.iter().flatten()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        self.by_id.iter_mut().flatten()
    }
}

/// Holds back repeated warnings: one per [`WARN_PERIOD`], with a count of
/// those held back.
#[derive(Default)]
pub(super) struct WarnLimit {
    pub(super) last: Option<Instant>,
    pub(super) held: u32,
}

impl WarnLimit {
    pub(super) fn warn(&mut self, now: Instant, message: std::fmt::Arguments<'_>) {
        if self.last.is_some_and(|at| now < at + WARN_PERIOD) {
            self.held += 1;
            return;
        }
        match std::mem::take(&mut self.held) {
            0 => log::warn!("{message}"),
            held => log::warn!("{message} ({held} similar warnings held back)"),
        }
        self.last = Some(now);
    }
}

impl Link {
    /// When the worker counts as hung: `hang` after its heartbeat last
    /// moved.
    pub(super) fn hang_deadline(&self, hang: Duration) -> Instant {
        self.beat.1 + hang
    }

    /// Reads the heartbeat; a beat that moved is dated by the worker's own
    /// word when that lies between the previous one and `now`, else `now`.
    pub(super) fn refresh_beat(&mut self, now: Instant) {
        let Ok(value) = self.channel.heartbeat() else { return };
        if value != self.beat.0 {
            let at = Instant(value);
            self.beat = (value, if at >= self.beat.1 && at <= now { at } else { now });
        }
    }
}

impl Loop<'_> {
    /// Forgets an exited instance's link: unmaps its region, closes its
    /// socket, and fails the commands it can no longer answer.
    pub(super) fn unlink<O: Os>(&mut self, os: &mut O, id: usize) {
        let Some(link) = self.links.remove(&id) else { return };
        if let Ok(e) = link.channel.last_error() {
            self.ctl.views[id].last_error = e;
        }
        self.ctl.views[id].state = None;
        os.close(link.wake);
        self.slots.give_back(link.slot);
        self.regions.give_back(os, link.region);
        let name = self.worker_name(id);
        if let Some((_, join, _)) = link.in_flight {
            self.ctl.acknowledge(join, id, Err(format!("worker {name} exited before answering")));
        }
        for (_, join, _) in link.queue {
            self.ctl.acknowledge(join, id, Err(format!("worker {name} exited before answering")));
        }
    }

    /// Reads a worker's wake-up socket and its mailbox.
    pub(super) fn drain_link<O: Os>(&mut self, os: &mut O, id: usize) {
        let Some(link) = self.links.get_mut(&id) else { return };
        let mut buf = [0u8; 64];
        for _ in 0..WAKE_READS_PER_TURN {
            match os.read(link.wake, &mut buf) {
                Ok(0) => {
                    link.eof = true;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    link.eof = true;
                    break;
                }
            }
        }
        self.read_mailbox(os, id);
    }

    pub(super) fn read_mailbox<O: Os>(&mut self, os: &mut O, id: usize) {
        let Some(link) = self.links.get_mut(&id) else { return };
        let mut acks = Vec::new();
        match link.channel.take_reply() {
            Ok(Some(reply)) => {
                if let Some((seq, join, _)) = link.in_flight {
                    if reply.seq == seq {
                        link.in_flight = None;
                        acks.push((join, reply.result));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                // The mailbox can no longer be trusted, and nothing else
                // frees it: the worker is broken. Its caller is answered
                // now, and the process is killed, to be restarted as a
                // crashed one would be.
                let name = self.ctl.sup.specs()[self.ctl.sup.instance(id).worker].name.clone();
                let now = self.ctl.now;
                link.warned.warn(now, format_args!("worker {name}: {e}: killing it"));
                if let Some((seq, join, sent)) = link.in_flight {
                    link.in_flight = Some((seq, 0, sent));
                    acks.push((join, Err(format!("worker {name} broke its channel"))));
                }
                if !std::mem::replace(&mut link.broken, true) {
                    if let Some(pid) = self.ctl.sup.instance(id).state.pid() {
                        if let Err(e) = os.kill(KillTarget::Group(pid), Signal::Kill) {
                            log::debug!("kill {pid}: {e}");
                        }
                    }
                }
            }
        }
        let events = match link.channel.take_events() {
            Ok(events) => events,
            Err(e) => {
                let name = self.ctl.sup.specs()[self.ctl.sup.instance(id).worker].name.clone();
                link.warned.warn(self.ctl.now, format_args!("worker {name}: event ring: {e}"));
                Vec::new()
            }
        };
        self.send_queued(os, id);
        let name = self.worker_name(id);
        let instance = self.ctl.sup.instance(id).index;
        for (join, result) in acks {
            self.ctl.acknowledge(join, id, result);
        }
        for data in events {
            self.ctl.user_metrics.take_from_worker(&name, instance, &data);
            self.publish(Event::Worker {
                name: name.clone(),
                instance,
                event: WorkerEventKind::Data,
                data: Some(data),
            });
        }
    }

    /// Refreshes what the daemon knows of each worker from its channel,
    /// and tells the supervisor of a reload's new instance that is ready.
    pub(super) fn poll_links(&mut self) {
        let mut ready = Vec::new();
        for (id, link) in self.links.iter() {
            if matches!(self.ctl.sup.instance(id).state, InstanceState::Joining { pid: Some(_), .. })
                && link.channel.ready() == Ok(true)
            {
                ready.push(id);
            }
            let view: &mut InstanceView = &mut self.ctl.views[id];
            let before = view.state;
            if let Ok(s) = link.channel.state() {
                view.state = Some(s);
            }
            view.loops = link.channel.loops().unwrap_or(view.loops);
            // A running worker's error is shown as soon as it is recorded;
            // one atomic load a turn, the text copied only when it changed.
            let version = link.channel.last_error_version();
            if version != view.error_version && version % 2 == 0 {
                if let Ok(e) = link.channel.last_error() {
                    view.last_error = e;
                    view.error_version = version;
                }
            }
            if before != view.state {
                let kind = match view.state {
                    Some(WorkerState::Paused) => Some(WorkerEventKind::Paused),
                    Some(WorkerState::Looping) if before == Some(WorkerState::Paused) => Some(WorkerEventKind::Resumed),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let inst = self.ctl.sup.instance(id);
                    let name = self.ctl.sup.specs()[inst.worker].name.clone();
                    self.ctl.events.push(Event::Worker { name, instance: inst.index, event: kind, data: None });
                }
            }
        }
        let now = self.ctl.now;
        for id in ready {
            self.ctl.sup.handle_ready(id, now);
        }
        self.publish_raised();
    }

    /// Puts the next queued command in an instance's mailbox once the
    /// previous one is answered, and wakes the worker.
    pub(super) fn send_queued<O: Os>(&mut self, os: &mut O, id: usize) {
        let Some(link) = self.links.get_mut(&id) else { return };
        if link.in_flight.is_some() {
            return;
        }
        // A command that cannot be sent (too large) is answered at once and
        // the next one tried: nothing else would send it, as the worker only
        // wakes the daemon when it has something to tell.
        while let Some((command, join, _)) = link.queue.pop_front() {
            match link.channel.send_command(command) {
                Ok(seq) => {
                    link.in_flight = Some((seq, join, os.now()));
                    let _ = os.write(link.wake, &[1]);
                    return;
                }
                Err(e) => {
                    let msg = format!("cannot reach worker: {e}");
                    self.ctl.acknowledge(join, id, Err(msg));
                }
            }
        }
    }
}
