//! A client's connection: opening it (with the token, where the daemon
//! wants one), writing requests, waiting for what it is owed, and closing
//! it.
//!
//! Whatever the connection shows that the client cannot judge alone (a
//! refused connect, an answer that never came, an end of file while
//! answers are owed) is noted as a `CHECK` line for the checker. This
//! module must never judge an answer itself: it hands what it reads to
//! [`Client::parse`].

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use forkd_os::sim::SimOs;
use forkd_os::Os;

use super::refused::Cred;
use super::render::restarts;
use super::{Client, Conn, DEFERRED_PATIENCE, LAST_PATIENCE, SIMPLE_PATIENCE, WRITE_PATIENCE};
use crate::scenario::{BadToken, Framing, Req, TOKEN_FILE};
use crate::wire::{self, Short};

impl Client {
    /// Opens a connection presenting `cred`; on NDJSON over tcp the first
    /// call is `rpc.authenticate`.
    pub(super) fn connect(&mut self, os: &mut SimOs, framing: Framing, cred: Cred) {
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
    pub(super) fn token(&mut self, os: &mut SimOs) -> Option<String> {
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

    /// Writes requests back to back; those written whole are owed answers.
    pub(super) fn send(&mut self, os: &mut SimOs, reqs: &[Req]) {
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
        self.note_asked(os, reqs);
        let (written, short) = self.write_cuts(os, &bytes, &cuts);
        let conn = self.conn.as_mut().expect("checked above");
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

    /// Tells the checker what `reqs` ask for that it must know of.
    fn note_asked(&mut self, os: &mut SimOs, reqs: &[Req]) {
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
    }

    /// Writes `bytes` up to each cut in turn, with a short pause between
    /// pieces; returns how many were written and why the writing stopped
    /// short, if it did.
    fn write_cuts(&mut self, os: &mut SimOs, bytes: &[u8], cuts: &[usize]) -> (usize, Option<Short>) {
        let fd = self.conn.as_ref().expect("checked above").fd;
        let mut written = 0;
        for (i, cut) in cuts.iter().enumerate() {
            if i > 0 {
                let until = os.now() + Duration::from_micros(self.rng.below(2000));
                os.sleep_until(until);
            }
            let deadline = os.now() + WRITE_PATIENCE;
            match wire::write_all(os, fd, &bytes[written..*cut], deadline) {
                Ok(()) => written = *cut,
                Err((n, why)) => return (written + n, Some(why)),
            }
        }
        (written, None)
    }

    pub(super) fn kind(&self) -> &'static str {
        match &self.conn {
            _ if self.ctx.plan.last => "last",
            Some(c) if c.deferred => "deferred",
            _ => "simple",
        }
    }

    /// Waits for every owed answer (and, after a fatal request, for the
    /// end of file).
    pub(super) fn await_answers(&mut self, os: &mut SimOs) {
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
    pub(super) fn drain(&mut self, os: &mut SimOs) -> bool {
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
    pub(super) fn end_of_file(&mut self, os: &mut SimOs) {
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
    pub(super) fn close(&mut self, os: &mut SimOs) {
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

    pub(super) fn owed_labels(&self) -> String {
        self.conn
            .as_ref()
            .map(|c| c.owed.iter().map(|o| o.label.clone()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }
}
