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
    Address, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, PidFileError, PollFd, Ready, Region, Signal,
    SpawnOptions,
};

use crate::daemon::control::{Ctl, Info, InstanceView};
use crate::daemon::{Config, Daemon, Hooks, StartError, Stopped};
use crate::event::{defaults, Event, Topic, WorkerEventKind};
use crate::rpc::{Access, Conn, Limits, Policy, Registry};
use crate::supervisor::{Action, InstanceState, Supervisor};
use crate::worker::{run_worker, Channel, Command, WorkerProcess, WorkerState, REGION_SIZE};

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

/// At most this many connections accepted in one turn, so that a flood of
/// connections cannot starve the ones already open.
const ACCEPTS_PER_TURN: usize = 64;

/// At most this many reads from one connection in one turn.
const READS_PER_TURN: usize = 16;

/// How long the listener is left alone after `accept` failed for lack of
/// descriptors or memory, unless a connection closes first.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// At most this many reads of a worker's wake-up socket in one turn: a
/// worker that floods it costs the loop a bounded amount per turn.
const WAKE_READS_PER_TURN: usize = 16;

/// A worker's warnings (a broken channel, say) are logged at most once in
/// this period; the ones held back are counted in the next.
const WARN_PERIOD: Duration = Duration::from_secs(10);

/// The token: 32 random bytes, kept as 64 lowercase hex digits.
const TOKEN_BYTES: usize = 32;

/// How long a worker has to answer a command before its caller gets an
/// error (a stopped or frozen worker must not hold a client forever).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long stopping may take beyond the workers' stop escalation before
/// everything left is killed and closed.
const STOP_GRACE: Duration = Duration::from_secs(1);

struct Client {
    fd: Fd,
    conn: Conn,
    last_active: Instant,
    eof: bool,
    /// When the request now arriving was first seen, and how many requests
    /// the connection had taken whole then.
    request_since: Option<(Instant, u64)>,
}

impl Client {
    /// Notes whether a request is arriving, and since when.
    fn track_request(&mut self, now: Instant) {
        let taken = self.conn.requests_taken();
        self.request_since = match (self.conn.in_request(), self.request_since) {
            (false, _) => None,
            (true, Some((since, at))) if at == taken => Some((since, at)),
            (true, _) => Some((now, taken)),
        };
    }
}

/// A running worker instance's link: its region and its wake-up socket.
struct Link {
    region: Region,
    channel: Channel,
    wake: Fd,
    eof: bool,
    /// Commands waiting for the mailbox, and the one it holds: (seq, join).
    /// Commands waiting for the mailbox, with the answer each is owed to
    /// and when it was queued.
    queue: std::collections::VecDeque<(Command, u64, Instant)>,
    /// The command in the mailbox: its sequence number, the answer it is
    /// owed to (0 once answered by a timeout), and when it was sent.
    in_flight: Option<(u64, u64, Instant)>,
    /// The heartbeat word as last read, and when the daemon's own clock
    /// says it last moved: hang detection trusts the worker's word only as
    /// far as its moving, so a forged far-future beat cannot turn it off.
    beat: (u64, Instant),
    /// The worker broke its channel and is being killed.
    broken: bool,
    warned: WarnLimit,
}

/// Holds back repeated warnings: one per [`WARN_PERIOD`], with a count of
/// those held back.
#[derive(Default)]
struct WarnLimit {
    last: Option<Instant>,
    held: u32,
}

