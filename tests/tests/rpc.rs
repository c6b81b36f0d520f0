//! The control socket, end to end: real daemons answering real clients (raw
//! sockets, curl, Python's xmlrpc.client, the daemon's own CLI) over
//! newline-delimited JSON-RPC, HTTP/1.1 and XML-RPC, and the bounds that keep
//! one client from stalling the others. Most tests run the seed's echo
//! daemon; the one about deferred answers runs the copy daemon, whose
//! `handyman.changename` waits for its worker.
//!
//! The codecs are pinned in-process by `core/src/rpc/tests.rs`; what these
//! tests add is the loop, the kernel's sockets and other people's clients.
//! No test sleeps to synchronise: an answer is waited for with a read
//! timeout of `DEADLINE`, a condition with `wait_until`, and "not yet" is
//! proven by round trips that the daemon's single loop must have served
//! after the event that did not happen. Two tests measure the daemon's CPU
//! time across a wait that the daemon's own timeout bounds, to catch a loop
//! that spins instead of waiting in `poll`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use forkd_os::Address;
use forkd_tests::{alive, bin, run, wait_until, Client, Daemon, Progress, TempDir, DEADLINE};
use serde_json::{json, Value};

const ECHO: &str = "echo-daemon";

/// The daemon's unix socket file.
fn socket_path(d: &Daemon) -> PathBuf {
    match &d.socket {
        Address::Unix(p) => p.clone(),
        other => panic!("not a unix socket: {other}"),
    }
}

/// A raw connection whose reads and writes fail after `DEADLINE`.
fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(socket_path(d)).expect("connect to the daemon");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// A raw connection and a line reader on it.
fn connect_lines(d: &Daemon) -> (UnixStream, BufReader<UnixStream>) {
    let s = connect(d);
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// An NDJSON `my.echo` request line with named params.
fn echo_line(id: u64, message: &str) -> String {
    format!("{}\n", json!({"jsonrpc": "2.0", "id": id, "method": "my.echo", "params": {"message": message}}))
}

/// The exact answer line to `echo_line(id, message)`.
fn echo_answer(id: u64, message: &str) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":{id}}}\n", Value::from(message))
}

/// Reads one line, failing on end of stream or after `DEADLINE`.
fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    let n = r.read_line(&mut line).expect("read an answer line");
    assert!(n > 0, "the daemon closed the connection instead of answering");
    line
}

/// Reads until the daemon closes the connection: end of stream, or a reset
/// when it closed with bytes of ours still unread. Returns what came first.
fn read_until_closed(r: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("waiting for the daemon to close the connection: {e}"),
        }
    }
}

/// Sends `input` on a fresh connection and checks the answer lines, exactly.
fn check_lines(d: &Daemon, input: &str, expected: &[&str]) {
    let (mut s, mut r) = connect_lines(d);
    s.write_all(input.as_bytes()).unwrap();
    for want in expected {
        assert_eq!(read_line(&mut r), format!("{want}\n"), "answer to {input:?}");
    }
}

/// A fresh client gets its echo within the deadline.
fn assert_echoes(d: &Daemon, message: &str) {
    let mut c = Client::connect(&d.socket, DEADLINE).expect("a fresh client connects");
    let got = c.call("my.echo", json!({ "message": message })).expect("a fresh client gets its echo");
    assert_eq!(got, json!(message));
}

/// A tcp port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// One HTTP response: status code, lowercased headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 response framed by its Content-Length.
fn read_response(r: &mut impl BufRead) -> Response {
    let status_line = read_line(r);
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(r);
        let line = line.trim_end_matches("\r\n");
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad header {line:?}"));
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("read the response body");
    Response { status, headers, body: String::from_utf8(body).unwrap() }
}

