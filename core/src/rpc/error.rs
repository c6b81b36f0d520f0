//! The error an RPC call answers with.
//!
//! JSON-RPC 2.0 and XML-RPC (through the de-facto "faults_interop" spec)
//! agree on the same numeric codes, so one type serves both: JSON-RPC
//! serializes it as `{"code", "message", "data"}`, XML-RPC as a fault struct
//! `{faultCode, faultString}` (where `data` has no place and is dropped).
//!
//! Messages are short, lowercase and say what is wrong ("missing param
//! 'message'"); the code already says which kind of error it is, so the
//! message does not repeat "invalid params".

use std::fmt;

use serde_json::Value;

/// Invalid JSON (or XML) was received: the request could not be parsed.
pub const PARSE_ERROR: i64 = -32700;
/// The payload parsed but is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The params do not match any signature of the method.
pub const INVALID_PARAMS: i64 = -32602;
/// The server failed while answering.
pub const INTERNAL_ERROR: i64 = -32603;
/// No worker of that name.
pub const UNKNOWN_WORKER: i64 = -32001;
/// The worker has no running process to act on.
pub const WORKER_NOT_RUNNING: i64 = -32002;
/// The worker answered with an error, or exited before answering.
pub const WORKER_ERROR: i64 = -32003;
/// The daemon is stopping and takes no new work.
pub const STOPPING: i64 = -32004;
/// Over one of the connection's bounds: a batch or multicall with too many
/// entries, an answer too large to send.
pub const LIMIT: i64 = -32005;
/// Not authenticated, or a wrong token.
pub const UNAUTHORIZED: i64 = -32006;
/// The global cap on worker processes would be passed.
pub const TOO_MANY_WORKERS: i64 = -32007;
/// A rolling reload of the worker is in progress.
pub const RELOADING: i64 = -32008;
/// The master's upgrade was refused (one already runs, the daemon cannot
/// upgrade) or failed (the new master did not become ready).
pub const UPGRADE_FAILED: i64 = -32009;
/// The range reserved by JSON-RPC 2.0 for implementation-defined server
/// errors, `-32099..=-32000`; forkd's own codes above are in it.
pub const SERVER_ERROR_RANGE: std::ops::RangeInclusive<i64> = -32099..=-32000;

/// Every code forkd itself answers, with a name and what it means: the
/// table that `rpc.discover` publishes as `components.errors`.
pub const TABLE: &[(&str, i64, &str)] = &[
    ("ParseError", PARSE_ERROR, "The request is not well-formed JSON or XML"),
    ("InvalidRequest", INVALID_REQUEST, "The payload is not a valid request"),
    ("MethodNotFound", METHOD_NOT_FOUND, "No method of that name"),
    ("InvalidParams", INVALID_PARAMS, "The params fit no signature of the method"),
    ("InternalError", INTERNAL_ERROR, "The method failed while answering"),
    ("UnknownWorker", UNKNOWN_WORKER, "No worker of that name"),
    ("WorkerNotRunning", WORKER_NOT_RUNNING, "The worker has no running process to act on"),
    ("WorkerError", WORKER_ERROR, "The worker answered with an error, or exited before answering"),
    ("Stopping", STOPPING, "The daemon is stopping and takes no new work"),
    ("Limit", LIMIT, "Over one of the server's bounds"),
    ("Unauthorized", UNAUTHORIZED, "Not authenticated, or a wrong token"),
    ("TooManyWorkers", TOO_MANY_WORKERS, "The cap on worker processes would be passed"),
    ("Reloading", RELOADING, "A rolling reload of the worker is in progress"),
    ("UpgradeFailed", UPGRADE_FAILED, "The upgrade was refused, or the new master did not become ready"),
];

/// How many characters of a client's input an error message quotes.
pub const MAX_QUOTE: usize = 64;

/// `text` as an error message may quote it: its first [`MAX_QUOTE`]
/// characters, then "…" if there were more. A message quotes what the
/// client sent so that it can find its mistake, never the whole of it: a
/// megabyte of bad input must not come back as a megabyte of error.
///
/// ```
/// use forkd_core::rpc::codes::quote;
///
/// assert_eq!(quote("short"), "short");
/// assert_eq!(quote(&"x".repeat(100)), format!("{}…", "x".repeat(64)));
/// ```
pub fn quote(text: &str) -> std::borrow::Cow<'_, str> {
    clip(text, MAX_QUOTE)
}

/// `text` cut after `max` characters, with "…" if anything was cut.
pub(crate) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// An error answer: what a JSON-RPC `error` object or an XML-RPC fault holds.
///
/// ```
/// use forkd_core::rpc::{codes, RpcError};
///
/// let e = RpcError::invalid_params("expected a string for 'message'");
/// assert_eq!(e.code, codes::INVALID_PARAMS);
/// assert_eq!(e.to_string(), "rpc error -32602: expected a string for 'message'");
///
/// // An application's own code, with data for the client.
/// let busy = RpcError::new(1001, "queue full").with_data(serde_json::json!({ "retry_after": 5 }));
/// assert_eq!(busy.data, Some(serde_json::json!({ "retry_after": 5 })));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The numeric code; the constants of this module name the standard ones.
    pub code: i64,
    /// A short, lowercase, single-sentence description.
    pub message: String,
    /// Extra information for the client (JSON-RPC only).
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with any code. Prefer the named constructors for the
    /// standard codes; applications define their own codes outside
    /// -32768..=-32000, which JSON-RPC reserves.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None }
    }

    /// -32700: the payload is not well-formed JSON or XML.
    pub fn parse_error(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, message)
    }

    /// -32600: the payload is not a valid request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    /// -32601: there is no method called `method` (quoted, see [`quote`]).
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("method '{}' not found", quote(method)))
    }

    /// -32602: the params match no signature; `message` says how.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// -32603: the server failed while answering.
    pub fn internal_error(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    /// An implementation-defined server error, `code` in -32099..=-32000.
    ///
    /// # Panics
    /// If `code` is outside that range: choosing the code is the
    /// programmer's decision, not the client's.
    pub fn server_error(code: i64, message: impl Into<String>) -> Self {
        assert!(SERVER_ERROR_RANGE.contains(&code), "server error code {code} outside -32099..=-32000");
        Self::new(code, message)
    }

    /// The same error carrying `data` for the client.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc error {}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}
