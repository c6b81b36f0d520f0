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
//! call is answered [`codes::UNAUTHORIZED`] (HTTP
//! 401) without running, each refusal is logged with the peer's address,
//! and after [`MAX_AUTH_FAILURES`] refusals the connection is closed.
//! Tokens are compared in constant time. Every HTTP request, on any
//! transport, passes the browser checks of the `http` module first.
//!
//! # Driving it
//!
//! The loop, for each connection:
//! 1. when [`Conn::wants_read`], read up to [`Limits::socket_buffer`] bytes and
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
use super::value::{Map, Value};
use super::xmlrpc;

mod access;
mod answer;
mod route;
mod stream;

pub use access::{Access, Policy, AUTHENTICATE, MAX_AUTH_FAILURES};
use answer::{bounded_json, bounded_xml, Body, Envelope, Part, Pending};
pub use route::{METRICS, PAGE};
pub use stream::{EventFrame, Pushed, StreamKind, SUBSCRIBE};

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
    pub socket_buffer: usize,
    /// Past this many answers owed plus deferred calls waiting (each call
    /// of a batch counts) the connection takes no more requests. Default
    /// 1024.
    pub max_pending: usize,
    /// The most entries a batch may have; a larger one is answered with one
    /// error and runs nothing. Default 1000.
    pub max_batch: usize,
    /// The most JSON values one request may hold (every array, object and
    /// element counts); a request with more is answered with one error
    /// before it is parsed. Default 65536.
    pub max_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: 1 << 20,
            max_output: 1 << 20,
            socket_buffer: 1024,
            max_pending: 1024,
            max_batch: 1000,
            max_values: 1 << 16,
        }
    }
}

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
    /// The daemon hands over to a new master: requests already buffered
    /// are answered, nothing more is read, HTTP answers say
    /// `Connection: close`, and the connection closes once they are sent.
    draining: bool,
    access: Access,
    /// How many requests were taken whole so far.
    taken: u64,
    /// Bytes of answers rendered but still in the queue (behind a deferred
    /// one): with the output, what `max_output` bounds.
    queued: usize,
    /// The token was presented (or none is needed).
    authenticated: bool,
    auth_failures: u32,
    /// The connection became a subscriber of the event stream.
    stream: Option<stream::Stream>,
    /// Whether it may subscribe now: the daemon caps its subscribers, so
    /// that followers cannot take every slot from the calls.
    may_subscribe: bool,
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
            stream: None,
            may_subscribe: true,
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
            draining: false,
        }
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

    /// Closes the connection cleanly for a handover: nothing more is read;
    /// requests already buffered are still answered (call
    /// [`Conn::resume`]), deferred ones included; every HTTP answer not yet
    /// written says `Connection: close`; then [`Conn::should_close`].
    pub fn drain(&mut self) {
        self.draining = true;
        for p in &mut self.queue {
            if let Envelope::Http { keep_alive } = &mut p.envelope {
                *keep_alive = false;
            }
        }
    }

    /// Whether the connection drains for a handover ([`Conn::drain`]).
    pub fn is_draining(&self) -> bool {
        self.draining
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
            Body::Plain { .. } | Body::StreamHead => unreachable!("plain answers are never deferred"),
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
        // A subscriber is still read, so that its hangup is seen; what it
        // sends is dropped.
        !self.is_closing() && (self.stream.is_some() || self.has_room())
    }

    /// Whether the connection is on its way to close: it takes no more
    /// requests, and closes once what it owes is sent.
    pub fn is_closing(&self) -> bool {
        self.stopped || self.eof || self.draining || self.stream.as_ref().is_some_and(|s| s.dropped)
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
            if self.stopped || self.stream.is_some() {
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
        if self.stopped || self.stream.is_some() || ((self.eof || self.draining) && !self.backlog) {
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
        let (max_batch, max_values) = (self.limits.max_batch, self.limits.max_values);
        let decoded = if line.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(jsonrpc::decode_bounded(line, max_batch, max_values))
        };
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
}
