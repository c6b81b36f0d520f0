//! What a run does, decided from its seed before the world starts.
//!
//! A [`Scenario`] is plain data: the faults the simulated kernel injects and
//! at which rates, the daemon's configuration and workers (with how prone
//! to faults each is), the scripts of the clients, what the chaos process
//! does and when, and how the daemon is stopped in the end. The world's
//! processes only read it, so the same seed always gives the same run, and
//! the proptest state machine can build one by hand from a sequence of
//! steps instead of from a seed.
//!
//! Swarm testing (as TigerBeetle's VOPR does it): each seed turns each kind
//! of fault on or off and picks its rate, and weights the kinds of requests
//! and chaos differently, so that some seeds hammer one corner hard instead
//! of every seed touching every corner lightly.
//!
//! The control plane's refusals have clients of their own, drawn from a
//! generator of their own (so that the rest of a seed's choices stay as
//! they were): on about half the seeds the daemon listens on tcp with its
//! token, and some connections then call without it or with a wrong one;
//! some HTTP requests are the ones a browser could forge; some batches and
//! multicalls pass `max_batch`; some requests trickle in past the request
//! timeout; on unix, some clients connect as another user. Each refused
//! client must get exactly its refusal, and nothing it asked may run.

use std::time::Duration;

use forkd_core::supervisor::{OnFailure, RestartPolicy};
use forkd_os::sim::Faults;
use forkd_os::Signal;

use crate::rng::Rng;

/// Where the daemon listens, in the simulated file system.
pub const SOCKET: &str = "/sim/forkd.sock";
/// The daemon's pid file.
pub const PID_FILE: &str = "/sim/forkd.pid";
/// The token file of a daemon on tcp: the pid file's, with `.token`.
pub const TOKEN_FILE: &str = "/sim/forkd.token";
/// The `Host` the daemon allows besides loopback names.
pub const HOST: &str = "forkd";
/// The daemon's description (`daemon.info`).
pub const DESCRIPTION: &str = "forkd simulated daemon";

/// Everything a run does.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    /// The seed of the world's own choices (scheduling, faults).
    pub world_seed: u64,
    pub faults: Faults,
    pub daemon: DaemonPlan,
    pub workers: Vec<WorkerPlan>,
    /// The clients of the chaos phase.
    pub clients: Vec<ClientPlan>,
    /// What the chaos process does, at offsets from the daemon's readiness.
    pub chaos: Vec<(Duration, Chaos)>,
    /// The client that runs once the chaos phase is over: it must be
    /// answered (liveness), and it may stop the daemon.
    pub last: ClientPlan,
    /// How the daemon is stopped at the end.
    pub stop: StopBy,
    /// Whether every connection the workload may hold at once fits within
    /// `max_connections`: only then must a simple request be answered
    /// within a deadline while the daemon runs.
    pub strict_liveness: bool,
    /// Signals sent to the daemon while it stops, to stop it again.
    pub stop_storm: Vec<Signal>,
    pub max_steps: u64,
}

/// The daemon's configuration.
#[derive(Clone, Debug)]
pub struct DaemonPlan {
    pub socket_buffer: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_request: usize,
    pub restart: RestartPolicy,
    /// `Some(port)`: the daemon listens on 127.0.0.1:port, with a token;
    /// `None`: on the unix socket [`SOCKET`].
    pub tcp: Option<u16>,
    pub max_batch: usize,
    pub request_timeout: Duration,
}

impl DaemonPlan {
    /// Where the daemon listens.
    pub fn address(&self) -> forkd_os::Address {
        match self.tcp {
            Some(port) => forkd_os::Address::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            None => forkd_os::Address::Unix(SOCKET.into()),
        }
    }
}

/// One worker of the daemon.
#[derive(Clone, Debug)]
pub struct WorkerPlan {
    pub name: String,
    pub looptime: Duration,
    pub forever: bool,
    pub instances: u32,
    /// Seeds the fate of each process of this worker.
    pub seed: u64,
    /// Percent of its processes that meet a fault (see `workers::Fate`).
    pub faulty: u64,
}

/// One client process: when it starts and what it does.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub id: u32,
    pub start: Duration,
    pub steps: Vec<Step>,
    /// Seeds the client's own choices (how it splits its writes).
    pub seed: u64,
    /// The liveness client: a request it gives up on is always a violation
    /// while the daemon runs.
    pub last: bool,
    /// Runs as this user instead of the daemon's (a stranger on the unix
    /// socket, whose connections are closed unanswered).
    pub uid: Option<u32>,
}

/// How a connection frames its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Ndjson,
    Http,
}

/// What a connection on tcp presents instead of the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadToken {
    /// Nothing: NDJSON calls at once, HTTP sends no `Authorization`.
    Missing,
    /// A token of the right length that is not the daemon's.
    Wrong,
}

/// An HTTP request a web page could make a browser send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// A `text/plain` POST: 415.
    TextPlain,
    /// A form POST: 415.
    Form,
    /// A `Host` the daemon does not know (DNS rebinding): 421.
    ForeignHost,
    /// A foreign `Origin`: 403.
    ForeignOrigin,
}

impl Forgery {
    /// The status that refuses it.
    pub fn status(self) -> u16 {
        match self {
            Forgery::TextPlain | Forgery::Form => 415,
            Forgery::ForeignHost => 421,
            Forgery::ForeignOrigin => 403,
        }
    }
}

