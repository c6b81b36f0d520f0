//! Processes and signals: the table entry of a simulated process, how a
//! signal reaches it, and what the kernel does when it dies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar};

use super::sched::Run;
use super::state::State;
use super::trace::TraceEvent;
use super::{Held, DEFAULT_UMASK, INIT_PID, ROOT_PID};
use crate::{ExitStatus, Fd, Pid, Signal, SignalSet};

pub(super) struct Proc {
    pub(super) pid: Pid,
    pub(super) ppid: Pid,
    pub(super) pgid: Pid,
    pub(super) run: Run,
    /// Set once its thread is unwinding: its calls no longer schedule.
    pub(super) dying: bool,
    /// A fatal signal it has been sent and will die of at its next call.
    pub(super) fatal: Option<i32>,
    pub(super) fds: BTreeMap<i32, u64>,
    pub(super) regions: BTreeSet<u64>,
    pub(super) installed: SignalSet,
    pub(super) pending: SignalSet,
    pub(super) signal_fd: Option<i32>,
    pub(super) death_signal: Option<Signal>,
    pub(super) wake: Arc<Condvar>,
    pub(super) niceness: i32,
    /// Its effective user and group, inherited by its children.
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Bits taken from the mode of a file it creates, inherited too.
    pub(super) umask: u32,
}

impl Proc {
    pub(super) fn new(pid: Pid, ppid: Pid, pgid: Pid) -> Proc {
        Proc {
            pid,
            ppid,
            pgid,
            run: Run::Runnable,
            dying: false,
            fatal: None,
            fds: BTreeMap::new(),
            regions: BTreeSet::new(),
            installed: SignalSet::EMPTY,
            pending: SignalSet::EMPTY,
            signal_fd: None,
            death_signal: None,
            wake: Arc::new(Condvar::new()),
            niceness: 0,
            uid: 0,
            gid: 0,
            umask: DEFAULT_UMASK,
        }
    }

    pub(super) fn alive(&self) -> bool {
        !matches!(self.run, Run::Zombie(_))
    }

    pub(super) fn lowest_free_fd(&self) -> i32 {
        (3..).find(|n| !self.fds.contains_key(n)).unwrap()
    }
}

impl State {
    pub(super) fn deliver(&mut self, pid: i32, sig: Signal) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.alive() {
            return;
        }
        if sig == Signal::Kill {
            p.fatal = Some(libc::SIGKILL);
        } else if p.installed.contains(sig) {
            p.pending.insert(sig);
        } else if sig.default_terminates() {
            p.fatal = Some(sig.number());
        }
    }

    /// The kernel's part of a process's death: descriptors closed, regions
    /// unmapped, children handed to init, the parent told.
    pub(super) fn exit_process(&mut self, pid: i32, status: ExitStatus) {
        let held = {
            let p = &self.procs[&pid];
            Held {
                fds: p.fds.iter().map(|(fd, id)| (Fd(*fd), self.objects[id].0.describe())).collect(),
                regions: p.regions.iter().copied().collect(),
            }
        };
        if !held.fds.is_empty() || !held.regions.is_empty() {
            self.held_at_exit.insert(Pid(pid), held);
        }
        let fds: Vec<i32> = self.procs[&pid].fds.keys().copied().collect();
        for fd in fds {
            self.close_fd(pid, fd);
        }
        let regions = std::mem::take(&mut self.proc(pid).regions);
        for r in regions {
            self.unmap(pid, r);
        }
        self.record(pid, TraceEvent::Exit(status));
        self.exits.push((Pid(pid), status));
        if Pid(pid) == ROOT_PID {
            self.root_status = Some(status);
        }
        let ppid = self.procs[&pid].ppid;
        self.proc(pid).run = Run::Zombie(status);
        // Orphans go to init; their death signals fire.
        let children: Vec<i32> = self.procs.values().filter(|p| p.ppid.0 == pid).map(|p| p.pid.0).collect();
        for c in children {
            self.proc(c).ppid = INIT_PID;
            if let Some(sig) = self.procs[&c].death_signal {
                self.deliver(c, sig);
            }
            if matches!(self.procs[&c].run, Run::Zombie(_)) {
                self.procs.remove(&c);
            }
        }
        if ppid == INIT_PID {
            self.procs.remove(&pid);
        } else {
            self.deliver(ppid.0, Signal::Chld);
        }
    }

    pub(super) fn unmap(&mut self, pid: i32, region: u64) {
        self.dont_fork.remove(&(pid, region));
        if let Some(users) = self.regions.get_mut(&region) {
            users.remove(&pid);
            if users.is_empty() {
                self.regions.remove(&region);
            }
        }
    }
}

/// When every simulated process started, in seconds since the Unix epoch:
/// the simulation has no calendar.
pub(super) const EPOCH_SECONDS: f64 = 1_700_000_000.0;

/// The modelled resources of `pid`: a base resident size plus what its
/// shared regions map, its open descriptors, a limit of 1024, no CPU time
/// (virtual time is not spent computing).
pub(super) fn stats_of(st: &State, pid: Pid) -> std::io::Result<crate::ProcessStats> {
    let p = st.procs.get(&pid.0).filter(|p| p.alive()).ok_or_else(|| std::io::Error::from_raw_os_error(3))?;
    Ok(crate::ProcessStats {
        rss_bytes: (4 << 20) + (64 << 10) * p.regions.len() as u64,
        cpu_seconds: 0.0,
        open_fds: p.fds.len() as u64,
        max_fds: 1024,
        start_time_seconds: EPOCH_SECONDS,
    })
}