/// A JSON-RPC POST request.
fn post(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

// 1. newline-delimited JSON-RPC on the unix socket

#[test]
fn ndjson_echo_answers_named_and_positional_params_exactly() {
    let dir = TempDir::new("ndjson-echo");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    check_lines(
        &d,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"my.echo\",\"params\":{\"message\":\"hi\"}}\n",
        &[r#"{"jsonrpc":"2.0","result":"hi","id":1}"#],
    );
    check_lines(
        &d,
        "{\"jsonrpc\":\"2.0\",\"id\":\"two\",\"method\":\"my.echo\",\"params\":[\"hi\"]}\n",
        &[r#"{"jsonrpc":"2.0","result":"hi","id":"two"}"#],
    );
    // A \r\n line ending and a blank line are tolerated on the same stream.
    check_lines(
        &d,
        "\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"my.echo\",\"params\":[\"crlf\"]}\r\n",
        &[r#"{"jsonrpc":"2.0","result":"crlf","id":3}"#],
    );
    check_lines(
        &d,
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"my.echo\",\"params\":[42]}\n",
        &[r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"param 'message' expects string, got int"},"id":4}"#],
    );
}

#[test]
fn ndjson_pipelined_requests_are_answered_in_order() {
    let dir = TempDir::new("ndjson-pipeline");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let (mut s, mut r) = connect_lines(&d);
    let requests: String = (1..=100).map(|i| echo_line(i, &format!("m{i}"))).collect();
    s.write_all(requests.as_bytes()).unwrap();
    for i in 1..=100 {
        assert_eq!(read_line(&mut r), echo_answer(i, &format!("m{i}")));
    }
}

#[test]
fn ndjson_batch_answers_every_call_in_order_but_no_notification() {
    let dir = TempDir::new("ndjson-batch");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "my.echo", "params": ["a"]},
        {"jsonrpc": "2.0", "method": "my.echo", "params": ["notified"]},
        {"jsonrpc": "2.0", "id": 2, "method": "my.nope"},
        {"jsonrpc": "2.0", "id": 3, "method": "my.echo", "params": {"message": "b"}},
        7,
    ]);
    check_lines(
        &d,
        &format!("{batch}\n"),
        &[concat!(
            r#"[{"jsonrpc":"2.0","result":"a","id":1},"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"method 'my.nope' not found"},"id":2},"#,
            r#"{"jsonrpc":"2.0","result":"b","id":3},"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"request must be an object"},"id":null}]"#
        )],
    );
    // A batch of notifications only is answered by nothing at all: the next
    // line is the answer to the request after it.
    let notifications = json!([{"jsonrpc": "2.0", "method": "my.echo", "params": ["x"]}]);
    check_lines(&d, &format!("{notifications}\n{}", echo_line(9, "after")), &[echo_answer(9, "after").trim_end()]);
}

#[test]
fn ndjson_notification_gets_no_answer() {
    let dir = TempDir::new("ndjson-notification");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    // Not even a failing one: an unknown method and bad params are silent too.
    let input = concat!(
        "{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":{\"message\":\"quiet\"}}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"my.nope\"}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[1]}\n",
    );
    check_lines(&d, &format!("{input}{}", echo_line(5, "loud")), &[echo_answer(5, "loud").trim_end()]);
}

#[test]
fn ndjson_large_message_round_trips_whole() {
    let dir = TempDir::new("ndjson-large");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    // Half a megabyte each way: many reads and partial writes for the loop.
    let message: String = (0..512 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let (mut s, mut r) = connect_lines(&d);
    s.write_all(echo_line(1, &message).as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), echo_answer(1, &message));
}

// 2. HTTP on the unix socket

#[test]
fn http_curl_posts_json_rpc_and_gets_the_answer() {
    let dir = TempDir::new("http-curl");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let sock = socket_path(&d);
    let out = run(
        "curl",
        [
            "-s",
            "--unix-socket",
            sock.to_str().unwrap(),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"my.echo","params":{"message":"hi"}}"#,
            "http://localhost/",
        ],
    );
    assert!(out.status.success(), "curl failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"jsonrpc":"2.0","result":"hi","id":1}"#);

    // `Expect: 100-continue`: curl holds the body back until the daemon says
    // go on (or its timeout passes, set long so that only the 100 can).
    let message = "x".repeat(4096);
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "my.echo", "params": [message]}).to_string();
    let out = run(
        "curl",
        [
            "-sv",
            "--expect100-timeout",
            "60",
            "--unix-socket",
            sock.to_str().unwrap(),
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            "http://localhost/",
        ],
    );
    assert!(out.status.success(), "curl failed: {out:?}");
    assert!(stderr(&out).contains("< HTTP/1.1 100 Continue"), "no 100 Continue:\n{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), echo_answer(2, &message).trim_end());
}

