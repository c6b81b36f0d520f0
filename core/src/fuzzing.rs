//! The bodies of the fuzz targets: one pure function per decoder of the
//! control plane, taking arbitrary bytes.
//!
//! Everything a client or a worker can put in front of the daemon goes
//! through a decoder: the bytes of an RPC connection (framing, HTTP heads,
//! JSON-RPC, XML-RPC) and the shared region of a worker's channel. Each
//! function here feeds one of them and asserts what must hold whatever the
//! input, so that a panic means a bug, never a bad input. The functions
//! live in the library, behind the `fuzzing` feature, rather than in the
//! fuzz targets: `core/fuzz` (cargo-fuzz, nightly) calls them with what
//! libFuzzer generates, and `tests/fuzz_regressions.rs` (stable) calls them
//! with the seeds and every saved crash, so a fixed bug stays fixed without
//! a nightly toolchain.
//!
//! They are deterministic: the same input takes the same path, which is
//! what lets a crash be replayed and minimised. Where a target needs more
//! than the bytes it decodes (how a stream is cut into reads, when a
//! deferred call completes), it draws those choices from a small generator
//! seeded by the first bytes of the input.
//!
//! Nothing here runs in the daemon, and nothing may touch the world: like
//! the rest of the core it has no clock, no randomness of its own and no
//! I/O.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use forkd_os::Region;

use crate::rpc::jsonrpc::{self, Entry, Message};
use crate::rpc::{xmlrpc, Conn, DeferId, Limits, Map, Params, Reply, RpcError, Value};
use crate::worker::channel::{Channel, Command, ERROR_MAX, EVENT_SLOTS, PAYLOAD_MAX, REGION_SIZE};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as `core/fuzz/fuzz_targets/<name>.rs` calls
/// them.
pub const TARGETS: &[(&str, Target)] =
    &[("conn", conn), ("jsonrpc", jsonrpc), ("xmlrpc", xmlrpc), ("http_head", http_head), ("channel", channel)];

/// A splitmix64 generator: the choices a target makes beyond its input's
/// payload, seeded from the input so that they replay.
struct Choices(u64);

impl Choices {
    /// Takes up to 8 bytes off the front of `data` as the seed.
    fn split(data: &[u8]) -> (Choices, &[u8]) {
        let n = data.len().min(8);
        let mut seed = [0u8; 8];
        seed[..n].copy_from_slice(&data[..n]);
        (Choices(u64::from_le_bytes(seed)), &data[n..])
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// How many bytes the next read returns, out of `left`: mostly small,
    /// so that requests are cut at every byte, sometimes all of it.
    fn read_len(&mut self, left: usize) -> usize {
        let n = match self.below(8) {
            0 => 1,
            1..=3 => 1 + self.below(16),
            4..=6 => 1 + self.below(512),
            _ => left,
        };
        n.min(left)
    }

    /// How many bytes of `len` a write sends: none, one, some or all, as
    /// a slow or a fast reader would.
    fn write_len(&mut self, len: usize) -> usize {
        match self.below(4) {
            0 => 0,
            1 => len.min(1),
            2 => self.below(len + 1),
            _ => len,
        }
    }
}

/// The limits of the connection under test: small, so that short inputs
/// reach every bound.
const CONN_LIMITS: Limits =
    Limits { max_request: 4096, max_output: 8192, socket_buffer: 1024, max_pending: 8, max_batch: 64, max_values: 512 };

/// How much unsent output a connection may hold. Answers rendered but not
/// sent (queued behind a deferred one, or in the output) stay under
/// `max_output` whenever a request is taken, and one request's answers
/// stop at `max_output` too: past it each entry left is answered by a short
/// error instead, which echoes its id (the ids of one request add up to at
/// most `max_request`). So: twice `max_output`, the ids twice over, a short
/// error per batch entry, the small plain answers (health, refusals) that
/// the bound does not count, one per owed answer, and headers.
const fn output_max(limits: &Limits) -> usize {
    2 * limits.max_output + 2 * limits.max_request + (limits.max_batch + 1) * 256 + limits.max_pending * 512 + 4096
}

/// The size of the `big` method's answer.
const BIG: usize = 256;

/// Turns of the driving loop before a connection that has not finished is
/// called stuck. Each turn completes or sends something, or reads at least
/// a byte, so an input of the sizes libFuzzer makes needs far fewer.
const MAX_TURNS: usize = 1 << 20;

/// The calls a connection dispatched, and the deferred ones still open.
#[derive(Default)]
struct Dispatcher {
    next_defer: u64,
    open: Vec<DeferId>,
}

impl Dispatcher {
    /// Answers by the method's name, so that the input picks: `defer*`
    /// defers with a fresh id, `dup*` defers with the last id again (the
    /// connection must refuse an id it already waits for), `fail*` errs,
    /// `big*` answers a long string, anything else echoes its params.
    fn dispatch(&mut self, method: &str, params: Params) -> Reply {
        if method.starts_with("defer") {
            let id = DeferId(self.next_defer);
            self.next_defer += 1;
            self.open.push(id);
            Reply::Deferred(id)
        } else if method.starts_with("dup") {
            let id = DeferId(self.next_defer.saturating_sub(1));
            self.open.push(id);
            Reply::Deferred(id)
        } else if method.starts_with("fail") {
            Reply::Error(RpcError::server_error(-32001, "failed on purpose"))
        } else if method.starts_with("big") {
            Reply::Value(Value::String("x".repeat(BIG)))
        } else {
            Reply::Value(params_value(params))
        }
    }

