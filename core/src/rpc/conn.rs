//! One client connection as a pure state machine: bytes in, bytes out.
//!
//! The daemon's event loop owns the socket; this type owns everything else
//! about the connection: which framing the client speaks, the partial
//! request buffered so far, the answers owed and their order, and when the
//! connection is done. It never reads, writes or closes anything itself,
//! so every behaviour here (pipelining, a deferred answer arriving late,
//! a request split at any byte, a slow reader) can be tested with plain
//! byte slices and no clock.
//!
//! # Framing
//!
//! Decided once, from the first bytes: an HTTP method token and a space
//! (`POST `, `GET `, ...) means HTTP/1.1 with keep-alive, carrying JSON-RPC
//! or XML-RPC bodies; anything else means newline-delimited JSON-RPC, one
//! request or batch per line and one answer line per request (none for
//! notifications). Sniffing rather than configuring lets one socket serve
//! both `nc` and `curl`.
//!
//! # Order
//!
//! Answers leave in request order, always: a handler may answer
//! [`Reply::Deferred`], and later answers that are ready wait behind it
//! until [`Conn::complete`] fills it in. Clients that pipeline rely on this;
//! neither JSON-RPC over a stream nor HTTP/1.1 has another way to match
//! answers to requests.
//!
//! # Bounds and closing
//!
//! A request larger than [`Limits::max_request`] is refused and closes the
//! connection, as does input that breaks the framing (a line that is not
//! JSON, a bad HTTP head): after it nothing that follows can be trusted to
//! start a request. An invalid request that is valid JSON is only answered
//! with its error. While more than [`Limits::max_output`] bytes wait to be
//! sent, or [`Limits::max_pending`] answers are owed, the connection stops
//! taking requests ([`Conn::wants_read`] is false): the client's own
//! slowness is its backpressure.
//!
//! # Who may call
//!
//! A connection is made with an [`Access`] policy. On tcp it carries a
//! token: an HTTP request must present it in `Authorization` (Bearer, or
//! Basic with the token as the password), and a newline-delimited JSON
//! connection must first call `rpc.authenticate` with it. Until then every
//! call is answered [`codes::UNAUTHORIZED`](super::codes::UNAUTHORIZED) (HTTP
//! 401) without running, each refusal is logged with the peer's address,
//! and after [`MAX_AUTH_FAILURES`] refusals the connection is closed.
//! Tokens are compared in constant time. Every HTTP request, on any
//! transport, passes the browser checks of [`http`](super::http) first.
//!
//! # Driving it
//!
//! The loop, for each connection:
//! 1. when [`Conn::wants_read`], read up to [`Limits::read_buffer`] bytes and
//!    pass them to [`Conn::handle_bytes`]; on end of stream call
//!    [`Conn::handle_eof`];
//! 2. write what [`Conn::output`] holds and report it with
//!    [`Conn::consume`];
//! 3. when a deferred call finishes, call [`Conn::complete`];
//! 4. after `consume` or `complete`, call [`Conn::resume`], which goes on
//!    with requests that were buffered while the connection was full;
//! 5. close the socket once [`Conn::should_close`].

use std::collections::{BTreeMap, VecDeque};

use super::error::{self as codes, RpcError};
use super::http::{self, BodyKind, Status};
use super::jsonrpc::{self, Entry, Message};
use super::registry::{DeferId, Params, Reply};
use super::value::Value;
use super::xmlrpc;

/// The bounds of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest request accepted: an NDJSON line without its newline, or
    /// an HTTP body. Default 1 MiB.
    pub max_request: usize,
    /// Past this many unsent output bytes the connection takes no more
    /// requests until the client reads. Default 1 MiB.
    pub max_output: usize,
    /// How many bytes the loop should read per read call (comodojo's
    /// `socketbuffer`); the connection itself does not depend on it.
    /// Default 1024.
    pub read_buffer: usize,
    /// Past this many answers owed plus deferred calls waiting (each call
    /// of a batch counts) the connection takes no more requests. Default
    /// 1024.
    pub max_pending: usize,
    /// The most entries a batch may have; a larger one is answered with one
    /// error and runs nothing. Default 1000.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_request: 1 << 20, max_output: 1 << 20, read_buffer: 1024, max_pending: 1024, max_batch: 1000 }
    }
}

