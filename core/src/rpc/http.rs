//! The little HTTP/1.1 a daemon's RPC endpoint needs, without I/O.
//!
//! Just enough to serve `POST` with a `Content-Length` body (JSON-RPC or
//! XML-RPC) and `GET /health`, with keep-alive and pipelining: httparse
//! reads the request head, this module decides what it means and writes
//! responses. No chunked bodies (a client gets 411 and sends a length), no
//! `Date` header (the core has no clock), and every error answer closes the
//! connection, because after a bad head the framing can no longer be
//! trusted.

use super::value::Value;

/// How large a request head may grow before the connection is refused
/// (431): heads are small, and the buffer must be bounded before the body
/// limit even applies.
pub const MAX_HEAD: usize = 16 * 1024;

/// How many header lines a head may have (431 past it).
const MAX_HEADERS: usize = 32;

/// The interim answer to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The statuses this endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Ok,
    NoContent,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    ContentTooLarge,
    HeaderFieldsTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::NoContent => "204 No Content",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::LengthRequired => "411 Length Required",
            Status::ContentTooLarge => "413 Content Too Large",
            Status::HeaderFieldsTooLarge => "431 Request Header Fields Too Large",
        }
    }

    /// The plain-text body of an error status.
    pub(super) fn error_text(self) -> &'static str {
        match self {
            Status::Ok | Status::NoContent => "",
            Status::BadRequest => "bad request\n",
            Status::NotFound => "not found\n",
            Status::MethodNotAllowed => "method not allowed\n",
            Status::LengthRequired => "content-length required\n",
            Status::ContentTooLarge => "request too large\n",
            Status::HeaderFieldsTooLarge => "request head too large\n",
        }
    }
}

/// What a request head says, copied out of the input buffer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Head {
    /// Length of the head in bytes, blank line included.
    pub len: usize,
    pub method: String,
    /// The path without its query string.
    pub path: String,
    pub keep_alive: bool,
    /// `None` when absent.
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// Lowercased.
    pub content_type: Option<String>,
    pub expect_continue: bool,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, `Err(status)` when it must be refused.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, Status> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Status::HeaderFieldsTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Status::HeaderFieldsTooLarge),
        Err(_) => return Err(Status::BadRequest),
    };
    if len > MAX_HEAD {
        return Err(Status::HeaderFieldsTooLarge);
    }
    // A complete parse always has these.
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let version = request.version.unwrap_or(1);

    let mut close = false;
    let mut keep_alive = false;
    let mut content_length = None;
    let mut chunked = false;
    let mut content_type = None;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value).trim().to_ascii_lowercase();
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    close |= token == "close";
                    keep_alive |= token == "keep-alive";
                }
            }
            "content-length" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Status::BadRequest);
                }
                // Too many digits for usize is certainly too large.
                let n = value.parse::<usize>().unwrap_or(usize::MAX);
                match content_length {
                    Some(previous) if previous != n => return Err(Status::BadRequest),
                    _ => content_length = Some(n),
                }
            }
            "transfer-encoding" => chunked = true,
            "content-type" => content_type = Some(value),
            // HTTP/1.0 clients never wait for a 100.
            "expect" => expect_continue = version == 1 && value == "100-continue",
            _ => {}
        }
    }
    // Both framings at once is how requests get smuggled: refuse.
    if chunked && content_length.is_some() {
        return Err(Status::BadRequest);
    }
    let keep_alive = match version {
        0 => keep_alive && !close,
        _ => !close,
    };
    Ok(Some(Head { len, method, path, keep_alive, content_length, chunked, content_type, expect_continue }))
}

/// Which protocol a `POST` body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    Json,
    Xml,
}

/// The protocol of a body: from its Content-Type when that names JSON or
/// XML, else from its first byte (`<` is XML, anything else JSON, which
/// then answers a parse error if it is not).
pub(super) fn body_kind(content_type: Option<&str>, body: &[u8]) -> BodyKind {
    match content_type {
        Some(ct) if ct.contains("json") => BodyKind::Json,
        Some(ct) if ct.contains("xml") => BodyKind::Xml,
        _ => match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => BodyKind::Xml,
            _ => BodyKind::Json,
        },
    }
}

/// The body of `GET /health`.
pub(super) fn health_body() -> String {
    let mut status = serde_json::Map::new();
    status.insert("status".into(), Value::from("ok"));
    Value::Object(status).to_string()
}

/// Appends a whole response to `out`.
pub(super) fn write_response(out: &mut Vec<u8>, status: Status, content_type: &str, body: &[u8], keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"\r\n");
    // A 204 has neither body nor the headers that describe one.
    if status != Status::NoContent {
        out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, POST\r\n");
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    out.extend_from_slice(format!("Connection: {connection}\r\n\r\n").as_bytes());
    if status != Status::NoContent {
        out.extend_from_slice(body);
    }
}
