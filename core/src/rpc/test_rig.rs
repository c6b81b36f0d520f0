//! The rig of the RPC layer's tests: a test registry (the seed's `my.echo`,
//! the JSON-RPC spec's example methods, and methods that fail or defer on
//! purpose) and a [`Harness`] that feeds bytes to a [`Conn`] and writes
//! down everything it says back. It is test code only and never holds a
//! test of its own.

use super::*;

/// The daemon context of the test registry.
#[derive(Debug, Default)]
pub(super) struct Ctx {
    next_defer: u64,
    notes: Vec<String>,
}

/// The values of a call, as JSON, for a note.
pub(super) fn show(values: &[Value]) -> String {
    Value::Array(values.to_vec()).to_string()
}

/// The test registry: the seed's `my.echo`, the JSON-RPC spec's example
/// methods, and methods that fail or defer on purpose.
pub(super) fn registry() -> Registry<Ctx> {
    let mut r = Registry::new();
    for method in own_methods().into_iter().chain(spec_methods()) {
        r.add(method).unwrap();
    }
    r
}

/// The seed's `my.echo` and the methods that exercise the layer: typed
/// params, several signatures, failures and deferred answers.
fn own_methods() -> Vec<Method<Ctx>> {
    vec![
        Method::new("my.echo", |_: &mut Ctx, args: &Args| {
            Reply::Value(args.get("message").cloned().unwrap_or(Value::Null))
        })
        .help("I'm here to reply your data")
        .param(ParamType::String, "message")
        .returns(ParamType::String),
        Method::new("test.add", |_: &mut Ctx, args: &Args| {
            let (a, b) = (args.get_i64("a"), args.get_i64("b"));
            match a.zip(b).and_then(|(a, b)| a.checked_add(b)) {
                Some(sum) => Reply::Value(Value::from(sum)),
                None => Reply::Error(RpcError::server_error(-32000, "integer overflow")),
            }
        })
        .help("Add two integers.")
        .param(ParamType::Int, "a")
        .param(ParamType::Int, "b")
        .returns(ParamType::Int),
        Method::new("test.defer", |ctx: &mut Ctx, _: &Args| {
            ctx.next_defer += 1;
            Reply::Deferred(DeferId(ctx.next_defer - 1))
        })
        .help("Answer later.")
        .returns(ParamType::Any),
        Method::new("test.notify", |ctx: &mut Ctx, args: &Args| {
            ctx.notes.push(args.get_str("message").unwrap_or_default().to_string());
            Reply::Value(Value::Null)
        })
        .help("Record a message.")
        .param(ParamType::String, "message")
        .returns(ParamType::Null),
        Method::new("test.identity", |_: &mut Ctx, args: &Args| {
            Reply::Value(args.index(0).cloned().unwrap_or(Value::Null))
        })
        .help("Return the value given.")
        .param(ParamType::Any, "value")
        .returns(ParamType::Any),
        Method::new("test.multi", |_: &mut Ctx, args: &Args| Reply::Value(Value::from(args.signature())))
            .help("Two signatures.")
            .param(ParamType::Int, "x")
            .returns(ParamType::Int)
            .signature()
            .param(ParamType::Int, "x")
            .param(ParamType::String, "y")
            .returns(ParamType::Int),
        Method::new("test.types", |_: &mut Ctx, _: &Args| Reply::Value(Value::Bool(true)))
            .help("Every param type.")
            .param(ParamType::String, "s")
            .param(ParamType::Int, "i")
            .param(ParamType::Double, "d")
            .param(ParamType::Boolean, "b")
            .param(ParamType::Array, "a")
            .param(ParamType::Struct, "t")
            .param(ParamType::Null, "n")
            .returns(ParamType::Boolean),
        Method::new("test.typed", |_: &mut Ctx, args: &Args| {
            let (when, data) = (args.get_datetime("when"), args.get_bytes("data"));
            Reply::Value(serde_json::json!({
                "when": args.get("when"),
                "year": when.map(|t| t.year()),
                "data": args.get("data"),
                "length": data.map(|d| d.len()),
            }))
        })
        .help("A date-time and bytes, typed whichever protocol carried them.")
        .param(ParamType::DateTime, "when")
        .param(ParamType::Base64, "data")
        .returns(ParamType::Struct),
        Method::new("test.fail", |_: &mut Ctx, _: &Args| Reply::Error(RpcError::internal_error("the handler failed"))),
        Method::new("test.busy", |_: &mut Ctx, _: &Args| {
            Reply::Error(RpcError::server_error(-32001, "busy, try later").with_data(serde_json::json!({"retry": 5})))
        }),
    ]
}

