//! Property tests of the RPC connection: whatever bytes a client sends, in
//! whatever chunks, the connection never panics, everything it sends back
//! is well-formed for its framing, and it always gets to a state where the
//! loop may close it; and any JSON value sent as a line gets exactly the
//! answer JSON-RPC 2.0 prescribes for its shape.

use forkd_core::rpc::{Args, Conn, DeferId, Framing, Limits, Method, ParamType, Params, Registry, Reply, Value};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// The test context: which deferred ids were handed out.
#[derive(Default)]
struct Ctx {
    next_defer: u64,
}

fn registry() -> Registry<Ctx> {
    let mut r = Registry::new();
    r.add(
        Method::new("echo", |_: &mut Ctx, args: &Args| Reply::Value(args.index(0).cloned().unwrap_or(Value::Null)))
            .param(ParamType::String, "message")
            .returns(ParamType::String),
    )
    .unwrap();
    r.add(Method::new("defer", |ctx: &mut Ctx, _: &Args| {
        ctx.next_defer += 1;
        Reply::Deferred(DeferId::from_raw(ctx.next_defer - 1))
    }))
    .unwrap();
    r.add(
        Method::new("add", |_: &mut Ctx, args: &Args| {
            let sum = args.get_i64("a").unwrap_or(0).wrapping_add(args.get_i64("b").unwrap_or(0));
            Reply::Value(Value::from(sum))
        })
        .param(ParamType::Int, "a")
        .param(ParamType::Int, "b"),
    )
    .unwrap();
    r
}

/// A connection, its registry, and everything it has sent so far.
struct Client {
    conn: Conn,
    registry: Registry<Ctx>,
    ctx: Ctx,
    completed: u64,
    received: Vec<u8>,
}

impl Client {
    fn new(limits: Limits) -> Self {
        Client {
            conn: Conn::new(limits),
            registry: registry(),
            ctx: Ctx::default(),
            completed: 0,
            received: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let Client { conn, registry, ctx, .. } = self;
        conn.handle_bytes(bytes, &mut |m, p: Params| registry.dispatch(ctx, m, p));
    }

    fn resume(&mut self) {
        let Client { conn, registry, ctx, .. } = self;
        conn.resume(&mut |m, p: Params| registry.dispatch(ctx, m, p));
    }

    /// Sends `n` bytes of output at most, as a slow client would read them.
    fn read(&mut self, n: usize) {
        let n = n.min(self.conn.output().len());
        self.received.extend_from_slice(&self.conn.output()[..n]);
        self.conn.consume(n);
        self.resume();
    }

    /// Completes every deferred call handed out so far.
    fn complete_all(&mut self) {
        while self.completed < self.ctx.next_defer {
            let id = self.completed;
            self.conn.complete(DeferId::from_raw(id), Ok(Value::from(id)));
            self.completed += 1;
            self.resume();
        }
    }

    /// Reads and completes until the connection has nothing more to say.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            self.complete_all();
            if self.conn.output().is_empty() {
                return;
            }
            self.read(usize::MAX);
        }
        panic!("the connection never settled");
    }
}

/// Checks that `out` is a sequence of whole answers for `framing`.
fn check_output(framing: Option<Framing>, out: &[u8]) -> Result<(), String> {
    match framing {
        None if out.is_empty() => Ok(()),
        None => Err("output before the framing was known".into()),
        Some(Framing::Ndjson) => {
            if !out.is_empty() && !out.ends_with(b"\n") {
                return Err("last line not terminated".into());
            }
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let value: Value =
                    serde_json::from_slice(line).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(line)))?;
                check_answer(&value)?;
            }
            Ok(())
        }
        Some(Framing::Http) => {
            let mut rest = out;
            while !rest.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut response = httparse::Response::new(&mut headers);
                let head = match response.parse(rest) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => return Err(format!("bad response head: {other:?}")),
                };
                let code = response.code.unwrap_or(0);
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| String::from_utf8_lossy(h.value).parse::<usize>().map_err(|e| e.to_string()))
                    .transpose()?;
                let length = match (code, length) {
                    (100 | 204, None) => 0,
                    (100 | 204, Some(_)) => return Err(format!("{code} with a body")),
                    (_, Some(n)) => n,
                    (_, None) => return Err(format!("{code} without content-length")),
                };
                if rest.len() < head + length {
                    return Err("truncated response body".into());
                }
                rest = &rest[head + length..];
            }
            Ok(())
        }
    }
}