/// One step of a client's script.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Opens a connection (closing the one before, if any); on tcp it
    /// presents the token (NDJSON: an `rpc.authenticate` first; HTTP: a
    /// Bearer header on every request).
    Connect(Framing),
    /// On tcp, opens a connection that does not present the token: every
    /// call on it is refused (-32006, HTTP 401), NDJSON's third refusal and
    /// HTTP's first close it, and none of them runs.
    ConnectWithout(Framing, BadToken),
    /// Writes part of a request, then a byte now and then (within the idle
    /// timeout) until the request timeout has passed: answered HTTP 408, or
    /// -32600 with id null, and closed.
    Trickle(Req),
    /// A client of another user connects to the unix socket and writes a
    /// request: the connection is closed at accept, unanswered.
    Stranger(Framing, Req),
    /// Writes these requests back to back: pipelined when several.
    Send(Vec<Req>),
    /// Waits for every answer owed.
    Await,
    Sleep(Duration),
    /// Closes the connection, whatever is still owed.
    Close,
    /// Writes part of a request, then closes.
    CloseMidRequest(Req),
    /// Writes many requests and never reads an answer, holds the
    /// connection for a while, then closes it.
    Flood {
        requests: u32,
        hold: Duration,
    },
    /// Sends a signal to the daemon (the state machine's chaos).
    Signal(Signal),
    /// Kills a worker process with SIGKILL (the state machine's chaos).
    KillWorker(u8),
}

/// A request.
#[derive(Clone, Debug, PartialEq)]
pub enum Req {
    Echo(String),
    /// `my.echo` as a notification: no answer.
    Notify(String),
    Info,
    Batch(Vec<BatchItem>),
    UnknownMethod,
    /// `my.echo` with an int where it wants a string.
    BadParams,
    /// Valid JSON that is not a request: answered with -32600.
    InvalidRequest,
    /// Not JSON: NDJSON answers -32700 and closes; HTTP answers and goes on.
    ParseError,
    /// Over `max_request`: answered and closed.
    TooLarge,
    /// An HTTP head without a length: 411 and closed (NDJSON: a parse
    /// error).
    BadHead,
    Worker(WorkerCall),
    Shutdown,
    /// HTTP only: a forged request (carrying `daemon.shutdown`), refused
    /// and closed.
    Forged(Forgery),
    /// A batch of `max_batch + 1` entries, `daemon.shutdown` among them:
    /// one -32005 with id null, and nothing runs.
    OverBatch,
    /// A `system.multicall` of `max_batch + 1` calls of `daemon.shutdown`:
    /// -32005, and nothing runs.
    OverMulticall,
    /// `rpc.authenticate` with the connection's token (what `Connect` and
    /// `ConnectWithout` send first on tcp).
    Authenticate,
}

/// An element of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchItem {
    Echo(String),
    Notify(String),
    /// `1`: answered -32600 with id null.
    NotAnObject,
    UnknownMethod,
    /// A `worker.*` call: its answer may wait on a worker, and the batch's
    /// answer with it.
    Worker(WorkerCall),
    /// A `worker.*` call as a notification: it acts, and is not answered.
    NotifyWorker(WorkerCall),
}

/// A call of one of the daemon's `worker.*` methods.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerCall {
    Pause(Option<String>),
    Resume(Option<String>),
    Send(String, String),
    Status(Option<String>),
    List,
    Restart(String),
    /// `worker.reload` of one worker (every one without a name), with a
    /// batch of its own or the worker's.
    Reload(Option<String>, Option<u32>),
}

/// The most instances a reload of the scenario's replaces at once: what
/// its calls ask for, 1 (the workers' default) for SIGHUP's.
pub const MAX_RELOAD_BATCH: u32 = 2;

impl Req {
    /// Whether its answer may wait on a worker.
    pub fn is_deferred(&self) -> bool {
        let deferred = |c: &WorkerCall| {
            matches!(c, WorkerCall::Pause(_) | WorkerCall::Resume(_) | WorkerCall::Send(..) | WorkerCall::Reload(..))
        };
        match self {
            Req::Worker(c) => deferred(c),
            Req::Batch(items) => items.iter().any(|i| matches!(i, BatchItem::Worker(c) if deferred(c))),
            _ => false,
        }
    }

    /// Whether it ends its connection (after its answer).
    pub fn is_fatal(&self, framing: Framing) -> bool {
        match self {
            Req::TooLarge | Req::BadHead | Req::Forged(_) => true,
            Req::ParseError => framing == Framing::Ndjson,
            _ => false,
        }
    }
}

/// What the chaos process does.
#[derive(Clone, Debug, PartialEq)]
pub enum Chaos {
    /// A signal to the daemon.
    Signal(Signal),
    /// Many signals to the daemon, back to back.
    Storm(Vec<Signal>),
    /// SIGKILL to one worker process: a crash at whatever point it is.
    KillWorker,
    /// SIGKILL to every worker process at once: their exits raise one
    /// SIGCHLD.
    KillAll,
    /// SIGTERM to one worker process.
    TermWorker,
    /// Tries to take the pid lock, which the daemon must hold.
    ProbePidLock,
    /// Starts a second daemon with the same pid file and socket: it must
    /// refuse to start, and leave the first alone.
    SecondDaemon,
    /// SIGKILL to the daemon: its workers must end by themselves, and a new
    /// daemon must start over the files it left.
    KillDaemon,
}

/// How the daemon is stopped at the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBy {
    Shutdown,
    Term,
    Int,
}

mod draw;
