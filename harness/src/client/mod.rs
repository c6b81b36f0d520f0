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

//!
//! The module's parts: this file is the process entry and the dispatch of
//! a script's steps; `conn` opens, writes to, waits on and closes the
//! connection; `render` turns requests into bytes and what they are owed;
//! `read` takes answers off the wire and pairs them with what is owed;
//! `judge` says whether an answer is right; `refused` holds the clients
//! the control plane must refuse. None of them may let anything outside the
//! client's seed in: every choice comes from its [`Rng`].

mod conn;
mod judge;
mod read;
mod refused;
mod render;

use std::collections::VecDeque;
use std::time::Duration;

use forkd_os::sim::SimOs;
use forkd_os::{Fd, KillTarget, Os, Pid, Signal};

use crate::rng::Rng;
use crate::scenario::{ClientPlan, DaemonPlan, Framing, Req, Step};
use crate::wire;
use refused::Cred;
use render::Owed;

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
            Step::Connect(framing) => self.connect_allowed(os, *framing),
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
            Step::CloseMidRequest(req) => self.close_mid_request(os, req),
            Step::Flood { requests, hold } => self.flood(os, *requests, *hold),
            Step::Signal(sig) => {
                let _ = os.kill(KillTarget::Process(self.ctx.daemon_pid), *sig);
            }
            Step::KillWorker(n) => self.kill_worker(os, *n),
        }
    }

    /// Connects as a client the daemon allows: over tcp with its token, if
    /// its token file can be read.
    fn connect_allowed(&mut self, os: &mut SimOs, framing: Framing) {
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
        self.connect(os, framing, cred);
    }

    /// Writes part of `req` and closes the connection.
    fn close_mid_request(&mut self, os: &mut SimOs, req: &Req) {
        let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
        let bytes = self.render(req, framing).bytes;
        let conn = self.conn.take().expect("checked above");
        let cut = 1 + self.rng.below(bytes.len() as u64 - 1) as usize;
        let deadline = os.now() + WRITE_PATIENCE;
        let _ = wire::write_all(os, conn.fd, &bytes[..cut], deadline);
        os.close(conn.fd);
    }

    /// Writes `requests` large echoes without reading, holds the
    /// connection for `hold`, and closes it.
    fn flood(&mut self, os: &mut SimOs, requests: u32, hold: Duration) {
        let Some(framing) = self.conn.as_ref().map(|c| c.framing) else { return };
        let mut bytes = Vec::new();
        let big = "f".repeat(self.ctx.daemon.max_request.saturating_sub(200).clamp(1, 1000));
        for _ in 0..requests {
            bytes.extend(self.render(&Req::Echo(big.clone()), framing).bytes);
        }
        let conn = self.conn.take().expect("checked above");
        // Written until the socket takes no more: the daemon must
        // not stall for a client that never reads.
        let deadline = os.now() + Duration::from_millis(50);
        let _ = wire::write_all(os, conn.fd, &bytes, deadline);
        let until = os.now() + hold;
        os.sleep_until(until);
        os.close(conn.fd);
    }

    /// Kills one of the live processes that are not the harness's: a
    /// worker.
    fn kill_worker(&mut self, os: &mut SimOs, n: u8) {
        // Only where no chaos process runs (the state machine's
        // scenarios): a client does not know the chaos process's pid.
        let me = os.pid();
        let victims: Vec<Pid> =
            os.live_processes().into_iter().filter(|p| *p != me && !self.ctx.harness.contains(p)).collect();
        if !victims.is_empty() {
            let victim = victims[usize::from(n) % victims.len()];
            let _ = os.kill(KillTarget::Process(victim), Signal::Kill);
        }
    }
}
