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
/// Over one of the connection's bounds: a batch or multicall with too many
/// entries, an answer too large to send.
pub const LIMIT: i64 = -32005;
/// Not authenticated, or a wrong token.
pub const UNAUTHORIZED: i64 = -32006;
/// The range reserved by JSON-RPC 2.0 for implementation-defined server
/// errors, `-32099..=-32000`; forkd's own codes above are in it.
pub const SERVER_ERROR_RANGE: std::ops::RangeInclusive<i64> = -32099..=-32000;

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

    /// -32601: there is no method called `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("method '{method}' not found"))
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
