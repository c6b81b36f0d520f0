//! Stopping: beginning a graceful stop, telling when it is complete,
//! forcing what is left, and the last clean-up.

use super::*;

/// How long stopping may take beyond the workers' stop escalation before
/// everything left is killed and closed.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(1);

impl Loop<'_> {
    pub(super) fn begin_stop<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, reason: &str) {
        let now = os.now();
        log::info!("stopping ({reason})");
        os.note(format_args!("daemon stopping: {reason}"));
        hooks.stopping(os);
        // Stop accepting: close the listener and remove its socket file, so
        // that a new daemon may start while this one finishes.
        self.close_listener(os);
        if crate::planted::active(crate::planted::Bug::EarlyPidUnlock) {
            if let Some(fd) = self.pid_lock.take() {
                let _ = os.remove_file(&self.config.pid_file);
                os.close(fd);
            }
        }
        self.ctl.sup.stop_all(now);
        let stop = self.config.restart.stop_timeout;
        self.stop_deadline = Some(now + stop * 2 + STOP_GRACE);
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
    }

    /// Closes the listener and removes its socket file, unless a service
    /// manager owns the socket.
    pub(super) fn close_listener<O: Os>(&mut self, os: &mut O) {
        if let Some(l) = self.listener.take() {
            os.close(l);
            if let (Address::Unix(path), None) = (&self.config.address, self.config.listen_fd) {
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

    /// The stop took too long: kill what is left.
    pub(super) fn force_stop<O: Os>(&mut self, os: &mut O) {
        log::warn!("stop timed out: killing what is left");
        for inst in self.ctl.sup.instances() {
            if let Some(pid) = inst.state.pid() {
                let _ = os.kill(KillTarget::Group(pid), Signal::Kill);
            }
        }
        // Reap what died, with a bounded wait so that no zombie is left.
        let deadline = os.now() + Duration::from_secs(1);
        while self.ctl.sup.has_processes() && os.now() < deadline {
            self.reap(os);
            if self.ctl.sup.has_processes() {
                let mut fds = [PollFd::new(self.signal_fd, Ready::READ)];
                let _ = os.poll(&mut fds, Some((os.now() + Duration::from_millis(10)).min(deadline)));
                let _ = os.take_signals();
            }
        }
    }

    pub(super) fn finish<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.close_client(os, id);
        }
        let ids: Vec<usize> = self.links.keys().copied().collect();
        for id in ids {
            self.unlink(os, id);
        }
        self.publish(Event::DaemonStop);
        self.close_listener(os);
        os.close(self.signal_fd);
        if let Some(path) = self.token_made.take() {
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
