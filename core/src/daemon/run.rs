//! The daemon's event loop: one thread, one `poll`, every descriptor
//! non-blocking, in s6's manner.
//!
//! Each turn of the loop, in this order:
//! 1. poll the signal pipe, the listener (while it accepts and a connection
//!    slot is free), every connection (read while it wants input, write while
//!    it has output) and every worker's wake-up socket, until the earliest
//!    deadline (idle connections, supervisor timers, the stop deadline, the
//!    keep-alive hook);
//! 2. take the signals, turn each into an event and publish it (the default
//!    listeners ask to stop or to reap);
//! 3. reap every exited child (until `try_reap` says none: signals merge);
//! 4. read the workers' acknowledgements and events;
//! 5. accept, read, dispatch and write connections;
//! 6. carry out what methods and listeners asked (`Ctl`), then the
//!    supervisor's actions (spawn, stop, signal);
//! 7. when stopping and nothing is left in flight, clean up and return.
//!
//! The loop never blocks anywhere but in `poll`, so no client can stall
//! another: a slow reader only fills its own output buffer, and a client
//! that never reads stops being read from once its output is full.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::time::Duration;

use std::rc::Rc;

use forkd_os::{
    Address, ExecSpec, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError,
    PollFd, Ready, Signal, SpawnOptions,
};

use crate::daemon::control::{Ctl, Info, InstanceView};
use crate::daemon::{Config, Daemon, Hooks, StartError, Stopped};
use crate::event::{defaults, Event, Topic, WorkerEventKind};
use crate::rpc::{Access, Conn, Limits, Policy, Registry};
use crate::supervisor::{Action, InstanceState, Supervisor};
use crate::worker::{run_worker, Channel, Command, WorkerProcess, WorkerState, REGION_SIZE};

mod clients;
mod events;
mod links;
mod slots;
mod startup;
mod stop;
mod upgrade;
mod workers;

use clients::Client;
use events::dispatch;
use links::{Link, Links, WarnLimit};
pub(crate) use startup::install_default_listeners;
use startup::{bind, start_checks};
use upgrade::Upgrade;
pub use upgrade::{parse_env as parse_upgrade_env, parse_state as parse_upgrade_state, UPGRADE_ENV};

/// Signals the daemon takes as events. SIGPIPE is not among them: writes to
/// a closed peer fail with `BrokenPipe` instead.
const SIGNALS: [Signal; 11] = [
    Signal::Hup,
    Signal::Int,
    Signal::Quit,
    Signal::Usr1,
    Signal::Usr2,
    Signal::Alrm,
    Signal::Term,
    Signal::Chld,
    Signal::Winch,
    Signal::Cont,
    Signal::Tstp,
];

/// How long a worker has to answer a command before its caller gets an
/// error (a stopped or frozen worker must not hold a client forever).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the daemon is in its life: the loop's one phase, advanced by
/// [`Loop::advance`] at the top of every turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving.
    Running,
    /// Stopping gracefully until `deadline`: no new connection or work,
    /// workers asked to stop, answers in flight finished.
    Stopping { deadline: Instant },
    /// The graceful stop took too long: every worker left was killed, and
    /// their exits are reaped until `deadline`.
    Killing { deadline: Instant },
    /// Nothing is left to wait for: the loop cleans up and returns.
    Done,
}

/// What the loop's poll waits for at the latest: its deadlines, by kind.
/// The earliest of them is the poll's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// A connection goes idle.
    Idle,
    /// A request that began to arrive is late, or answers wait unread.
    Request,
    /// A connection without the token may be pushed out of its slot.
    Evict,
    /// A worker is due to be spawned, signalled, or found hung.
    Supervisor,
    /// A worker has not answered a command in time.
    Command,
    /// The phase's own deadline (the stop's, the kill's).
    Phase,
    /// The service manager's watchdog is due.
    Keepalive,
    /// `accept` may be tried again after it lacked resources.
    AcceptRetry,
    /// A new master has not said it is ready in time.
    Upgrade,
}

