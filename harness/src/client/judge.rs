//! Judging answers: what an owed answer must look like, and whether the
//! one that came does.
//!
//! A judgement here needs nothing but the answer and what the client knows
//! of the world ([`ClientCtx`](super::ClientCtx)); what needs the whole run
//! in view is left to the checker. It must never read, write or note: it
//! returns why an answer is wrong, and its caller notes the violation.

use std::collections::BTreeSet;

use forkd_core::daemon::codes;
use serde_json::{json, Value};

use super::read::Answer;
use super::Client;
use crate::scenario::{WorkerCall, DESCRIPTION};

/// How an owed answer must look.
#[derive(Clone, Debug)]
pub(super) enum Expect {
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
pub(super) enum Check {
    Equals(Value),
    Error(i64),
    Info,
    True,
    Worker(WorkerCall),
}

impl Client {
    pub(super) fn judge(&self, expect: &Expect, answer: &Answer) -> Result<(), String> {
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
        // Answers list instances by worker name and instance number.
        let all: BTreeSet<(String, u64)> =
            self.ctx.workers.iter().flat_map(|(n, count)| (0..u64::from(*count)).map(|i| (n.clone(), i))).collect();
        let of = |name: &str| -> BTreeSet<(String, u64)> { all.iter().filter(|(n, _)| n == name).cloned().collect() };
        // An array of entries for exactly `want`, in order, each passing `ok`.
        let entries = |v: &Value, want: &BTreeSet<(String, u64)>, ok: &dyn Fn(&Value) -> bool| match v {
            Value::Array(items) => {
                let keys: Vec<(String, u64)> = items
                    .iter()
                    .filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), e.get("instance")?.as_u64()?)))
                    .collect();
                keys.len() == items.len()
                    && keys.iter().cloned().collect::<BTreeSet<_>>() == *want
                    && keys.windows(2).all(|w| w[0] < w[1])
                    && items.iter().all(ok)
            }
            _ => false,
        };
        let acted = |e: &Value| e.get("ok") == Some(&json!(true));
        let acted_or_said = |e: &Value| acted(e) || e.get("error").is_some_and(Value::is_string);
        let state = |e: &Value| {
            ["spinup", "looping", "paused", "spindown", "exited", "stopped", "failed"]
                .contains(&e.get("state").and_then(Value::as_str).unwrap_or(""))
        };
        match call {
            WorkerCall::Pause(Some(n)) | WorkerCall::Resume(Some(n)) | WorkerCall::Restart(n) if !self.known(n) => {
                outcome == Err(codes::UNKNOWN_WORKER)
            }
            WorkerCall::Send(n, _) | WorkerCall::Status(Some(n)) if !self.known(n) => {
                outcome == Err(codes::UNKNOWN_WORKER)
            }
            WorkerCall::Pause(Some(n)) | WorkerCall::Resume(Some(n)) => match outcome {
                Ok(r) => entries(r, &of(n), &acted),
                Err(c) => refused(c),
            },
            WorkerCall::Pause(None) | WorkerCall::Resume(None) => match outcome {
                Ok(r) => entries(r, &all, &acted_or_said),
                Err(c) => c == codes::STOPPING,
            },
            WorkerCall::Send(_, msg) => match outcome {
                Ok(r) => *r == json!({ "echo": msg }),
                Err(c) => refused(c),
            },
            WorkerCall::Status(Some(n)) => matches!(outcome, Ok(r) if entries(r, &of(n), &state)),
            WorkerCall::Status(None) => matches!(outcome, Ok(r) if entries(r, &all, &state)),
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
            WorkerCall::Restart(n) => match outcome {
                Ok(r) => entries(r, &of(n), &acted),
                Err(c) => c == codes::STOPPING || c == codes::RELOADING,
            },
            WorkerCall::Reload(Some(n), _) if !self.known(n) => outcome == Err(codes::UNKNOWN_WORKER),
            // Done: each running instance of the worker (of every worker,
            // by name) replaced by a new process; or stopped by a failed
            // new instance, by a reload under way, by the daemon stopping.
            WorkerCall::Reload(n, _) => match outcome {
                Ok(Value::Array(items)) => items.iter().all(|e| {
                    let named =
                        e.get("name").and_then(Value::as_str).is_some_and(|w| n.as_ref().is_none_or(|n| n == w));
                    let pids = (e.get("old_pid").and_then(Value::as_i64), e.get("new_pid").and_then(Value::as_i64));
                    let key = e.get("name").and_then(Value::as_str).zip(e.get("instance").and_then(Value::as_u64));
                    named
                        && matches!(pids, (Some(o), Some(p)) if o != p)
                        && key.is_some_and(|(w, i)| all.contains(&(w.to_string(), i)))
                }),
                Ok(_) => false,
                Err(c) => [codes::WORKER_ERROR, codes::RELOADING, codes::STOPPING].contains(&c),
            },
        }
    }
}
