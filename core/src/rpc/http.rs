//! The little HTTP/1.1 a daemon's RPC endpoint needs, without I/O.
//!
//! Just enough to serve `POST /` with a `Content-Length` body (JSON-RPC or
//! XML-RPC) and `GET /health`, with keep-alive and pipelining: httparse
//! reads the request head, this module decides what it means and writes
//! responses. No chunked bodies (a client gets 411 and sends a length), no
//! `Date` header (the core has no clock), and every error answer closes the
//! connection, because after a bad head the framing can no longer be
//! trusted.
//!
//! # What a browser must not be able to do
//!
//! Any web page the operator opens can make the browser send requests to a
//! loopback address. Those a page may send without the browser asking the
//! server first ("simple" requests: a form, a `text/plain` POST) must never
//! run a call, and a page on an attacker's name that resolves to 127.0.0.1
//! (DNS rebinding) must not read an answer. So, as Transmission, geth and
//! Jupyter learned to do:
//! - RPC is only a `POST` whose `Content-Type` names JSON or XML (415
//!   otherwise): a browser sends those types cross-origin only after a
//!   CORS preflight, which this endpoint never grants (it sends no CORS
//!   header at all, and `OPTIONS` is 405);
//! - the `Host` header must be a loopback name, a literal IP address, or a
//!   name on the allow-list (421 otherwise): a rebinding page's `Host` is
//!   the attacker's name;
//! - a request carrying an `Origin` that is not on the allow-list is 403:
//!   browsers add it to every cross-origin POST, and command-line clients
//!   never send it.

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
    Unauthorized,
    Forbidden,
    RequestTimeout,
    UnsupportedMediaType,
    MisdirectedRequest,
    ServiceUnavailable,
    ExpectationFailed,
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
            Status::Unauthorized => "401 Unauthorized",
            Status::Forbidden => "403 Forbidden",
            Status::RequestTimeout => "408 Request Timeout",
            Status::UnsupportedMediaType => "415 Unsupported Media Type",
            Status::MisdirectedRequest => "421 Misdirected Request",
            Status::ServiceUnavailable => "503 Service Unavailable",
            Status::ExpectationFailed => "417 Expectation Failed",
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
            Status::Unauthorized => "a token is required: Authorization: Bearer TOKEN\n",
            Status::Forbidden => "origin not allowed\n",
            Status::RequestTimeout => "request not received in time\n",
            Status::UnsupportedMediaType => "content type must be application/json or text/xml\n",
            Status::MisdirectedRequest => "host not allowed\n",
            Status::ServiceUnavailable => "every connection slot is taken: show the token at once\n",
            Status::ExpectationFailed => "only 100-continue is understood\n",
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
    /// Lowercased, as sent (with its port, if any).
    pub host: Option<String>,
    /// Lowercased, as sent.
    pub origin: Option<String>,
    /// As sent (tokens are case-sensitive).
    pub authorization: Option<String>,
    /// Lowercased: which format `/metrics` answers in.
    pub accept: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
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

    let mut fields = Fields::default();
    for header in request.headers.iter() {
        fields.read(header, version)?;
    }
    let Fields {
        close,
        keep_alive,
        content_length,
        chunked,
        content_type,
        expect_continue,
        host,
        origin,
        authorization,
        accept,
    } = fields;
    // Both framings at once is how requests get smuggled: refuse.
    if chunked && content_length.is_some() {
        return Err(Status::BadRequest);
    }
    let keep_alive = match version {
        0 => keep_alive && !close,
        _ => !close,
    };
    Ok(Some(Head {
        len,
        method,
        path,
        keep_alive,
        content_length,
        chunked,
        content_type,
        expect_continue,
        host,
        origin,
        authorization,
        accept,
        version,
    }))
}

/// The header fields a request head is read for, as they are met.
#[derive(Default)]
struct Fields {
    close: bool,
    keep_alive: bool,
    content_length: Option<usize>,
    chunked: bool,
    content_type: Option<String>,
    expect_continue: bool,
    host: Option<String>,
    origin: Option<String>,
    authorization: Option<String>,
    accept: Option<String>,
}

