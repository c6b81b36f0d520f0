//! A client process: runs its script against the daemon's socket and checks
//! every answer it gets.
//!
//! Each request carries an id unique in the whole run (`c<client>-<n>`),
//! and each echoed message names its client, so a client can tell an answer
//! to another client's request from a duplicate or an answer out of order.
//! Answers come in request order (the daemon promises it for pipelined
//! requests, over NDJSON and HTTP alike), so a connection keeps what it is
//! owed in a queue and matches each answer against its front.
//!
//! What a client cannot judge alone it notes in the trace as a `CHECK`
//! line, for the checker to judge with the whole run in view: an end of file
//! while answers are owed is fine once the daemon has begun to stop, a
//! violation before. What is wrong whatever the rest of the world did (a
//! wrong answer, a duplicate, an answer for someone else) it notes as a
//! `VIOLATION` line at once, and its exit code says it saw one.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use forkd_core::daemon::codes;
use forkd_core::rpc::codes as rpc_codes;
use forkd_os::sim::SimOs;
use forkd_os::{Fd, KillTarget, Os, Pid, Signal};
use serde_json::{json, Value};

use crate::rng::Rng;
use crate::scenario::{
    BadToken, BatchItem, ClientPlan, DaemonPlan, Forgery, Framing, Req, Step, WorkerCall, DESCRIPTION, HOST, TOKEN_FILE,
};
use crate::wire::{self, Short};

/// How long a simple request (one no worker takes part in) may go
/// unanswered while the daemon runs and has a slot for the connection.
pub const SIMPLE_PATIENCE: Duration = Duration::from_secs(2);
/// How long the liveness client waits for any answer.
pub const LAST_PATIENCE: Duration = Duration::from_secs(3);
/// How long a client waits for answers that wait on workers: the daemon
/// answers a command its worker does not take or answer within 5 s with an
/// error, and a command may wait in the queue that long before it is sent.
pub const DEFERRED_PATIENCE: Duration = Duration::from_secs(12);
/// How long writing a request may take.
const WRITE_PATIENCE: Duration = Duration::from_secs(1);
/// How long past the request timeout a trickling request goes on.
const TRICKLE_GRACE: Duration = Duration::from_secs(1);
/// A token of the right length that is not the daemon's.
const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// After this many refused calls an NDJSON connection is closed.
const MAX_REFUSALS: u32 = 3;

/// What a client knows of the world.
#[derive(Clone, Debug)]
pub struct ClientCtx {
    pub plan: ClientPlan,
    pub daemon_pid: Pid,
    pub daemon: DaemonPlan,
    /// Each worker's name and number of instances.
    pub workers: Vec<(String, u32)>,
    /// The harness's processes: anything else alive is a worker.
    pub harness: Vec<Pid>,
    /// When the chaos phase started (the plan's offsets count from it).
    pub epoch: forkd_os::Instant,
}

/// The entry of a client process; its exit code is 1 if it saw a
/// violation.
pub fn run(os: &mut SimOs, ctx: ClientCtx) -> i32 {
    if let Some(uid) = ctx.plan.uid {
        os.set_uid(uid);
    }
    let mut client = Client { rng: Rng::new(ctx.plan.seed), ctx, conn: None, next: 1, violations: 0 };
    os.sleep_until(client.ctx.epoch + client.ctx.plan.start);
    let steps = client.ctx.plan.steps.clone();
    for step in &steps {
        client.step(os, step);
    }
    client.close(os);
    i32::from(client.violations > 0)
}

/// An answer as read from the wire.
#[derive(Debug)]
enum Answer {
    Json(Value),
    Http { status: u16, body: Vec<u8> },
}

/// How an owed answer must look.
#[derive(Clone, Debug)]
enum Expect {
    /// HTTP 204: a request of notifications only.
    NoContent,
    /// One JSON-RPC answer.
    One(Value, Check),
    /// A batch's answers, in order.
    Batch(Vec<(Value, Check)>),
    /// An HTTP refusal, then end of file.
    Refused(u16),
    /// An HTTP refusal of either status, then end of file: a request that
    /// trickles in on a connection that has not shown the token is timed
    /// out (408), unless a new connection took its slot first (503).
    RefusedEither(u16, u16),
}

/// What an answer's outcome must be.
#[derive(Clone, Debug)]
enum Check {
    Equals(Value),
    Error(i64),
    Info,
    True,
    Worker(WorkerCall),
}

/// A request on the wire.
struct Rendered {
    bytes: Vec<u8>,
    /// The answer it is owed once `commit` of its bytes are written.
    owed: Option<Owed>,
    commit: usize,
    /// Whether the daemon closes the connection after answering it.
    fatal: bool,
}

