//! The event stream: every event the bus carries, numbered and as JSON,
//! to every subscribed connection (see `rpc::conn`'s stream module for
//! the bound on each subscriber's buffer).

use super::*;
use crate::rpc::{EventFrame, Pushed};

/// How many times its bound a subscriber's buffer may hold within one
/// turn, before the loop has written any of it.
const HARD_BOUND: usize = 4;

impl Loop<'_> {
    /// Hands `event` to every subscriber. It only appends to their output
    /// buffers: the writes happen when the poll says each socket takes
    /// more, so a slow subscriber costs the loop nothing but its bound.
    pub(super) fn broadcast(&mut self, event: &Event) {
        if matches!(event, Event::ClientConnect { .. } | Event::ClientHangup { .. }) {
            return;
        }
        self.ctl.stats.events += 1;
        // Without a subscriber nothing is rendered: a thousand workers
        // starting must not cost two thousand JSON objects for nobody.
        if !self.clients.values().any(|c| c.conn.is_subscriber()) {
            return;
        }
        let Some(mut json) = event.to_json() else { return };
        let seq = self.ctl.stats.events;
        json["seq"] = seq.into();
        json["time"] = self.ctl.now.saturating_duration_since(self.ctl.info.started).as_secs_f64().into();
        let frame = EventFrame::new(seq, &json);
        let hard_max = self.config.event_buffer.saturating_mul(HARD_BOUND);
        for client in self.clients.values_mut() {
            if client.conn.push_event(&frame, hard_max) == Pushed::Dropped {
                self.ctl.stats.subscribers_dropped += 1;
            }
        }
    }

    /// Writes what the subscribers have to send, as much as their sockets
    /// take, then drops those still past the bound: the check comes after
    /// the write, so a burst of events within one turn does not drop a
    /// subscriber that reads.
    pub(super) fn flush_subscribers<O: Os>(&mut self, os: &mut O) {
        let now = os.now();
        let max = self.config.event_buffer;
        let ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.conn.is_subscriber() && !c.conn.output().is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(client) = self.clients.get_mut(&id) else { continue };
            let broken = clients::flush(os, client, now).is_err();
            if !broken && client.conn.drop_if_behind(max) {
                self.ctl.stats.subscribers_dropped += 1;
                let _ = clients::flush(os, client, now);
            }
            if broken || client.conn.should_close() {
                self.close_client(os, id);
            }
        }
    }
}

/// Dispatches one call, counted in the daemon's stats by method (`other`
/// for one the registry does not know, so that the label stays bounded)
/// and outcome, with its dispatch time. A scrape first has the `Os` read
/// the processes' resources, so that memory and CPU are those of now.
pub(super) fn dispatch<O: Os>(
    os: &mut O,
    registry: &mut Registry<Ctl>,
    ctl: &mut Ctl,
    method: &str,
    params: crate::rpc::Params,
    open: usize,
) -> crate::rpc::Reply {
    if method == crate::rpc::METRICS || method == crate::daemon::OVERVIEW {
        ctl.stats.connections_open = open;
        sample_processes(os, ctl);
    }
    let label = if registry.get(method).is_some() { method } else { "other" };
    let start = os.now();
    let reply = registry.dispatch(ctl, method, params);
    let end = os.now();
    let outcome = match &reply {
        crate::rpc::Reply::Value(_) => "ok",
        crate::rpc::Reply::Error(_) => "error",
        crate::rpc::Reply::Deferred(id) => {
            // Counted when it completes, with its whole latency. Bounded:
            // a method that never completes its calls cannot grow this.
            if ctl.deferred_calls.len() >= MAX_TRACKED_DEFERRED {
                ctl.deferred_calls.pop_first();
            }
            ctl.deferred_calls.insert(*id, (label.to_string(), start));
            return reply;
        }
    };
    ctl.stats.rpc_call(label, outcome, end.saturating_duration_since(start), end);
    reply
}

/// The most deferred calls whose outcome is awaited for the metrics.
const MAX_TRACKED_DEFERRED: usize = 4096;

/// A deferred call completed: its outcome and latency, counted now.
pub(super) fn deferred_done(ctl: &mut Ctl, id: crate::rpc::DeferId, ok: bool, now: forkd_os::Instant) {
    if let Some((label, start)) = ctl.deferred_calls.remove(&id) {
        let outcome = if ok { "ok" } else { "error" };
        ctl.stats.rpc_call(&label, outcome, now.saturating_duration_since(start), now);
    }
}

/// Reads the master's and every running worker's resources: all of the
/// master's; of a worker, everything the first time its process is seen
/// (its start time never changes), then only its resident memory, the
/// cheap read, so that a scrape of many workers stays short.
fn sample_processes<O: Os>(os: &mut O, ctl: &mut Ctl) {
    let master = ctl.info.pid;
    let running: std::collections::BTreeSet<Pid> = ctl.sup.instances().iter().filter_map(|i| i.state.pid()).collect();
    ctl.procs.retain(|pid, _| running.contains(pid));
    match os.process_stats(master) {
        Ok(stats) => {
            ctl.procs.insert(master, stats);
        }
        Err(e) => log::debug!("stats of the master: {e}"),
    }
    for pid in running {
        let known = ctl.procs.get_mut(&pid).filter(|_| pid != master);
        let read = match known {
            Some(stats) => os.resident_memory(pid).map(|rss| stats.rss_bytes = rss),
            None => os.process_stats(pid).map(|stats| {
                ctl.procs.insert(pid, stats);
            }),
        };
        if let Err(e) = read {
            log::debug!("stats of pid {pid}: {e}");
            ctl.procs.remove(&pid);
        }
    }
}