    /// Completes one open deferred call, chosen by `choices`, with a
    /// result or an error.
    fn complete_one(&mut self, conn: &mut Conn, choices: &mut Choices) {
        if self.open.is_empty() {
            return;
        }
        let id = self.open.swap_remove(choices.below(self.open.len()));
        let result = match choices.below(3) {
            0 => Ok(Value::from(id.0)),
            1 => Ok(Value::String("y".repeat(BIG))),
            _ => Err(RpcError::internal_error(format!("deferred call {} failed", id.0))),
        };
        conn.complete(id, result);
    }
}

fn params_value(params: Params) -> Value {
    match params {
        Params::None => Value::Null,
        Params::Positional(values) => Value::Array(values),
        Params::Named(map) => Value::Object(map),
    }
}

/// Drives a [`Conn`] the way the daemon's loop does, over `data` cut into
/// reads of varying sizes, with deferred calls completing in any order
/// and a reader that takes the output in varying amounts.
///
/// Asserts that the unsent output stays under its bound
/// ([`output_max`]), that bytes arriving once the connection is closing
/// change nothing, and that after end of stream, once every deferred call
/// is completed and the output read, the connection asks to be closed.
pub fn conn(data: &[u8]) {
    let (mut choices, mut input) = Choices::split(data);
    let limits = CONN_LIMITS;
    let bound = output_max(&limits);
    let mut conn = Conn::new(limits.clone());
    let mut calls = Dispatcher::default();
    let check = |conn: &Conn| {
        let len = conn.output().len();
        assert!(len <= bound, "{len} bytes of unsent output, over the bound of {bound}");
    };

    let mut turns = 0;
    while !input.is_empty() {
        turns += 1;
        assert!(turns < MAX_TURNS, "the connection made no progress in {MAX_TURNS} turns");
        if conn.is_closing() {
            // The loop would not read any more; bytes that come anyway
            // are dropped.
            let before = conn.output().to_vec();
            let deferred = conn.pending_deferred();
            conn.handle_bytes(input, &mut |m, p| calls.dispatch(m, p));
            assert_eq!(conn.output(), before, "bytes after closing changed the output");
            assert_eq!(conn.pending_deferred(), deferred, "bytes after closing dispatched a call");
            break;
        }
        if conn.wants_read() {
            let n = choices.read_len(input.len());
            conn.handle_bytes(&input[..n], &mut |m, p| calls.dispatch(m, p));
            input = &input[n..];
            check(&conn);
        }
        if choices.below(3) == 0 {
            calls.complete_one(&mut conn, &mut choices);
            check(&conn);
        }
        let n = choices.write_len(conn.output().len());
        conn.consume(n);
        if !conn.wants_read() && !conn.is_closing() {
            // Full: make room as a patient client and a finishing worker
            // would, or nothing else can happen.
            while !calls.open.is_empty() {
                calls.complete_one(&mut conn, &mut choices);
                check(&conn);
            }
            conn.consume(conn.output().len());
        }
        conn.resume(&mut |m, p| calls.dispatch(m, p));
        check(&conn);
    }

    conn.handle_eof();
    close_after_eof(&mut conn, &mut calls, &mut choices, &check);
    assert_eq!(conn.pending_deferred(), 0, "closing while deferred answers are owed");
}

/// After end of stream: completes the deferred calls and reads the output
/// until the connection asks to be closed, as the loop would.
fn close_after_eof(conn: &mut Conn, calls: &mut Dispatcher, choices: &mut Choices, check: &dyn Fn(&Conn)) {
    assert!(!conn.wants_read(), "the connection wants to read after end of stream");
    let mut turns = 0;
    while !conn.should_close() {
        turns += 1;
        assert!(
            turns < MAX_TURNS,
            "no close after end of stream: {} deferred, {} bytes unsent",
            conn.pending_deferred(),
            conn.output().len()
        );
        if calls.open.is_empty() && conn.output().is_empty() {
            // Nothing left to complete or send: only buffered requests
            // waiting for room can keep the connection open, and resume
            // takes them.
            let before = conn.pending_deferred();
            conn.resume(&mut |m, p| calls.dispatch(m, p));
            check(conn);
            assert!(
                conn.should_close() || !calls.open.is_empty() || !conn.output().is_empty(),
                "after end of stream, with nothing owed and nothing to send, the connection stays open \
                 ({before} deferred before resume)"
            );
            continue;
        }
        if choices.below(2) == 0 {
            calls.complete_one(conn, choices);
            check(conn);
        }
        let n = choices.write_len(conn.output().len());
        conn.consume(n);
        conn.resume(&mut |m, p| calls.dispatch(m, p));
        check(conn);
    }
}

/// Decodes `data` as a JSON-RPC payload; for every entry, the answers the
/// daemon could encode for it must be JSON of the shape the spec gives,
/// echoing the entry's id.
pub fn jsonrpc(data: &[u8]) {
    let Ok(message) = jsonrpc::decode(data) else {
        return;
    };
    let (batch, entries) = match message {
        Message::Single(entry) => (false, vec![entry]),
        Message::Batch(entries) => {
            assert!(!entries.is_empty(), "an empty batch decoded as a batch");
            (true, entries)
        }
    };
    let mut answers = Vec::new();
    for entry in entries {
        match entry {
            Entry::Invalid { id, error } => {
                assert!(is_id(&id), "invalid entry echoes id {id}");
                let answer = jsonrpc::encode_error(&id, &error);
                check_error_answer(&answer, &id, &error);
                answers.push(answer);
            }
            Entry::Call { id, method, params } => {
                if let Some(id) = &id {
                    assert!(is_id(id), "call with id {id}");
                }
                let id = id.unwrap_or(Value::Null);
                let result = params_value(params);
                let answer = jsonrpc::encode_result(&id, &result);
                let parsed = parse_answer(&answer, &id);
                assert!(same(&parsed["result"], &result), "result {} read back as {}", result, parsed["result"]);
                answers.push(answer);
                let error = RpcError::method_not_found(&method).with_data(Value::String(method.clone()));
                let answer = jsonrpc::encode_error(&id, &error);
                check_error_answer(&answer, &id, &error);
                answers.push(answer);
            }
        }
    }
    if batch {
        let encoded = jsonrpc::encode_batch(answers.iter().map(String::as_str));
        let parsed: Value = serde_json::from_str(&encoded).unwrap_or_else(|e| panic!("batch answer {encoded}: {e}"));
        assert_eq!(parsed.as_array().map(Vec::len), Some(answers.len()), "batch answer {encoded}");
    }
}

/// Whether `id` may be echoed: a string, a number or null.
fn is_id(id: &Value) -> bool {
    matches!(id, Value::String(_) | Value::Number(_) | Value::Null)
}

/// Parses an encoded answer and checks its envelope: `jsonrpc` and `id`.
fn parse_answer(answer: &str, id: &Value) -> Value {
    let parsed: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("answer {answer} is not json: {e}"));
    assert_eq!(parsed["jsonrpc"], "2.0", "answer {answer}");
    assert!(same(&parsed["id"], id), "answer {answer} does not echo id {id}");
    parsed
}

