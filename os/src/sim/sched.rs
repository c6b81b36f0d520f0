//! The scheduler: who holds the baton, when the clock jumps, how a run ends.
//!
//! Every `Os` call enters here; the world picks the next process to run with
//! its seeded generator, so that a seed replays its interleaving. Nothing here
//! touches a socket or a file.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, MutexGuard, Once};
use std::time::Duration;

use super::state::State;
use super::trace::TraceEvent;
use super::{Killed, Outcome, Shared, SimOs};
use crate::{Entry, ExitStatus, Pid, Ready};

#[derive(Clone, Debug)]
pub(super) enum Wait {
    Poll {
        fds: Vec<(i32, Ready)>,
        deadline: Option<u64>,
    },
    Sleep {
        deadline: u64,
    },
    /// Until the process is gone (exited, reaped or not) or the deadline.
    Gone {
        pid: i32,
        deadline: u64,
    },
}

#[derive(Debug)]
pub(super) enum Run {
    Runnable,
    Blocked(Wait),
    Zombie(ExitStatus),
}

impl State {
    /// Whether a process may run now.
    pub(super) fn can_run(&self, pid: i32) -> bool {
        let p = &self.procs[&pid];
        if p.fatal.is_some() || self.aborting {
            return p.alive();
        }
        match &p.run {
            Run::Runnable => true,
            Run::Zombie(_) => false,
            Run::Blocked(Wait::Sleep { deadline }) => self.clock >= *deadline,
            Run::Blocked(Wait::Gone { pid, deadline }) => self.clock >= *deadline || self.gone(*pid),
            Run::Blocked(Wait::Poll { fds, deadline }) => {
                deadline.is_some_and(|d| self.clock >= d)
                    || fds.iter().any(|(fd, interest)| !self.readiness(pid, *fd, *interest).is_empty())
            }
        }
    }

    /// Whether no live process has this pid: it never ran, was reaped, or
    /// is a zombie.
    pub(super) fn gone(&self, pid: i32) -> bool {
        self.procs.get(&pid).is_none_or(|p| !p.alive())
    }

    pub(super) fn earliest_deadline(&self) -> Option<u64> {
        self.procs
            .values()
            .filter_map(|p| match &p.run {
                Run::Blocked(Wait::Sleep { deadline } | Wait::Gone { deadline, .. }) => Some(*deadline),
                Run::Blocked(Wait::Poll { deadline, .. }) => *deadline,
                _ => None,
            })
            .min()
    }

    /// Picks who runs next. Returns `None` when nobody is left to run.
    pub(super) fn pick(&mut self) -> Option<i32> {
        loop {
            let runnable: Vec<i32> = self
                .procs
                .iter()
                .filter(|(_, p)| p.alive())
                .map(|(pid, _)| *pid)
                .filter(|pid| self.can_run(*pid))
                .collect();
            if !runnable.is_empty() {
                let i = self.below(runnable.len() as u64) as usize;
                return Some(runnable[i]);
            }
            if !self.procs.values().any(|p| p.alive()) {
                return None;
            }
            match self.earliest_deadline() {
                Some(d) if d > self.clock => self.clock = d,
                _ => {
                    // Everybody waits and nothing can wake anybody.
                    self.outcome.get_or_insert(Outcome::Deadlock);
                    self.record(0, TraceEvent::Deadlock);
                    self.aborting = true;
                }
            }
        }
    }

    /// Hands the baton to the next process and reports whether it is `me`.
    pub(super) fn hand_over(&mut self, me: i32) -> bool {
        match self.pick() {
            Some(next) => {
                self.running = Some(next);
                if next != me {
                    self.procs[&next].wake.notify_one();
                }
                next == me
            }
            None => {
                self.running = None;
                self.finish();
                false
            }
        }
    }

    pub(super) fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.outcome.get_or_insert(Outcome::Finished);
        }
    }

    pub(super) fn cut_if_over(&mut self) {
        if self.aborting {
            return;
        }
        let reason = if self.steps > self.config.max_steps {
            Some(format!("more than {} steps", self.config.max_steps))
        } else if Duration::from_nanos(self.clock) > self.config.max_time {
            Some(format!("more than {:?} of virtual time", self.config.max_time))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.record(0, TraceEvent::Cut(reason.clone()));
            self.outcome.get_or_insert(Outcome::Cut(reason));
            self.aborting = true;
        }
    }
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics of simulated processes are recorded, not printed: a harness run of
/// a thousand seeds would otherwise bury its verdict.
pub(super) fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let sim = std::thread::current().name().is_some_and(|n| n.starts_with("sim-"));
            if sim {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    s.to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "panic".to_string()
                };
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

