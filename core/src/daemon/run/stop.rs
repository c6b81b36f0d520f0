//! Stopping: beginning a graceful stop, telling when it is complete,
//! killing what is left, and the last clean-up. The loop's phase
//! (`Phase`, in the loop) decides when each runs.

use super::*;

/// How long stopping may take beyond the workers' stop escalation before
/// everything left is killed and closed.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long the killed workers' exits are waited for before the daemon
/// exits anyway.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(1);

impl Loop<'_> {
    /// Begins a graceful stop; returns its deadline.
    pub(super) fn begin_stop<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, reason: &str) -> Instant {
        let now = os.now();
        log::info!("stopping ({reason})");
        os.note(format_args!("daemon stopping: {reason}"));
        // Handed over, the service goes on under the new master's pid.
        if self.successor.is_none() {
            hooks.stopping(os);
        }
        self.upgrade_failed(os, "the daemon is stopping");
        // Stop accepting: close the listener and remove its socket file, so
        // that a new daemon may start while this one finishes.
        let planted = crate::planted::active(crate::planted::Bug::AcceptAfterHandOver);
        if !(planted && self.successor.is_some()) {
            self.close_listener(os);
        }
        if crate::planted::active(crate::planted::Bug::EarlyPidUnlock) {
            if let Some(fd) = self.pid_lock.take() {
                let _ = os.remove_file(&self.config.pid_file);
                os.close(fd);
            }
        }
        if self.successor.is_some() {
            // Said before `stop_all` says "stopping": the daemon goes on.
            self.ctl.sup.abandon_rollouts("the master handed over to a new one (daemon.upgrade); reload there");
        }
        self.ctl.sup.stop_all(now);
        let stop = self.config.restart.stop_timeout;
        let deadline = now + stop * 2 + STOP_GRACE;
        // Requests in flight are finished; connections with nothing in
        // flight are closed now.
        let idle: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.conn.pending_deferred() == 0 && c.conn.output().is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close_client(os, id);
        }
        // Handed over, every connection left closes cleanly once what it
        // owes is sent: its client reconnects to the new master.
        if self.successor.is_some() {
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            for id in ids {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.conn.drain();
                }
                self.pump(os, id);
            }
        }
        // Commands that will never be answered are answered now.
        let joins: Vec<(u64, Vec<usize>)> =
            self.ctl.joins.iter().map(|(j, v)| (*j, v.waiting.iter().copied().collect())).collect();
        for (join, waiting) in joins {
            for id in waiting {
                self.ctl.acknowledge(join, id, Err("the daemon is stopping".into()));
            }
        }
        self.supervise(os);
        self.deliver_completions(os);
        deadline
    }

    /// Closes the listener and removes its socket file, unless a service
    /// manager owns the socket or a new master serves it now.
    pub(super) fn close_listener<O: Os>(&mut self, os: &mut O) {
        if let Some(l) = self.listener.take() {
            os.close(l);
            if let (Address::Unix(path), true, None) = (&self.config.address, self.socket_ours(), self.successor) {
                let _ = os.remove_file(path);
            }
        }
    }

    /// Whether the stop is complete: no worker process and no connection
    /// with something in flight.
    pub(super) fn finished(&self) -> bool {
        !self.ctl.sup.has_processes()
            && self.clients.values().all(|c| c.conn.pending_deferred() == 0 && c.conn.output().is_empty())
    }

    /// The stop took too long: kills what is left, and returns how long
    /// the loop waits to reap it (a bounded wait, so that no zombie is left
    /// and the daemon still exits).
    pub(super) fn kill_what_is_left<O: Os>(&mut self, os: &mut O, now: Instant) -> Instant {
        log::warn!("stop timed out: killing what is left");
        for inst in self.ctl.sup.instances() {
            if let Some(pid) = inst.state.pid() {
                let _ = os.kill(KillTarget::Group(pid), Signal::Kill);
            }
        }
        now + KILL_GRACE
    }

    pub(super) fn finish<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.close_client(os, id);
        }
        let ids: Vec<usize> = self.links.keys().collect();
        for id in ids {
            self.unlink(os, id);
        }
        if !crate::planted::active(crate::planted::Bug::KeepOldRegion) {
            self.slots.release(os);
            self.regions.release(os);
        }
        self.publish(Event::DaemonStop);
        self.close_listener(os);
        os.close(self.signal_fd);
        if let Some(path) = self.token_made.take().filter(|_| self.successor.is_none()) {
            let _ = os.remove_file(&path);
        }
        if let Some(fd) = self.pid_lock.take() {
            let _ = os.remove_file(&self.config.pid_file);
            os.close(fd);
        }
        os.note(format_args!("daemon stopped"));
        hooks.stopped(os);
    }
}
