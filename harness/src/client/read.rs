//! Reading answers: taking whole NDJSON lines and HTTP responses off a
//! connection's input, and matching each against the front of what the
//! connection is owed.
//!
//! This module only parses and pairs; whether an answer is right is
//! [`judge`](super::judge)'s to say. It must never wait: it works on bytes
//! already read.

use serde_json::Value;

use forkd_os::sim::SimOs;

use super::Client;
use crate::scenario::Framing;

/// An answer as read from the wire.
#[derive(Debug)]
pub(super) enum Answer {
    Json(Value),
    Http { status: u16, body: Vec<u8> },
}

impl Client {
    /// Matches every complete answer buffered against what is owed.
    pub(super) fn parse(&mut self, os: &mut SimOs) {
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

/// An answer as a trace shows it, cut to 300 bytes.
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
