//! Rendering requests: a script's [`Req`] turned into the bytes a client
//! writes, with the answer it is then owed.
//!
//! A request is drafted first (its JSON text, its label and what it is
//! owed), then adjusted for what the daemon will make of it (too large, or
//! refused for want of the token), then framed for NDJSON or HTTP. Ids come
//! from [`Client::next_id`] and choices from the client's seeded generator,
//! in a fixed order, so that a seed renders the same bytes every time. This
//! module must never touch the connection: it only says what to write.

use forkd_core::rpc::codes as rpc_codes;
use serde_json::{json, Value};

use super::judge::{Check, Expect};
use super::refused::Cred;
use super::Client;
use crate::scenario::{BatchItem, Framing, Req, WorkerCall, HOST};

/// A request on the wire.
pub(super) struct Rendered {
    pub(super) bytes: Vec<u8>,
    /// The answer it is owed once `commit` of its bytes are written.
    pub(super) owed: Option<Owed>,
    pub(super) commit: usize,
    /// Whether the daemon closes the connection after answering it.
    pub(super) fatal: bool,
}

/// An answer a connection is owed, and the label it is known by in the
/// trace.
#[derive(Debug)]
pub(super) struct Owed {
    pub(super) label: String,
    pub(super) expect: Expect,
}

/// A request before it is framed.
pub(super) struct Draft {
    /// Its JSON (or deliberately broken) text.
    pub(super) text: String,
    /// The id of the call it carries, if it is one call with an id.
    pub(super) id: Option<Value>,
    pub(super) label: String,
    pub(super) expect: Option<Expect>,
}

impl Draft {
    /// A draft of a JSON body.
    fn json(body: Value, label: String, expect: Option<Expect>) -> Draft {
        Draft { id: body.get("id").cloned(), text: body.to_string(), label, expect }
    }

    /// A draft of raw text, which carries no id the harness can use.
    fn raw(text: String, label: String, expect: Option<Expect>) -> Draft {
        Draft { text, id: None, label, expect }
    }

    /// A draft of one call with an id, owed an answer that passes `check`.
    fn call(body: Value, id: Value, check: Check) -> Draft {
        Draft::json(body, id.to_string(), Some(Expect::One(id, check)))
    }
}

/// What a request becomes at first: a draft to frame, or bytes the
/// harness writes by hand.
enum Drafted {
    Draft(Draft),
    Framed(Rendered),
}

impl Client {
    pub(super) fn next_id(&mut self) -> Value {
        let id = format!("c{}-{}", self.id(), self.next);
        self.next += 1;
        Value::String(id)
    }

    /// The bytes of a request and the answer it is owed (none for a
    /// notification over NDJSON).
    pub(super) fn render(&mut self, req: &Req, framing: Framing) -> Rendered {
        let cred = self.conn.as_ref().map(|c| c.cred.clone()).unwrap_or_default();
        let mut draft = match self.draft(req, framing, &cred) {
            Drafted::Draft(d) => d,
            Drafted::Framed(r) => return r,
        };
        let mut fatal = req.is_fatal(framing);
        let too_large = draft.text.len() > self.ctx.daemon.max_request;
        let refused = matches!(cred, Cred::Without { .. }) && !too_large;
        if refused {
            fatal |= self.refuse(&mut draft, framing);
        }
        if too_large {
            // Whatever it was meant to be, it is too large now.
            fatal = true;
            draft.label = format!("{} (too large)", draft.label);
            draft.expect = Some(match framing {
                Framing::Ndjson => Expect::One(Value::Null, Check::Error(-32600)),
                Framing::Http => Expect::Refused(413),
            });
        }
        self.frame(draft, framing, &cred, fatal, too_large, refused)
    }

