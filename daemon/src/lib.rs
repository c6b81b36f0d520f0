//! forkd: build multi-process Unix daemons.
//!
//! A daemon built with forkd forks and supervises worker processes that it
//! talks to over anonymous shared memory, serves JSON-RPC 2.0 and XML-RPC on
//! a unix or tcp socket, turns POSIX signals into events, daemonizes with
//! readiness, and holds a locked pid file. The seed's echo daemon:
//!
//! ```no_run
//! use forkd::{Builder, Method, ParamType, Reply};
//!
//! fn main() -> std::process::ExitCode {
//!     Builder::new("Echo Daemon")
//!         .socket("tcp://127.0.0.1:10042")
//!         .method(
//!             Method::new("my.echo", |_ctl, args| Reply::Value(args.get("message").cloned().unwrap_or_default()))
//!                 .description("I'm here to reply your data")
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

mod builder;
mod cli;
mod client;
mod console;
mod daemonize;
mod logger;
mod ops;
mod systemd;
#[cfg(test)]
mod testdir;
mod validate;

pub use builder::Builder;
pub use client::{Client, ClientError, ConnectOptions, Events, TokenFileError, TokenSource, TOKEN_ENV};
pub use console::usage;

pub use forkd_core::daemon::{codes, Config, Ctl, Info, StartError};
pub use forkd_core::event::{defaults, Event, ListenerId, Topic, WorkerEventKind};
pub use forkd_core::rpc::{Args, DeferId, Method, ParamType, Reply, RpcError};
pub use forkd_core::supervisor::{OnFailure, RestartPolicy};
pub use forkd_core::worker::{Context, Worker, WorkerEvent};
pub use forkd_os::{Address, Signal};
pub use serde_json::{json, Value};