/// Who may use a connection: shared by all the connections of one
/// transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The token a client must present; `None` when none is needed (a unix
    /// socket, whose peers the daemon checks by their credentials, or tcp
    /// explicitly opened).
    pub token: Option<String>,
    /// Names accepted in `Host` besides loopback names and literal IPs.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted in `Origin`; a request with any other is refused.
    pub allowed_origins: Vec<String>,
}

/// A connection's [`Policy`] and who is at its other end, for the log.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub policy: std::rc::Rc<Policy>,
    /// The peer as the log names it (`127.0.0.1:51234`, `pid 7 uid 0`).
    pub peer: String,
}

/// After this many refused calls for want of a token (or for a wrong one)
/// a connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// The method a newline-delimited JSON connection authenticates with. The
/// `rpc.` prefix is JSON-RPC's own, so no user method can take the name.
pub const AUTHENTICATE: &str = "rpc.authenticate";

/// How a connection frames its requests, decided from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Newline-delimited JSON-RPC.
    Ndjson,
    /// HTTP/1.1 carrying JSON-RPC or XML-RPC.
    Http,
}

/// The request lines that mark an HTTP client.
const HTTP_METHODS: &[&[u8]] = &[b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH "];

const JSON: &str = "application/json";

const XML: &str = "text/xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// How an answer is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Envelope {
    /// One line, `\n`-terminated.
    Line,
    /// One HTTP response.
    Http { keep_alive: bool },
}

/// One JSON-RPC answer inside a (possibly batch) response.
#[derive(Debug)]
struct Part {
    id: Value,
    /// The encoded response; `None` while deferred.
    answer: Option<String>,
}

/// What an owed answer holds.
#[derive(Debug)]
enum Body {
    /// JSON-RPC answers; no parts means nothing to answer (notifications).
    /// `waiting` counts the parts still deferred, and `size` the bytes of
    /// the answers so far, which `max_output` bounds.
    Json { batch: bool, parts: Vec<Part>, waiting: usize, size: usize },
    /// An XML-RPC response; `None` while deferred.
    Xml(Option<String>),
    /// An HTTP answer that is not RPC (health, errors).
    Plain { status: Status, content_type: &'static str, text: String },
}

/// An answer owed to the client, in request order.
#[derive(Debug)]
struct Pending {
    envelope: Envelope,
    body: Body,
}

impl Pending {
    fn is_ready(&self) -> bool {
        match &self.body {
            Body::Json { waiting, .. } => *waiting == 0,
            Body::Xml(answer) => answer.is_some(),
            Body::Plain { .. } => true,
        }
    }

    /// Appends the wire form of a ready answer to `out`.
    fn render(self, out: &mut Vec<u8>) {
        let json = |batch: bool, parts: Vec<Part>| -> Option<String> {
            let mut answers = parts.into_iter().map(|p| p.answer.unwrap_or_default());
            match batch {
                false => answers.next(),
                true => {
                    let all: Vec<String> = answers.collect();
                    (!all.is_empty()).then(|| jsonrpc::encode_batch(all.iter().map(String::as_str)))
                }
            }
        };
        match (self.envelope, self.body) {
            (Envelope::Line, Body::Json { batch, parts, .. }) => {
                if let Some(text) = json(batch, parts) {
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'\n');
                }
            }
            (Envelope::Line, Body::Xml(answer)) => {
                out.extend_from_slice(answer.unwrap_or_default().as_bytes());
                out.push(b'\n');
            }
            (Envelope::Line, Body::Plain { text, .. }) => out.extend_from_slice(text.as_bytes()),
            (Envelope::Http { keep_alive }, Body::Json { batch, parts, .. }) => match json(batch, parts) {
                Some(text) => http::write_response(out, Status::Ok, JSON, text.as_bytes(), keep_alive),
                None => http::write_response(out, Status::NoContent, JSON, b"", keep_alive),
            },
            (Envelope::Http { keep_alive }, Body::Xml(answer)) => {
                let text = answer.unwrap_or_default();
                http::write_response(out, Status::Ok, XML, text.as_bytes(), keep_alive)
            }
            (Envelope::Http { keep_alive }, Body::Plain { status, content_type, text }) => {
                http::write_response(out, status, content_type, text.as_bytes(), keep_alive)
            }
        }
    }
}

