//! What the daemon counts about itself for its metrics and its status
//! page: RPC calls by method and outcome with their latency, connections,
//! restarts by reason, dropped subscribers, and a bounded ring of the last
//! minutes.
//!
//! Every count is bounded in size: methods are counted under their own
//! name only when the registry knows them (anything else is `other`),
//! instances are those the supervisor has, and the ring holds a fixed
//! number of slots. Nothing here reads a clock: the loop passes `now`.

use std::collections::BTreeMap;
use std::time::Duration;

use forkd_os::Instant;

/// Why an instance's process exited, as the metrics and the event stream
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitReason {
    /// It exited on its own with a code.
    Exit,
    /// It was killed by a signal it was not sent by the daemon.
    Signal,
    /// The daemon killed it: its heartbeat stopped.
    Hang,
    /// A `worker.restart` asked for it.
    Manual,
    /// The daemon stopped it (the daemon is stopping).
    Stop,
    /// A scale down retired it.
    Retire,
    /// A rolling reload replaced it with a new process.
    Reload,
}

impl ExitReason {
    /// Every reason a restart may have, in label order.
    pub const RESTARTS: [ExitReason; 5] =
        [ExitReason::Exit, ExitReason::Signal, ExitReason::Hang, ExitReason::Manual, ExitReason::Reload];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Exit => "exit",
            ExitReason::Signal => "signal",
            ExitReason::Hang => "hang",
            ExitReason::Manual => "manual",
            ExitReason::Stop => "stop",
            ExitReason::Retire => "retire",
            ExitReason::Reload => "reload",
        }
    }
}

/// The latency histogram's upper bounds, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// A histogram of one method's dispatch times.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], not cumulative.
    pub counts: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// How long one slot of the history ring covers.
pub const HISTORY_SLOT: Duration = Duration::from_secs(10);

/// How many slots the ring keeps: ten minutes.
pub const HISTORY_SLOTS: usize = 60;

/// One slot of the history ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Which slot since the daemon started (its start is `index *
    /// HISTORY_SLOT`).
    pub index: u64,
    pub rpc_calls: u64,
    pub restarts: u64,
    pub exits: u64,
}

/// The daemon's own counts; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Stats {
    started: Instant,
    /// (method or `other`, outcome) -> calls.
    pub rpc_calls: BTreeMap<(String, &'static str), u64>,
    pub rpc_latency: BTreeMap<String, Histogram>,
    pub connections_open: usize,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub subscribers_dropped: u64,
    /// The last event's sequence number.
    pub events: u64,
    /// (instance id, reason) -> restarts.
    pub restarts: BTreeMap<(usize, ExitReason), u64>,
    pub history: std::collections::VecDeque<Slot>,
}

impl Stats {
    /// Nothing counted, the daemon started at `started`.
    pub fn new(started: Instant) -> Stats {
        Stats {
            started,
            rpc_calls: BTreeMap::new(),
            rpc_latency: BTreeMap::new(),
            connections_open: 0,
            connections_accepted: 0,
            connections_refused: 0,
            subscribers_dropped: 0,
            events: 0,
            restarts: BTreeMap::new(),
            history: std::collections::VecDeque::with_capacity(HISTORY_SLOTS),
        }
    }

    /// A call of `method` (its label already bounded) ended with
    /// `outcome` after `took`.
    pub fn rpc_call(&mut self, method: &str, outcome: &'static str, took: Duration, now: Instant) {
        *self.rpc_calls.entry((method.to_string(), outcome)).or_default() += 1;
        self.rpc_latency.entry(method.to_string()).or_default().observe(took.as_secs_f64());
        self.slot(now).rpc_calls += 1;
    }

    /// Instance `id` exited and will be started again, for `why`.
    pub fn restart_scheduled(&mut self, id: usize, why: ExitReason) {
        *self.restarts.entry((id, why)).or_default() += 1;
    }

    /// A reload's new instance `new` took the place of `old`: the old
    /// one's restarts go on under the new one's id, with one more for the
    /// reload.
    pub fn replaced(&mut self, old: usize, new: usize) {
        let moved: Vec<(ExitReason, u64)> = self
            .restarts
            .iter()
            .filter(|((id, _), _)| *id == old || *id == new)
            .map(|((id, why), n)| (*why, if *id == old { *n } else { 0 }))
            .collect();
        self.restarts.retain(|(id, _), _| *id != old && *id != new);
        for (why, n) in moved {
            *self.restarts.entry((new, why)).or_default() += n;
        }
        self.restart_scheduled(new, ExitReason::Reload);
    }

    /// An instance exited; `restart` when it will be started again.
    pub fn exit_seen(&mut self, restart: bool, now: Instant) {
        let slot = self.slot(now);
        slot.exits += 1;
        slot.restarts += u64::from(restart);
    }

    /// The ring's slot for `now`, making it (and dropping the oldest) if
    /// it is new.
    pub fn slot(&mut self, now: Instant) -> &mut Slot {
        let index = (now.saturating_duration_since(self.started).as_nanos() / HISTORY_SLOT.as_nanos()) as u64;
        let fresh = match self.history.back() {
            Some(last) => last.index < index,
            None => true,
        };
        if fresh {
            if self.history.len() == HISTORY_SLOTS {
                self.history.pop_front();
            }
            self.history.push_back(Slot { index, ..Slot::default() });
        }
        self.history.back_mut().expect("a slot was just made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_slots_and_counts_into_the_current_one() {
        let start = Instant::from_nanos(0);
        let mut stats = Stats::new(start);
        for i in 0..(HISTORY_SLOTS as u64 + 5) {
            let now = start + HISTORY_SLOT * (i as u32);
            stats.rpc_call("my.echo", "ok", Duration::from_micros(300), now);
            stats.rpc_call("my.echo", "ok", Duration::from_micros(300), now + Duration::from_secs(1));
        }
        assert_eq!(stats.history.len(), HISTORY_SLOTS);
        assert_eq!(stats.history.front().unwrap().index, 5);
        assert!(stats.history.iter().all(|s| s.rpc_calls == 2));
        let h = &stats.rpc_latency["my.echo"];
        assert_eq!((h.count, h.counts[2]), (2 * (HISTORY_SLOTS as u64 + 5), 2 * (HISTORY_SLOTS as u64 + 5)));
    }
}
