//! The arguments a handler gets, bound to the signature that matched.

use super::error::RpcError;
use super::value::{Map, Value};

/// The arguments a handler gets: the call's params, checked against the
/// signature that matched and laid out in its order, readable by name or by
/// position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    pub(super) names: Vec<String>,
    pub(super) values: Vec<Value>,
    pub(super) signature: usize,
}

impl Args {
    /// The arguments deserialized into `P`: by name into a struct (or a
    /// map), else by position into a tuple or a sequence; tagged dates and
    /// bytes as their text. An invalid-params error if `P` does not fit.
    pub fn deserialize<P: serde::de::DeserializeOwned>(&self) -> Result<P, RpcError> {
        let plain = |v: &Value| super::value::to_json(v).into_owned();
        let named: Map<String, Value> = self.names.iter().cloned().zip(self.values.iter().map(plain)).collect();
        match serde_json::from_value(Value::Object(named)) {
            Ok(p) => Ok(p),
            Err(by_name) => serde_json::from_value(Value::Array(self.values.iter().map(plain).collect()))
                .map_err(|_| RpcError::invalid_params(format!("params: {by_name}"))),
        }
    }

    /// Arguments from (name, value) pairs, in order; for testing handlers.
    pub fn new(pairs: impl IntoIterator<Item = (String, Value)>) -> Self {
        let (names, values) = pairs.into_iter().unzip();
        Args { names, values, signature: 0 }
    }

    /// The argument called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i)
    }

    /// The argument called `name`, if it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    /// The argument called `name`, if it is an integer that fits an `i64`.
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_i64()
    }

    /// The argument called `name`, if it is a number.
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }

    /// The argument called `name`, if it is a boolean.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }

    /// The argument called `name`, if it is a date-time (XML-RPC's
    /// `dateTime.iso8601`, or its text for a param declared
    /// [`ParamType::DateTime`](super::ParamType::DateTime)).
    pub fn get_datetime(&self, name: &str) -> Option<super::value::DateTime> {
        super::value::as_datetime(self.get(name)?)
    }

    /// The argument called `name`, if it is a byte string (XML-RPC's
    /// `base64`, or its text for a param declared [`ParamType::Base64`](super::ParamType::Base64)).
    pub fn get_bytes(&self, name: &str) -> Option<Vec<u8>> {
        super::value::as_bytes(self.get(name)?)
    }

    /// The argument at position `i`.
    pub fn index(&self, i: usize) -> Option<&Value> {
        self.values.get(i)
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// All the arguments, in signature order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Which signature matched (0 for the first), for methods with several.
    pub fn signature(&self) -> usize {
        self.signature
    }

    pub(super) fn into_values(self) -> Vec<Value> {
        self.values
    }
}