impl WarnLimit {
    fn warn(&mut self, now: Instant, message: std::fmt::Arguments<'_>) {
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
    fn hang_deadline(&self, hang: Duration) -> Instant {
        self.beat.1 + hang
    }

    /// Reads the heartbeat; a beat that moved is dated by the worker's own
    /// word when that lies between the previous one and `now`, else `now`.
    fn refresh_beat(&mut self, now: Instant) {
        let Ok(value) = self.channel.heartbeat() else { return };
        if value != self.beat.0 {
            let at = Instant(value);
            self.beat = (value, if at >= self.beat.1 && at <= now { at } else { now });
        }
    }
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
    links: BTreeMap<usize, Link>,
    stop_deadline: Option<Instant>,
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
    let pid_lock = match os.lock_pid_file(&config.pid_file) {
        Ok(fd) => fd,
        Err(e) => {
            os.close(signal_fd);
            return Err(match e {
                PidFileError::Locked(pid) => StartError::AlreadyRunning(pid),
                PidFileError::LockedByOther(pid) => StartError::PidFileLockedByOther(config.pid_file.clone(), pid),
                PidFileError::Unsafe(why) => StartError::PidFileUnsafe(config.pid_file.clone(), why),
                PidFileError::Io(e) => StartError::PidFile(config.pid_file.clone(), e),
            });
        }
    };
    let cleanup_pid = |os: &mut O| {
        let _ = os.remove_file(&config.pid_file);
        os.close(pid_lock);
    };
    if let Some(n) = config.niceness {
        if let Err(e) = os.set_niceness(n) {
            log::warn!("cannot set niceness {n}: {e}");
        }
    }
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
    let seed = u64::from(os.pid().0 as u32) ^ now.as_nanos();
    let sup = Supervisor::new(specs, config.restart.clone(), seed, now);
    let info = Info {
        pid: os.pid(),
        description: config.description.clone(),
        address: config.address.to_string(),
        started: now,
    };
    let mut ctl = Ctl::new(info, sup, now);
    ctl.max_workers = config.max_workers;
    let mut registry = registry;
    registry.set_max_multicall(config.max_batch);
    let unix_policy = Policy {
        token: None,
        allowed_hosts: config.allowed_hosts.clone(),
        allowed_origins: config.allowed_origins.clone(),
    };
    let tcp_policy = Policy { token, ..unix_policy.clone() };
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
        links: BTreeMap::new(),
        stop_deadline: None,
        accept_paused: None,
        read_buf: vec![0; config.read_buffer.max(1)],
        private_fds: hooks.private_fds(),
        reopen_log,
        failure: None,
        tcp_policy: Rc::new(tcp_policy),
        unix_policy: Rc::new(unix_policy),
        token_made,
    };
    lp.supervise(os);
    os.note(format_args!("daemon ready"));
    hooks.ready(os);
    // What the facade held until it was ready (the launcher's pipe) is
    // closed now, and its descriptor number may be reused.
    lp.private_fds = hooks.private_fds();
    lp.publish(Event::DaemonStart);
    lp.run(os, hooks);
    Ok(Stopped { reason: lp.ctl.stop.clone().unwrap_or_default(), failure: lp.failure.take() })
}

pub(crate) fn install_default_listeners(bus: &mut crate::event::Bus<Ctl>) {
    bus.subscribe_named(Topic::Signal(Signal::Term), defaults::STOP_ON_TERM, |ctl, _| ctl.stop("SIGTERM"));
    bus.subscribe_named(Topic::Signal(Signal::Int), defaults::STOP_ON_INT, |ctl, _| ctl.stop("SIGINT"));
    bus.subscribe_named(Topic::Signal(Signal::Chld), defaults::WATCHDOG, |ctl, _| ctl.reap_children());
    bus.subscribe_named(Topic::Signal(Signal::Usr1), defaults::REOPEN_LOG, |ctl, _| ctl.reopen_log());
}

/// What is checked and made before the socket is bound: the cap on worker
/// processes, and on tcp the token (or the explicit opt-out, which is
/// refused on a non-loopback address). Returns the token, and its file if
/// this start made it.
fn start_checks<O: Os>(
    os: &mut O,
    config: &Config,
    workers: &[(crate::supervisor::WorkerSpec, crate::daemon::WorkerFactory)],
) -> Result<(Option<String>, Option<std::path::PathBuf>), StartError> {
    let instances: usize = workers.iter().map(|(spec, _)| spec.instances as usize).sum();
    if instances > config.max_workers {
        return Err(StartError::Insecure(format!(
            "{instances} worker processes configured: at most {} (max workers)",
            config.max_workers
        )));
    }
    let Address::Tcp(addr) = &config.address else { return Ok((None, None)) };
    if config.tcp_without_token {
        if !addr.ip().is_loopback() {
            return Err(StartError::Insecure(format!(
                "refusing to serve tcp://{addr} without a token: it is not a loopback address"
            )));
        }
        log::warn!("serving tcp://{addr} without a token: every local user can control this daemon");
        return Ok((None, None));
    }
    if !addr.ip().is_loopback() {
        log::warn!("tcp://{addr} is reachable from other machines; calls need the token");
    }
    let path = config.token_path();
    let (token, made) = load_or_make_token(os, &path).map_err(|e| StartError::Token(path.clone(), e))?;
    log::info!("token for tcp clients in {}", path.display());
    Ok((Some(token), made.then_some(path)))
}