#[test]
fn http_get_health_is_200_and_other_paths_are_refused() {
    let dir = TempDir::new("http-health");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let sock = socket_path(&d);
    let status = |args: &[&str]| {
        let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run("curl", &all);
        assert!(out.status.success(), "curl failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(status(&["http://localhost/health"]), "200");
    assert_eq!(status(&["http://localhost/elsewhere"]), "404");
    assert_eq!(status(&["-X", "DELETE", "http://localhost/"]), "405");
    let out = run("curl", ["-s", "--unix-socket", sock.to_str().unwrap(), "http://localhost/health"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);
}

#[test]
fn http_keep_alive_answers_two_curl_requests_on_one_connection() {
    let dir = TempDir::new("http-keepalive-curl");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let sock = socket_path(&d);
    let sock = sock.to_str().unwrap();
    // `%{num_connects}` is how many connections a transfer opened: the
    // second transfer reusing the first's opens none.
    let mut args = Vec::new();
    for (i, m) in ["a", "b"].iter().enumerate() {
        if i > 0 {
            args.push("--next".to_string());
        }
        let body = json!({"jsonrpc": "2.0", "id": i + 1, "method": "my.echo", "params": [m]}).to_string();
        args.extend(
            [
                "-s",
                "--unix-socket",
                sock,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "-w",
                " connects=%{num_connects}\n",
                "http://localhost/",
            ]
            .map(String::from),
        );
    }
    let out = run("curl", &args);
    assert!(out.status.success(), "curl failed: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!(
            r#"{"jsonrpc":"2.0","result":"a","id":1} connects=1"#,
            "\n",
            r#"{"jsonrpc":"2.0","result":"b","id":2} connects=0"#,
            "\n"
        )
    );
}

#[test]
fn http_pipelined_posts_are_answered_in_order_on_one_connection() {
    let dir = TempDir::new("http-pipeline");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let (mut s, mut r) = connect_lines(&d);
    let first = post(r#"{"jsonrpc":"2.0","id":1,"method":"my.echo","params":["one"]}"#);
    let health = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let last = post(r#"{"jsonrpc":"2.0","id":2,"method":"my.echo","params":["two"]}"#).replacen(
        "Host: localhost\r\n",
        "Host: localhost\r\nConnection: close\r\n",
        1,
    );
    s.write_all(format!("{first}{health}{last}").as_bytes()).unwrap();

    let one = read_response(&mut r);
    assert_eq!((one.status, one.body.as_str()), (200, r#"{"jsonrpc":"2.0","result":"one","id":1}"#));
    assert_eq!(one.header("content-type"), Some("application/json"));
    assert_eq!(one.header("connection"), Some("keep-alive"));
    let health = read_response(&mut r);
    assert_eq!((health.status, health.body.as_str()), (200, r#"{"status":"ok"}"#));
    let two = read_response(&mut r);
    assert_eq!((two.status, two.body.as_str()), (200, r#"{"jsonrpc":"2.0","result":"two","id":2}"#));
    assert_eq!(two.header("connection"), Some("close"));
    assert!(read_until_closed(&mut r).is_empty(), "nothing after the last answer");
}

// 3. XML-RPC over tcp, with Python's standard library

fn python(script: &str) -> std::process::Output {
    // UTF-8 whatever the locale, for the non-ASCII echo.
    Command::new("python3").args(["-c", script]).env("PYTHONIOENCODING", "utf-8").output().expect("run python3")
}

#[test]
fn xmlrpc_python_client_calls_echo_and_introspection_over_tcp() {
    let dir = TempDir::new("xmlrpc-python");
    let port = free_port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, ECHO, &address, &[], &[]);
    let token = d.token();
    let out = python(&format!(
        r#"
import xmlrpc.client
p = xmlrpc.client.ServerProxy('http://forkd:{token}@127.0.0.1:{port}/')
print(repr(p.my.echo('hi')))
print(repr(p.my.echo('<&> ünïcode')))
methods = p.system.listMethods()
print('my.echo' in methods, 'daemon.info' in methods, methods == sorted(methods))
print(repr(p.system.methodHelp('my.echo')))
print(repr(p.system.methodSignature('my.echo')))
print(repr(p.system.multicall([{{'methodName': 'my.echo', 'params': ['a']}}, {{'methodName': 'my.echo', 'params': ['b']}}])))
"#
    ));
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        concat!(
            "'hi'\n",
            "'<&> ünïcode'\n",
            "True True True\n",
            "\"I'm here to reply your data\"\n",
            "[['string', 'string']]\n",
            "[['a'], ['b']]\n",
        )
    );
}

#[test]
fn xmlrpc_python_client_sees_invalid_params_as_a_fault() {
    let dir = TempDir::new("xmlrpc-fault");
    let port = free_port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, ECHO, &address, &[], &[]);
    let token = d.token();
    let out = python(&format!(
        r#"
import xmlrpc.client
p = xmlrpc.client.ServerProxy('http://forkd:{token}@127.0.0.1:{port}/')
for call in (lambda: p.my.echo(42), lambda: p.my.nope()):
    try:
        call()
        print('no fault')
    except xmlrpc.client.Fault as f:
        print(f.faultCode, f.faultString)
"#
    ));
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-32602 param 'message' expects string, got int\n-32601 method 'my.nope' not found\n"
    );
    // The faults hurt nobody: JSON-RPC on the same tcp socket still answers.
    assert_eq!(d.call("my.echo", json!(["tcp"])).unwrap(), json!("tcp"));
}

// 4. the daemon binary as its own control client

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_call_prints_the_result_as_json() {
    let dir = TempDir::new("cli-call");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let out = d.control(ECHO, &["call", "my.echo", "message=hi"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\"hi\"\n"), "{}", stderr(&out));
    let out = d.control(ECHO, &["call", "my.echo", r#"{"message":"x"}"#]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\"x\"\n"), "{}", stderr(&out));
    let out = d.control(ECHO, &["call", "my.echo", "positional"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\"positional\"\n"), "{}", stderr(&out));
}

#[test]
fn cli_call_of_an_unknown_method_fails_with_a_clear_message() {
    let dir = TempDir::new("cli-unknown");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let out = d.control(ECHO, &["call", "my.nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "error: method 'my.nope' not found (-32601)\n");
    let out = d.control(ECHO, &["call", "my.echo", "message=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: param 'message' expects string, got int (-32602)\n");
}

#[test]
fn cli_status_prints_the_daemon_line() {
    let dir = TempDir::new("cli-status");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let out = d.control(ECHO, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let prefix = format!("Echo Daemon (pid {}, version ", d.pid());
    assert!(first.starts_with(&prefix), "{first:?} should start with {prefix:?}");
    assert!(first.ends_with(&format!(" s) on {}", d.socket)), "{first:?}");
    assert_eq!(lines.collect::<Vec<_>>(), ["no workers"]);
}

#[test]
fn cli_stop_returns_once_the_daemon_is_gone_and_cleaned_up() {
    let dir = TempDir::new("cli-stop");
    let mut d = Daemon::start(&dir, ECHO, &[], &[]);
    let pid = d.pid();
    assert!(d.pid_file.exists() && socket_path(&d).exists());
    let out = d.control(ECHO, &["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("stopped (pid {pid})\n"));
    // Already true when `stop` returns, not eventually.
    assert!(!alive(pid), "the daemon still runs after stop returned");
    assert!(!socket_path(&d).exists(), "the socket file is left behind");
    assert!(!d.pid_file.exists(), "the pid file is left behind");
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log());
}

#[test]
fn cli_status_where_nothing_runs_exits_3() {
    let dir = TempDir::new("cli-nothing");
    let status = |socket: &str| {
        let out = Command::new(bin(ECHO)).args(["--socket", socket, "status"]).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "status on {socket}: {out:?}");
        assert!(stderr(&out).starts_with("error: not running: "), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
    };
    status(&format!("unix://{}", dir.join("none.sock").display()));
    // A stale socket file, which nobody listens on, is no daemon either.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    status(&format!("unix://{}", stale.display()));
    status(&format!("tcp://127.0.0.1:{}", free_port()));
}

// 5. no client stalls another

#[test]
fn a_half_sent_request_does_not_stall_other_clients() {
    let dir = TempDir::new("stall-half");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    // Silent, half a line, half an HTTP head, an HTTP body short of its length.
    let silent = connect(&d);
    let mut half_line = connect(&d);
    half_line.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"my.ec"#).unwrap();
    let mut half_head = connect(&d);
    half_head.write_all(b"POST / HTTP/1.1\r\nContent-Le").unwrap();
    let mut half_body = connect(&d);
    half_body.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"").unwrap();
    assert_echoes(&d, "still served");

    // The half line, finished, is answered on its own connection.
    half_line.write_all(b"ho\",\"params\":[\"done\"]}\n").unwrap();
    assert_eq!(read_line(&mut BufReader::new(&half_line)), echo_answer(1, "done"));
    assert_echoes(&d, "again");
    drop((silent, half_head, half_body));
}

#[test]
fn a_client_that_never_reads_does_not_stall_other_clients() {
    let dir = TempDir::new("stall-flood");
    let mut d = Daemon::start(&dir, ECHO, &[], &[]);
    // 100 000 requests answer about 4 MiB: more than the daemon buffers for
    // one connection (1 MiB) plus what both sockets hold, so the flooder
    // must end up blocked in its write, the daemon refusing to read more.
    const REQUESTS: u64 = 100_000;
    let flood: Vec<u8> = (1..=REQUESTS).flat_map(|i| echo_line(i, "flood").into_bytes()).collect();
    let total = flood.len();
    let flooder = connect(&d);
    flooder.set_write_timeout(None).unwrap();
    let written = Arc::new(Progress::default());
    let thread = {
        let written = Arc::clone(&written);
        let mut s = flooder.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut at = 0;
            while at < flood.len() {
                match s.write(&flood[at..(at + 64 * 1024).min(flood.len())]) {
                    Ok(n) => at += n,
                    Err(_) => break, // the daemon is gone: the test is over
                }
                written.set(at);
            }
        })
    };
    // Once a megabyte went in, the daemon has been answering the flood for a
    // while; the answers to it (about 600 KiB) still fit its buffers, so it
    // got that far for sure.
    written.wait_until("the daemon to take 1 MiB of the flood", DEADLINE, |n, _| n >= 1 << 20);
    for i in 0..3 {
        assert_echoes(&d, &format!("fresh {i}"));
    }
    assert!(written.get() < total, "the daemon took the whole flood: its buffer is unbounded");
    assert!(alive(d.pid()));
    // Ending the daemon ends the flooder's write.
    d.signal(libc::SIGKILL);
    d.wait_exit(DEADLINE);
    thread.join().unwrap();
}

#[test]
fn a_slow_reader_does_not_stall_other_clients_and_gets_everything() {
    let dir = TempDir::new("stall-slow");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    // 1000 answers of 4 KiB: 4 MiB, more than the daemon sends at once.
    let message = "s".repeat(4096);
    let (s, mut r) = connect_lines(&d);
    let requests: String = (1..=1000).map(|i| echo_line(i, &message)).collect();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(requests.as_bytes()).unwrap())
    };
    // Read a little at a time, serving a fresh client between sips.
    let mut got = Vec::new();
    for i in 0..20 {
        let mut sip = [0u8; 100];
        r.read_exact(&mut sip).unwrap();
        got.extend_from_slice(&sip);
        assert_echoes(&d, &format!("between sips {i}"));
    }
    // Then the rest, whole and in order.
    let mut rest = String::from_utf8(got).unwrap();
    for i in 1..=1000 {
        if i > 1 || !rest.ends_with('\n') {
            r.read_line(&mut rest).unwrap();
        }
        assert_eq!(rest, echo_answer(i, &message), "answer {i}");
        rest.clear();
    }
    writer.join().unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_until_closed(&mut r).is_empty());
}

#[test]
fn max_connections_holds_the_next_client_in_the_backlog_until_a_slot_frees() {
    let dir = TempDir::new("stall-maxconn");
    let d = Daemon::start(&dir, ECHO, &["--max-connections", "2"], &[]);
    // Two connections, each answered once so that the daemon surely
    // accepted them, then held idle.
    let (mut a, mut ra) = connect_lines(&d);
    let (mut b, mut rb) = connect_lines(&d);
    for (s, r, id) in [(&mut a, &mut ra, 1), (&mut b, &mut rb, 2)] {
        s.write_all(echo_line(id, "held").as_bytes()).unwrap();
        assert_eq!(read_line(r), echo_answer(id, "held"));
    }
    // The third connects (the kernel queues it) and sends its request.
    let (mut c, mut rc) = connect_lines(&d);
    c.write_all(echo_line(3, "third").as_bytes()).unwrap();
    // Not before: each round trip on `a` is a turn of the daemon's loop after
    // the third connected. A daemon that accepted it in one turn would have
    // read and answered it by the next.
    for id in 10..13 {
        a.write_all(echo_line(id, "turn").as_bytes()).unwrap();
        assert_eq!(read_line(&mut ra), echo_answer(id, "turn"));
    }
    c.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match c.read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the third client was answered while two connections were held: {other:?}"),
    }
    c.set_nonblocking(false).unwrap();
    // After: closing one frees a slot, and the third gets its answer.
    drop((a, ra));
    assert_eq!(read_line(&mut rc), echo_answer(3, "third"));
    // `b` was held the whole time and is still served.
    b.write_all(echo_line(4, "b").as_bytes()).unwrap();
    assert_eq!(read_line(&mut rb), echo_answer(4, "b"));
}

#[test]
fn socket_timeout_closes_an_idle_connection() {
    let dir = TempDir::new("stall-idle");
    let d = Daemon::start(&dir, ECHO, &["--socket-timeout", "1"], &[]);
    let (mut s, mut r) = connect_lines(&d);
    s.write_all(echo_line(1, "before").as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), echo_answer(1, "before"));
    // Idle from here: the daemon closes it after a second, well within the
    // read timeout of `DEADLINE`.
    let mut buf = [0u8; 16];
    assert_eq!(r.read(&mut buf).expect("end of stream before the deadline"), 0);
    // A silent connection, never used, is closed too.
    let mut silent = connect(&d);
    assert_eq!(silent.read(&mut buf).expect("end of stream before the deadline"), 0);
    assert_echoes(&d, "after");
}

// 6. malformed and over-limit input

#[test]
fn invalid_json_line_is_answered_with_a_parse_error_then_closed() {
    let dir = TempDir::new("bad-json");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let (mut other, mut other_r) = connect_lines(&d);
    other.write_all(echo_line(1, "first").as_bytes()).unwrap();
    assert_eq!(read_line(&mut other_r), echo_answer(1, "first"));

    let (mut s, mut r) = connect_lines(&d);
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n").unwrap();
    let answer: Value = serde_json::from_str(&read_line(&mut r)).unwrap();
    assert_eq!(answer["error"]["code"], json!(-32700), "{answer}");
    assert_eq!(answer["id"], Value::Null, "{answer}");
    assert!(read_until_closed(&mut r).is_empty(), "nothing after the parse error");

    // The connection opened before is still served.
    other.write_all(echo_line(2, "second").as_bytes()).unwrap();
    assert_eq!(read_line(&mut other_r), echo_answer(2, "second"));
}

#[test]
fn over_limit_line_is_refused_then_closed() {
    let dir = TempDir::new("bad-size");
    let d = Daemon::start(&dir, ECHO, &["--max-request", "1024"], &[]);
    // A line of exactly the limit passes; one byte more does not.
    let fits = "k".repeat(1024 - (echo_line(1, "").len() - 1));
    assert_eq!(echo_line(1, &fits).len(), 1024 + 1);
    check_lines(&d, &echo_line(1, &fits), &[echo_answer(1, &fits).trim_end()]);
    let (mut s, mut r) = connect_lines(&d);
    s.write_all(echo_line(1, &format!("{fits}k")).as_bytes()).unwrap();
    assert!(read_line(&mut r).contains("request too large: over 1024 bytes"));
    assert!(read_until_closed(&mut r).is_empty(), "nothing after the refusal");
    let (mut s, mut r) = connect_lines(&d);
    s.write_all(echo_line(2, &"x".repeat(4096)).as_bytes()).unwrap();
    let answer: Value = serde_json::from_str(&read_line(&mut r)).unwrap();
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "request too large: over 1024 bytes"}, "id": null})
    );
    assert!(read_until_closed(&mut r).is_empty(), "nothing after the refusal");
    // Over HTTP the same limit is a 413.
    let (mut s, mut r) = connect_lines(&d);
    s.write_all(post(&echo_line(3, &"x".repeat(4096))).as_bytes()).unwrap();
    let refused = read_response(&mut r);
    assert_eq!((refused.status, refused.header("connection")), (413, Some("close")));
    assert!(read_until_closed(&mut r).is_empty());
    assert_echoes(&d, "others still served");
}

