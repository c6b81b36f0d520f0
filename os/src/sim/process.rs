//! Processes and signals: the table entry of a simulated process, how a
//! signal reaches it, and what the kernel does when it dies.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Condvar};

use super::sched::{start_thread, Run};
use super::state::State;
use super::trace::TraceEvent;
use super::{Held, SimOs, DEFAULT_UMASK, INIT_PID, ROOT_PID};
use crate::{Entry, ExitStatus, Fd, Pid, Signal, SignalSet, SpawnOptions};

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
    /// Whether its descriptors 0 to 2 still reach the world's console (the
    /// terminal it was started from) or `/dev/null`; inherited.
    pub(super) console: bool,
    /// Its own environment, once a `spawn_exec` gave it one; `None`: the
    /// world's ([`Config::env`](super::Config::env)).
    pub(super) env: Option<BTreeMap<String, std::ffi::OsString>>,
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
            console: true,
            env: None,
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

impl SimOs {
    /// `Os::spawn`: the child gets a copy of the descriptor table and the
    /// regions, as a fork does.
    pub(super) fn fork(&mut self, opts: SpawnOptions, entry: Entry<SimOs>) -> io::Result<Pid> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.fork_fault(me)?;
        let pid = Pid(st.next_pid);
        st.next_pid += 1;
        let parent = &st.procs[&me];
        let pgid = if opts.new_group { pid } else { parent.pgid };
        let mut child = Proc::new(pid, Pid(me), pgid);
        // The child's copy of the descriptor table: every object gains a
        // reference. The signal pipe is the parent's own and is closed in the
        // child, as the real implementation does.
        let sig_fd = parent.signal_fd;
        let fds: Vec<(i32, u64)> =
            parent.fds.iter().map(|(f, o)| (*f, *o)).filter(|(f, _)| Some(*f) != sig_fd).collect();
        let regions: BTreeSet<u64> =
            parent.regions.iter().copied().filter(|r| !st.dont_fork.contains(&(me, *r))).collect();
        child.niceness = parent.niceness;
        child.uid = parent.uid;
        child.gid = parent.gid;
        child.umask = parent.umask;
        child.console = parent.console;
        child.env = parent.env.clone();
        for (fd, id) in &fds {
            st.objects.get_mut(id).unwrap().1 += 1;
            child.fds.insert(*fd, *id);
        }
        for r in &regions {
            st.regions.get_mut(r).unwrap().insert(pid.0);
        }
        child.regions = regions;
        st.procs.insert(pid.0, child);
        st.record(me, TraceEvent::Spawn(pid));
        start_thread(&self.shared, &mut st, pid, entry);
        Ok(pid)
    }

    /// The caller's thread goes on as the daemon under a new pid, in a
    /// group of its own, adopted by init; a new process takes the caller's
    /// pid, parent and group and runs the launcher, so that whoever waits
    /// for the caller waits for the launcher, as a shell does.
    pub(super) fn detach_from_launcher(&mut self, launcher: Entry<SimOs>) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.fork_fault(me)?;
        let held = &st.procs[&me];
        assert!(
            held.regions.is_empty() && held.signal_fd.is_none() && !st.procs.values().any(|p| p.ppid.0 == me),
            "detach is called before the process has regions, signal handlers or children"
        );
        // The session leader in between, which exits at once: its pid is
        // the daemon's group.
        let leader = Pid(st.next_pid);
        let daemon = Pid(st.next_pid + 1);
        st.next_pid += 2;
        let mut proc = st.procs.remove(&me).expect("the caller is in the table");
        let mut stay = Proc::new(Pid(me), proc.ppid, proc.pgid);
        stay.uid = proc.uid;
        stay.gid = proc.gid;
        stay.umask = proc.umask;
        stay.niceness = proc.niceness;
        stay.console = proc.console;
        stay.env = proc.env.clone();
        stay.fds = proc.fds.clone();
        for id in stay.fds.values() {
            st.objects.get_mut(id).expect("object exists").1 += 1;
        }
        proc.pid = daemon;
        proc.ppid = INIT_PID;
        proc.pgid = leader;
        st.procs.insert(daemon.0, proc);
        st.procs.insert(me, stay);
        st.running = Some(daemon.0);
        st.record(me, TraceEvent::Detach { daemon });
        start_thread(&self.shared, &mut st, Pid(me), launcher);
        // Still holding the baton, now as the daemon.
        drop(st);
        self.pid = daemon;
        Ok(())
    }
}