/// Checks one JSON-RPC answer: a response object, or a non-empty batch.
fn check_answer(value: &Value) -> Result<(), String> {
    match value {
        Value::Array(items) if !items.is_empty() => items.iter().try_for_each(check_response),
        Value::Object(_) => check_response(value),
        other => Err(format!("not an answer: {other}")),
    }
}

fn check_response(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or_else(|| format!("not a response: {value}"))?;
    let ok = object.get("jsonrpc") == Some(&Value::from("2.0"))
        && object.contains_key("id")
        && (object.contains_key("result") != object.contains_key("error"))
        && object.len() == 3
        && match object.get("error") {
            None => true,
            Some(e) => e["code"].is_i64() && e["message"].is_string(),
        };
    if ok {
        Ok(())
    } else {
        Err(format!("not a response: {value}"))
    }
}

/// Pieces that make arbitrary input likely to hit every path.
const FRAGMENTS: &[&[u8]] = &[
    b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"x\"],\"id\":1}\n",
    b"{\"jsonrpc\":\"2.0\",\"method\":\"defer\",\"id\":\"d\"}\n",
    b"[{\"jsonrpc\":\"2.0\",\"method\":\"defer\",\"id\":2},{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[1],\"id\":3},{\"jsonrpc\":\"2.0\",\"method\":\"defer\"}]\n",
    b"{\"jsonrpc\":\"2.0\",\"method\":\"add\",\"params\":{\"a\":1,\"b\":2}}\n",
    b"[]\n",
    b"[1,2]\n",
    b"\n",
    b"\r\n",
    b"{",
    b"\"",
    b"POST / HTTP/1.1\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 55\r\n",
    b"Content-Type: text/xml\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"<methodCall><methodName>defer</methodName></methodCall>",
    b"<value><array><data>",
];

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![proptest::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()), vec(any::<u8>(), 0..12),];
    vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// A pipeline of well-framed HTTP requests with arbitrary bodies.
fn arb_http() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![proptest::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()), vec(any::<u8>(), 0..40),];
    let request = (0..4u8, body).prop_map(|(kind, body)| {
        let mut request = match kind {
            0 => b"GET /health HTTP/1.1\r\n\r\n".to_vec(),
            1 => format!("POST / HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes(),
            2 => format!("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes(),
            _ => format!("POST /rpc HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        };
        if kind != 0 {
            request.extend_from_slice(&body);
        }
        request
    });
    vec(request, 1..6).prop_map(|requests| requests.concat())
}

fn arb_limits() -> impl Strategy<Value = Limits> {
    (8usize..400, 1usize..600, 1usize..6, 1usize..4).prop_map(|(max_request, max_output, max_pending, max_batch)| {
        Limits { max_request, max_output, socket_buffer: 1024, max_pending, max_batch, max_values: 1 << 16 }
    })
}

/// Feeds `input` cut at `cuts`, reading `reads` bytes between chunks, as a
/// well-behaved loop would (reading input only when the connection wants it).
fn drive(limits: Limits, input: &[u8], cuts: &[usize], reads: &[usize], eof: bool) -> Client {
    let mut client = Client::new(limits);
    let mut at = 0;
    let mut reads = reads.iter().cycle();
    for &size in cuts.iter().chain(std::iter::once(&usize::MAX)) {
        if at >= input.len() {
            break;
        }
        let mut stalls = 0;
        while !client.conn.wants_read() && !client.conn.is_closing() {
            client.read(usize::MAX);
            stalls += 1;
            if stalls > 2 {
                client.complete_all();
            }
            assert!(stalls < 100, "connection never wants to read again");
        }
        if client.conn.is_closing() {
            break;
        }
        let end = at.saturating_add(size.max(1)).min(input.len());
        client.feed(&input[at..end]);
        at = end;
        client.read(*reads.next().unwrap_or(&0));
    }
    if eof {
        client.conn.handle_eof();
    }
    client.settle();
    client
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_in_arbitrary_chunks(
        input in prop_oneof![arb_bytes(), arb_http()],
        cuts in vec(1usize..64, 0..16),
        reads in vec(0usize..200, 1..8),
        limits in prop_oneof![Just(Limits::default()), arb_limits()],
        eof in any::<bool>(),
    ) {
        let client = drive(limits, &input, &cuts, &reads, eof);
        let checked = check_output(client.conn.framing(), &client.received);
        prop_assert!(checked.is_ok() || client.conn.is_closing(), "{:?} for {:?}", checked, String::from_utf8_lossy(&client.received));
        // Stronger than required, and true today: even a closing
        // connection only ever sent well-formed answers.
        prop_assert!(checked.is_ok(), "{:?}", checked);
        if client.conn.is_closing() {
            prop_assert!(client.conn.should_close(), "closing, settled, but not closable");
        }
    }

    /// The scan that bounds a request before it is parsed never counts
    /// fewer values than it holds, and counts a batch's entries exactly,
    /// whatever the spacing.
    #[test]
    fn a_request_s_shape_bounds_what_parsing_builds(value in arb_json(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
        let shape = forkd_core::rpc::jsonrpc::Shape::of(text.as_bytes());
        prop_assert!(shape.values >= count_values(&value), "{shape:?} for {text}");
        prop_assert_eq!(shape.batch, value.as_array().map(Vec::len), "{}", text);
    }

    #[test]
    fn any_json_value_gets_the_prescribed_answer(value in prop_oneof![arb_json(), arb_request(), vec(arb_request(), 0..5).prop_map(Value::Array)]) {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        let client = drive(Limits::default(), &line, &[], &[usize::MAX], false);
        prop_assert!(!client.conn.is_closing(), "valid JSON must not close the connection");
        let lines: Vec<&[u8]> = client.received.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let expected = expected_answers(&value);
        match expected {
            None => prop_assert!(lines.is_empty(), "answered a notification: {:?}", String::from_utf8_lossy(&client.received)),
            Some(count) => {
                prop_assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(&client.received));
                let answer: Value = serde_json::from_slice(lines[0]).unwrap();
                check_answer(&answer).map_err(TestCaseError::fail)?;
                match (count, &answer) {
                    (Answer::Single, Value::Object(_)) => {}
                    (Answer::Batch(n), Value::Array(items)) => prop_assert_eq!(items.len(), n),
                    _ => prop_assert!(false, "wrong answer shape {} for {}", answer, value),
                }
            }
        }
    }
}

/// What JSON-RPC 2.0 prescribes for a payload.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Single,
    Batch(usize),
}

/// `None` when nothing must be answered.
fn expected_answers(value: &Value) -> Option<Answer> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            let answered = items.iter().filter(|item| !is_notification(item)).count();
            (answered > 0).then_some(Answer::Batch(answered))
        }
        other if is_notification(other) => None,
        _ => Some(Answer::Single),
    }
}

