//! The clients the control plane must refuse, and what their refusals
//! look like: calls without the token (or with a wrong one), requests a
//! browser could be made to send, requests that trickle in past the
//! request timeout, and peers of a user the daemon does not allow.
//!
//! A refused call must never take effect, so a client that is refused
//! never tells the checker what it asked for (see
//! [`Cred::runs`]); if the daemon acted on it anyway the checker would
//! find an effect nobody asked for. This module must never expect a
//! refused request to be answered as if it had run.

use std::time::Duration;

use forkd_core::rpc::codes as rpc_codes;
use forkd_os::sim::SimOs;
use forkd_os::Os;
use serde_json::{json, Value};

use super::judge::{Check, Expect};
use super::render::{Draft, Owed, Rendered};
use super::{Client, SIMPLE_PATIENCE, WRITE_PATIENCE};
use crate::scenario::{BadToken, Forgery, Framing, Req, HOST};
use crate::wire::{self, Short};

/// How long past the request timeout a trickling request goes on.
const TRICKLE_GRACE: Duration = Duration::from_secs(1);
/// A token of the right length that is not the daemon's.
pub(super) const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// After this many refused calls an NDJSON connection is closed.
const MAX_REFUSALS: u32 = 3;

/// What a connection presents to the daemon.
#[derive(Clone, Debug, Default)]
pub(super) enum Cred {
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
    pub(super) fn header(&self) -> String {
        match self {
            Cred::Unix | Cred::Without { bad: BadToken::Missing, .. } => String::new(),
            Cred::Token(t) => format!("Authorization: Bearer {t}\r\n"),
            Cred::Without { bad: BadToken::Wrong, .. } => format!("Authorization: Bearer {WRONG_TOKEN}\r\n"),
        }
    }

    /// Whether its calls run (the checker is told of what may act).
    pub(super) fn runs(&self) -> bool {
        !matches!(self, Cred::Without { .. })
    }
}

impl Client {
    /// Writes part of `req`, then a byte every quarter of the idle timeout
    /// (so the connection never goes idle) until the request timeout has
    /// passed; never the last byte, so the request is never whole. The
    /// daemon must answer the timeout (HTTP 408, or -32600 with id null)
    /// and close.
    pub(super) fn trickle(&mut self, os: &mut SimOs, req: &Req) {
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
    pub(super) fn stranger(&mut self, os: &mut SimOs, framing: Framing, req: &Req) {
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

    /// Marks a call made without the token as refused: over HTTP at once,
    /// over NDJSON call by call until the third refusal closes the
    /// connection. Returns whether the daemon closes the connection after
    /// it.
    pub(super) fn refuse(&mut self, draft: &mut Draft, framing: Framing) -> bool {
        let mut fatal = false;
        match framing {
            Framing::Http => {
                draft.expect = Some(Expect::Refused(401));
                fatal = true;
            }
            Framing::Ndjson => {
                let id = draft.id.clone().expect("a refused client sends calls with ids");
                draft.expect = Some(Expect::One(id, Check::Error(rpc_codes::UNAUTHORIZED)));
                if let Some(Cred::Without { refused, .. }) = self.conn.as_mut().map(|c| &mut c.cred) {
                    *refused += 1;
                    fatal |= *refused >= MAX_REFUSALS;
                }
            }
        }
        draft.label = format!("{} (refused: no token)", draft.label);
        fatal
    }

    /// An HTTP request a web page could make a browser send, carrying a
    /// `daemon.shutdown` (and the token, so that only the browser checks
    /// refuse it): refused with its status, and the connection closed.
    pub(super) fn forged(&mut self, forgery: Forgery, cred: &Cred) -> Rendered {
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
}