/// The connection state machine; see the [module docs](self).
#[derive(Debug)]
pub struct Conn {
    limits: Limits,
    framing: Option<Framing>,
    /// Input received; `input[start..]` is not parsed yet.
    input: Vec<u8>,
    start: usize,
    /// NDJSON: how many bytes of `input[start..]` are known to hold no
    /// newline, so that a long line is not searched again on every read.
    scanned: usize,
    /// HTTP: a `100 Continue` was sent for the request being received.
    continue_sent: bool,
    /// Answers owed, in request order; the front has sequence `first_seq`.
    queue: VecDeque<Pending>,
    first_seq: u64,
    /// Where each deferred answer goes: (sequence, part index).
    deferred: BTreeMap<DeferId, (u64, usize)>,
    /// Bytes to send; `output[sent..]` is not sent yet.
    output: Vec<u8>,
    sent: usize,
    /// Requests stopped being taken for lack of room while input remained.
    backlog: bool,
    /// No more input will be parsed: a fatal error or a close was asked.
    stopped: bool,
    /// The peer closed its write half.
    eof: bool,
    access: Access,
    /// How many requests were taken whole so far.
    taken: u64,
    /// Bytes of answers rendered but still in the queue (behind a deferred
    /// one): with the output, what `max_output` bounds.
    queued: usize,
    /// The token was presented (or none is needed).
    authenticated: bool,
    auth_failures: u32,
}

impl Conn {
    /// A fresh connection.
    ///
    /// # Panics
    /// If `max_output` or `max_pending` is 0: such a connection could never
    /// take a request.
    pub fn new(limits: Limits) -> Self {
        Conn::with_access(limits, Access::default())
    }

    /// A fresh connection under `access`: with a token in its policy, no
    /// call runs until the client has presented it.
    ///
    /// # Panics
    /// As [`Conn::new`].
    pub fn with_access(limits: Limits, access: Access) -> Self {
        assert!(limits.max_output > 0, "max_output must be positive");
        assert!(limits.max_pending > 0, "max_pending must be positive");
        let authenticated = access.policy.token.is_none();
        Conn {
            access,
            taken: 0,
            queued: 0,
            authenticated,
            auth_failures: 0,
            limits,
            framing: None,
            input: Vec::new(),
            start: 0,
            scanned: 0,
            continue_sent: false,
            queue: VecDeque::new(),
            first_seq: 0,
            deferred: BTreeMap::new(),
            output: Vec::new(),
            sent: 0,
            backlog: false,
            stopped: false,
            eof: false,
        }
    }

    /// The limits the connection was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The framing, once the first bytes have decided it.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// Takes bytes read from the client: buffers them, then dispatches
    /// every complete request (as far as the limits allow) and queues its
    /// answer. Bytes that arrive once the connection is closing are
    /// dropped.
    pub fn handle_bytes(&mut self, data: &[u8], dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        if self.is_closing() {
            return;
        }
        self.input.extend_from_slice(data);
        self.process(dispatch);
    }

    /// Goes on with buffered requests that waited for room. Call it after
    /// [`Conn::consume`] and [`Conn::complete`]; it does nothing when
    /// nothing waits.
    pub fn resume(&mut self, dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        self.process(dispatch);
    }

    /// The peer closed its write half: requests already complete are still
    /// answered (deferred ones included), an incomplete one is dropped, and
    /// the connection closes once everything is sent.
    pub fn handle_eof(&mut self) {
        self.eof = true;
        if !self.backlog {
            self.discard_input();
        }
    }