struct Loop<'d> {
    config: &'d Config,
    registry: Registry<Ctl>,
    bus: crate::event::Bus<Ctl>,
    factories: Vec<crate::daemon::WorkerFactory>,
    ctl: Ctl,
    pid_lock: Option<Fd>,
    signal_fd: Fd,
    listener: Option<Fd>,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    links: Links,
    /// The workers' hot words, packed.
    slots: slots::Slots,
    /// The workers' regions.
    regions: slots::Regions,
    /// A large answer was made: the allocator is trimmed once it is sent.
    trim_pending: bool,
    phase: Phase,
    /// `accept` failed for lack of resources: the listener is not polled
    /// until then (or until a connection closes).
    accept_paused: Option<Instant>,
    read_buf: Vec<u8>,
    /// The facade's descriptors that workers must not keep.
    private_fds: Vec<Fd>,
    reopen_log: Option<fn()>,
    /// Why the daemon stops as a failure (a worker restarted too often).
    failure: Option<String>,
    /// Who may use connections on tcp (with the token) and on unix.
    tcp_policy: Rc<Policy>,
    unix_policy: Rc<Policy>,
    /// The token file, when this daemon made it (it is removed at stop).
    token_made: Option<std::path::PathBuf>,
    /// The new master of an upgrade under way.
    upgrade: Option<Upgrade>,
    /// A new master's end of its upgrade channel, until it has told the
    /// old master that it is ready.
    handover_fd: Option<Fd>,
    /// The new master this one handed over to: it stops without
    /// `STOPPING=1`, leaving the pid, socket and token files to it.
    successor: Option<Pid>,
}

/// Runs `daemon` until it stops. `hooks.ready` is called once the daemon is
/// ready (pid file locked, socket listening, workers spawned); a start that
/// fails returns the error having left nothing behind.
pub fn run<O: Os>(os: &mut O, daemon: Daemon, hooks: &mut dyn Hooks<O>) -> Result<Stopped, StartError> {
    let Daemon { config, registry, bus, workers, reopen_log } = daemon;
    let now = os.now();

    // The signals first, so that a SIGTERM that comes during the start is
    // an event rather than a death that leaves a pid file behind; then the
    // pid file, so that a second instance fails before it touches the
    // socket of the first.
    let signal_fd = os.install_signals(&SIGNALS).map_err(StartError::Signals)?;
    let pid_lock = match lock_pid_file(os, &config) {
        Ok(fd) => fd,
        Err(e) => {
            os.close(signal_fd);
            return Err(e);
        }
    };
    // A new master that fails leaves the pid file to the old one.
    let cleanup_pid = |os: &mut O| {
        let _ = config.handed_over.is_none().then(|| os.remove_file(&config.pid_file));
        os.close(pid_lock);
    };
    set_niceness(os, &config);
    let (token, token_made) = match start_checks(os, &config, &workers) {
        Ok(t) => t,
        Err(e) => {
            os.close(signal_fd);
            cleanup_pid(os);
            return Err(e);
        }
    };
    let listener = match bind(os, &config) {
        Ok(fd) => fd,
        Err(e) => {
            os.close(signal_fd);
            if let Some(path) = &token_made {
                let _ = os.remove_file(path);
            }
            cleanup_pid(os);
            return Err(e);
        }
    };
    let (specs, factories): (Vec<_>, Vec<_>) = workers.into_iter().unzip();
    let ctl = control(os, &config, specs, now);
    let mut registry = registry;
    registry.set_max_multicall(config.max_batch);
    registry.set_info(config.description.clone(), config.version.clone());
    let (tcp_policy, unix_policy) = policies(&config, token);
    let mut lp = Loop {
        config: &config,
        registry,
        bus,
        factories,
        ctl,
        pid_lock: Some(pid_lock),
        signal_fd,
        listener: Some(listener),
        clients: BTreeMap::new(),
        next_client: 1,
        links: Links::default(),
        slots: Default::default(),
        regions: Default::default(),
        trim_pending: false,
        phase: Phase::Running,
        accept_paused: None,
        read_buf: vec![0; config.socket_buffer.max(1)],
        private_fds: hooks.private_fds(),
        reopen_log,
        failure: None,
        tcp_policy: Rc::new(tcp_policy),
        unix_policy: Rc::new(unix_policy),
        token_made,
        upgrade: None,
        handover_fd: config.handed_over.as_ref().map(|h| h.ready),
        successor: None,
    };
    lp.supervise(os);
    lp.await_workers(os); // A new master's workers loop before the old ones stop.
    os.note(format_args!("daemon ready"));
    lp.tell_old_master(os); // A new master is ready once handed over.
    hooks.ready(os);
    // What the facade held until it was ready (the launcher's pipe) is
    // closed now, and its descriptor number may be reused.
    lp.private_fds = hooks.private_fds();
    lp.publish(Event::DaemonStart);
    lp.run(os, hooks);
    Ok(Stopped { reason: lp.ctl.stop.clone().unwrap_or_default(), failure: lp.failure.take() })
}