impl Fields {
    /// Takes one header into account, or refuses the request for it.
    fn read(&mut self, header: &httparse::Header<'_>, version: u8) -> Result<(), Status> {
        let raw = String::from_utf8_lossy(header.value);
        let value = raw.trim().to_ascii_lowercase();
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            // Two of these would let a check read one and a proxy the
            // other: refuse.
            "host" if self.host.is_some() => return Err(Status::BadRequest),
            "host" => self.host = Some(value),
            "origin" if self.origin.is_some() => return Err(Status::BadRequest),
            "origin" => self.origin = Some(value),
            "authorization" if self.authorization.is_some() => return Err(Status::BadRequest),
            "authorization" => self.authorization = Some(raw.trim().to_string()),
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    self.close |= token == "close";
                    self.keep_alive |= token == "keep-alive";
                }
            }
            "content-length" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Status::BadRequest);
                }
                // Too many digits for usize is certainly too large.
                let n = value.parse::<usize>().unwrap_or(usize::MAX);
                match self.content_length {
                    Some(previous) if previous != n => return Err(Status::BadRequest),
                    _ => self.content_length = Some(n),
                }
            }
            "transfer-encoding" => self.chunked = true,
            "accept" => self.accept = Some(value),
            "content-type" if self.content_type.is_some() => return Err(Status::BadRequest),
            "content-type" => self.content_type = Some(value),
            // HTTP/1.0 clients never wait for a 100; an HTTP/1.1 client
            // that expects anything else is told it will not come.
            "expect" if version == 1 && value != "100-continue" => return Err(Status::ExpectationFailed),
            "expect" => self.expect_continue = version == 1,
            _ => {}
        }
        Ok(())
    }
}

/// Which protocol a `POST` body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyKind {
    Json,
    Xml,
}

/// The protocol a `Content-Type` names, parameters (`; charset=utf-8`)
/// aside: `None` for anything but the JSON and XML types, which a browser
/// cannot send cross-origin without a preflight.
pub(super) fn body_kind(content_type: Option<&str>) -> Option<BodyKind> {
    let media = content_type?.split(';').next().unwrap_or_default().trim();
    match media {
        "application/json" | "application/json-rpc" | "application/jsonrequest" => Some(BodyKind::Json),
        "text/xml" | "application/xml" => Some(BodyKind::Xml),
        _ => None,
    }
}

/// Whether a `Host` header (lowercased, maybe with a port) names this
/// machine by loopback name or literal address, or a name on `allowed`.
pub(super) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    // "[::1]:8080", "[::1]", "127.0.0.1:80", "localhost", "name:80".
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn is_port(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The token an `Authorization` header carries: `Bearer TOKEN`, or
/// `Basic` with the token as the password (any user name), which is what
/// a URL such as `http://forkd:TOKEN@127.0.0.1:PORT/` makes clients send.
pub(super) fn bearer_token(authorization: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = authorization.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        // Basic credentials are padded base64.
        if rest.len() % 4 != 0 {
            return None;
        }
        let decoded = super::value::base64_decode(rest)?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// The body of `GET /health`.
pub(super) fn health_body() -> String {
    let mut status = serde_json::Map::new();
    status.insert("status".into(), Value::from("ok"));
    Value::Object(status).to_string()
}

/// The headers the status page is served with.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'none'\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

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
    if content_type.starts_with("text/html") {
        // The page acts on the daemon: no other site may frame it (a
        // click it did not mean), and it runs only its own inline code.
        out.extend_from_slice(PAGE_HEADERS.as_bytes());
    }
    if status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, POST\r\n");
    }
    if status == Status::Unauthorized {
        out.extend_from_slice(b"WWW-Authenticate: Bearer realm=\"forkd\", Basic realm=\"forkd\"\r\n");
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    out.extend_from_slice(format!("Connection: {connection}\r\n\r\n").as_bytes());
    if status != Status::NoContent {
        out.extend_from_slice(body);
    }
}