    /// What `req` is before the daemon's limits and refusals are applied.
    fn draft(&mut self, req: &Req, framing: Framing, cred: &Cred) -> Drafted {
        let draft = match req {
            Req::Authenticate => self.authenticate(cred),
            Req::Forged(forgery) => return Drafted::Framed(self.forged(*forgery, cred)),
            Req::OverBatch => self.over_batch(),
            Req::OverMulticall => self.over_multicall(),
            Req::Echo(msg) => {
                let id = self.next_id();
                let msg = format!("{} {msg}", id.as_str().unwrap_or_default());
                let body = self.call("my.echo", json!([msg]), json!({ "message": msg }), Some(&id));
                Draft::call(body, id, Check::Equals(json!(msg)))
            }
            Req::Notify(msg) => {
                let body = json!({"jsonrpc": "2.0", "method": "my.echo", "params": [msg]});
                Draft::json(body, "a notification".to_string(), (framing == Framing::Http).then_some(Expect::NoContent))
            }
            Req::Info => {
                let id = self.next_id();
                Draft::call(json!({"jsonrpc": "2.0", "method": "daemon.info", "id": id}), id, Check::Info)
            }
            Req::Shutdown => {
                let id = self.next_id();
                Draft::call(json!({"jsonrpc": "2.0", "method": "daemon.shutdown", "id": id}), id, Check::True)
            }
            Req::UnknownMethod => {
                let id = self.next_id();
                let body = json!({"jsonrpc": "2.0", "method": "no.such.method", "params": [], "id": id});
                Draft::call(body, id, Check::Error(-32601))
            }
            Req::BadParams => {
                let id = self.next_id();
                let body = json!({"jsonrpc": "2.0", "method": "my.echo", "params": [42], "id": id});
                Draft::call(body, id, Check::Error(-32602))
            }
            Req::InvalidRequest => {
                let id = self.next_id();
                Draft::call(json!({"jsonrpc": "2.0", "params": [], "id": id}), id, Check::Error(-32600))
            }
            // Over NDJSON a head means nothing: it is a parse error too.
            Req::ParseError | Req::BadHead if framing == Framing::Ndjson => parse_error(),
            Req::ParseError => parse_error(),
            Req::BadHead => {
                let head = "POST / HTTP/1.1\r\nHost: forkd\r\n\r\n".as_bytes().to_vec();
                let owed = Owed { label: "a head without a length".into(), expect: Expect::Refused(411) };
                return Drafted::Framed(Rendered { commit: head.len(), bytes: head, owed: Some(owed), fatal: true });
            }
            Req::TooLarge => return self.too_large(framing),
            Req::Batch(items) => self.batch(items, framing),
            Req::Worker(call) => {
                let id = self.next_id();
                Draft::call(worker_request(call, Some(&id)), id, Check::Worker(call.clone()))
            }
        };
        Drafted::Draft(draft)
    }

    /// `rpc.authenticate` with the connection's token (or a wrong one).
    fn authenticate(&mut self, cred: &Cred) -> Draft {
        let id = self.next_id();
        let token = match cred {
            Cred::Token(t) => t.clone(),
            _ => super::refused::WRONG_TOKEN.to_string(),
        };
        let body = json!({"jsonrpc": "2.0", "method": "rpc.authenticate", "params": {"token": token}, "id": id});
        Draft::call(body, id, Check::True)
    }

    /// A batch one entry over `max_batch`, led by shutdowns that must not
    /// run.
    fn over_batch(&mut self) -> Draft {
        let id = self.next_id();
        let mut entries = vec![
            json!({"jsonrpc": "2.0", "method": "daemon.shutdown", "id": id}),
            json!({"jsonrpc": "2.0", "method": "daemon.shutdown"}),
        ];
        while entries.len() <= self.ctx.daemon.max_batch {
            entries.push(json!(1));
        }
        let expect = Some(Expect::One(Value::Null, Check::Error(rpc_codes::LIMIT)));
        Draft::json(Value::Array(entries), "an over-limit batch".to_string(), expect)
    }

    /// A `system.multicall` of one shutdown more than `max_batch`.
    fn over_multicall(&mut self) -> Draft {
        let id = self.next_id();
        let calls: Vec<Value> =
            (0..=self.ctx.daemon.max_batch).map(|_| json!({"methodName": "daemon.shutdown", "params": []})).collect();
        let body = json!({"jsonrpc": "2.0", "method": "system.multicall", "params": [calls], "id": id});
        Draft::call(body, id, Check::Error(rpc_codes::LIMIT))
    }

    /// A request over `max_request`: over HTTP its head says so, and only
    /// the head is written; over NDJSON the line is long.
    fn too_large(&mut self, framing: Framing) -> Drafted {
        let max = self.ctx.daemon.max_request;
        if framing == Framing::Http {
            let head = format!(
                "POST / HTTP/1.1\r\nHost: forkd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                max + 1
            );
            let owed = Owed { label: "a request too large".into(), expect: Expect::Refused(413) };
            let bytes = head.into_bytes();
            return Drafted::Framed(Rendered { commit: bytes.len(), bytes, owed: Some(owed), fatal: true });
        }
        let id = self.next_id();
        let filler = "z".repeat(max + 16);
        let raw = json!({"jsonrpc": "2.0", "method": "my.echo", "params": [filler], "id": id}).to_string();
        Drafted::Draft(Draft::raw(
            raw,
            "a request too large".to_string(),
            Some(Expect::One(Value::Null, Check::Error(-32600))),
        ))
    }