#[derive(Debug)]
struct Owed {
    label: String,
    expect: Expect,
}

struct Conn {
    fd: Fd,
    framing: Framing,
    input: Vec<u8>,
    owed: VecDeque<Owed>,
    /// A request that ends the connection was sent: after its answer comes
    /// end of file, and nothing after it is answered.
    fatal: bool,
    /// A request that waits on workers was sent.
    deferred: bool,
    cred: Cred,
}

/// What a connection presents to the daemon.
#[derive(Clone, Debug, Default)]
enum Cred {
    /// Nothing is needed (the unix socket).
    #[default]
    Unix,
    /// The daemon's token (tcp).
    Token(String),
    /// Not the token: every call is refused; `refused` so far.
    Without { bad: BadToken, refused: u32 },
}

impl Cred {
    /// The `Authorization` header line of its HTTP requests.
    fn header(&self) -> String {
        match self {
            Cred::Unix | Cred::Without { bad: BadToken::Missing, .. } => String::new(),
            Cred::Token(t) => format!("Authorization: Bearer {t}\r\n"),
            Cred::Without { bad: BadToken::Wrong, .. } => format!("Authorization: Bearer {WRONG_TOKEN}\r\n"),
        }
    }

    /// Whether its calls run (the checker is told of what may act).
    fn runs(&self) -> bool {
        !matches!(self, Cred::Without { .. })
    }
}

struct Client {
    ctx: ClientCtx,
    rng: Rng,
    conn: Option<Conn>,
    next: u64,
    violations: u32,
}

impl Client {
    fn id(&self) -> u32 {
        self.ctx.plan.id
    }

    fn violation(&mut self, os: &mut SimOs, what: std::fmt::Arguments<'_>) {
        self.violations += 1;
        os.note(format_args!("VIOLATION client={}: {what}", self.id()));
    }

    fn step(&mut self, os: &mut SimOs, step: &Step) {
        match step {
            Step::Connect(framing) => {
                let cred = match self.ctx.daemon.tcp {
                    None => Cred::Unix,
                    Some(_) => match self.token(os) {
                        Some(t) => Cred::Token(t),
                        None => {
                            self.close(os);
                            return;
                        }
                    },
                };
                self.connect(os, *framing, cred);
            }
            Step::ConnectWithout(framing, bad) => {
                self.connect(os, *framing, Cred::Without { bad: *bad, refused: 0 });
            }
            Step::Trickle(req) => self.trickle(os, req),
            Step::Stranger(framing, req) => self.stranger(os, *framing, req),
            Step::Send(reqs) => self.send(os, reqs),
            Step::Await => self.await_answers(os),
            Step::Sleep(d) => {
                let until = os.now() + *d;
                os.sleep_until(until);
            }
            Step::Close => self.close(os),
            Step::CloseMidRequest(req) => {
                let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
                let bytes = self.render(req, framing).bytes;
                let conn = self.conn.take().expect("checked above");
                let cut = 1 + self.rng.below(bytes.len() as u64 - 1) as usize;
                let deadline = os.now() + WRITE_PATIENCE;
                let _ = wire::write_all(os, conn.fd, &bytes[..cut], deadline);
                os.close(conn.fd);
            }
            Step::Flood { requests, hold } => {
                let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
                let mut bytes = Vec::new();
                let big = "f".repeat(self.ctx.daemon.max_request.saturating_sub(200).clamp(1, 1000));
                for _ in 0..*requests {
                    bytes.extend(self.render(&Req::Echo(big.clone()), framing).bytes);
                }
                let conn = self.conn.take().expect("checked above");
                // Written until the socket takes no more: the daemon must
                // not stall for a client that never reads.
                let deadline = os.now() + Duration::from_millis(50);
                let _ = wire::write_all(os, conn.fd, &bytes, deadline);
                let until = os.now() + *hold;
                os.sleep_until(until);
                os.close(conn.fd);
            }
            Step::Signal(sig) => {
                let _ = os.kill(KillTarget::Process(self.ctx.daemon_pid), *sig);
            }
            Step::KillWorker(n) => {
                // Only where no chaos process runs (the state machine's
                // scenarios): a client does not know the chaos process's pid.
                let me = os.pid();
                let victims: Vec<Pid> =
                    os.live_processes().into_iter().filter(|p| *p != me && !self.ctx.harness.contains(p)).collect();
                if !victims.is_empty() {
                    let victim = victims[usize::from(*n) % victims.len()];
                    let _ = os.kill(KillTarget::Process(victim), Signal::Kill);
                }
            }
        }
    }

