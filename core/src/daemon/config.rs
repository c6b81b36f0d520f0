//! What a daemon is configured with: the seed's configuration parameters
//! (`sockethandler`, `pidfile`, `socketbuffer`, `sockettimeout`,
//! `socketmaxconnections`, `niceness`, `description`) and forkd's own.

use std::path::PathBuf;
use std::time::Duration;

use forkd_os::{Address, Fd};

use crate::supervisor::RestartPolicy;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The banner of the console and `daemon.info` (seed: `description`).
    pub description: String,
    /// Where the control socket listens (seed: `sockethandler`). A relative
    /// unix path must have been resolved before the daemon runs.
    pub address: Address,
    /// Permission bits of a unix control socket.
    pub socket_mode: u32,
    /// The pid file (seed: `pidfile`).
    pub pid_file: PathBuf,
    /// Bytes read from a connection per read call (seed: `socketbuffer`).
    pub read_buffer: usize,
    /// A connection idle this long is closed (seed: `sockettimeout`).
    pub idle_timeout: Duration,
    /// Connections served at once (seed: `socketmaxconnections`); past it,
    /// new ones wait in the listen backlog until a slot frees.
    pub max_connections: usize,
    /// The largest request accepted, in bytes.
    pub max_request: usize,
    /// Niceness to apply at start (seed: `niceness`); `None` leaves it.
    pub niceness: Option<i32>,
    pub restart: RestartPolicy,
    /// A listening socket handed over by a service manager (systemd's
    /// socket activation): served instead of binding `address`, and its
    /// socket file is left alone on stop.
    pub listen_fd: Option<Fd>,
}

impl Config {
    /// The seed's defaults.
    pub fn new(description: impl Into<String>) -> Config {
        Config {
            description: description.into(),
            address: Address::Unix(PathBuf::from("daemon.sock")),
            socket_mode: 0o600,
            pid_file: PathBuf::from("daemon.pid"),
            read_buffer: 1024,
            idle_timeout: Duration::from_secs(15),
            max_connections: 10,
            max_request: 1 << 20,
            niceness: None,
            restart: RestartPolicy::default(),
            listen_fd: None,
        }
    }
}