/// Who may use connections: on tcp with the token (when there is one), on
/// unix without; on both, the allowed hosts and origins.
fn policies(config: &Config, token: Option<String>) -> (Policy, Policy) {
    let unix_policy = Policy {
        token: None,
        allowed_hosts: config.allowed_hosts.clone(),
        allowed_origins: config.allowed_origins.clone(),
    };
    let tcp_policy = Policy { token, ..unix_policy.clone() };
    (tcp_policy, unix_policy)
}

/// Sets the configured niceness; a daemon that cannot still starts.
fn set_niceness<O: Os>(os: &mut O, config: &Config) {
    if let Some(n) = config.niceness {
        if let Err(e) = os.set_niceness(n) {
            log::warn!("cannot set niceness {n}: {e}");
        }
    }
}

/// Locks the pid file, or says why the daemon cannot start. A new master
/// has its predecessor's lock already.
fn lock_pid_file<O: Os>(os: &mut O, config: &Config) -> Result<Fd, StartError> {
    if let Some(h) = &config.handed_over {
        return Ok(h.pid_lock);
    }
    os.lock_pid_file(&config.pid_file).map_err(|e| match e {
        PidFileError::Locked(pid) => StartError::AlreadyRunning(pid),
        PidFileError::LockedByOther(pid) => StartError::PidFileLockedByOther(config.pid_file.clone(), pid),
        PidFileError::Unsafe(why) => StartError::PidFileUnsafe(config.pid_file.clone(), why),
        PidFileError::Io(e) => StartError::PidFile(config.pid_file.clone(), e),
    })
}

/// The control state the loop starts with: the daemon's info and a
/// supervisor for `specs`.
fn control<O: Os>(os: &mut O, config: &Config, specs: Vec<crate::supervisor::WorkerSpec>, now: Instant) -> Ctl {
    // The restarts' jitter draws from the world's randomness, as the token
    // does: in the simulation it replays with the seed.
    let mut seed = [0u8; 8];
    if let Err(e) = os.random_bytes(&mut seed) {
        log::warn!("no random bytes for the restarts' jitter: {e}");
    }
    let sup = Supervisor::new(specs, config.restart.clone(), u64::from_le_bytes(seed), now);
    let info = Info {
        pid: os.pid(),
        description: config.description.clone(),
        version: config.version.clone(),
        address: config.address.to_string(),
        started: now,
    };
    let mut ctl = Ctl::new(info, sup, now);
    ctl.max_workers = config.max_workers;
    ctl
}