    /// Fills in the answer of a deferred call. Ids this connection does not
    /// wait for (another connection's, a notification's, one already
    /// completed) are ignored.
    pub fn complete(&mut self, id: DeferId, result: Result<Value, RpcError>) {
        let Some((seq, part)) = self.deferred.remove(&id) else {
            return;
        };
        // A deferred answer keeps its entry at or behind the queue's front.
        let index = usize::try_from(seq - self.first_seq).expect("queue index fits usize");
        let max = self.limits.max_output;
        // What the connection already holds counts too: a client that
        // pipelines deferred calls and never reads must not make it hold
        // every answer at once.
        let held = self.queued + self.output().len();
        let added;
        match &mut self.queue[index].body {
            Body::Json { parts, waiting, size, .. } => {
                let part = &mut parts[part];
                let answer = bounded_json(&part.id, jsonrpc::encode(&part.id, &result), (*size).max(held), max);
                *size += answer.len();
                added = answer.len();
                part.answer = Some(answer);
                *waiting -= 1;
            }
            Body::Xml(answer) => {
                let text = bounded_xml(xmlrpc::encode(&result), max.saturating_sub(held));
                added = text.len();
                *answer = Some(text);
            }
            Body::Plain { .. } => unreachable!("plain answers are never deferred"),
        }
        self.queued += added;
        self.flush();
    }

    /// Bytes ready to send, in order.
    pub fn output(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// Records that the first `n` bytes of [`Conn::output`] were sent.
    ///
    /// # Panics
    /// If `n` is more than `output().len()`.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.output().len(), "consumed more than the output");
        self.sent += n;
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        } else if self.sent >= 64 * 1024 && self.sent * 2 >= self.output.len() {
            self.output.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Whether the loop should read from the client: false once closing,
    /// and while the output or the owed answers are over their limits.
    pub fn wants_read(&self) -> bool {
        !self.is_closing() && self.has_room()
    }

    /// Whether the connection is on its way to close: it takes no more
    /// requests, and closes once what it owes is sent.
    pub fn is_closing(&self) -> bool {
        self.stopped || self.eof
    }

    /// Whether the loop should close the socket now: closing, nothing
    /// owed, everything sent.
    pub fn should_close(&self) -> bool {
        self.is_closing() && self.queue.is_empty() && self.output().is_empty() && self.start == self.input.len()
    }

    /// How many deferred answers the connection waits for.
    pub fn pending_deferred(&self) -> usize {
        self.deferred.len()
    }

    /// Whether a request has begun to arrive and is not complete yet: the
    /// loop bounds how long that may last (a client sending one byte at a
    /// time must not hold its slot forever). Requests held back while the
    /// connection is full wait for the client's own reading, not for it.
    pub fn in_request(&self) -> bool {
        !self.is_closing() && !self.backlog && self.start < self.input.len()
    }

    /// How many requests were taken whole so far: with [`Conn::in_request`]
    /// the loop tells a request that is still arriving from a new one.
    pub fn requests_taken(&self) -> u64 {
        self.taken
    }

    /// The request that began to arrive took too long: answer an error
    /// (HTTP 408) and close.
    pub fn handle_request_timeout(&mut self) {
        log::warn!("refused {}: request not received in time", self.access.peer);
        match self.framing {
            Some(Framing::Http) => {
                self.refuse(Status::RequestTimeout);
            }
            Some(Framing::Ndjson) | None => {
                self.fatal_line(RpcError::invalid_request("request not received in time"));
            }
        }
        self.discard_input();
        self.flush();
    }

    /// Whether the client has presented the token (or needs none).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    fn has_room(&self) -> bool {
        // Answers owed, with each deferred call of a batch counted: a batch
        // of deferred calls is one entry of the queue but many calls.
        self.queue.len().max(self.deferred.len()) < self.limits.max_pending
            && self.queued + self.output().len() < self.limits.max_output
    }

    fn discard_input(&mut self) {
        self.input.clear();
        self.start = 0;
        self.scanned = 0;
    }

    /// Parses and dispatches buffered requests while there is room.
    fn process(&mut self, dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        self.backlog = false;
        loop {
            if self.stopped {
                break;
            }
            if !self.has_room() {
                self.backlog = self.start < self.input.len();
                break;
            }
            let progress = match self.framing {
                None => self.sniff(),
                Some(Framing::Ndjson) => self.next_line(dispatch),
                Some(Framing::Http) => self.next_http(dispatch),
            };
            self.flush();
            if !progress {
                break;
            }
        }
        if self.stopped || (self.eof && !self.backlog) {
            self.discard_input();
        } else {
            self.input.drain(..self.start);
            self.start = 0;
        }
    }