    /// Opens a connection presenting `cred`; on NDJSON over tcp the first
    /// call is `rpc.authenticate`.
    fn connect(&mut self, os: &mut SimOs, framing: Framing, cred: Cred) {
        self.close(os);
        match os.connect(&self.ctx.daemon.address()) {
            Ok(fd) => {
                let authenticate = framing == Framing::Ndjson
                    && matches!(cred, Cred::Token(_) | Cred::Without { bad: BadToken::Wrong, .. });
                self.conn = Some(Conn {
                    fd,
                    framing,
                    input: Vec::new(),
                    owed: VecDeque::new(),
                    fatal: false,
                    deferred: false,
                    cred,
                });
                if authenticate {
                    self.send(os, &[Req::Authenticate]);
                }
            }
            Err(e) => os.note(format_args!("CHECK refused client={}: {e}", self.id())),
        }
    }

    /// The daemon's token, from its file (readable by its user alone).
    fn token(&mut self, os: &mut SimOs) -> Option<String> {
        match os.read_private_file(Path::new(TOKEN_FILE), 4096) {
            Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).trim().to_string()),
            // The daemon is gone (or not back yet after a crash).
            Ok(None) => {
                os.note(format_args!("CHECK refused client={}: no token file", self.id()));
                None
            }
            Err(e) => {
                self.violation(os, format_args!("cannot read the token file {TOKEN_FILE}: {e}"));
                None
            }
        }
    }

    /// Writes part of `req`, then a byte every quarter of the idle timeout
    /// (so the connection never goes idle) until the request timeout has
    /// passed; never the last byte, so the request is never whole. The
    /// daemon must answer the timeout (HTTP 408, or -32600 with id null)
    /// and close.
    fn trickle(&mut self, os: &mut SimOs, req: &Req) {
        let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
        let bytes = self.render(req, framing).bytes;
        let expect = match framing {
            Framing::Ndjson => Expect::One(Value::Null, Check::Error(-32600)),
            // Its head never completes, so its token is never seen.
            Framing::Http if self.ctx.daemon.tcp.is_some() => Expect::RefusedEither(408, 503),
            Framing::Http => Expect::Refused(408),
        };
        let conn = self.conn.as_mut().expect("checked above");
        conn.owed.push_back(Owed { label: "a request trickling in".into(), expect });
        conn.fatal = true;
        let fd = conn.fd;
        let gap = (self.ctx.daemon.idle_timeout / 4).max(Duration::from_millis(1));
        // Enough for HTTP's framing to be decided ("POST ").
        let mut at = 0;
        let mut next = (bytes.len() / 4).clamp(6, 24);
        let until = os.now() + self.ctx.daemon.request_timeout + TRICKLE_GRACE;
        loop {
            if let Err((_, why)) = wire::write_all(os, fd, &bytes[at..next], os.now() + WRITE_PATIENCE) {
                if matches!(why, Short::Deadline) {
                    os.note(format_args!("CHECK gave-up simple client={}: trickling stuck", self.id()));
                    return self.close(os);
                }
                break;
            }
            at = next;
            if os.now() >= until || at + 1 >= bytes.len() {
                break;
            }
            let wake = os.now() + gap;
            os.sleep_until(wake);
            if self.drain(os) {
                return self.end_of_file(os);
            }
            if self.conn.as_ref().is_none_or(|c| c.owed.is_empty()) {
                break;
            }
            next = at + 1;
        }
        // Past the timeout and still owed: the daemon may not have taken
        // the connection yet (all its slots busy), and the request's clock
        // starts when it does. Judged as a simple request left unanswered.
        if self.conn.as_ref().is_some_and(|c| !c.owed.is_empty()) && os.now() >= until {
            let labels = self.owed_labels();
            os.note(format_args!("CHECK gave-up simple client={}: {labels}", self.id()));
            return self.close(os);
        }
        self.await_answers(os);
    }

    /// As a user the daemon does not allow: connects and writes `req`; the
    /// daemon must close the connection without a byte of answer.
    fn stranger(&mut self, os: &mut SimOs, framing: Framing, req: &Req) {
        self.close(os);
        let fd = match os.connect(&self.ctx.daemon.address()) {
            Ok(fd) => fd,
            Err(e) => return os.note(format_args!("CHECK refused client={}: {e}", self.id())),
        };
        let bytes = self.render(req, framing).bytes;
        let _ = wire::write_all(os, fd, &bytes, os.now() + WRITE_PATIENCE);
        let deadline = os.now() + SIMPLE_PATIENCE;
        let mut buf = [0u8; 4096];
        match wire::read_some(os, fd, &mut buf, deadline) {
            Ok(0) | Err(Short::Closed | Short::Error(_)) => {}
            Ok(n) => {
                let uid = self.ctx.plan.uid.unwrap_or_default();
                let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.violation(os, format_args!("a peer of uid {uid} was answered: {got:?}"));
            }
            Err(Short::Deadline) => {
                os.note(format_args!("CHECK gave-up simple client={}: a stranger's connection stays open", self.id()));
            }
        }
        os.close(fd);
    }

    /// Writes requests back to back; those written whole are owed answers.
    fn send(&mut self, os: &mut SimOs, reqs: &[Req]) {
        let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
        let mut bytes = Vec::new();
        let mut rendered = Vec::new();
        for req in reqs {
            let r = self.render(req, framing);
            rendered.push((bytes.len() + r.commit, r.owed, req.is_deferred(), r.fatal));
            bytes.extend_from_slice(&r.bytes);
        }
        // Now and then a burst goes out in pieces, split anywhere.
        let mut cuts = vec![bytes.len()];
        if bytes.len() > 2 && self.rng.chance(20) {
            cuts.insert(0, 1 + self.rng.below(bytes.len() as u64 - 1) as usize);
        }
        // A restarted worker comes back even if it is not forever: the
        // checker must know its exit was asked for, and the note must come
        // before the daemon can act on the request.
        // A refused call runs nothing: the checker is not told of it, so
        // that its effect, if it had one, would be a violation.
        let runs = self.conn.as_ref().is_some_and(|c| c.cred.runs());
        let max_batch = self.ctx.daemon.max_batch;
        for name in reqs.iter().filter(|_| runs).flat_map(|r| restarts(r, max_batch)) {
            os.note(format_args!("CHECK restart-requested {name}"));
        }
        if runs && reqs.contains(&Req::Shutdown) {
            os.note(format_args!("CHECK shutdown-requested"));
        }
        let conn = self.conn.as_mut().expect("checked above");
        let mut written = 0;
        let mut short = None;
        for (i, cut) in cuts.iter().enumerate() {
            if i > 0 {
                let until = os.now() + Duration::from_micros(self.rng.below(2000));
                os.sleep_until(until);
            }
            let deadline = os.now() + WRITE_PATIENCE;
            match wire::write_all(os, conn.fd, &bytes[written..*cut], deadline) {
                Ok(()) => written = *cut,
                Err((n, why)) => {
                    written += n;
                    short = Some(why);
                    break;
                }
            }
        }
        for (end, owed, deferred, fatal) in rendered {
            if end > written {
                break;
            }
            conn.deferred |= deferred;
            if !conn.fatal {
                if let Some(owed) = owed {
                    conn.owed.push_back(owed);
                }
            }
            conn.fatal |= fatal;
        }
        match short {
            None => {}
            Some(Short::Deadline) => {
                os.note(format_args!("CHECK gave-up {} client={}: writing stuck", self.kind(), self.id()));
                self.close(os);
            }
            Some(Short::Closed | Short::Error(_)) => {
                // The daemon closed: what it answered before is still there.
                self.drain(os);
                self.end_of_file(os);
            }
        }
    }

    fn kind(&self) -> &'static str {
        match &self.conn {
            _ if self.ctx.plan.last => "last",
            Some(c) if c.deferred => "deferred",
            _ => "simple",
        }
    }

    /// Waits for every owed answer (and, after a fatal request, for the
    /// end of file).
    fn await_answers(&mut self, os: &mut SimOs) {
        let patience = match self.kind() {
            "last" => LAST_PATIENCE,
            "deferred" => DEFERRED_PATIENCE,
            _ => SIMPLE_PATIENCE,
        };
        let deadline = os.now() + patience;
        loop {
            self.parse(os);
            let Some(conn) = self.conn.as_mut() else { return };
            if conn.owed.is_empty() && !conn.fatal {
                return;
            }
            let mut buf = [0u8; 4096];
            match wire::read_some(os, conn.fd, &mut buf, deadline) {
                Ok(0) => return self.end_of_file(os),
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(Short::Deadline) => {
                    let labels = self.owed_labels();
                    os.note(format_args!("CHECK gave-up {} client={}: {labels}", self.kind(), self.id()));
                    let conn = self.conn.take().expect("checked above");
                    os.close(conn.fd);
                    return;
                }
                Err(Short::Closed | Short::Error(_)) => return self.end_of_file(os),
            }
        }
    }

    /// Reads what is already there without waiting.
    fn drain(&mut self, os: &mut SimOs) -> bool {
        let mut eof = false;
        if let Some(conn) = self.conn.as_mut() {
            let mut buf = [0u8; 4096];
            loop {
                match os.read(conn.fd, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        self.parse(os);
        eof
    }

    /// The daemon closed the connection.
    fn end_of_file(&mut self, os: &mut SimOs) {
        self.parse(os);
        let Some(conn) = self.conn.take() else { return };
        if !conn.owed.is_empty() || !conn.input.is_empty() {
            let labels: Vec<&str> = conn.owed.iter().map(|o| o.label.as_str()).collect();
            let truncated = if conn.input.is_empty() { "" } else { " (an answer cut short)" };
            os.note(format_args!("CHECK eof-unanswered client={}: {}{truncated}", self.id(), labels.join(" ")));
        }
        os.close(conn.fd);
    }

    /// Closes the connection, first checking that nothing unasked came.
    fn close(&mut self, os: &mut SimOs) {
        if self.conn.is_none() {
            return;
        }
        let eof = self.drain(os);
        if eof {
            return self.end_of_file(os);
        }
        if let Some(conn) = self.conn.take() {
            os.close(conn.fd);
        }
    }

    fn owed_labels(&self) -> String {
        self.conn
            .as_ref()
            .map(|c| c.owed.iter().map(|o| o.label.clone()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Matches every complete answer buffered against what is owed.
    fn parse(&mut self, os: &mut SimOs) {
        loop {
            let Some(conn) = self.conn.as_mut() else { return };
            let answer = match conn.framing {
                Framing::Ndjson => take_line(&mut conn.input),
                Framing::Http => take_http(&mut conn.input),
            };
            // An interim `100 Continue` answers nothing: the real answer follows.
            if let Ok(Some(Answer::Http { status: 100, .. })) = answer {
                continue;
            }
            let answer = match answer {
                Ok(Some(a)) => a,
                Ok(None) => return,
                Err(e) => {
                    conn.input.clear();
                    self.violation(os, format_args!("unreadable answer: {e}"));
                    return;
                }
            };
            let conn = self.conn.as_mut().expect("checked above");
            let Some(owed) = conn.owed.pop_front() else {
                let shown = show(&answer);
                self.violation(os, format_args!("an answer nothing was owed for (a second answer?): {shown}"));
                continue;
            };
            if let Err(e) = self.judge(&owed.expect, &answer) {
                let shown = show(&answer);
                self.violation(os, format_args!("answer to {}: {e}; got {shown}", owed.label));
            }
        }
    }

    fn judge(&self, expect: &Expect, answer: &Answer) -> Result<(), String> {
        match (expect, answer) {
            (Expect::NoContent, Answer::Http { status: 204, .. }) => Ok(()),
            (Expect::Refused(want), Answer::Http { status, .. }) if status == want => Ok(()),
            (Expect::RefusedEither(a, b), Answer::Http { status, .. }) if status == a || status == b => Ok(()),
            (Expect::One(..) | Expect::Batch(_), Answer::Http { status: 200, body }) => {
                let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not json: {e}"))?;
                self.judge_json(expect, &v)
            }
            (Expect::One(..) | Expect::Batch(_), Answer::Json(v)) => self.judge_json(expect, v),
            (e, _) => Err(format!("expected {e:?}")),
        }
    }

    fn judge_json(&self, expect: &Expect, v: &Value) -> Result<(), String> {
        match expect {
            Expect::One(id, check) => self.judge_one(id, check, v),
            Expect::Batch(parts) => {
                let Some(items) = v.as_array() else { return Err("expected a batch answer".into()) };
                if items.len() != parts.len() {
                    return Err(format!("a batch of {} answers, expected {}", items.len(), parts.len()));
                }
                for ((id, check), item) in parts.iter().zip(items) {
                    self.judge_one(id, check, item)?;
                }
                Ok(())
            }
            Expect::NoContent | Expect::Refused(_) | Expect::RefusedEither(..) => Err("expected no json".into()),
        }
    }

    fn judge_one(&self, id: &Value, check: &Check, v: &Value) -> Result<(), String> {
        if v.get("jsonrpc") != Some(&json!("2.0")) {
            return Err("not a json-rpc 2.0 answer".into());
        }
        let got = v.get("id").unwrap_or(&Value::Null);
        if got != id {
            let me = format!("c{}-", self.id());
            return Err(match got.as_str() {
                Some(s) if s.starts_with('c') && !s.starts_with(&me) => {
                    format!("the answer to another client's request {s} (wrong client)")
                }
                _ => format!("id {got}, expected {id} (out of order, duplicated or lost)"),
            });
        }
        let outcome = match (v.get("result"), v.get("error")) {
            (Some(r), None) => Ok(r),
            (None, Some(e)) => Err(e.get("code").and_then(Value::as_i64).ok_or("an error without a code")?),
            _ => return Err("neither a result nor an error".into()),
        };
        let ok = match (check, outcome) {
            (Check::Equals(want), Ok(r)) => r == want,
            (Check::Error(code), Err(c)) => c == *code,
            (Check::True, Ok(r)) => *r == json!(true),
            (Check::Info, Ok(r)) => {
                r.get("pid") == Some(&json!(self.ctx.daemon_pid.0)) && r.get("description") == Some(&json!(DESCRIPTION))
            }
            (Check::Worker(call), outcome) => self.judge_worker(call, outcome),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {check:?}"))
        }
    }

    fn known(&self, name: &str) -> bool {
        self.ctx.workers.iter().any(|(n, _)| n == name)
    }

    fn judge_worker(&self, call: &WorkerCall, outcome: Result<&Value, i64>) -> bool {
        // What a command to a worker may meet besides success: no process
        // to take it, a process that died first, a daemon that stops.
        let refused = |c: i64| [codes::WORKER_NOT_RUNNING, codes::WORKER_ERROR, codes::STOPPING].contains(&c);
        // Answers keyed by worker name the instances of a pool as `name/i`.
        let names: BTreeSet<String> = self
            .ctx
            .workers
            .iter()
            .flat_map(|(n, count)| match count {
                1 => vec![n.clone()],
                _ => (0..*count).map(|i| format!("{n}/{i}")).collect(),
            })
            .collect();
        match call {
            WorkerCall::Pause(Some(n)) | WorkerCall::Resume(Some(n)) | WorkerCall::Restart(n) if !self.known(n) => {
                outcome == Err(codes::UNKNOWN_WORKER)
            }
            WorkerCall::Send(n, _) | WorkerCall::Status(Some(n)) if !self.known(n) => {
                outcome == Err(codes::UNKNOWN_WORKER)
            }
            WorkerCall::Pause(Some(_)) | WorkerCall::Resume(Some(_)) => match outcome {
                Ok(r) => *r == json!(true),
                Err(c) => refused(c),
            },
            WorkerCall::Pause(None) | WorkerCall::Resume(None) => match outcome {
                Ok(Value::Object(map)) => {
                    map.keys().cloned().collect::<BTreeSet<_>>() == names
                        && map.values().all(|v| *v == json!(true) || v.get("error").is_some_and(Value::is_string))
                }
                Ok(_) => false,
                Err(c) => c == codes::STOPPING,
            },
            WorkerCall::Send(_, msg) => match outcome {
                Ok(r) => *r == json!({ "echo": msg }),
                Err(c) => refused(c),
            },
            WorkerCall::Status(Some(_)) => matches!(outcome, Ok(Value::Object(_) | Value::Array(_))),
            WorkerCall::Status(None) => match outcome {
                Ok(Value::Object(map)) => {
                    map.keys().cloned().collect::<BTreeSet<_>>() == names
                        && map.values().all(|v| {
                            ["spinup", "looping", "paused", "spindown", "exited", "stopped", "failed"]
                                .contains(&v.as_str().unwrap_or(""))
                        })
                }
                _ => false,
            },
            WorkerCall::List => {
                let total: u32 = self.ctx.workers.iter().map(|(_, n)| n).sum();
                match outcome {
                    Ok(Value::Array(items)) => {
                        items.len() == total as usize
                            && items
                                .iter()
                                .all(|i| i.get("name").and_then(Value::as_str).is_some_and(|n| self.known(n)))
                    }
                    _ => false,
                }
            }
            WorkerCall::Restart(_) => outcome == Ok(&json!(true)),
        }
    }

    fn next_id(&mut self) -> Value {
        let id = format!("c{}-{}", self.id(), self.next);
        self.next += 1;
        Value::String(id)
    }

    /// The bytes of a request and the answer it is owed (none for a
    /// notification over NDJSON).
    fn render(&mut self, req: &Req, framing: Framing) -> Rendered {
        let cred = self.conn.as_ref().map(|c| c.cred.clone()).unwrap_or_default();
        let max_batch = self.ctx.daemon.max_batch;
        let mut body: Option<Value> = None;
        let mut raw: Option<String> = None;
        let (label, expect) = match req {
            Req::Authenticate => {
                let id = self.next_id();
                let token = match &cred {
                    Cred::Token(t) => t.clone(),
                    _ => WRONG_TOKEN.to_string(),
                };
                body =
                    Some(json!({"jsonrpc": "2.0", "method": "rpc.authenticate", "params": {"token": token}, "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::True)))
            }
            Req::Forged(forgery) => return self.forged(*forgery, &cred),
            Req::OverBatch => {
                let id = self.next_id();
                let mut entries = vec![
                    json!({"jsonrpc": "2.0", "method": "daemon.shutdown", "id": id}),
                    json!({"jsonrpc": "2.0", "method": "daemon.shutdown"}),
                ];
                while entries.len() <= max_batch {
                    entries.push(json!(1));
                }
                body = Some(Value::Array(entries));
                ("an over-limit batch".to_string(), Some(Expect::One(Value::Null, Check::Error(rpc_codes::LIMIT))))
            }
            Req::OverMulticall => {
                let id = self.next_id();
                let calls: Vec<Value> =
                    (0..=max_batch).map(|_| json!({"methodName": "daemon.shutdown", "params": []})).collect();
                body = Some(json!({"jsonrpc": "2.0", "method": "system.multicall", "params": [calls], "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::Error(rpc_codes::LIMIT))))
            }
            Req::Echo(msg) => {
                let id = self.next_id();
                let msg = format!("{} {msg}", id.as_str().unwrap_or_default());
                body = Some(self.call("my.echo", json!([msg]), json!({ "message": msg }), Some(&id)));
                (id.to_string(), Some(Expect::One(id, Check::Equals(json!(msg)))))
            }
            Req::Notify(msg) => {
                body = Some(json!({"jsonrpc": "2.0", "method": "my.echo", "params": [msg]}));
                ("a notification".to_string(), (framing == Framing::Http).then_some(Expect::NoContent))
            }
            Req::Info => {
                let id = self.next_id();
                body = Some(json!({"jsonrpc": "2.0", "method": "daemon.info", "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::Info)))
            }
            Req::Shutdown => {
                let id = self.next_id();
                body = Some(json!({"jsonrpc": "2.0", "method": "daemon.shutdown", "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::True)))
            }
            Req::UnknownMethod => {
                let id = self.next_id();
                body = Some(json!({"jsonrpc": "2.0", "method": "no.such.method", "params": [], "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::Error(-32601))))
            }
            Req::BadParams => {
                let id = self.next_id();
                body = Some(json!({"jsonrpc": "2.0", "method": "my.echo", "params": [42], "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::Error(-32602))))
            }
            Req::InvalidRequest => {
                let id = self.next_id();
                body = Some(json!({"jsonrpc": "2.0", "params": [], "id": id}));
                (id.to_string(), Some(Expect::One(id, Check::Error(-32600))))
            }
            Req::ParseError | Req::BadHead if framing == Framing::Ndjson => {
                raw = Some("{\"jsonrpc\": oops".to_string());
                ("a parse error".to_string(), Some(Expect::One(Value::Null, Check::Error(-32700))))
            }
            Req::ParseError => {
                raw = Some("{\"jsonrpc\": oops".to_string());
                ("a parse error".to_string(), Some(Expect::One(Value::Null, Check::Error(-32700))))
            }
            Req::BadHead => {
                let head = "POST / HTTP/1.1\r\nHost: forkd\r\n\r\n".as_bytes().to_vec();
                let owed = Owed { label: "a head without a length".into(), expect: Expect::Refused(411) };
                return Rendered { commit: head.len(), bytes: head, owed: Some(owed), fatal: true };
            }
            Req::TooLarge => {
                let max = self.ctx.daemon.max_request;
                if framing == Framing::Http {
                    let head = format!(
                        "POST / HTTP/1.1\r\nHost: forkd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        max + 1
                    );
                    let owed = Owed { label: "a request too large".into(), expect: Expect::Refused(413) };
                    let bytes = head.into_bytes();
                    return Rendered { commit: bytes.len(), bytes, owed: Some(owed), fatal: true };
                }
                let id = self.next_id();
                let filler = "z".repeat(max + 16);
                raw = Some(json!({"jsonrpc": "2.0", "method": "my.echo", "params": [filler], "id": id}).to_string());
                ("a request too large".to_string(), Some(Expect::One(Value::Null, Check::Error(-32600))))
            }
            Req::Batch(items) => {
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
                body = Some(Value::Array(entries));
                let label =
                    format!("batch[{}]", parts.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(","));
                let expect = if items.len() > max_batch {
                    // Refused whole: one error, and nothing of it runs.
                    Some(Expect::One(Value::Null, Check::Error(rpc_codes::LIMIT)))
                } else if parts.is_empty() {
                    (framing == Framing::Http).then_some(Expect::NoContent)
                } else {
                    Some(Expect::Batch(parts))
                };
                (label, expect)
            }
            Req::Worker(call) => {
                let id = self.next_id();
                body = Some(worker_request(call, Some(&id)));
                (id.to_string(), Some(Expect::One(id, Check::Worker(call.clone()))))
            }
        };
        let call_id = body.as_ref().and_then(|b| b.get("id")).cloned();
        let text = raw.unwrap_or_else(|| body.map(|b| b.to_string()).unwrap_or_default());
        let mut expect = expect;
        let mut label = label;
        let mut fatal = req.is_fatal(framing);
        let too_large = text.len() > self.ctx.daemon.max_request;
        let refused = matches!(cred, Cred::Without { .. }) && !too_large;
        if refused {
            // Refused before it runs: HTTP at once, NDJSON call by call
            // until the third refusal closes the connection.
            match framing {
                Framing::Http => {
                    expect = Some(Expect::Refused(401));
                    fatal = true;
                }
                Framing::Ndjson => {
                    let id = call_id.expect("a refused client sends calls with ids");
                    expect = Some(Expect::One(id, Check::Error(rpc_codes::UNAUTHORIZED)));
                    if let Some(Cred::Without { refused, .. }) = self.conn.as_mut().map(|c| &mut c.cred) {
                        *refused += 1;
                        fatal |= *refused >= MAX_REFUSALS;
                    }
                }
            }
            label = format!("{label} (refused: no token)");
        }
        if too_large {
            // Whatever it was meant to be, it is too large now.
            fatal = true;
            label = format!("{label} (too large)");
            expect = Some(match framing {
                Framing::Ndjson => Expect::One(Value::Null, Check::Error(-32600)),
                Framing::Http => Expect::Refused(413),
            });
        }
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

    /// An HTTP request a web page could make a browser send, carrying a
    /// `daemon.shutdown` (and the token, so that only the browser checks
    /// refuse it): refused with its status, and the connection closed.
    fn forged(&mut self, forgery: Forgery, cred: &Cred) -> Rendered {
        let id = self.next_id();
        let call = json!({"jsonrpc": "2.0", "method": "daemon.shutdown", "id": id}).to_string();
        let (content_type, host, origin, body) = match forgery {
            Forgery::TextPlain => ("text/plain", HOST, "", call),
            Forgery::Form => ("application/x-www-form-urlencoded", HOST, "", "method=daemon.shutdown".to_string()),
            Forgery::ForeignHost => ("application/json", "attacker.example", "", call),
            Forgery::ForeignOrigin => ("application/json", HOST, "Origin: http://attacker.example\r\n", call),
        };
        let bytes = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{origin}{}Content-Length: {}\r\n\r\n{body}",
            cred.header(),
            body.len()
        )
        .into_bytes();
        let owed = Owed { label: format!("a forged request ({forgery:?})"), expect: Expect::Refused(forgery.status()) };
        Rendered { commit: bytes.len(), bytes, owed: Some(owed), fatal: true }
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

/// The workers a request asks to restart (a batch over `max_batch` runs
/// nothing).
fn restarts(req: &Req, max_batch: usize) -> Vec<&str> {
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

/// Takes one NDJSON answer line off the front of `input`.
fn take_line(input: &mut Vec<u8>) -> Result<Option<Answer>, String> {
    let Some(end) = input.iter().position(|&b| b == b'\n') else { return Ok(None) };
    let line: Vec<u8> = input.drain(..=end).collect();
    serde_json::from_slice(&line[..end])
        .map(|v| Some(Answer::Json(v)))
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&line)))
}

/// Takes one HTTP response off the front of `input`.
fn take_http(input: &mut Vec<u8>) -> Result<Option<Answer>, String> {
    let Some(head_end) = input.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
    let head = String::from_utf8_lossy(&input[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| format!("bad content-length {value:?}"))?;
            }
        }
    }
    let total = head_end + 4 + length;
    if input.len() < total {
        return Ok(None);
    }
    let body = input[head_end + 4..total].to_vec();
    input.drain(..total);
    Ok(Some(Answer::Http { status, body }))
}

fn show(answer: &Answer) -> String {
    let s = match answer {
        Answer::Json(v) => v.to_string(),
        Answer::Http { status, body } => format!("HTTP {status} {}", String::from_utf8_lossy(body)),
    };
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}
