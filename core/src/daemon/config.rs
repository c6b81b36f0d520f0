//! What a daemon is configured with: the seed's configuration parameters
//! (`sockethandler`, `pidfile`, `socketbuffer`, `sockettimeout`,
//! `socketmaxconnections`, `niceness`, `description`) and forkd's own.

use std::path::PathBuf;
use std::time::Duration;

use forkd_os::{Address, Fd};

use crate::supervisor::RestartPolicy;

#[derive(Clone, Debug, PartialEq, Eq)]
/// Everything a daemon is configured with: its console's flags and the
/// builder's setters fill it in; the defaults are the seed's.
pub struct Config {
    /// The banner of the console and `daemon.info` (seed: `description`).
    pub description: String,
    /// The daemon's own version, as `daemon.info`, `status` and the
    /// OpenRPC document tell it (forkd's own unless set).
    pub version: String,
    /// Where the control socket listens (seed: `sockethandler`). A relative
    /// unix path must have been resolved before the daemon runs.
    pub address: Address,
    /// Permission bits of a unix control socket.
    pub socket_mode: u32,
    /// The pid file (seed: `pidfile`).
    pub pid_file: PathBuf,
    /// Bytes read from a connection per read call (seed: `socketbuffer`).
    pub socket_buffer: usize,
    /// A connection idle this long is closed (seed: `sockettimeout`).
    pub idle_timeout: Duration,
    /// Connections served at once (seed: `socketmaxconnections`); past it,
    /// new ones wait in the listen backlog until a slot frees.
    pub max_connections: usize,
    /// How many unsent bytes of events one subscriber of the event stream
    /// may have before it is dropped (256 KiB).
    pub event_buffer: usize,
    /// The largest request accepted, in bytes.
    pub max_request: usize,
    /// Niceness to apply at start (seed: `niceness`); `None` leaves it.
    pub niceness: Option<i32>,
    /// How workers are restarted, and when one has failed.
    pub restart: RestartPolicy,
    /// tcp only: the file holding the token clients must present; `None`
    /// means the pid file's path with the extension `token`. See
    /// [`Config::token_path`].
    pub token_file: Option<PathBuf>,
    /// tcp only: serve without a token. An explicit opt-out, logged as a
    /// warning at every start, and refused on a non-loopback address.
    pub tcp_without_token: bool,
    /// Names accepted in an HTTP `Host` header besides loopback names and
    /// literal IP addresses (lowercase, without a port).
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) whose requests are served;
    /// a request with any other `Origin` header is refused. None by default.
    pub allowed_origins: Vec<String>,
    /// unix only: user ids that may connect besides the daemon's own and
    /// root.
    pub allowed_uids: Vec<u32>,
    /// unix only: group ids whose members (by their primary group) may
    /// connect.
    pub allowed_gids: Vec<u32>,
    /// The most entries a JSON-RPC batch or a `system.multicall` may have.
    pub max_batch: usize,
    /// A request's head and body must arrive within this time from its
    /// first byte, however slowly its bytes trickle in.
    pub request_timeout: Duration,
    /// The most worker processes at once, instances still stopping
    /// included; `worker.scale` cannot pass it.
    pub max_workers: usize,
    /// A listening socket handed over by a service manager (systemd's
    /// socket activation): served instead of binding `address`, and its
    /// socket file is left alone on stop.
    pub listen_fd: Option<Fd>,
    /// How this daemon's master upgrades in place (`daemon.upgrade`,
    /// SIGUSR2): the program it executes. `None`: it cannot, and says so.
    pub upgrade: Option<UpgradeCommand>,
    /// How long a new master has to say it is ready before it is killed
    /// and the upgrade fails (30 s).
    pub upgrade_timeout: Duration,
    /// Set in a new master: what the old one handed over with the
    /// listening socket (which is `listen_fd`).
    pub handed_over: Option<HandOver>,
}

/// The program a master executes to upgrade in place: the binary at its
/// path on disk, read again, so that a newly installed build is what runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeCommand {
    /// The program's absolute path.
    pub program: PathBuf,
    /// Its arguments after `argv[0]`.
    pub args: Vec<std::ffi::OsString>,
    /// Variables set for it besides those of the handover.
    pub env_set: Vec<(String, std::ffi::OsString)>,
}

/// What a new master got from the old one besides the listening socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOver {
    /// The write end of the readiness pipe: `ready VERSION` once serving.
    pub ready: Fd,
    /// A copy of the old master's pid file lock (the same open file, so the
    /// same lock): the pid file is never unlocked in between.
    pub pid_lock: Fd,
    /// The tcp token, if the daemon has one.
    pub token: Option<String>,
    /// Whether the first master made the token file (the last one
    /// removes it at its stop).
    pub token_made: bool,
    /// Whether a forkd master bound the socket (its file is removed at the
    /// last stop) rather than a service manager.
    pub socket_bound: bool,
}

impl Config {
    /// The seed's defaults.
    pub fn new(description: impl Into<String>) -> Config {
        Config {
            description: description.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: Address::Unix(PathBuf::from("daemon.sock")),
            socket_mode: 0o600,
            pid_file: PathBuf::from("daemon.pid"),
            socket_buffer: 1024,
            idle_timeout: Duration::from_secs(15),
            max_connections: 10,
            event_buffer: 256 * 1024,
            max_request: 1 << 20,
            niceness: None,
            restart: RestartPolicy::default(),
            listen_fd: None,
            token_file: None,
            tcp_without_token: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_batch: 1000,
            request_timeout: Duration::from_secs(10),
            max_workers: 1024,
            upgrade: None,
            upgrade_timeout: Duration::from_secs(30),
            handed_over: None,
        }
    }

    /// Where the tcp token is: [`Config::token_file`], or the pid file's
    /// path with the extension `token` (`daemon.pid` → `daemon.token`).
    pub fn token_path(&self) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| self.pid_file.with_extension("token"))
    }
}