    /// Decides the framing from the first bytes, if they suffice.
    fn sniff(&mut self) -> bool {
        let buf = &self.input[self.start..];
        if buf.is_empty() {
            return false;
        }
        if HTTP_METHODS.iter().any(|m| buf.starts_with(m)) {
            self.framing = Some(Framing::Http);
        } else if HTTP_METHODS.iter().any(|m| m.starts_with(buf)) {
            // Could still become "POST ": wait for more.
            return false;
        } else {
            self.framing = Some(Framing::Ndjson);
        }
        log::trace!("rpc connection framing: {:?}", self.framing);
        true
    }

    /// NDJSON: takes one line if a whole one is buffered.
    fn next_line(&mut self, dispatch: &mut dyn FnMut(&str, Params) -> Reply) -> bool {
        let max = self.limits.max_request;
        let buf = &self.input[self.start..];
        // A line may hold max bytes, then its newline.
        let window = &buf[..buf.len().min(max.saturating_add(1))];
        let from = self.scanned.min(window.len());
        let Some(end) = window[from..].iter().position(|&b| b == b'\n').map(|i| from + i) else {
            if buf.len() > max {
                let error = RpcError::invalid_request(format!("request too large: over {max} bytes"));
                self.fatal_line(error);
                return true;
            }
            self.scanned = window.len();
            return false;
        };
        let line = &buf[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let decoded = if line.iter().all(u8::is_ascii_whitespace) { None } else { Some(jsonrpc::decode(line)) };
        let pipelined = self.start > 0;
        self.start += end + 1;
        self.taken += 1;
        self.scanned = 0;
        if crate::planted::active(crate::planted::Bug::DropPipelined) && pipelined && decoded.is_some() {
            return true;
        }
        match decoded {
            None => {}
            Some(Ok(message)) => self.run_json(message, Envelope::Line, dispatch),
            Some(Err(error)) => self.fatal_line(error),
        }
        true
    }

    /// NDJSON: answers `error` with id null, then closes.
    fn fatal_line(&mut self, error: RpcError) {
        log::debug!("rpc connection closing: {}", error.message);
        let answer = jsonrpc::encode_error(&Value::Null, &error);
        self.queued += answer.len();
        self.queue.push_back(Pending {
            envelope: Envelope::Line,
            body: Body::Json {
                batch: false,
                size: answer.len(),
                parts: vec![Part { id: Value::Null, answer: Some(answer) }],
                waiting: 0,
            },
        });
        self.stopped = true;
    }

    /// HTTP: takes one request if a whole one is buffered.
    fn next_http(&mut self, dispatch: &mut dyn FnMut(&str, Params) -> Reply) -> bool {
        let buf = &self.input[self.start..];
        if buf.is_empty() {
            return false;
        }
        let head = match http::parse_head(buf) {
            Ok(None) => return false,
            Ok(Some(head)) => head,
            Err(status) => return self.refuse(status),
        };
        let is_post = match head.method.as_str() {
            "POST" => true,
            "GET" if head.path == "/health" => false,
            "GET" => return self.refuse(Status::NotFound),
            _ => return self.refuse(Status::MethodNotAllowed),
        };
        let body_len = match (head.content_length, head.chunked, is_post) {
            (_, true, _) | (None, false, true) => return self.refuse(Status::LengthRequired),
            (Some(n), false, _) => n,
            (None, false, false) => 0,
        };
        if body_len > self.limits.max_request {
            return self.refuse(Status::ContentTooLarge);
        }
        let avail = buf.len();
        let verdict = self.check_http(&head, is_post);
        let complete = avail - head.len >= body_len;
        if let Some(status) = verdict {
            // The refusal waits for the body, so that closing does not
            // reset a connection whose client is still sending (and would
            // then never read the answer) — unless the client waits for a
            // 100 before it sends, in which case it is told at once.
            if complete || (head.expect_continue && !self.continue_sent) {
                self.start += if complete { head.len + body_len } else { avail };
                // Counted once, when answered: a body that arrives in
                // several reads passes through here once for each.
                if status == Status::Unauthorized {
                    let why = if head.authorization.is_some() { "wrong token" } else { "no token" };
                    self.auth_failed(why);
                }
                return self.refuse(status);
            }
            return false;
        }
        if !complete {
            // Only when no earlier answer is owed, or the 100 would
            // overtake it.
            if head.expect_continue && !self.continue_sent && self.queue.is_empty() {
                self.output.extend_from_slice(http::CONTINUE);
                self.continue_sent = true;
            }
            return false;
        }
        let from = self.start + head.len;
        let body = self.input[from..from + body_len].to_vec();
        self.start += head.len + body_len;
        self.taken += 1;
        self.continue_sent = false;
        let envelope = Envelope::Http { keep_alive: head.keep_alive };
        if !head.keep_alive {
            self.stopped = true;
        }
        if !is_post {
            self.queue.push_back(Pending {
                envelope,
                body: Body::Plain { status: Status::Ok, content_type: JSON, text: http::health_body() },
            });
            return true;
        }
        match http::body_kind(head.content_type.as_deref()) {
            Some(BodyKind::Json) => match jsonrpc::decode(&body) {
                Ok(message) => self.run_json(message, envelope, dispatch),
                // The body was delimited by its length, so the framing
                // holds: answer the parse error and keep the connection.
                Err(error) => {
                    self.run_json(Message::Single(Entry::Invalid { id: Value::Null, error }), envelope, dispatch)
                }
            },
            Some(BodyKind::Xml) => self.run_xml(&body, envelope, dispatch),
            None => unreachable!("check_http refuses other content types"),
        }
        true
    }

    /// The checks every HTTP request passes before anything runs: the
    /// browser defences (see [`http`](super::http)), the RPC path and
    /// content type, then the token. `None` when it may go on. It may run
    /// more than once for one request (while its body arrives), so it
    /// changes nothing; the caller counts a refusal when it answers it.
    fn check_http(&self, head: &http::Head, is_post: bool) -> Option<Status> {
        let policy = std::rc::Rc::clone(&self.access.policy);
        let host_ok = match &head.host {
            Some(host) => http::host_allowed(host, &policy.allowed_hosts),
            // HTTP/1.1 requires a Host; an HTTP/1.0 client may omit it, and
            // no browser does.
            None if head.version == 0 => true,
            None => return Some(Status::BadRequest),
        };
        if !host_ok {
            log::warn!("refused {}: host {:?} not allowed", self.access.peer, head.host.as_deref().unwrap_or(""));
            return Some(Status::MisdirectedRequest);
        }
        if let Some(origin) = &head.origin {
            if !policy.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                log::warn!("refused {}: origin {origin:?} not allowed", self.access.peer);
                return Some(Status::Forbidden);
            }
        }
        if !is_post {
            return None;
        }
        if head.path != "/" {
            return Some(Status::NotFound);
        }
        if http::body_kind(head.content_type.as_deref()).is_none() {
            log::debug!("refused {}: content type {:?}", self.access.peer, head.content_type);
            return Some(Status::UnsupportedMediaType);
        }
        match (&policy.token, &head.authorization) {
            (None, _) => None,
            (Some(token), Some(auth)) if http::bearer_token(auth).is_some_and(|t| tokens_equal(&t, token)) => None,
            (Some(_), _) => Some(Status::Unauthorized),
        }
    }

