//! The one value model shared by JSON-RPC and XML-RPC: `serde_json::Value`.
//!
//! XML-RPC's types map onto JSON's with two losses, accepted on purpose so
//! that a method is written once for both protocols: `dateTime.iso8601` and
//! `base64` arrive as JSON strings (the handler decodes them if it cares),
//! and XML-RPC's `int`/`i8` distinction is recovered on the way out from the
//! magnitude of the number. Handlers never see which protocol called them.

pub use serde_json::{Map, Value};

/// The XML-RPC name of the type of `value`, used in error messages and to
/// match values against declared [`ParamType`](super::ParamType)s.
///
/// Integers are "int" whatever their size, any other number is "double".
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "struct",
    }
}
