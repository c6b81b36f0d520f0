//! Answers owed, in request order: running a decoded JSON-RPC or XML-RPC
//! request, filling in deferred parts, the bounds on what the answers may
//! hold, and rendering them on the wire.

use super::*;

/// How an answer is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Envelope {
    /// One line, `\n`-terminated.
    Line,
    /// One HTTP response.
    Http { keep_alive: bool },
}

/// One JSON-RPC answer inside a (possibly batch) response.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) id: Value,
    /// The encoded response; `None` while deferred.
    pub(super) answer: Option<String>,
}

/// What an owed answer holds.
#[derive(Debug)]
pub(super) enum Body {
    /// JSON-RPC answers; no parts means nothing to answer (notifications).
    /// `waiting` counts the parts still deferred, and `size` the bytes of
    /// the answers so far, which `max_output` bounds.
    Json { batch: bool, parts: Vec<Part>, waiting: usize, size: usize },
    /// An XML-RPC response; `None` while deferred.
    Xml(Option<String>),
    /// An HTTP answer that is not RPC (health, errors).
    Plain { status: Status, content_type: &'static str, text: String },
    /// The head of an event stream's answer; the events follow it.
    StreamHead,
}

/// An answer owed to the client, in request order.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) envelope: Envelope,
    pub(super) body: Body,
}

impl Pending {
    pub(super) fn is_ready(&self) -> bool {
        match &self.body {
            Body::Json { waiting, .. } => *waiting == 0,
            Body::Xml(answer) => answer.is_some(),
            Body::Plain { .. } | Body::StreamHead => true,
        }
    }

    /// Appends the wire form of a ready answer to `out`.
    pub(super) fn render(self, out: &mut Vec<u8>) {
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
            (Envelope::Http { .. }, Body::StreamHead) => out.extend_from_slice(Conn::stream_head()),
            (Envelope::Line, Body::StreamHead) => {}
        }
    }
}

pub(super) fn too_large(len: usize, max: usize) -> RpcError {
    RpcError::new(codes::LIMIT, format!("answer too large: {len} bytes, at most {max}"))
}

pub(super) fn not_run(max: usize) -> RpcError {
    RpcError::new(codes::LIMIT, format!("not run: the batch's answer passed {max} bytes"))
}

/// `answer`, or an error in its place when it would take the answers of
/// its request (`so_far` bytes already) past `max`.
pub(super) fn bounded_json(id: &Value, answer: String, so_far: usize, max: usize) -> String {
    if so_far + answer.len() <= max {
        return answer;
    }
    jsonrpc::encode_error(id, &too_large(so_far + answer.len(), max))
}

pub(super) fn bounded_xml(answer: String, max: usize) -> String {
    if answer.len() <= max {
        return answer;
    }
    xmlrpc::encode_fault(&too_large(answer.len(), max))
}

pub(super) fn duplicate_defer(id: DeferId) -> RpcError {
    RpcError::internal_error(format!("defer id {} already pending", id.0))
}

impl Conn {
    pub(super) fn run_json(
        &mut self,
        message: Message,
        envelope: Envelope,
        dispatch: &mut dyn FnMut(&str, Params) -> Reply,
    ) {
        let seq = self.next_seq();
        let (batch, entries) = match message {
            Message::Single(entry) => (false, vec![entry]),
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
                    if !self.refused_too_often() && size <= max {
                        let _ = self.call(&method, params, dispatch);
                    }
                    continue;
                }
                // Past the output bound, or once the connection was closed
                // for refused calls, the rest of a batch does not run.
                Entry::Call { id: Some(id), .. } if size > max || self.refused_too_often() => {
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

    pub(super) fn run_xml(&mut self, body: &[u8], envelope: Envelope, dispatch: &mut dyn FnMut(&str, Params) -> Reply) {
        let seq = self.next_seq();
        let max = self.limits.max_output;
        // Faults are held to the bound as results are: a message may
        // quote the input (see `codes::quote`), or be a handler's own.
        let answer = match xmlrpc::decode_call(body) {
            Err(error) => Some(xmlrpc::encode_fault(&error)),
            Ok(call) => match self.call(&call.method, Params::Positional(call.params), dispatch) {
                Reply::Value(value) => Some(xmlrpc::encode_response(&value)),
                Reply::Error(error) => Some(xmlrpc::encode_fault(&error)),
                Reply::Deferred(defer) => {
                    if self.defer(defer, seq, 0) {
                        None
                    } else {
                        Some(xmlrpc::encode_fault(&duplicate_defer(defer)))
                    }
                }
            },
        }
        .map(|answer| bounded_xml(answer, max));
        self.queued += answer.as_ref().map_or(0, String::len);
        self.queue.push_back(Pending { envelope, body: Body::Xml(answer) });
    }

    /// Moves the ready answers at the front of the queue to the output.
    pub(super) fn flush(&mut self) {
        while self.queue.front().is_some_and(Pending::is_ready) {
            let pending = self.queue.pop_front().expect("front exists");
            self.first_seq += 1;
            self.queued -= match &pending.body {
                Body::Json { size, .. } => *size,
                Body::Xml(answer) => answer.as_ref().map_or(0, String::len),
                Body::Plain { .. } | Body::StreamHead => 0,
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
        self.open_stream_when_flushed();
    }
}
