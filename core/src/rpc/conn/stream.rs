//! A connection that subscribed to the daemon's event stream: over HTTP
//! with `GET /events` (Server-Sent Events), over newline-delimited JSON
//! with a call of [`SUBSCRIBE`] (then one JSON-RPC notification per
//! event).
//!
//! Once subscribed, a connection takes no more requests (what it sends is
//! read and dropped, so that its hangup is still seen) and the loop hands
//! it every event with [`Conn::push_event`]. Its buffer is bounded: a
//! subscriber whose unsent events would pass the bound is dropped, with a
//! last notice saying so, and never holds up the loop or the others.

use super::*;

/// The method that makes a newline-delimited JSON connection a subscriber.
pub const SUBSCRIBE: &str = "daemon.subscribe";

/// How a subscriber gets its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /events`: `id: SEQ` and `data: JSON` lines, a blank line after
    /// each event.
    Sse,
    /// After [`SUBSCRIBE`]: one `daemon.event` notification a line.
    Ndjson,
}

/// A subscriber's state.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) kind: StreamKind,
    /// The answer that opened it was sent on: events may follow.
    pub(super) open: bool,
    /// It could not keep up and was dropped: it closes once its notice
    /// is sent (or when the loop gives up on it).
    pub(super) dropped: bool,
}

/// What became of an event handed to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued to send.
    Queued,
    /// Not for this connection (not a subscriber, not open yet, or
    /// already dropped).
    Skipped,
    /// The subscriber's buffer was full: it was dropped with a notice.
    Dropped,
}

/// The SSE answer's head: no length, since the stream lasts as long as
/// the connection.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";

/// One event rendered once for every kind of subscriber.
#[derive(Debug, Clone)]
pub struct EventFrame {
    sse: String,
    line: String,
}

impl EventFrame {
    /// `event` (a JSON object), numbered `seq`.
    pub fn new(seq: u64, event: &Value) -> EventFrame {
        let json = event.to_string();
        let sse = format!("id: {seq}\ndata: {json}\n\n");
        let line = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"daemon.event\",\"params\":{json}}}\n");
        EventFrame { sse, line }
    }

    fn text(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Sse => &self.sse,
            StreamKind::Ndjson => &self.line,
        }
    }
}

/// What a subscription past the daemon's cap is told.
const TOO_MANY: &str = "too many event subscribers: the daemon keeps half its connection slots for calls";

impl Conn {
    /// Lets the connection subscribe, or not: the loop says so before each
    /// turn, from how many subscribers it has and its cap.
    pub fn set_may_subscribe(&mut self, may: bool) {
        self.may_subscribe = may;
    }

    /// Whether the connection subscribed to the event stream.
    pub fn is_subscriber(&self) -> bool {
        self.stream.is_some()
    }

    /// Hands an event to a subscriber. Past `hard_max` unsent bytes (the
    /// bound a burst within one turn may not pass) it is dropped at once;
    /// the loop checks the real bound with [`Conn::drop_if_behind`] once
    /// it has written what the socket takes.
    pub fn push_event(&mut self, frame: &EventFrame, hard_max: usize) -> Pushed {
        let Some(stream) = &self.stream else { return Pushed::Skipped };
        if !stream.open || stream.dropped || self.stopped || self.eof {
            return Pushed::Skipped;
        }
        let text = frame.text(stream.kind);
        if self.output().len() + text.len() > hard_max {
            self.drop_subscriber(hard_max);
            return Pushed::Dropped;
        }
        self.output.extend_from_slice(text.as_bytes());
        Pushed::Queued
    }

    /// Drops a subscriber with more than `max` bytes unsent; whether it
    /// was dropped now.
    pub fn drop_if_behind(&mut self, max: usize) -> bool {
        let live = self.stream.as_ref().is_some_and(|s| s.open && !s.dropped);
        if live && self.output().len() > max {
            self.drop_subscriber(max);
            return true;
        }
        false
    }

    /// What is unread stays, a notice is added, and the connection closes
    /// once that is sent.
    fn drop_subscriber(&mut self, max: usize) {
        let Some(stream) = &mut self.stream else { return };
        stream.dropped = true;
        let kind = stream.kind;
        log::warn!("dropping event subscriber {}: it did not keep up ({max} bytes unread)", self.peer());
        let mut notice = Map::new();
        notice.insert("type".into(), Value::from("stream.dropped"));
        notice.insert("reason".into(), Value::from("the subscriber did not keep up with the events"));
        let notice = EventFrame::new(0, &Value::Object(notice));
        self.output.extend_from_slice(notice.text(kind).as_bytes());
    }

    /// Makes the connection a subscriber: its events begin once the answers
    /// before them are sent (the SSE head, or the answer to
    /// [`SUBSCRIBE`]).
    pub(super) fn open_stream(&mut self, kind: StreamKind) {
        if kind == StreamKind::Sse {
            self.queue.push_back(Pending { envelope: Envelope::Http { keep_alive: false }, body: Body::StreamHead });
        }
        self.stream = Some(Stream { kind, open: false, dropped: false });
    }

    /// A call of [`SUBSCRIBE`]: only newline-delimited JSON streams this
    /// way (HTTP has `GET /events`).
    pub(super) fn subscribe(&mut self) -> Reply {
        if self.framing == Some(Framing::Http) {
            return Reply::Error(RpcError::invalid_request(format!(
                "{SUBSCRIBE} works on newline-delimited JSON; over HTTP, GET /events"
            )));
        }
        if !self.may_subscribe {
            return Reply::Error(RpcError::new(crate::rpc::codes::LIMIT, TOO_MANY));
        }
        self.open_stream(StreamKind::Ndjson);
        let mut answer = Map::new();
        answer.insert("subscribed".into(), Value::Bool(true));
        Reply::Value(Value::Object(answer))
    }

    /// Opens the stream once nothing is owed before it.
    pub(super) fn open_stream_when_flushed(&mut self) {
        if let Some(s) = &mut self.stream {
            s.open |= self.queue.is_empty();
        }
    }

    /// Whether a subscription is allowed now, and the refusal's text if not.
    pub(super) fn subscription_refused(&self) -> Option<&'static str> {
        (!self.may_subscribe).then_some(TOO_MANY)
    }

    /// The SSE head, as the answer that opens the stream.
    pub(super) fn stream_head() -> &'static [u8] {
        SSE_HEAD
    }
}
