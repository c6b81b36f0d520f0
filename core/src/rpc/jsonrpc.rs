//! JSON-RPC 2.0: requests in, responses out, as the specification says.
//!
//! Decoding turns a payload into a [`Message`]: one [`Entry`] or a batch of
//! them, each either a call to dispatch or an invalid element already paired
//! with its error. Keeping invalid elements as entries (rather than failing
//! the whole payload) is what the spec asks of batches: `[1,2,3]` answers
//! three errors, and a bad element never hides the good ones next to it.
//!
//! The spec's rules, all decided here:
//! - an `id` may be a string, a number or null, and is echoed as received; an
//!   id of another type makes the element invalid, answered with id null;
//! - a request without `id` is a notification and gets no answer, even when
//!   it fails; an element too broken to be a request (not an object, no
//!   string `method`, `jsonrpc` not exactly "2.0", `params` neither array nor
//!   object) is not a notification and is always answered;
//! - `[]` is one Invalid Request, not an empty batch answer;
//! - a payload that is not JSON answers a parse error with id null.
//!
//! Encoding writes the members in the spec's order (`jsonrpc`, `result` or
//! `error`, `id`) whatever the map type of `serde_json`, so answers read like
//! the spec's examples. Ids are echoed as `serde_json` parsed them: an integer
//! too large for 64 bits comes back as a float, the one place "exactly" is
//! only as exact as the value model.

use super::error::RpcError;
use super::registry::Params;
use super::value::Value;

/// One element of a request payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A valid call; `id` is `None` for a notification.
    Call {
        /// The id to echo, or `None` for a notification.
        id: Option<Value>,
        /// The method name.
        method: String,
        /// The params.
        params: Params,
    },
    /// An element that is not a valid request: answered with `error`.
    Invalid {
        /// The id to echo: the element's own if it had a valid one, else null.
        id: Value,
        /// Why the element is invalid (-32600).
        error: RpcError,
    },
}

/// A decoded request payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A single request, answered by a single response (or none).
    Single(Entry),
    /// A non-empty batch, answered by an array of the non-notification
    /// answers in request order (or nothing if there are none).
    Batch(Vec<Entry>),
}

/// Decodes a payload; `Err` is the parse error (-32700) to answer with id
/// null when it is not JSON at all.
pub fn decode(bytes: &[u8]) -> Result<Message, RpcError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| RpcError::parse_error(format!("invalid json: {e}")))?;
    Ok(decode_value(value))
}

/// Decodes a payload as [`decode`] does, unless its shape is over the
/// bounds: more than `max_batch` entries in a batch, or more than
/// `max_values` JSON values in all. Such a payload is refused by a message
/// with one invalid entry (error -32005), found by a scan that allocates
/// nothing, before serde_json builds a value for each of its parts: a
/// megabyte of `[1,1,…]` would otherwise cost a hundred megabytes to
/// refuse.
pub fn decode_bounded(bytes: &[u8], max_batch: usize, max_values: usize) -> Result<Message, RpcError> {
    let shape = Shape::of(bytes);
    let over = match shape.batch {
        Some(n) if n > max_batch => Some(format!("batch of {n} entries: at most {max_batch}")),
        _ if shape.values > max_values => {
            Some(format!("request with more than {max_values} values ({} counted)", shape.values))
        }
        _ => None,
    };
    match over {
        Some(why) => {
            Ok(Message::Single(Entry::Invalid { id: Value::Null, error: RpcError::new(super::error::LIMIT, why) }))
        }
        None => decode(bytes),
    }
}

/// How large a payload is, told from its bytes without parsing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// An upper bound on how many values it holds: every array, object and
    /// element (each `[`, `{` and `,` outside strings, and one more).
    pub values: usize,
    /// When it is an array: how many elements it has.
    pub batch: Option<usize>,
}

impl Shape {
    /// Scans `bytes` once. Malformed JSON gets some shape; the parse that
    /// follows refuses it.
    pub fn of(bytes: &[u8]) -> Shape {
        let (mut values, mut depth, mut in_string, mut escaped) = (1usize, 0usize, false, false);
        let first = bytes.iter().position(|b| !b.is_ascii_whitespace());
        let is_array = first.is_some_and(|i| bytes[i] == b'[');
        let (mut top_commas, mut element) = (0usize, false);
        for &b in bytes {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            // Anything but space or the closing bracket inside the outer
            // array is (part of) an element.
            element |= is_array && depth == 1 && !b.is_ascii_whitespace() && b != b']';
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    values += 1;
                    depth += 1;
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' => {
                    values += 1;
                    top_commas += usize::from(depth == 1);
                }
                _ => {}
            }
        }
        let batch = is_array.then_some(if element { top_commas + 1 } else { 0 });
        Shape { values, batch }
    }
}

/// Decodes a payload that is already JSON.
pub fn decode_value(value: Value) -> Message {
    match value {
        Value::Array(items) if items.is_empty() => {
            Message::Single(Entry::Invalid { id: Value::Null, error: RpcError::invalid_request("empty batch") })
        }
        Value::Array(items) => Message::Batch(items.into_iter().map(decode_entry).collect()),
        other => Message::Single(decode_entry(other)),
    }
}

fn decode_entry(value: Value) -> Entry {
    let Value::Object(mut request) = value else {
        return Entry::Invalid { id: Value::Null, error: RpcError::invalid_request("request must be an object") };
    };
    // The id first, so that the other errors can echo it.
    let id = match request.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => {
            return Entry::Invalid {
                id: Value::Null,
                error: RpcError::invalid_request("id must be a string, a number or null"),
            }
        }
    };
    let invalid = |message: &str| Entry::Invalid {
        id: id.clone().unwrap_or(Value::Null),
        error: RpcError::invalid_request(message),
    };
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("jsonrpc must be \"2.0\"");
    }
    let method = match request.remove("method") {
        Some(Value::String(method)) => method,
        _ => return invalid("method must be a string"),
    };
    let params = match request.remove("params") {
        None => Params::None,
        Some(Value::Array(values)) => Params::Positional(values),
        Some(Value::Object(map)) => Params::Named(map),
        Some(_) => return invalid("params must be an array or an object"),
    };
    Entry::Call { id, method, params }
}

/// The response carrying `result` for the request `id`.
/// Tagged date-times and byte strings are written as their text.
pub fn encode_result(id: &Value, result: &Value) -> String {
    let result = super::value::to_json(result);
    format!(r#"{{"jsonrpc":"2.0","result":{result},"id":{id}}}"#)
}

/// The response carrying `error` for the request `id`.
pub fn encode_error(id: &Value, error: &RpcError) -> String {
    let message = Value::from(error.message.as_str());
    match error.data.as_ref().map(super::value::to_json) {
        None => format!(r#"{{"jsonrpc":"2.0","error":{{"code":{},"message":{message}}},"id":{id}}}"#, error.code),
        Some(data) => format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":{},"message":{message},"data":{data}}},"id":{id}}}"#,
            error.code
        ),
    }
}

/// The response for `id` with either outcome.
pub fn encode(id: &Value, outcome: &Result<Value, RpcError>) -> String {
    match outcome {
        Ok(result) => encode_result(id, result),
        Err(error) => encode_error(id, error),
    }
}

/// A batch response from encoded responses, in order.
pub fn encode_batch<'a>(responses: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, response) in responses.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(response);
    }
    out.push(']');
    out
}