fn check_error_answer(answer: &str, id: &Value, error: &RpcError) {
    let parsed = parse_answer(answer, id);
    let object = &parsed["error"];
    assert_eq!(object["code"], error.code, "answer {answer}");
    assert_eq!(object["message"], error.message.as_str(), "answer {answer}");
    if let Some(data) = &error.data {
        assert!(same(&object["data"], data), "answer {answer} does not carry data {data}");
    }
}

/// Equality of JSON values read back from their encoding. serde_json
/// writes the shortest digits that name a float, but without its
/// `float_roundtrip` feature its parser may land one unit in the last place
/// off; floats may differ by that much.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()) || (x - y).abs() < 1e-300
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

/// Decodes `data` as an XML-RPC call; on success, each param encoded as a
/// response must decode back to itself (after the substitutions the
/// encoder documents), and so must the fault of a call that fails.
///
/// forkd has no decoder for responses, so the value inside each encoded
/// response goes back through the call decoder, as the param of a call.
pub fn xmlrpc(data: &[u8]) {
    match xmlrpc::decode_call(data) {
        Ok(call) => {
            assert!(!call.method.is_empty(), "a call decoded with an empty method name");
            assert_eq!(call.method.trim(), call.method, "the method name is not trimmed");
            for param in &call.params {
                let response = xmlrpc::encode_response(param);
                let value = between(&response, "<methodResponse><params><param>", "</param></params></methodResponse>");
                assert_eq!(read_back(value), xml_sent(param), "param read back from {response}");
            }
        }
        Err(error) => {
            let fault = xmlrpc::encode_fault(&error);
            let value = between(&fault, "<methodResponse><fault>", "</fault></methodResponse>");
            let mut expected = Map::new();
            expected.insert("faultCode".into(), Value::from(error.code));
            expected.insert("faultString".into(), Value::String(error.message.clone()));
            assert_eq!(read_back(value), xml_sent(&Value::Object(expected)), "fault read back from {fault}");
        }
    }
}