    /// Logs a refused call; past [`MAX_AUTH_FAILURES`] the connection
    /// takes nothing more.
    fn auth_failed(&mut self, why: &str) {
        self.auth_failures += 1;
        log::warn!("refused {}: {why}", self.access.peer);
        if self.auth_failures >= MAX_AUTH_FAILURES {
            log::warn!("closing connection of {}: {} refused calls", self.access.peer, self.auth_failures);
            self.stopped = true;
        }
    }

    /// `rpc.authenticate(token)`: `true`, or the error that refuses it.
    fn authenticate(&mut self, params: &Params) -> Result<Value, RpcError> {
        let presented = match params {
            Params::Named(map) => map.get("token"),
            Params::Positional(values) if values.len() == 1 => values.first(),
            _ => None,
        };
        let Some(token) = self.access.policy.token.clone() else {
            self.authenticated = true;
            return Ok(Value::Bool(true));
        };
        match presented.and_then(Value::as_str) {
            Some(t) if tokens_equal(t.as_bytes(), &token) => {
                self.authenticated = true;
                Ok(Value::Bool(true))
            }
            Some(_) => {
                self.auth_failed("wrong token");
                Err(RpcError::new(codes::UNAUTHORIZED, "unauthorized: wrong token"))
            }
            None => {
                self.auth_failed("rpc.authenticate without a token");
                Err(RpcError::invalid_params("rpc.authenticate takes one param: token (a string)"))
            }
        }
    }

