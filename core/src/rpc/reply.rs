//! What a handler answers, and what converts into it.

use serde::Serialize;

use super::error::RpcError;
use super::registry::DeferId;
use super::value::Value;

/// What a handler answers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reply {
    /// The result.
    Value(Value),
    /// An error answer.
    Error(RpcError),
    /// The answer comes later, through `Conn::complete(id, ..)`.
    Deferred(DeferId),
}

/// What a handler may return: anything that converts into a [`Reply`].
///
/// Implemented for [`Reply`] itself, a [`Value`], text, an [`RpcError`],
/// and `Result<T, E>` for any `T: Serialize` and `E: Into<RpcError>` (a
/// result that does not serialize becomes an internal error).
pub trait IntoReply {
    /// The reply.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Reply {
        Reply::Value(self)
    }
}

impl IntoReply for &str {
    fn into_reply(self) -> Reply {
        Reply::Value(Value::from(self))
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Reply {
        Reply::Value(Value::from(self))
    }
}

impl IntoReply for RpcError {
    fn into_reply(self) -> Reply {
        Reply::Error(self)
    }
}

impl<T: Serialize, E: Into<RpcError>> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(value) => match serde_json::to_value(value) {
                Ok(value) => Reply::Value(value),
                Err(e) => Reply::Error(RpcError::internal_error(format!("the result does not serialize: {e}"))),
            },
            Err(error) => Reply::Error(error.into()),
        }
    }
}

impl From<Value> for Reply {
    fn from(value: Value) -> Self {
        Reply::Value(value)
    }
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Reply::Value(Value::from(text))
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Reply::Value(Value::from(text))
    }
}

impl From<RpcError> for Reply {
    fn from(error: RpcError) -> Self {
        Reply::Error(error)
    }
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(result: Result<Value, RpcError>) -> Self {
        match result {
            Ok(value) => Reply::Value(value),
            Err(error) => Reply::Error(error),
        }
    }
}