/// The part of `text` between `before` and `after`, which must frame it.
fn between<'a>(text: &'a str, before: &str, after: &str) -> &'a str {
    let rest = text.split_once(before).unwrap_or_else(|| panic!("no {before} in {text}")).1;
    rest.strip_suffix(after).unwrap_or_else(|| panic!("{text} does not end with {after}"))
}

/// Decodes an encoded `<value>` as the one param of a call.
fn read_back(value: &str) -> Value {
    let call = format!("<methodCall><methodName>m</methodName><params><param>{value}</param></params></methodCall>");
    let mut decoded = xmlrpc::decode_call(call.as_bytes()).unwrap_or_else(|e| panic!("{call} does not decode: {e}"));
    assert_eq!(decoded.params.len(), 1, "{call}");
    decoded.params.pop().expect("one param")
}

/// What `value` becomes once sent as XML-RPC and read back: characters XML
/// cannot carry become U+FFFD, and an integer past `i64::MAX` a double.
fn xml_sent(value: &Value) -> Value {
    let text = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                '\t' | '\n' | '\r' => c,
                '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
                _ => c,
            })
            .collect()
    };
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_some() => {
            serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN)).map_or(Value::Null, Value::Number)
        }
        Value::Array(items) => Value::Array(items.iter().map(xml_sent).collect()),
        Value::Object(members) => {
            // Names that differ only in what becomes U+FFFD collapse, the
            // last one winning as it does when the decoder reads them.
            let mut out = Map::new();
            for (name, member) in members {
                out.insert(text(name), xml_sent(member));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Parses `data` as an HTTP request head; a head it accepts must lie
/// within the input and read the same without what follows it.
pub fn http_head(data: &[u8]) {
    crate::rpc::fuzz_access::http_head(data);
}

/// One write of a patch: a little-endian `u16` word index (taken modulo
/// the region's words) and a little-endian `u64` value.
const PATCH_LEN: usize = 10;

/// Builds a worker channel's region from `data` and reads it as the
/// daemon does, several times over.
///
/// The first byte picks how the rest makes the region: with its low bit
/// clear, the rest is the region's bytes, zero-padded or truncated to
/// [`REGION_SIZE`]; with it set, the region is a fresh channel (as
/// `Channel::create` lays it out) overwritten by patches of
/// [`PATCH_LEN`] bytes, so that short inputs reach fields far into it.
///
/// Asserts that no read panics, that results are bounded (no more events
/// than the ring holds, strings no longer than their fields), that reads
/// of words only the worker writes repeat, that a reply is taken once, and
/// that the event ring drains.
pub fn channel(data: &[u8]) {
    let words = REGION_SIZE / 8;
    let buffer: Arc<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let region = Region::from_buffer(buffer, 1);
    match data.split_first() {
        None => {}
        Some((mode, rest)) if mode & 1 == 0 => region.write_bytes(0, &rest[..rest.len().min(REGION_SIZE)]),
        Some((_, rest)) => {
            Channel::create(region.clone());
            for patch in rest.chunks_exact(PATCH_LEN) {
                let word = usize::from(u16::from_le_bytes([patch[0], patch[1]])) % words;
                let value = u64::from_le_bytes(patch[2..].try_into().expect("8 bytes"));
                region.store(word, value, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let channel = Channel::attach(region);
    // A lossy UTF-8 conversion at most triples a byte (into U+FFFD).
    let text_max = |bytes: usize| 3 * bytes + 256;

    let header = (channel.state(), channel.loops(), channel.heartbeat(), channel.last_error());
    let header_ok = header.1.is_ok();
    if let Ok(Some(error)) = &header.3 {
        assert!(!error.is_empty(), "an empty last error reads as an error");
        assert!(error.len() <= text_max(ERROR_MAX), "last error of {} bytes", error.len());
    }
    let mut events = 0;
    let mut drained = false;
    for _ in 0..EVENT_SLOTS + 2 {
        assert_eq!(
            (channel.state(), channel.loops(), channel.heartbeat(), channel.last_error()),
            header,
            "reading the header twice read different values"
        );

        if let Ok(Some(reply)) = channel.take_reply() {
            if let Err(message) = &reply.result {
                assert!(message.len() <= text_max(PAYLOAD_MAX), "reply error of {} bytes", message.len());
            }
            assert_eq!(channel.take_reply(), Ok(None), "reply {} taken twice", reply.seq);
        }

        match channel.take_events() {
            Ok(taken) => {
                assert!(taken.len() <= EVENT_SLOTS, "{} events taken from a ring of {EVENT_SLOTS}", taken.len());
                events += taken.len();
                assert!(!drained || taken.is_empty(), "events came after the ring was drained");
                drained |= taken.is_empty();
            }
            Err(_) => assert!(!drained, "an event error came after the ring was drained"),
        }
        assert!(events <= EVENT_SLOTS, "{events} events taken in all from a ring of {EVENT_SLOTS}");
    }
    if header_ok {
        assert!(drained, "the event ring did not drain in {} takes", EVENT_SLOTS + 2);
    }

    // The daemon then sends its next command, reading the sequence words
    // the worker may have scribbled over.
    if channel.send_command(Command::Pause).is_ok() {
        assert!(!matches!(channel.take_reply(), Ok(Some(_))), "a reply taken for a command just sent");
    }
}