    /// A batch of `items`, owed their answers in order (or one error if it
    /// is over `max_batch`, or nothing if all are notifications).
    fn batch(&mut self, items: &[BatchItem], framing: Framing) -> Draft {
        let mut entries = Vec::new();
        let mut parts = Vec::new();
        for item in items {
            match item {
                BatchItem::Echo(msg) => {
                    let id = self.next_id();
                    let msg = format!("{} {msg}", id.as_str().unwrap_or_default());
                    entries.push(json!({"jsonrpc": "2.0", "method": "my.echo", "params": [msg], "id": id}));
                    parts.push((id, Check::Equals(json!(msg))));
                }
                BatchItem::Notify(msg) => {
                    entries.push(json!({"jsonrpc": "2.0", "method": "my.echo", "params": [msg]}));
                }
                BatchItem::NotAnObject => {
                    entries.push(json!(1));
                    parts.push((Value::Null, Check::Error(-32600)));
                }
                BatchItem::UnknownMethod => {
                    let id = self.next_id();
                    entries.push(json!({"jsonrpc": "2.0", "method": "no.such.method", "id": id}));
                    parts.push((id, Check::Error(-32601)));
                }
                BatchItem::Worker(call) => {
                    let id = self.next_id();
                    entries.push(worker_request(call, Some(&id)));
                    parts.push((id, Check::Worker(call.clone())));
                }
                BatchItem::NotifyWorker(call) => entries.push(worker_request(call, None)),
            }
        }
        let label = format!("batch[{}]", parts.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(","));
        let expect = if items.len() > self.ctx.daemon.max_batch {
            // Refused whole: one error, and nothing of it runs.
            Some(Expect::One(Value::Null, Check::Error(rpc_codes::LIMIT)))
        } else if parts.is_empty() {
            (framing == Framing::Http).then_some(Expect::NoContent)
        } else {
            Some(Expect::Batch(parts))
        };
        Draft::json(Value::Array(entries), label, expect)
    }

    /// Frames a draft for the wire, and says how much of it must be
    /// written before its answer is owed.
    fn frame(
        &mut self,
        draft: Draft,
        framing: Framing,
        cred: &Cred,
        fatal: bool,
        too_large: bool,
        refused: bool,
    ) -> Rendered {
        let Draft { text, label, expect, .. } = draft;
        // Now and then an HTTP client asks for `100 Continue` before its
        // body: the daemon sends it only when no earlier answer is owed.
        let expect_continue = if self.rng.chance(15) { "Expect: 100-continue\r\n" } else { "" };
        let bytes = match framing {
            Framing::Ndjson => format!("{text}\n").into_bytes(),
            Framing::Http => format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{}{expect_continue}Content-Length: {}\r\n\r\n{text}",
                cred.header(),
                text.len()
            )
            .into_bytes(),
        };
        // A request too large is refused as soon as the daemon has seen
        // enough of it to know: the rest of it may never be written.
        let commit = match framing {
            Framing::Ndjson if too_large => self.ctx.daemon.max_request + 1,
            Framing::Http if too_large => bytes.len() - text.len(),
            // A refusal is told at once to a client that waits for a 100
            // before its body.
            Framing::Http if refused && !expect_continue.is_empty() => bytes.len() - text.len(),
            _ => bytes.len(),
        };
        Rendered { bytes, owed: expect.map(|expect| Owed { label, expect }), fatal, commit }
    }

    /// A call with its params by position or by name, at random.
    fn call(&mut self, method: &str, positional: Value, named: Value, id: Option<&Value>) -> Value {
        let params = if self.rng.chance(50) { positional } else { named };
        let mut v = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Some(id) = id {
            v["id"] = id.clone();
        }
        v
    }
}

/// Text that is not JSON.
fn parse_error() -> Draft {
    Draft::raw(
        "{\"jsonrpc\": oops".to_string(),
        "a parse error".to_string(),
        Some(Expect::One(Value::Null, Check::Error(-32700))),
    )
}

/// The workers a request asks to restart (a batch over `max_batch` runs
/// nothing).
pub(super) fn restarts(req: &Req, max_batch: usize) -> Vec<&str> {
    match req {
        Req::Worker(WorkerCall::Restart(n)) => vec![n.as_str()],
        Req::Batch(items) if items.len() <= max_batch => items
            .iter()
            .filter_map(|i| match i {
                BatchItem::Worker(WorkerCall::Restart(n)) | BatchItem::NotifyWorker(WorkerCall::Restart(n)) => {
                    Some(n.as_str())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A `worker.*` call, with an id or as a notification.
fn worker_request(call: &WorkerCall, id: Option<&Value>) -> Value {
    let (method, params) = match call {
        WorkerCall::Pause(n) => ("worker.pause", n.as_ref().map(|n| json!([n]))),
        WorkerCall::Resume(n) => ("worker.resume", n.as_ref().map(|n| json!([n]))),
        WorkerCall::Status(n) => ("worker.status", n.as_ref().map(|n| json!([n]))),
        WorkerCall::List => ("worker.list", None),
        WorkerCall::Restart(n) => ("worker.restart", Some(json!([n]))),
        WorkerCall::Send(n, msg) => ("worker.send", Some(json!({"name": n, "message": msg}))),
        WorkerCall::Reload(n, batch) => {
            let mut p = serde_json::Map::new();
            if let Some(n) = n {
                p.insert("name".into(), json!(n));
            }
            if let Some(b) = batch {
                p.insert("batch".into(), json!(b));
            }
            ("worker.reload", Some(Value::Object(p)))
        }
    };
    let mut v = json!({"jsonrpc": "2.0", "method": method});
    if let Some(p) = params {
        v["params"] = p;
    }
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    v
}