pub(super) fn start_thread(shared: &Arc<Shared>, st: &mut State, pid: Pid, entry: Entry<SimOs>) {
    let shared2 = Arc::clone(shared);
    let handle = std::thread::Builder::new()
        .name(format!("sim-{}", pid.0))
        .stack_size(1 << 20)
        .spawn(move || process_main(shared2, pid, entry))
        .expect("spawn a simulation thread");
    st.threads.push(handle);
}

pub(super) fn process_main(shared: Arc<Shared>, pid: Pid, entry: Entry<SimOs>) {
    let mut os = SimOs { shared: Arc::clone(&shared), pid };
    // Wait for the baton before running anything.
    {
        let st = shared.lock();
        let wake = Arc::clone(&st.procs[&pid.0].wake);
        let st = wait_for_baton(&shared, st, pid.0, &wake);
        let killed = st.procs[&pid.0].fatal.is_some() || st.aborting;
        drop(st);
        if killed {
            let mut st = shared.lock();
            let n = st.procs[&pid.0].fatal.unwrap_or(libc::SIGKILL);
            st.exit_process(pid.0, ExitStatus::Signaled(n));
            st.hand_over(pid.0);
            notify_end(&shared, &st);
            return;
        }
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| entry(&mut os)));
    // A process that detached goes on under another pid.
    let pid = os.pid;
    let mut st = shared.lock();
    let status = match result {
        Ok(code) => ExitStatus::Exited(code),
        Err(payload) if payload.is::<Killed>() => ExitStatus::Signaled(st.procs[&pid.0].fatal.unwrap_or(libc::SIGKILL)),
        Err(_) => {
            let msg = PANIC_MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "panic".into());
            st.record(pid.0, TraceEvent::Panic(msg.clone()));
            st.panics.push((pid, msg));
            ExitStatus::Exited(101)
        }
    };
    st.exit_process(pid.0, status);
    st.hand_over(pid.0);
    notify_end(&shared, &st);
}

pub(super) fn notify_end(shared: &Shared, st: &State) {
    if st.done {
        shared.main.notify_all();
    }
}

pub(super) fn wait_for_baton<'a>(
    shared: &'a Shared,
    mut st: MutexGuard<'a, State>,
    me: i32,
    wake: &Condvar,
) -> MutexGuard<'a, State> {
    while st.running != Some(me) {
        if st.done {
            // The world ended while this process waited: it is torn down.
            break;
        }
        st = wake.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    let _ = shared;
    st
}

impl SimOs {
    /// Enters the world for one call: a scheduling point. Returns the state
    /// locked, with this process holding the baton. A process that has been
    /// killed unwinds here.
    pub(super) fn enter(&self) -> MutexGuard<'_, State> {
        let me = self.pid.0;
        let mut st = self.shared.lock();
        if st.procs[&me].dying {
            // A dying process's destructors may still call in; they run
            // without scheduling. If user code caught the unwinding and went
            // on, it is unwound again: a killed process does not come back.
            if !std::thread::panicking() {
                drop(st);
                panic::resume_unwind(Box::new(Killed));
            }
            return st;
        }
        st.steps += 1;
        st.clock += 1_000;
        st.cut_if_over();
        st = self.schedule(st);
        self.die_if_killed(st)
    }

    pub(super) fn schedule<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        if !st.hand_over(me) {
            if st.done {
                self.shared.main.notify_all();
            }
            let wake = Arc::clone(&st.procs[&me].wake);
            st = wait_for_baton(&self.shared, st, me, &wake);
        }
        st
    }

    pub(super) fn die_if_killed<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        let p = st.proc(me);
        if p.fatal.is_some() || st.aborting || st.done {
            let p = st.proc(me);
            if p.fatal.is_none() {
                p.fatal = Some(libc::SIGKILL);
            }
            p.dying = true;
            drop(st);
            panic::resume_unwind(Box::new(Killed));
        }
        st
    }

    /// Blocks this process until `wait` is satisfied, then returns with the
    /// baton.
    pub(super) fn block<'a>(&'a self, mut st: MutexGuard<'a, State>, wait: Wait) -> MutexGuard<'a, State> {
        let me = self.pid.0;
        if st.procs[&me].dying {
            return st;
        }
        st.proc(me).run = Run::Blocked(wait);
        st = self.schedule(st);
        st.proc(me).run = Run::Runnable;
        self.die_if_killed(st)
    }
}
