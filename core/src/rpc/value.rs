//! The one value model shared by JSON-RPC and XML-RPC: `serde_json::Value`,
//! with two typed values of XML-RPC's that JSON lacks.
//!
//! XML-RPC's `dateTime.iso8601` and `base64` travel through the daemon as
//! *tagged values*: objects of exactly one member, whose name is reserved
//! ([`DATETIME_TAG`], [`BASE64_TAG`]) and whose value is the canonical text
//! (extended ISO 8601; standard base64 with padding). The XML-RPC codec
//! decodes the two types into them and encodes them back as the same types,
//! however deeply they are nested; the JSON-RPC codec writes them as their
//! plain text, which is what a JSON client expects. A param declared
//! [`ParamType::DateTime`](super::ParamType::DateTime) or
//! [`ParamType::Base64`](super::ParamType::Base64) also takes that text
//! from a JSON-RPC client and is bound as the tagged value, so a handler
//! sees the same value whichever protocol carried it; nested inside a
//! struct a JSON string stays a string (nothing says it is a date), unless
//! the client sends the tagged object itself. An XML-RPC struct of the one
//! member `$base64` or `$dateTime.iso8601` is refused by the codec, since
//! it would read as a tagged value.
//!
//! XML-RPC's `int`/`i8` distinction is recovered on the way out from the
//! magnitude of the number. Handlers never see which protocol called them.

use std::borrow::Cow;

pub use serde_json::{Map, Value};

pub use super::datetime::{DateTime, DateTimeError};

/// The member name of a tagged `dateTime.iso8601`.
pub const DATETIME_TAG: &str = "$dateTime.iso8601";
/// The member name of a tagged `base64`.
pub const BASE64_TAG: &str = "$base64";

/// The tagged value of a date-time.
///
/// ```
/// use forkd_core::rpc::value::{as_datetime, datetime};
/// use forkd_core::rpc::DateTime;
///
/// let t = DateTime::new(1998, 3, 10, 7, 53, 26).unwrap();
/// assert_eq!(datetime(&t).to_string(), r#"{"$dateTime.iso8601":"1998-03-10T07:53:26"}"#);
/// assert_eq!(as_datetime(&datetime(&t)), Some(t));
/// ```
pub fn datetime(t: &DateTime) -> Value {
    tag(DATETIME_TAG, t.to_string())
}

/// The tagged value of a byte string.
///
/// ```
/// use forkd_core::rpc::value::{as_bytes, bytes};
///
/// assert_eq!(bytes(b"hi").to_string(), r#"{"$base64":"aGk="}"#);
/// assert_eq!(as_bytes(&bytes(b"hi")), Some(b"hi".to_vec()));
/// ```
pub fn bytes(data: &[u8]) -> Value {
    tag(BASE64_TAG, base64_encode(data))
}

fn tag(name: &str, text: String) -> Value {
    let mut map = Map::new();
    map.insert(name.to_string(), Value::String(text));
    Value::Object(map)
}

/// The text of `value` if it is an object of the one member `name` holding
/// a string; whether that text is valid is for the caller to check.
pub(super) fn tagged<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get(name)?.as_str(),
        _ => None,
    }
}

/// The date-time that `value` holds, if it is a valid tagged date-time.
pub fn as_datetime(value: &Value) -> Option<DateTime> {
    tagged(value, DATETIME_TAG)?.parse().ok()
}

/// The bytes that `value` holds, if it is a valid tagged byte string.
pub fn as_bytes(value: &Value) -> Option<Vec<u8>> {
    base64_decode(tagged(value, BASE64_TAG)?)
}

/// Which typed value `value` is, if any, with its canonical text (the
/// extended ISO 8601 form; padded base64), whatever form the tag held.
pub(super) fn typed(value: &Value) -> Option<(Typed, String)> {
    if let Some(text) = tagged(value, DATETIME_TAG) {
        return text.parse::<DateTime>().ok().map(|t| (Typed::DateTime, t.to_string()));
    }
    let data = base64_decode(tagged(value, BASE64_TAG)?)?;
    Some((Typed::Base64, base64_encode(&data)))
}

/// The two typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Typed {
    DateTime,
    Base64,
}

/// `value` as JSON-RPC writes it: every tagged value replaced by its text.
/// Borrowed when there is none, which is the common case.
pub fn to_json(value: &Value) -> Cow<'_, Value> {
    if !has_typed(value) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(untag(value))
}

fn has_typed(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(has_typed),
        Value::Object(map) => typed(value).is_some() || map.values().any(has_typed),
        _ => false,
    }
}

fn untag(value: &Value) -> Value {
    if let Some((_, text)) = typed(value) {
        return Value::String(text);
    }
    match value {
        Value::Array(items) => Value::Array(items.iter().map(untag).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), untag(v))).collect()),
        other => other.clone(),
    }
}

/// The XML-RPC name of the type of `value`, used in error messages and to
/// match values against declared [`ParamType`](super::ParamType)s.
///
/// Integers that fit an `i64` are "int", larger ones (which JSON can
/// carry, and no XML-RPC integer type) "int out of range", any other number
/// is "double".
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(n) if n.is_i64() => "int",
        Value::Number(_) => "int out of range",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => match typed(value) {
            Some((Typed::DateTime, _)) => "dateTime.iso8601",
            Some((Typed::Base64, _)) => "base64",
            None => "struct",
        },
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, section 4), with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; the padding may be left out, nothing else is
/// tolerated (the XML-RPC codec strips the line breaks that some peers,
/// Python's among them, put in).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    if padding > 2 || (padding > 0 && text.len() & 3 != 0) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (data, text) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64_encode(data.as_bytes()), text);
            assert_eq!(base64_decode(text).as_deref(), Some(data.as_bytes()));
        }
        assert_eq!(base64_decode("Zg").as_deref(), Some(&b"f"[..]), "padding may be left out");
        for bad in ["Z", "Zg=", "Zg===", "Z===", "Zm9v!", "Zm 9v", "Zg==Zg=="] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tagged_values_are_told_apart_from_structs() {
        let t = DateTime::new(1998, 3, 10, 7, 53, 26).unwrap();
        assert_eq!(type_name(&datetime(&t)), "dateTime.iso8601");
        assert_eq!(type_name(&bytes(b"\0\xff")), "base64");
        let not = [
            serde_json::json!({"$base64": "!"}),
            serde_json::json!({"$base64": "aGk=", "other": 1}),
            serde_json::json!({"$dateTime.iso8601": 7}),
        ];
        for v in not {
            assert_eq!(type_name(&v), "struct", "{v}");
            assert_eq!(to_json(&v).as_ref(), &v);
        }
        let nested = serde_json::json!({"a": [datetime(&t), {"b": bytes(b"hi")}]});
        assert_eq!(to_json(&nested).as_ref(), &serde_json::json!({"a": ["1998-03-10T07:53:26", {"b": "aGk="}]}));
        // Tags in another valid form are written canonical.
        let loose = serde_json::json!([{"$dateTime.iso8601": "19980310T075326"}, {"$base64": "aGk"}]);
        assert_eq!(to_json(&loose).as_ref(), &serde_json::json!(["1998-03-10T07:53:26", "aGk="]));
    }
}
