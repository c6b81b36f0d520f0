//! The RPC layer: JSON-RPC 2.0 and XML-RPC over newline-delimited streams
//! and HTTP/1.1, as pure functions and state machines.
//!
//! A daemon is driven through RPC: comodojo/daemon exposes its methods on a
//! socket through comodojo/rpcserver, and forkd does the same. This module
//! is everything between the bytes a client sends and the bytes it gets
//! back, and nothing else: it never reads a socket, looks at a clock or
//! spawns anything. The event loop owns the sockets and feeds a [`Conn`]
//! per client; the [`Registry`] holds the methods and runs them against the
//! daemon's context. Keeping the I/O out is what lets every protocol rule
//! below be pinned by snapshot tests and fuzzed with arbitrary input.
//!
//! - [`value`]: the one value model, `serde_json::Value`, for both protocols,
//!   with XML-RPC's `dateTime.iso8601` and `base64` as tagged values;
//! - [`registry`]: methods with signatures, checked before handlers run,
//!   and the built-in `system.*` introspection methods and `rpc.discover`,
//!   which answers an OpenRPC document made from the registry;
//! - [`jsonrpc`], [`xmlrpc`]: decoding requests, encoding answers;
//! - [`conn`]: framing, pipelining, deferred answers, limits and closing.
//!
//! The loop glues them with a closure:
//!
//! ```
//! use forkd_core::rpc::{Conn, Limits, Method, ParamType, Registry, Reply, Value};
//!
//! let mut registry: Registry<u32> = Registry::new();
//! registry
//!     .add(
//!         Method::new("my.echo", |calls: &mut u32, args| {
//!             *calls += 1;
//!             Reply::Value(args.get("message").cloned().unwrap_or(Value::Null))
//!         })
//!         .param(ParamType::String, "message")
//!         .returns(ParamType::String),
//!     )
//!     .unwrap();
//! let mut calls = 0;
//! let mut conn = Conn::new(Limits::default());
//! conn.handle_bytes(
//!     b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"hi\"],\"id\":1}\n",
//!     &mut |method, params| registry.dispatch(&mut calls, method, params),
//! );
//! assert_eq!(conn.output(), b"{\"jsonrpc\":\"2.0\",\"result\":\"hi\",\"id\":1}\n");
//! ```

mod args;
pub mod conn;
mod datetime;
pub mod error;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz_access;
mod http;
mod introspection;
pub mod jsonrpc;
mod openrpc;
mod param_type;
pub mod registry;
mod reply;
pub mod value;
pub mod xmlrpc;

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod test_rig;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

pub use conn::{
    Access, Conn, EventFrame, Framing, Limits, Policy, Pushed, StreamKind, AUTHENTICATE, MAX_AUTH_FAILURES, METRICS,
    PAGE, SUBSCRIBE,
};
/// The numeric error codes, standard and forkd's own.
pub use error as codes;
pub use error::RpcError;
pub use http::MAX_HEAD;
pub use registry::{
    AddError, Args, DeferId, Handler, IntoReply, Method, ParamType, Params, Registry, Reply, Signature,
};
pub use value::{DateTime, DateTimeError, Map, Value};