/// The methods of the JSON-RPC 2.0 specification's examples.
fn spec_methods() -> Vec<Method<Ctx>> {
    vec![
        Method::new("subtract", |_: &mut Ctx, args: &Args| {
            let (a, b) = (args.get_i64("minuend"), args.get_i64("subtrahend"));
            Reply::Value(Value::from(a.unwrap_or(0) - b.unwrap_or(0)))
        })
        .param(ParamType::Int, "minuend")
        .param(ParamType::Int, "subtrahend")
        .returns(ParamType::Int),
        Method::new("sum", |_: &mut Ctx, args: &Args| {
            Reply::Value(Value::from(args.values().iter().filter_map(Value::as_i64).sum::<i64>()))
        })
        .param(ParamType::Int, "a")
        .param(ParamType::Int, "b")
        .param(ParamType::Int, "c")
        .returns(ParamType::Int),
        Method::new("update", |ctx: &mut Ctx, args: &Args| {
            ctx.notes.push(format!("update {}", show(args.values())));
            Reply::Value(Value::Null)
        })
        .param(ParamType::Any, "a")
        .param(ParamType::Any, "b")
        .param(ParamType::Any, "c")
        .param(ParamType::Any, "d")
        .param(ParamType::Any, "e"),
        Method::new("notify_hello", |ctx: &mut Ctx, args: &Args| {
            ctx.notes.push(format!("hello {}", show(args.values())));
            Reply::Value(Value::Null)
        })
        .param(ParamType::Int, "n"),
        Method::new("notify_sum", |ctx: &mut Ctx, args: &Args| {
            ctx.notes.push(format!("sum {}", show(args.values())));
            Reply::Value(Value::Null)
        })
        .param(ParamType::Int, "a")
        .param(ParamType::Int, "b")
        .param(ParamType::Int, "c"),
        Method::new("get_data", |_: &mut Ctx, _: &Args| Reply::Value(serde_json::json!(["hello", 5])))
            .returns(ParamType::Array),
    ]
}

/// A connection wired to the test registry.
pub(super) struct Harness {
    pub(super) conn: Conn,
    registry: Registry<Ctx>,
    pub(super) ctx: Ctx,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub(super) fn with_limits(limits: Limits) -> Self {
        Self::with_access(limits, Access::default())
    }

    pub(super) fn with_access(limits: Limits, access: Access) -> Self {
        Harness { conn: Conn::with_access(limits, access), registry: registry(), ctx: Ctx::default() }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        let Harness { conn, registry, ctx } = self;
        conn.handle_bytes(bytes, &mut |method, params| registry.dispatch(ctx, method, params));
    }

    pub(super) fn resume(&mut self) {
        let Harness { conn, registry, ctx } = self;
        conn.resume(&mut |method, params| registry.dispatch(ctx, method, params));
    }

    pub(super) fn complete(&mut self, id: u64, result: Result<Value, RpcError>) {
        self.conn.complete(DeferId(id), result);
        self.resume();
    }

    /// Takes all output so far.
    pub(super) fn take(&mut self) -> Vec<u8> {
        let out = self.conn.output().to_vec();
        self.conn.consume(out.len());
        self.resume();
        out
    }

    /// The rest of the transcript: output and state.
    pub(super) fn transcript(&mut self) -> String {
        let out = self.take();
        let mut text = String::new();
        if !out.is_empty() {
            text.push_str(&prefixed("<-- ", &out));
        }
        text.push_str(&self.state());
        text
    }

    fn state(&self) -> String {
        let mut state = String::from(if self.conn.should_close() {
            "[closed]"
        } else if self.conn.is_closing() {
            "[closing]"
        } else {
            "[open]"
        });
        if self.conn.pending_deferred() > 0 {
            state.push_str(&format!(" [deferred: {}]", self.conn.pending_deferred()));
        }
        if !self.ctx.notes.is_empty() {
            state.push_str(&format!(" [notes: {}]", self.ctx.notes.join("; ")));
        }
        state.push('\n');
        state
    }
}

/// Makes bytes readable in a snapshot: `\r` and `\n` are shown, and each
/// line carries `prefix`.
pub(super) fn prefixed(prefix: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\r', "\\r").replace('\n', "\\n\n");
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs each case on a fresh connection and returns the transcripts.
pub(super) fn check(cases: &[(&str, &[u8])]) -> String {
    check_with(&|| Harness::new(), cases)
}

/// As [`check`], each case on a connection `make` makes.
pub(super) fn check_with(make: &dyn Fn() -> Harness, cases: &[(&str, &[u8])]) -> String {
    let mut out = String::new();
    for (name, input) in cases {
        let mut h = make();
        h.feed(input);
        out.push_str(&format!("### {name}\n"));
        if input.len() > 1000 {
            out.push_str(&prefixed("--> ", &input[..100]));
            out.push_str(&format!("--> ... ({} bytes in all)\n", input.len()));
        } else {
            out.push_str(&prefixed("--> ", input));
        }
        out.push_str(&h.transcript());
        out.push('\n');
    }
    out
}

pub(super) fn check_owned(cases: &[(&str, Vec<u8>)]) -> String {
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    check(&cases)
}

/// An HTTP POST with the given content type and body.
pub(super) fn post(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) fn xml_call(method: &str, params: &[&str]) -> String {
    let params: String = params.iter().map(|p| format!("<param>{p}</param>")).collect();
    format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    )
}