impl Loop<'_> {
    fn run<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut keepalive_at = hooks.keepalive_interval().map(|d| os.now() + d);
        loop {
            let now = os.now();
            self.ctl.now = now;
            self.advance(os, hooks, now);
            if self.phase == Phase::Done {
                break;
            }
            if let Some(at) = keepalive_at {
                if now >= at {
                    hooks.keepalive(os);
                    keepalive_at = hooks.keepalive_interval().map(|d| now + d);
                }
            }

            // 1. poll
            self.poll_set(&mut fds, now);
            let deadline = self.next_deadline(keepalive_at).map(|(timer, at)| {
                log::trace!("poll until {at} ({timer:?})");
                at
            });
            if let Err(e) = os.poll(&mut fds, deadline) {
                log::error!("poll: {e}");
            }
            self.ctl.now = os.now();
            let ready: BTreeMap<Fd, Ready> =
                fds.iter().filter(|p| !p.ready.is_empty()).map(|p| (p.fd, p.ready)).collect();

            // 2. signals
            if ready.contains_key(&self.signal_fd) {
                self.take_signals(os);
            }
            // 3. reap
            if self.ctl.reap || self.phase != Phase::Running {
                self.ctl.reap = false;
                self.reap(os);
            }
            if std::mem::take(&mut self.ctl.reopen_log) {
                self.reopen_logs(os, hooks);
            }
            // 4. workers
            let woken: Vec<usize> =
                self.links.iter().filter(|(_, l)| ready.contains_key(&l.wake)).map(|(id, _)| id).collect();
            for id in woken {
                self.drain_link(os, id);
            }
            self.poll_links();
            // 5. clients
            if let Some(l) = self.listener {
                if ready.contains_key(&l) {
                    self.accept(os, l);
                }
            }
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            // Followers of the event stream get at most half the slots:
            // the others stay for calls, `status` and `/health`.
            let cap = (self.config.max_connections / 2).max(1);
            let mut subscribers = self.clients.values().filter(|c| c.conn.is_subscriber()).count();
            for id in ids {
                let r = self.clients.get(&id).and_then(|c| ready.get(&c.fd).copied()).unwrap_or(Ready::NONE);
                let mut was = false;
                if let Some(c) = self.clients.get_mut(&id) {
                    was = c.conn.is_subscriber();
                    c.conn.set_may_subscribe(subscribers < cap);
                }
                self.serve(os, id, r);
                if !was && self.clients.get(&id).is_some_and(|c| c.conn.is_subscriber()) {
                    subscribers += 1;
                }
            }
            // 6. what was asked: the events methods raised first, so that
            // their listeners' requests are carried out with the rest.
            self.publish_raised();
            self.step_upgrade(os, hooks, &ready);
            self.supervise(os);
            self.deliver_completions(os);
            self.flush_subscribers(os);
            self.expire_idle(os);
            self.trim_after_large_answers(os);
        }
        self.finish(os, hooks);
    }

    /// What the poll waits on this turn: the signals, the listener while
    /// there is room, the connections with something to read or write, and
    /// the workers' links.
    fn poll_set(&self, fds: &mut Vec<PollFd>, now: Instant) {
        fds.clear();
        fds.push(PollFd::new(self.signal_fd, Ready::READ));
        // (`is_none_or` is newer than the workspace's rust-version.)
        let paused = self.accept_paused.is_some_and(|at| now < at);
        // Full, the listener is still polled while a connection that has
        // not shown the token in time holds a slot: a new one may take it.
        let room = self.clients.len() < self.config.max_connections || self.evictable(now).is_some();
        let accepting = self.listener.is_some() && room && !paused;
        if let (true, Some(l)) = (accepting, self.listener) {
            fds.push(PollFd::new(l, Ready::READ));
        }
        for c in self.clients.values() {
            let mut interest = Ready::NONE;
            if c.conn.wants_read() && !c.eof {
                interest |= Ready::READ;
            }
            if !c.conn.output().is_empty() {
                interest |= Ready::WRITE;
            }
            // A connection with nothing to read or write is not polled:
            // a peer's hangup would otherwise wake the loop again and
            // again while an answer is owed to it.
            if !interest.is_empty() {
                fds.push(PollFd::new(c.fd, interest));
            }
        }
        for link in self.links.values() {
            if !link.eof {
                fds.push(PollFd::new(link.wake, Ready::READ));
            }
        }
        if let Some(fd) = self.upgrade.as_ref().and_then(|u| u.ready_fd()) {
            fds.push(PollFd::new(fd, Ready::READ));
        }
    }

    /// Publishes the signals that arrived, one event each.
    fn take_signals<O: Os>(&mut self, os: &mut O) {
        match os.take_signals() {
            Ok(set) => {
                for s in set.iter() {
                    log::debug!("signal {s}");
                    self.publish(Event::Signal(s));
                }
            }
            Err(e) => log::error!("take signals: {e}"),
        }
    }

    /// Reopens the daemon's log, and has every worker reopen its own: they
    /// write to the same file.
    fn reopen_logs<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        hooks.reopen_log(os);
        for inst in self.ctl.sup.instances() {
            if let Some(pid) = inst.state.pid() {
                let _ = os.kill(KillTarget::Process(pid), Signal::Usr1);
            }
        }
    }

    /// Moves the phase on as far as it goes now. Every (phase, event) is
    /// here: a stop asked for, the stop finished, its deadline passed.
    fn advance<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, now: Instant) {
        loop {
            let next = match self.phase {
                Phase::Running => match self.ctl.stop.clone() {
                    Some(reason) => Phase::Stopping { deadline: self.begin_stop(os, hooks, &reason) },
                    None => Phase::Running,
                },
                Phase::Stopping { .. } if self.finished() => Phase::Done,
                Phase::Stopping { deadline } if now >= deadline => {
                    Phase::Killing { deadline: self.kill_what_is_left(os, now) }
                }
                Phase::Stopping { deadline } => Phase::Stopping { deadline },
                // What was killed is reaped; connections are not waited for.
                Phase::Killing { deadline } if now >= deadline || !self.ctl.sup.has_processes() => Phase::Done,
                Phase::Killing { deadline } => Phase::Killing { deadline },
                Phase::Done => Phase::Done,
            };
            if next == self.phase {
                return;
            }
            log::debug!("phase {:?} -> {next:?}", self.phase);
            self.phase = next;
        }
    }

    /// The earliest deadline the poll must wake for, and its kind.
    fn next_deadline(&self, keepalive_at: Option<Instant>) -> Option<(Timer, Instant)> {
        let idle = self.config.idle_timeout;
        // Only the connections `expire_idle` may close: one awaiting a
        // deferred answer is never expired, and its past deadline would
        // make every poll return at once, spinning the loop until then.
        let clients = self
            .clients
            .values()
            .filter(|c| c.conn.pending_deferred() == 0 && !c.conn.is_subscriber())
            .map(|c| c.last_active + idle)
            .min();
        let hang = self.config.restart.hang_timeout;
        let sup = self.ctl.sup.poll_timeout(|id| Some(self.links.get(&id)?.hang_deadline(hang?)));
        // A request that began to arrive must be whole by its deadline.
        let timeout = self.config.request_timeout;
        let requests = self
            .clients
            .values()
            .flat_map(|c| c.request_since.map(|(t, _)| t).into_iter().chain(c.stalled_since))
            .map(|t| t + timeout)
            .min();
        let commands = self
            .links
            .values()
            .flat_map(|l| {
                let sent = l.in_flight.filter(|(_, join, _)| *join != 0).map(|(_, _, sent)| sent);
                let queued = l.queue.iter().filter(|(_, join, _)| *join != 0).map(|(_, _, at)| *at).min();
                sent.into_iter().chain(queued).map(|t| t + COMMAND_TIMEOUT)
            })
            .min();
        let accept = self.accept_paused.filter(|_| self.listener.is_some());
        let evictable = self.next_evictable(self.ctl.now);
        let phase = match self.phase {
            Phase::Stopping { deadline } | Phase::Killing { deadline } => Some(deadline),
            Phase::Running | Phase::Done => None,
        };
        [
            (Timer::Idle, clients),
            (Timer::Supervisor, sup),
            (Timer::Command, commands),
            (Timer::Phase, phase),
            (Timer::Keepalive, keepalive_at),
            (Timer::AcceptRetry, accept),
            (Timer::Request, requests),
            (Timer::Evict, evictable),
            (Timer::Upgrade, self.upgrade.as_ref().map(Upgrade::deadline)),
        ]
        .into_iter()
        .filter_map(|(timer, at)| Some((timer, at?)))
        .min_by_key(|(_, at)| *at)
    }

    /// Publishes the events methods and listeners raised with `Ctl::emit`.
    fn publish_raised(&mut self) {
        for e in std::mem::take(&mut self.ctl.events) {
            self.publish(e);
        }
    }

    fn publish(&mut self, event: Event) {
        self.bus.publish(&mut self.ctl, &event);
        self.broadcast(&event);
        // Listeners may raise events in turn; bounded so that two listeners
        // raising each other's events cannot spin the loop forever.
        for _ in 0..16 {
            let raised = std::mem::take(&mut self.ctl.events);
            if raised.is_empty() {
                break;
            }
            for e in raised {
                self.bus.publish(&mut self.ctl, &e);
                self.broadcast(&e);
            }
        }
    }
}