#[test]
fn garbage_bytes_leave_the_daemon_up_for_others() {
    let dir = TempDir::new("bad-garbage");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let body = garbage(64 * 1024, 4);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let no_newline = garbage(64 * 1024, 2).into_iter().map(|b| if b == b'\n' { 0 } else { b }).collect();
    // (name, bytes, how the answer starts)
    let flavours: [(&str, Vec<u8>, &str); 4] = [
        // The first line is no JSON: a parse error, and the connection ends.
        ("random", garbage(64 * 1024, 1), r#"{"jsonrpc":"2.0","error":{"code":-32700,"#),
        // Never a whole line: dropped at end of stream, unanswered.
        ("random without newline", no_newline, ""),
        ("http head then random", [b"POST / HTTP/1.1\r\n".to_vec(), garbage(64 * 1024, 3)].concat(), "HTTP/1.1 400 "),
        // The body is delimited: its parse error is an ordinary answer.
        ("http body of random", [head.into_bytes(), body].concat(), "HTTP/1.1 200 OK\r\n"),
    ];
    for (name, bytes, answer) in flavours {
        let (mut s, mut r) = connect_lines(&d);
        // The daemon may close before taking it all: a failed write is fine.
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let got = String::from_utf8_lossy(&read_until_closed(&mut r)).into_owned();
        assert!(got.starts_with(answer), "{name}: answered {got:?}");
        assert_eq!(got.is_empty(), answer.is_empty(), "{name}: answered {got:?}");
        if name == "http body of random" {
            assert!(got.contains(r#""error":{"code":-32700,"#), "{name}: answered {got:?}");
        }
        assert!(alive(d.pid()), "the daemon died of {name} garbage:\n{}", d.log());
        assert_echoes(&d, name);
    }
}

// 7, 8. the socket file

#[test]
fn unix_socket_file_has_mode_0600() {
    let dir = TempDir::new("socket-mode");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let meta = std::fs::metadata(socket_path(&d)).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn a_second_daemon_on_the_same_socket_fails_and_leaves_the_first_alone() {
    let dir = TempDir::new("socket-second");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let out = Command::new(bin(ECHO))
        .args(["-f", "--socket", &d.socket.to_string(), "--pidfile"])
        .arg(dir.join("second.pid"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // In the foreground the log (on stderr too) may say it first; the last
    // line is the binary's own one-line message.
    let err = stderr(&out);
    assert_eq!(err.lines().last(), Some(format!("error: bind {}: another daemon answers there", d.socket).as_str()));
    assert!(!dir.join("second.pid").exists(), "the second daemon left its pid file behind");
    assert!(socket_path(&d).exists(), "the second daemon removed the first one's socket");
    assert!(alive(d.pid()));
    assert_echoes(&d, "first unharmed");
}

// The loop with a deferred answer owed

/// The clock ticks of CPU a process has used so far (user and system).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The most CPU ticks a daemon with nothing to do may use while one idle
/// connection times out. A loop that does not spin wakes a handful of times
/// (accept, the timeout, close) and uses well under one tick; one that
/// spins through the one-second socket timeout uses the whole of it, a
/// hundred ticks at the usual `CLK_TCK` of 100, and still dozens on a
/// machine so loaded that it gets a fraction of a core. The bound is a
/// count, not a share of the time the wait took.
const IDLE_TICKS: u64 = 10;

/// Continues a stopped process when dropped, so that a failing test does
/// not leave it stopped (a stopped worker would outlive its daemon).
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        // Safety: signals a worker of the test's own daemon.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let state = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        wait_until("the worker to stop", DEADLINE, || {
            state().rsplit_once(')').is_some_and(|(_, s)| s.starts_with(" T"))
        });
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Safety: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A fresh connection that sends nothing is closed by the socket timeout.
fn assert_closed_when_idle(d: &Daemon) {
    let mut s = connect(d);
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).expect("end of stream before the deadline"), 0);
}

#[test]
fn a_deferred_answer_owed_past_the_socket_timeout_does_not_spin_the_loop() {
    let dir = TempDir::new("deferred-idle");
    let d = Daemon::start(&dir, "copy-daemon", &["--socket-timeout", "1"], &[]);
    let mut worker = 0;
    wait_until("the worker to run", DEADLINE, || {
        let list = d.call("worker.list", Value::Null).unwrap();
        worker = list[0]["pid"].as_i64().unwrap_or(0) as i32;
        worker > 0
    });
    // A stopped worker never answers: the call stays deferred.
    let frozen = Frozen::new(worker);
    let (mut s, mut r) = connect_lines(&d);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "handyman.changename", "params": {"name": "x"}});
    s.write_all(format!("{call}\n").as_bytes()).unwrap();
    // Once a connection opened after the call was closed as idle, the
    // call's own connection is past its socket timeout too; it is not
    // closed (an answer is owed), and it must not turn the loop into a spin
    // either: measure the daemon's CPU while the next idle one times out.
    assert_closed_when_idle(&d);
    let ticks = cpu_ticks(d.pid());
    assert_closed_when_idle(&d);
    let used = cpu_ticks(d.pid()) - ticks;
    assert!(used <= IDLE_TICKS, "the daemon used {used} ticks of CPU over a socket timeout, an answer owed");
    // The answer still arrives, on the connection that waited for it.
    drop(frozen);
    let answer: Value = serde_json::from_str(&read_line(&mut r)).unwrap();
    assert_eq!(answer, json!({"jsonrpc": "2.0", "result": {"old": "handyman", "new": "x"}, "id": 1}));
}

