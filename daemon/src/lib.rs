//! forkd: build multi-process Linux daemons.
//!
//! A daemon built with forkd forks and supervises worker processes that it
//! talks to over anonymous shared memory, serves JSON-RPC 2.0 and XML-RPC on
//! a unix or tcp socket, turns POSIX signals into events, daemonizes with
//! readiness, and holds a locked pid file. The seed's echo daemon:
//!
//! ```no_run
//! use forkd::{Builder, Method, ParamType};
//!
//! fn main() -> std::process::ExitCode {
//!     Builder::new("Echo Daemon")
//!         .socket("tcp://127.0.0.1:10042")
//!         .method(
//!             Method::new("my.echo", |_ctl, args| args.get("message").cloned().unwrap_or_default())
//!                 .help("I'm here to reply your data")
//!                 .param(ParamType::String, "message")
//!                 .returns(ParamType::String),
//!         )
//!         .run()
//! }
//! ```
//!
//! `run` parses the console arguments (`-d`, `-f`, `-v`, `-s`, `status`,
//! `stop`, `call`, ...) and acts on them. On tcp the control commands, and
//! [`Client`], present the daemon's token by themselves: `--token`, else
//! `FORKD_TOKEN`, else the token file the daemon wrote beside its pid file. This crate is the facade: the
//! daemon's logic lives in `forkd-core`, generic over the operating system,
//! and runs here on the real one.

#![deny(missing_docs)]

mod builder;
mod cli;
mod client;
mod console;
mod daemon;
mod daemonize;
mod describe;
mod logger;
mod ops;
mod serve;
mod systemd;
mod upgrade;
mod validate;
mod worker_options;

/// What the simulation runs of the binary: the serving path after the
/// command line is read (`-d` with its launcher, systemd's notifications).
/// Test scaffolding, left out of production builds.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::serve::{exit_code, serve, Failed, Mode};
}

pub use builder::{BuildError, Builder};
pub use client::{Client, ClientError, ConnectOptions, Events, TokenFileError, TokenSource, TOKEN_ENV};
pub use console::usage;
pub use daemon::Daemon;
pub use worker_options::WorkerOptions;

pub use forkd_core::daemon::{codes, with_errors, Config, Ctl, Info, StartError, Stopped, WORKER_ERRORS};
pub use forkd_core::event::{defaults, Event, ReloadEventKind, Topic, WorkerEventKind};
pub use forkd_core::rpc::{value, Args, DateTime, DeferId, IntoReply, Method, ParamType, Reply, RpcError, Signature};
pub use forkd_core::supervisor::{OnFailure, Restart, RestartPolicy};
pub use forkd_core::worker::{BoxError, ChannelError, Context, Worker, WorkerEvent};
pub use forkd_os::{Address, AddressError, Instant, Pid, Signal};
pub use serde_json::{json, Value};