fn is_notification(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    object.get("jsonrpc") == Some(&Value::from("2.0"))
        && object.get("method").is_some_and(Value::is_string)
        && !object.contains_key("id")
        && match object.get("params") {
            None => true,
            Some(p) => p.is_array() || p.is_object(),
        }
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "[a-z0-9 .\"\\\\\n\u{e9}]{0,8}".prop_map(Value::from),
        Just(Value::from("2.0")),
    ]
}

/// How many values parsing `value` builds: itself and everything inside.
fn count_values(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_values).sum(),
        Value::Object(map) => map.values().map(count_values).sum(),
        _ => 0,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            Just("jsonrpc".to_string()),
            Just("method".to_string()),
            Just("params".to_string()),
            Just("id".to_string()),
            "[a-z]{1,3}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like requests, valid or nearly so.
fn arb_request() -> impl Strategy<Value = Value> {
    let jsonrpc =
        proptest::option::of(prop_oneof![Just(Value::from("2.0")), Just(Value::from("1.0")), Just(Value::from(2))]);
    let method = proptest::option::of(prop_oneof![
        proptest::sample::select(vec!["echo", "defer", "add", "nope", "system.listMethods", "system.multicall"])
            .prop_map(Value::from),
        Just(Value::from(1)),
    ]);
    let params = proptest::option::of(prop_oneof![
        vec(arb_leaf(), 0..3).prop_map(Value::Array),
        btree_map(
            prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("message".to_string())],
            arb_leaf(),
            0..3
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        arb_leaf(),
    ]);
    let id =
        proptest::option::of(prop_oneof![arb_leaf(), Just(serde_json::json!([1])), Just(serde_json::json!({"a": 1}))]);
    (jsonrpc, method, params, id).prop_map(|(jsonrpc, method, params, id)| {
        let mut object = serde_json::Map::new();
        for (key, value) in [("jsonrpc", jsonrpc), ("method", method), ("params", params), ("id", id)] {
            if let Some(value) = value {
                object.insert(key.to_string(), value);
            }
        }
        Value::Object(object)
    })
}