/// The token in `path` if a private file of this user's holds one, or a new
/// random one written there (mode 0600); `true` when it was made now.
fn load_or_make_token<O: Os>(os: &mut O, path: &std::path::Path) -> io::Result<(String, bool)> {
    if let Some(bytes) = os.read_private_file(path, 1024)? {
        let text = String::from_utf8(bytes).map_err(|_| io::Error::new(ErrorKind::InvalidData, "not text"))?;
        let token = text.trim();
        if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(io::Error::new(ErrorKind::InvalidData, "holds no token (32 or more printable characters)"));
        }
        return Ok((token.to_string(), false));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    os.random_bytes(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    os.write_private_file(path, format!("{token}\n").as_bytes())?;
    Ok((token, true))
}

/// Binds the control socket. A unix socket file nobody answers on is stale
/// and removed; one that answers belongs to a live daemon and is an error.
fn bind<O: Os>(os: &mut O, config: &Config) -> Result<Fd, StartError> {
    if let Some(fd) = config.listen_fd {
        return Ok(fd);
    }
    let opts = ListenOptions { backlog: 128, unix_mode: config.socket_mode };
    match os.listen(&config.address, opts) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if let Address::Unix(path) = &config.address {
                // Only a socket file is ever removed, and only once its
                // connect was refused: anything else at the path is not
                // ours to touch.
                if os.file_kind(path) != Some(FileKind::Socket) {
                    return Err(StartError::SocketPathTaken(path.clone()));
                }
                match os.connect(&config.address) {
                    Ok(fd) => {
                        os.close(fd);
                        return Err(StartError::AddressAnswers(config.address.clone()));
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        log::info!("removing stale socket {}", path.display());
                        let _ = os.remove_file(path);
                    }
                    Err(e) => return Err(StartError::Listen(config.address.clone(), e)),
                }
            } else {
                return Err(StartError::Listen(config.address.clone(), e));
            }
        }
        Err(e) => return Err(StartError::Listen(config.address.clone(), e)),
    }
    os.listen(&config.address, opts).map_err(|e| StartError::Listen(config.address.clone(), e))
}