// Out of descriptors

#[test]
fn running_out_of_descriptors_does_not_spin_the_loop_and_accepting_resumes() {
    let dir = TempDir::new("emfile");
    // The daemon may hold 64 descriptors (the test keeps its own limit).
    let socket = Address::Unix(dir.join("d.sock"));
    let pid_file = dir.join("d.pid");
    let mut cmd = Command::new(bin(ECHO));
    cmd.args(["-f", "-v", "--socket", &socket.to_string(), "--pidfile"])
        .arg(&pid_file)
        .args(["--max-connections", "1000", "--socket-timeout", "1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .process_group(0);
    // Safety: setrlimit is async-signal-safe, as a pre_exec closure must be.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut d = Daemon { child: cmd.spawn().unwrap(), socket, pid_file, dir: dir.path().to_path_buf() };
    d.wait_answering();

    // More connections than descriptors: the kernel queues the ones the
    // daemon cannot accept. The last one sends its request from the queue.
    let mut held: Vec<UnixStream> = (0..99).map(|_| connect(&d)).collect();
    let (mut last, mut last_r) = connect_lines(&d);
    last.write_all(echo_line(1, "from the backlog").as_bytes()).unwrap();
    wait_until("the daemon to run out of descriptors", DEADLINE, || d.log().contains("accept: "));

    // Out of descriptors the listener stays readable. Until the socket
    // timeout closes the first connection (and frees descriptors), the
    // daemon must wait, not retry in a spin.
    let ticks = cpu_ticks(d.pid());
    let mut buf = [0u8; 16];
    assert_eq!(held[0].read(&mut buf).expect("end of stream before the deadline"), 0);
    let used = cpu_ticks(d.pid()) - ticks;
    assert!(used <= IDLE_TICKS, "the daemon used {used} ticks of CPU over a socket timeout, out of descriptors");
    // With descriptors free again, the queued connection is served.
    assert_eq!(read_line(&mut last_r), echo_answer(1, "from the backlog"));
    held.clear();
    assert_echoes(&d, "after");
}