    /// HTTP: answers `status` and closes.
    fn refuse(&mut self, status: Status) -> bool {
        log::debug!("rpc connection closing: http {status:?}");
        self.queue.push_back(Pending {
            envelope: Envelope::Http { keep_alive: false },
            body: Body::Plain { status, content_type: TEXT, text: status.error_text().to_string() },
        });
        self.stopped = true;
        true
    }

    /// The sequence number the next queued answer gets.
    fn next_seq(&self) -> u64 {
        self.first_seq + self.queue.len() as u64
    }

    /// Remembers where deferred answer `id` goes; false if that id is
    /// already awaited here, a bug in the context's allocation.
    fn defer(&mut self, id: DeferId, seq: u64, part: usize) -> bool {
        if self.deferred.contains_key(&id) {
            log::warn!("rpc defer id {} allocated twice", id.0);
            return false;
        }
        self.deferred.insert(id, (seq, part));
        true
    }

    /// Runs one call of a JSON-RPC message, or refuses it: a connection
    /// that must authenticate runs nothing but `rpc.authenticate` until it
    /// has.
    fn call(&mut self, method: &str, params: Params, dispatch: &mut dyn FnMut(&str, Params) -> Reply) -> Reply {
        if method == AUTHENTICATE {
            return self.authenticate(&params).into();
        }
        // Over HTTP every request carries its own credentials, checked with
        // its head (`check_http`).
        if !self.authenticated && self.framing != Some(Framing::Http) {
            self.auth_failed("call before authenticating");
            return Reply::Error(RpcError::new(
                codes::UNAUTHORIZED,
                format!("unauthorized: call {AUTHENTICATE} with the daemon's token first"),
            ));
        }
        dispatch(method, params)
    }

    fn run_json(&mut self, message: Message, envelope: Envelope, dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        let seq = self.next_seq();
        let (batch, entries) = match message {
            Message::Single(entry) => (false, vec![entry]),
            Message::Batch(entries) if entries.len() > self.limits.max_batch => {
                let error = RpcError::new(
                    codes::LIMIT,
                    format!("batch of {} entries: at most {}", entries.len(), self.limits.max_batch),
                );
                log::debug!("refused {}: {}", self.access.peer, error.message);
                (false, vec![Entry::Invalid { id: Value::Null, error }])
            }
            Message::Batch(entries) => (true, entries),
        };
        let max = self.limits.max_output;
        let (mut parts, mut waiting, mut size) = (Vec::new(), 0, 0);
        for entry in entries {
            let (id, answer) = match entry {
                Entry::Invalid { id, error } => {
                    let answer = jsonrpc::encode_error(&id, &error);
                    (id, Some(answer))
                }
                // A notification is never answered, not even a deferred
                // one: its completion is ignored.
                Entry::Call { id: None, method, params } => {
                    if !self.is_closing() && size <= max {
                        let _ = self.call(&method, params, dispatch);
                    }
                    continue;
                }
                // Past the output bound, or once the connection was closed
                // for refused calls, the rest of a batch does not run.
                Entry::Call { id: Some(id), .. } if size > max || self.stopped => {
                    let answer = jsonrpc::encode_error(&id, &not_run(max));
                    (id, Some(answer))
                }
                Entry::Call { id: Some(id), method, params } => match self.call(&method, params, dispatch) {
                    Reply::Value(value) => {
                        let answer = jsonrpc::encode_result(&id, &value);
                        (id, Some(answer))
                    }
                    Reply::Error(error) => {
                        let answer = jsonrpc::encode_error(&id, &error);
                        (id, Some(answer))
                    }
                    Reply::Deferred(defer) if self.defer(defer, seq, parts.len()) => {
                        waiting += 1;
                        (id, None)
                    }
                    Reply::Deferred(defer) => {
                        let answer = jsonrpc::encode_error(&id, &duplicate_defer(defer));
                        (id, Some(answer))
                    }
                },
            };
            let answer = answer.map(|a| bounded_json(&id, a, size, max));
            size += answer.as_ref().map_or(0, String::len);
            parts.push(Part { id, answer });
        }
        self.queued += size;
        self.queue.push_back(Pending { envelope, body: Body::Json { batch, parts, waiting, size } });
    }