impl Loop<'_> {
    fn run<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut keepalive_at = hooks.keepalive_interval().map(|d| os.now() + d);
        loop {
            let now = os.now();
            self.ctl.now = now;
            if let Some(reason) = self.ctl.stop.clone() {
                if self.stop_deadline.is_none() {
                    self.begin_stop(os, hooks, &reason);
                }
            }
            if self.stop_deadline.is_some() && self.finished() {
                break;
            }
            if self.stop_deadline.is_some_and(|d| now >= d) {
                self.force_stop(os);
                break;
            }
            if let Some(at) = keepalive_at {
                if now >= at {
                    hooks.keepalive(os);
                    keepalive_at = hooks.keepalive_interval().map(|d| now + d);
                }
            }

            // 1. poll
            fds.clear();
            fds.push(PollFd::new(self.signal_fd, Ready::READ));
            // (`is_none_or` is newer than the workspace's rust-version.)
            let paused = self.accept_paused.is_some_and(|at| now < at);
            let accepting = self.listener.is_some() && self.clients.len() < self.config.max_connections && !paused;
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
            let deadline = self.next_deadline(keepalive_at);
            if let Err(e) = os.poll(&mut fds, deadline) {
                log::error!("poll: {e}");
            }
            self.ctl.now = os.now();
            let ready: BTreeMap<Fd, Ready> =
                fds.iter().filter(|p| !p.ready.is_empty()).map(|p| (p.fd, p.ready)).collect();

            // 2. signals
            if ready.contains_key(&self.signal_fd) {
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
            // 3. reap
            if self.ctl.reap || self.stop_deadline.is_some() {
                self.ctl.reap = false;
                self.reap(os);
            }
            if std::mem::take(&mut self.ctl.reopen_log) {
                hooks.reopen_log(os);
                // The workers write to the same log: they reopen it too.
                for inst in self.ctl.sup.instances() {
                    if let Some(pid) = inst.state.pid() {
                        let _ = os.kill(KillTarget::Process(pid), Signal::Usr1);
                    }
                }
            }
            // 4. workers
            let woken: Vec<usize> =
                self.links.iter().filter(|(_, l)| ready.contains_key(&l.wake)).map(|(id, _)| *id).collect();
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
            for id in ids {
                let r = self.clients.get(&id).and_then(|c| ready.get(&c.fd).copied()).unwrap_or(Ready::NONE);
                self.serve(os, id, r);
            }
            // 6. what was asked
            self.supervise(os);
            self.deliver_completions(os);
            self.expire_idle(os);
        }
        self.finish(os, hooks);
    }

    fn next_deadline(&self, keepalive_at: Option<Instant>) -> Option<Instant> {
        let idle = self.config.idle_timeout;
        // Only the connections `expire_idle` may close: one awaiting a
        // deferred answer is never expired, and its past deadline would
        // make every poll return at once, spinning the loop until then.
        let clients =
            self.clients.values().filter(|c| c.conn.pending_deferred() == 0).map(|c| c.last_active + idle).min();
        let hang = self.config.restart.hang_timeout;
        let sup = self.ctl.sup.poll_timeout(|id| Some(self.links.get(&id)?.hang_deadline(hang?)));
        // A request that began to arrive must be whole by its deadline.
        let timeout = self.config.request_timeout;
        let requests = self.clients.values().filter_map(|c| c.request_since).map(|(t, _)| t + timeout).min();
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
        [clients, sup, commands, self.stop_deadline, keepalive_at, accept, requests].into_iter().flatten().min()
    }

    fn publish(&mut self, event: Event) {
        self.bus.publish(&mut self.ctl, &event);
        // Listeners may raise events in turn; bounded so that two listeners
        // raising each other's events cannot spin the loop forever.
        for _ in 0..16 {
            let raised = std::mem::take(&mut self.ctl.events);
            if raised.is_empty() {
                break;
            }
            for e in raised {
                self.bus.publish(&mut self.ctl, &e);
            }
        }
    }

    fn reap<O: Os>(&mut self, os: &mut O) {
        loop {
            match os.try_reap() {
                Ok(Some((pid, status))) => {
                    let now = os.now();
                    match self.ctl.sup.handle_exit(pid, status, now) {
                        Ok(id) => {
                            log::info!("worker {} (pid {pid}) exited: {status}", self.worker_name(id));
                            self.unlink(os, id);
                            let name = self.worker_name(id);
                            let instance = self.ctl.sup.instance(id).index;
                            self.publish(Event::Worker { name, instance, event: WorkerEventKind::Exited, data: None });
                            if self.ctl.sup.instance(id).state == InstanceState::Failed {
                                let name = self.worker_name(id);
                                log::error!("worker {name} failed: restarted too often");
                                self.failure.get_or_insert_with(|| format!("worker {name} failed"));
                                self.publish(Event::Worker {
                                    name,
                                    instance,
                                    event: WorkerEventKind::Failed,
                                    data: None,
                                });
                            }
                        }
                        Err(unknown) => log::debug!("reaped {}: {status}", unknown.0),
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

    fn worker_name(&self, id: usize) -> String {
        self.ctl.sup.specs()[self.ctl.sup.instance(id).worker].name.clone()
    }

    /// Forgets an exited instance's link: unmaps its region, closes its
    /// socket, and fails the commands it can no longer answer.
    fn unlink<O: Os>(&mut self, os: &mut O, id: usize) {
        let Some(link) = self.links.remove(&id) else { return };
        if let Ok(e) = link.channel.last_error() {
            self.ctl.views[id].last_error = e;
        }
        self.ctl.views[id].state = None;
        os.close(link.wake);
        if !crate::planted::active(crate::planted::Bug::KeepOldRegion) {
            // Safety: the link is out of the table; its channel, the only
            // other handle here, is dropped unused with the rest of it.
            unsafe { os.shm_unmap(link.region) };
        }
        let name = self.worker_name(id);
        if let Some((_, join, _)) = link.in_flight {
            self.ctl.acknowledge(join, id, Err(format!("worker {name} exited before answering")));
        }
        for (_, join, _) in link.queue {
            self.ctl.acknowledge(join, id, Err(format!("worker {name} exited before answering")));
        }
    }

    /// Reads a worker's wake-up socket and its mailbox.
    fn drain_link<O: Os>(&mut self, os: &mut O, id: usize) {
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

    fn read_mailbox<O: Os>(&mut self, os: &mut O, id: usize) {
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
            self.publish(Event::Worker {
                name: name.clone(),
                instance,
                event: WorkerEventKind::Data,
                data: Some(data),
            });
        }
    }

    /// Refreshes what the daemon knows of each worker from its channel.
    fn poll_links(&mut self) {
        for (id, link) in &self.links {
            let view: &mut InstanceView = &mut self.ctl.views[*id];
            let before = view.state;
            if let Ok(s) = link.channel.state() {
                view.state = Some(s);
            }
            view.loops = link.channel.loops().unwrap_or(view.loops);
            if before != view.state {
                let kind = match view.state {
                    Some(WorkerState::Paused) => Some(WorkerEventKind::Paused),
                    Some(WorkerState::Looping) if before == Some(WorkerState::Paused) => Some(WorkerEventKind::Resumed),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let inst = self.ctl.sup.instance(*id);
                    let name = self.ctl.sup.specs()[inst.worker].name.clone();
                    self.ctl.events.push(Event::Worker { name, instance: inst.index, event: kind, data: None });
                }
            }
        }
        let raised = std::mem::take(&mut self.ctl.events);
        for e in raised {
            self.publish(e);
        }
    }

    /// Puts the next queued command in an instance's mailbox once the
    /// previous one is answered, and wakes the worker.
    fn send_queued<O: Os>(&mut self, os: &mut O, id: usize) {
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

    fn accept<O: Os>(&mut self, os: &mut O, listener: Fd) {
        for _ in 0..ACCEPTS_PER_TURN {
            if self.clients.len() >= self.config.max_connections {
                break;
            }
            match os.accept(listener) {
                Ok(fd) => {
                    let Some(access) = self.admit(os, fd) else {
                        os.close(fd);
                        continue;
                    };
                    let id = self.next_client;
                    self.next_client += 1;
                    let limits = Limits {
                        max_request: self.config.max_request,
                        read_buffer: self.config.read_buffer,
                        max_batch: self.config.max_batch,
                        ..Limits::default()
                    };
                    let now = os.now();
                    let conn = Conn::with_access(limits, access);
                    let client = Client { fd, conn, last_active: now, eof: false, request_since: None };
                    self.clients.insert(id, client);
                    self.publish(Event::ClientConnect { conn: id });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {
                    // The peer gave up: the loop tries again next turn.
                    log::debug!("accept: {e}");
                    break;
                }
                Err(e) => {
                    // Out of descriptors or memory: the connection stays
                    // queued and the listener readable, so polling it again
                    // at once would spin. The loop tries again after a
                    // pause, or as soon as a connection closes.
                    log::warn!("accept: {e}");
                    self.accept_paused = Some(os.now() + ACCEPT_RETRY);
                    break;
                }
            }
        }
    }

    /// Who a new connection's peer is and what it may do: a unix peer must
    /// be the daemon's own user, root, or an allowed uid or gid (anyone
    /// else is refused and logged); a tcp peer must present the token.
    fn admit<O: Os>(&mut self, os: &mut O, fd: Fd) -> Option<Access> {
        let config = self.config;
        match os.peer(fd) {
            Ok(Peer::Unix { pid, uid, gid }) => {
                let allowed = uid == 0
                    || uid == os.uid()
                    || config.allowed_uids.contains(&uid)
                    || config.allowed_gids.contains(&gid);
                if !allowed {
                    log::warn!("refused unix peer pid {pid} uid {uid} gid {gid}: not an allowed user or group");
                    return None;
                }
                Some(Access { policy: Rc::clone(&self.unix_policy), peer: format!("pid {pid} uid {uid}") })
            }
            Ok(Peer::Tcp(addr)) => Some(Access { policy: Rc::clone(&self.tcp_policy), peer: addr.to_string() }),
            Err(e) => match config.address {
                // Without credentials a unix peer cannot be told from a
                // stranger: refused, as the check would.
                Address::Unix(_) => {
                    log::warn!("refused unix peer: its credentials cannot be read: {e}");
                    None
                }
                Address::Tcp(_) => {
                    Some(Access { policy: Rc::clone(&self.tcp_policy), peer: "an unknown tcp peer".into() })
                }
            },
        }
    }

    fn serve<O: Os>(&mut self, os: &mut O, id: u64, ready: Ready) {
        let now = os.now();
        let Some(client) = self.clients.get_mut(&id) else { return };
        if ready.is_empty() && client.conn.output().is_empty() {
            return;
        }
        let mut broken = false;
        if ready.intersects(Ready::READ | Ready::HUP | Ready::ERROR) && !client.eof {
            for _ in 0..READS_PER_TURN {
                if !client.conn.wants_read() {
                    break;
                }
                match os.read(client.fd, &mut self.read_buf) {
                    Ok(0) => {
                        client.eof = true;
                        client.conn.handle_eof();
                        break;
                    }
                    Ok(n) => {
                        client.last_active = now;
                        self.ctl.current_conn = id;
                        let registry = &mut self.registry;
                        let ctl = &mut self.ctl;
                        client.conn.handle_bytes(&self.read_buf[..n], &mut |method, params| {
                            registry.dispatch(ctl, method, params)
                        });
                        if n < self.read_buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            self.close_client(os, id);
        } else {
            self.pump(os, id);
        }
    }

    /// Writes a connection's output, lets it dispatch the requests it held
    /// back while its output or owed answers were full, and again, until the
    /// socket takes no more or nothing is left; closes it when it is done.
    fn pump<O: Os>(&mut self, os: &mut O, id: u64) {
        let now = os.now();
        let Some(client) = self.clients.get_mut(&id) else { return };
        let mut broken = false;
        for _ in 0..READS_PER_TURN {
            if flush(os, client, now).is_err() {
                broken = true;
                break;
            }
            let before = client.conn.output().len();
            self.ctl.current_conn = id;
            let registry = &mut self.registry;
            let ctl = &mut self.ctl;
            client.conn.resume(&mut |method, params| registry.dispatch(ctl, method, params));
            if client.conn.output().len() == before {
                break;
            }
        }
        client.track_request(now);
        if broken || client.conn.should_close() {
            self.close_client(os, id);
        }
    }

    fn close_client<O: Os>(&mut self, os: &mut O, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            os.close(c.fd);
            // A descriptor is free: an `accept` that lacked one may succeed.
            self.accept_paused = None;
            self.ctl.routes.retain(|_, conn| *conn != id);
            self.publish(Event::ClientHangup { conn: id });
        }
    }

    fn deliver_completions<O: Os>(&mut self, os: &mut O) {
        loop {
            let done = std::mem::take(&mut self.ctl.completions);
            if done.is_empty() {
                break;
            }
            for (defer, result) in done {
                let Some(conn_id) = self.ctl.routes.remove(&defer) else { continue };
                let Some(client) = self.clients.get_mut(&conn_id) else { continue };
                client.conn.complete(defer, result);
                self.pump(os, conn_id);
            }
        }
    }

    /// Closes connections idle past the idle timeout, and times out
    /// requests that began to arrive longer than the request timeout ago:
    /// a client that sends a byte now and then keeps its connection from
    /// going idle, but not its request from being late.
    fn expire_idle<O: Os>(&mut self, os: &mut O) {
        let now = os.now();
        let idle = self.config.idle_timeout;
        let timeout = self.config.request_timeout;
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.request_since.is_some_and(|(since, _)| now >= since + timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(client) = self.clients.get_mut(&id) {
                client.conn.handle_request_timeout();
                client.request_since = None;
            }
            self.pump(os, id);
        }
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.last_active + idle && c.conn.pending_deferred() == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            log::debug!("closing idle connection {id}");
            self.close_client(os, id);
        }
    }

    /// Carries out what methods and listeners asked and the supervisor's
    /// actions, until there is nothing left to do.
    fn supervise<O: Os>(&mut self, os: &mut O) {
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
        for (&id, link) in self.links.iter_mut() {
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
        }
        if self.ctl.views.len() < self.ctl.sup.instances().len() {
            self.ctl.views.resize(self.ctl.sup.instances().len(), InstanceView::default());
        }
    }

    fn spawn<O: Os>(&mut self, os: &mut O, id: usize) {
        let now = os.now();
        let inst = self.ctl.sup.instance(id).clone();
        let spec = self.ctl.sup.specs()[inst.worker].clone();
        let region = match os.shm_create(REGION_SIZE) {
            Ok(r) => r,
            Err(e) => {
                log::error!("worker {}: cannot create shared memory: {e}", spec.name);
                self.ctl.sup.spawn_failed(id, now);
                return;
            }
        };
        let channel = Channel::create(region.clone());
        // The heartbeat starts at the spawn, written before the child exists
        // (so it has no other writer yet): a fresh channel's zero would read
        // as a heartbeat older than any hang timeout, and the next turn of
        // the loop would kill the new worker as hung before it could beat.
        channel.beat(now);
        let (ours, theirs) = match os.socket_pair() {
            Ok(p) => p,
            Err(e) => {
                log::error!("worker {}: socketpair: {e}", spec.name);
                // Safety: `channel` is not used after this return.
                unsafe { os.shm_unmap(region) };
                self.ctl.sup.spawn_failed(id, now);
                return;
            }
        };
        // What the child inherits but must not keep: the daemon's own
        // descriptors and the other workers' links.
        let mut close_fds = vec![ours];
        close_fds.extend(self.pid_lock);
        close_fds.extend(self.listener);
        close_fds.extend(self.clients.values().map(|c| c.fd));
        close_fds.extend(self.links.values().map(|l| l.wake));
        close_fds.extend(self.private_fds.iter().copied());
        let process = WorkerProcess {
            name: spec.name.clone(),
            instance: inst.index,
            looptime: spec.looptime,
            worker: (self.factories[inst.worker])(),
            channel: Channel::attach(region.clone()),
            wake: theirs,
            daemon_pid: os.pid(),
            close_fds,
            reopen_log: self.reopen_log,
        };
        match os.spawn(SpawnOptions { new_group: true }, Box::new(move |os: &mut O| run_worker(os, process))) {
            Ok(pid) => {
                os.close(theirs);
                // This region is the new worker's alone: the workers forked
                // after it neither map it nor pay for copying its mapping.
                if let Err(e) = os.shm_keep_from_children(&region) {
                    log::warn!("worker {}: keep its region from other workers: {e}", spec.name);
                }
                log::debug!("worker {} instance {} started as pid {pid}", spec.name, inst.index);
                self.links.insert(
                    id,
                    Link {
                        region,
                        channel,
                        wake: ours,
                        eof: false,
                        queue: Default::default(),
                        in_flight: None,
                        beat: (now.as_nanos(), now),
                        broken: false,
                        warned: WarnLimit::default(),
                    },
                );
                if self.ctl.views.len() <= id {
                    self.ctl.views.resize(id + 1, InstanceView::default());
                }
                self.ctl.views[id] = InstanceView::default();
                self.ctl.sup.spawned(id, pid, now);
                os.note(format_args!("worker {}.{} started: pid {pid}", spec.name, inst.index));
                let started = if inst.restarts > 0 { WorkerEventKind::Restarted } else { WorkerEventKind::Started };
                self.publish(Event::Worker { name: spec.name, instance: inst.index, event: started, data: None });
            }
            Err(e) => {
                log::error!("worker {}: cannot fork: {e}", spec.name);
                os.close(ours);
                os.close(theirs);
                // Safety: the child's channel went with the failed spawn's
                // entry, and `channel` is not used after this arm.
                unsafe { os.shm_unmap(region) };
                self.ctl.sup.spawn_failed(id, now);
            }
        }
    }

    fn begin_stop<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>, reason: &str) {
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
    fn close_listener<O: Os>(&mut self, os: &mut O) {
        if let Some(l) = self.listener.take() {
            os.close(l);
            if let (Address::Unix(path), None) = (&self.config.address, self.config.listen_fd) {
                let _ = os.remove_file(path);
            }
        }
    }

    /// Whether the stop is complete: no worker process and no connection
    /// with something in flight.
    fn finished(&self) -> bool {
        !self.ctl.sup.has_processes()
            && self.clients.values().all(|c| c.conn.pending_deferred() == 0 && c.conn.output().is_empty())
    }

    /// The stop took too long: kill what is left.
    fn force_stop<O: Os>(&mut self, os: &mut O) {
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

    fn finish<O: Os>(&mut self, os: &mut O, hooks: &mut dyn Hooks<O>) {
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

/// Writes what a connection has to send, as much as the socket takes.
fn flush<O: Os>(os: &mut O, client: &mut Client, now: Instant) -> io::Result<()> {
    while !client.conn.output().is_empty() {
        match os.write(client.fd, client.conn.output()) {
            Ok(n) => {
                client.conn.consume(n);
                client.last_active = now;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
