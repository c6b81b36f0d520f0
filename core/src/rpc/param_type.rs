//! The declared types of params and results: what the registry checks a
//! call against, what `system.methodSignature` reports, and what the
//! OpenRPC document describes as JSON Schema.

use std::fmt;

use serde_json::json;

use super::value::{self, type_name, Value};

/// The type of a param or a return value, as XML-RPC introspection spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum ParamType {
    /// "string"
    String,
    /// "int": an integer (no fraction, no exponent) that fits 64 bits,
    /// signed: -2^63 to 2^63 - 1.
    Int,
    /// "double": any JSON number, integers included.
    Double,
    /// "boolean"
    Boolean,
    /// "array"
    Array,
    /// "struct": a JSON object (not a tagged date-time or byte string).
    Struct,
    /// "nil": only `null`.
    Null,
    /// "mixed": anything, `null` included.
    #[default]
    Any,
    /// "dateTime.iso8601": an XML-RPC date-time, or over JSON-RPC its ISO
    /// 8601 text; the handler gets the tagged value either way (see
    /// [`value`](super::value)).
    DateTime,
    /// "base64": XML-RPC bytes, or over JSON-RPC their standard base64
    /// text; the handler gets the tagged value either way.
    Base64,
}

impl ParamType {
    /// The XML-RPC name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Double => "double",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Struct => "struct",
            ParamType::Null => "nil",
            ParamType::Any => "mixed",
            ParamType::DateTime => "dateTime.iso8601",
            ParamType::Base64 => "base64",
        }
    }

    /// Whether `value` is of this type. A date-time or a byte string is
    /// also accepted as its text, which [`ParamType::bind`] then tags.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Int => value.is_i64(),
            ParamType::Double => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
            ParamType::Struct => type_name(value) == "struct",
            ParamType::Null => value.is_null(),
            ParamType::Any => true,
            ParamType::DateTime => match value {
                Value::String(text) => text.parse::<value::DateTime>().is_ok(),
                other => type_name(other) == "dateTime.iso8601",
            },
            ParamType::Base64 => match value {
                Value::String(text) => value::base64_decode(text).is_some(),
                other => type_name(other) == "base64",
            },
        }
    }

    /// `value`, accepted by this type, as the handler gets it: the text of
    /// a date-time or a byte string becomes its tagged value, in canonical
    /// form; anything else is left as it is.
    pub fn bind(self, value: Value) -> Value {
        match (self, &value) {
            (ParamType::DateTime, Value::String(text)) => match text.parse() {
                Ok(t) => value::datetime(&t),
                Err(_) => value,
            },
            (ParamType::Base64, Value::String(text)) => match value::base64_decode(text) {
                Some(data) => value::bytes(&data),
                None => value,
            },
            _ => value,
        }
    }

    /// The JSON Schema of the type's JSON-RPC form, for OpenRPC. Each
    /// carries the XML-RPC name as its `title`, so that a reader of the
    /// document sees the introspection type too.
    pub fn schema(self) -> Value {
        let title = self.name();
        match self {
            ParamType::String => json!({"title": title, "type": "string"}),
            ParamType::Int => {
                json!({"title": title, "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX})
            }
            ParamType::Double => json!({"title": title, "type": "number"}),
            ParamType::Boolean => json!({"title": title, "type": "boolean"}),
            ParamType::Array => json!({"title": title, "type": "array"}),
            ParamType::Struct => json!({"title": title, "type": "object"}),
            ParamType::Null => json!({"title": title, "type": "null"}),
            ParamType::Any => json!({"title": title}),
            // Not "format": "date-time": that is RFC 3339, which wants an
            // offset, and XML-RPC's date-times usually have none.
            ParamType::DateTime => json!({
                "title": title,
                "type": "string",
                "description": "ISO 8601 date and time, such as 1998-03-10T07:53:26; an offset is optional",
                "pattern": "^[0-9]{4}-?[0-9]{2}-?[0-9]{2}T[0-9]{2}:?[0-9]{2}:?[0-9]{2}([.,][0-9]{1,9})?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$",
            }),
            ParamType::Base64 => json!({
                "title": title,
                "type": "string",
                "contentEncoding": "base64",
                "description": "bytes, as standard base64 (RFC 4648)",
            }),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