    fn run_xml(&mut self, body: &[u8], envelope: Envelope, dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        let seq = self.next_seq();
        let max = self.limits.max_output;
        let answer = match xmlrpc::decode_call(body) {
            Err(error) => Some(xmlrpc::encode_fault(&error)),
            Ok(call) => match self.call(&call.method, Params::Positional(call.params), dispatch) {
                Reply::Value(value) => Some(bounded_xml(xmlrpc::encode_response(&value), max)),
                Reply::Error(error) => Some(xmlrpc::encode_fault(&error)),
                Reply::Deferred(defer) => {
                    if self.defer(defer, seq, 0) {
                        None
                    } else {
                        Some(xmlrpc::encode_fault(&duplicate_defer(defer)))
                    }
                }
            },
        };
        self.queued += answer.as_ref().map_or(0, String::len);
        self.queue.push_back(Pending { envelope, body: Body::Xml(answer) });
    }

    /// Moves the ready answers at the front of the queue to the output.
    fn flush(&mut self) {
        while self.queue.front().is_some_and(Pending::is_ready) {
            let pending = self.queue.pop_front().expect("front exists");
            self.first_seq += 1;
            self.queued -= match &pending.body {
                Body::Json { size, .. } => *size,
                Body::Xml(answer) => answer.as_ref().map_or(0, String::len),
                Body::Plain { .. } => 0,
            };
            let twice = matches!(pending.body, Body::Json { batch: true, .. });
            if crate::planted::active(crate::planted::Bug::AnswerTwice) && twice {
                let from = self.output.len();
                pending.render(&mut self.output);
                let again = self.output[from..].to_vec();
                self.output.extend_from_slice(&again);
                continue;
            }
            pending.render(&mut self.output);
        }
    }
}

/// Compares a presented token with the daemon's in time that depends on
/// the length alone, so that a client cannot learn the token byte by byte
/// from how long a refusal takes. (The length is no secret: every token is
/// 64 hex digits.)
fn tokens_equal(presented: &[u8], token: &str) -> bool {
    let token = token.as_bytes();
    if presented.len() != token.len() {
        return false;
    }
    let diff = presented.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

fn too_large(len: usize, max: usize) -> RpcError {
    RpcError::new(codes::LIMIT, format!("answer too large: {len} bytes, at most {max}"))
}

fn not_run(max: usize) -> RpcError {
    RpcError::new(codes::LIMIT, format!("not run: the batch's answer passed {max} bytes"))
}

/// `answer`, or an error in its place when it would take the answers of
/// its request (`so_far` bytes already) past `max`.
fn bounded_json(id: &Value, answer: String, so_far: usize, max: usize) -> String {
    if so_far + answer.len() <= max {
        return answer;
    }
    jsonrpc::encode_error(id, &too_large(so_far + answer.len(), max))
}

fn bounded_xml(answer: String, max: usize) -> String {
    if answer.len() <= max {
        return answer;
    }
    xmlrpc::encode_fault(&too_large(answer.len(), max))
}

fn duplicate_defer(id: DeferId) -> RpcError {
    RpcError::internal_error(format!("defer id {} already pending", id.0))
}
