//! Who may call, and how much: the browser defences, the token, and the
//! bounds on batches and answers, as transcripts (`-->` sent, `<--` got).

use std::rc::Rc;

use super::test_rig::{check_with, post, Harness};
use super::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn with_token() -> Harness {
    let policy = Policy { token: Some(TOKEN.into()), ..Policy::default() };
    Harness::with_access(Limits::default(), Access { policy: Rc::new(policy), peer: "127.0.0.1:4000".into() })
}

fn open() -> Harness {
    let policy = Policy {
        allowed_hosts: vec!["forkd.internal".into()],
        allowed_origins: vec!["https://console.example".into()],
        ..Policy::default()
    };
    Harness::with_access(Limits::default(), Access { policy: Rc::new(policy), peer: "pid 1 uid 0 gid 0".into() })
}

fn request(head: &str, body: &str) -> Vec<u8> {
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

const CALL: &str = r#"{"jsonrpc":"2.0","method":"my.echo","params":{"message":"hi"},"id":1}"#;

#[test]
fn forged_browser_requests_run_nothing() {
    let form = "message=hi";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("415 text/plain", post("text/plain", CALL)),
        ("415 a form", post("application/x-www-form-urlencoded", form)),
        ("415 multipart", post("multipart/form-data; boundary=x", CALL)),
        ("415 no content type", request("POST / HTTP/1.1\r\nHost: localhost\r\n", CALL)),
        (
            "403 a foreign origin",
            request("POST / HTTP/1.1\r\nHost: 127.0.0.1:10042\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\n", CALL),
        ),
        ("403 the null origin", request("POST / HTTP/1.1\r\nHost: localhost\r\nOrigin: null\r\nContent-Type: application/json\r\n", CALL)),
        (
            "200 an allowed origin",
            request(
                "POST / HTTP/1.1\r\nHost: localhost\r\nOrigin: https://console.example\r\nContent-Type: application/json\r\n",
                CALL,
            ),
        ),
        (
            "421 a rebinding host",
            request("POST / HTTP/1.1\r\nHost: attacker.example\r\nContent-Type: application/json\r\n", CALL),
        ),
        ("421 on health too", b"GET /health HTTP/1.1\r\nHost: attacker.example:10042\r\n\r\n".to_vec()),
        ("400 HTTP/1.1 without a host", request("POST / HTTP/1.1\r\nContent-Type: application/json\r\n", CALL)),
        ("400 two hosts", b"GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n".to_vec()),
        ("200 an allowed name", request("POST / HTTP/1.1\r\nHost: forkd.internal:80\r\nContent-Type: application/json\r\n", CALL)),
        ("200 IPv6 literal", request("POST / HTTP/1.1\r\nHost: [::1]:10042\r\nContent-Type: application/json; charset=utf-8\r\n", CALL)),
        ("404 another path", request("POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n", CALL)),
        ("400 two content types", request("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n", CALL)),
        ("421 a port out of range", request("POST / HTTP/1.1\r\nHost: 127.0.0.1:99999\r\nContent-Type: application/json\r\n", CALL)),
        ("417 an expectation other than 100-continue", request("POST / HTTP/1.1\r\nHost: localhost\r\nExpect: foo\r\nContent-Type: application/json\r\n", CALL)),
        ("405 a preflight", b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n".to_vec()),
        (
            "200 the daemon's own page, its origin its Host",
            request("POST / HTTP/1.1\r\nHost: 127.0.0.1:10042\r\nOrigin: http://127.0.0.1:10042\r\nContent-Type: application/json\r\n", CALL),
        ),
        (
            "403 another port of the same host",
            request("POST / HTTP/1.1\r\nHost: 127.0.0.1:10042\r\nOrigin: http://127.0.0.1:8080\r\nContent-Type: application/json\r\n", CALL),
        ),
        ("403 events read by a foreign origin", b"GET /events HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n".to_vec()),
        ("421 metrics by a rebinding host", b"GET /metrics HTTP/1.1\r\nHost: attacker.example\r\n\r\n".to_vec()),
        ("421 the page by a rebinding host", b"GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n".to_vec()),
        ("404 an unknown page", b"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    insta::assert_snapshot!(check_with(&open, &cases));
}

#[test]
fn http_wants_the_token() {
    let basic = |user_pass: &str| {
        // base64 of "forkd:TOKEN" and friends, by hand.
        let b64 = base64(user_pass.as_bytes());
        request(&format!("POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {b64}\r\nContent-Type: application/json\r\n"), CALL)
    };
    let bearer = |token: &str| {
        request(&format!("POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"), CALL)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("401 no token", post("application/json", CALL)),
        ("401 a wrong token", bearer(&TOKEN.replace('0', "1"))),
        ("401 a prefix of the token", bearer(&TOKEN[..63])),
        ("200 bearer", bearer(TOKEN)),
        ("200 basic, the token as the password", basic(&format!("forkd:{TOKEN}"))),
        ("401 basic, the token as the user", basic(&format!("{TOKEN}:x"))),
        ("200 health needs no token", b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("401 metrics want the token", b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("401 events want the token", b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        (
            "404 metrics with the token reach the method (this registry has none)",
            format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").into_bytes(),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    insta::assert_snapshot!(check_with(&with_token, &cases));
}

#[test]
fn ndjson_authenticates_first() {
    let auth = |token: &str| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.authenticate\",\"params\":{{\"token\":\"{token}\"}},\"id\":0}}\n"
        )
    };
    let call = format!("{CALL}\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a call before authenticating is refused", call.clone().into_bytes()),
        ("the token, then the call", format!("{}{call}", auth(TOKEN)).into_bytes()),
        (
            "the token by position",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.authenticate\",\"params\":[\"{TOKEN}\"],\"id\":0}}\n{call}"
            )
            .into_bytes(),
        ),
        ("a wrong token, then the call", format!("{}{call}", auth("nope")).into_bytes()),
        ("three refusals close the connection", format!("{call}{}{call}{call}", auth("nope")).into_bytes()),
        (
            "a notification before authenticating runs nothing",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.notify\",\"params\":[\"x\"]}\n".to_vec(),
        ),
        (
            "in a batch, the calls after the token run",
            format!("[{CALL},{},{CALL}]\n", auth(TOKEN).trim_end()).into_bytes(),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    insta::assert_snapshot!(check_with(&with_token, &cases));
}

#[test]
fn unix_connections_need_no_token() {
    let mut h = open();
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.authenticate\",\"params\":[\"anything\"],\"id\":0}\n");
    h.feed(format!("{CALL}\n").as_bytes());
    insta::assert_snapshot!(h.transcript(), @r#"
    <-- {"jsonrpc":"2.0","result":true,"id":0}\n
    <-- {"jsonrpc":"2.0","result":"hi","id":1}\n
    [open]
    "#);
}

#[test]
fn batches_and_answers_are_bounded() {
    let limits = Limits { max_batch: 3, max_output: 200, max_values: 20, ..Limits::default() };
    let make = move || Harness::with_access(limits.clone(), Access::default());
    let echo = |n: usize, text: &str| {
        format!(r#"{{"jsonrpc":"2.0","method":"my.echo","params":{{"message":"{text}"}},"id":{n}}}"#)
    };
    let long = "x".repeat(120);
    let deep = format!("{}\n", "[".repeat(30) + &"]".repeat(30));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a batch of three runs", format!("[{},{},{}]\n", echo(1, "a"), echo(2, "b"), echo(3, "c")).into_bytes()),
        (
            "a batch of four runs nothing",
            format!("[{},{},{},{}]\n", echo(1, "a"), echo(2, "b"), echo(3, "c"), echo(4, "d")).into_bytes(),
        ),
        ("[1,1,1,1] is a batch too", b"[1,1,1,1]\n".to_vec()),
        ("too many values is refused before parsing", deep.into_bytes()),
        ("one answer over the bound is an error", format!("{}\n", echo(1, &"x".repeat(300))).into_bytes()),
        (
            "the batch stops where its answer passes the bound",
            format!("[{},{},{}]\n", echo(1, &long), echo(2, &long), echo(3, "c")).into_bytes(),
        ),
    ];
    let cases: Vec<(&str, &[u8])> = cases.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    insta::assert_snapshot!(check_with(&make, &cases));
}

#[test]
fn slow_requests_time_out() {
    let mut h = with_token();
    h.feed(b"POST / HTTP/1.1\r\nHost: loc");
    assert!(h.conn.in_request());
    h.conn.handle_request_timeout();
    let mut nd = open();
    nd.feed(b"{\"jsonrpc\":");
    assert!(nd.conn.in_request());
    nd.conn.handle_request_timeout();
    let mut idle = open();
    assert!(!idle.conn.in_request(), "a connection that sent nothing is idle, not in a request");
    idle.feed(format!("{CALL}\n").as_bytes());
    assert!(!idle.conn.in_request(), "a whole request is no longer arriving");
    insta::assert_snapshot!(format!("### http\n{}### ndjson\n{}", h.transcript(), nd.transcript()));
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_request_without_the_token_arriving_in_pieces_is_answered_401() {
    // Its head is checked again at each read of its body: the refusal is
    // counted once, when answered, or the connection would close unanswered
    // after the third read.
    let policy = Policy { token: Some(TOKEN.into()), ..Policy::default() };
    let access = Access { policy: Rc::new(policy), peer: "127.0.0.1:4000".into() };
    let mut conn = Conn::with_access(Limits::default(), access);
    let mut ran = false;
    for byte in post("application/json", CALL) {
        conn.handle_bytes(&[byte], &mut |_, _| {
            ran = true;
            Reply::Value(Value::Bool(true))
        });
    }
    assert!(!ran, "a call without the token ran");
    let out = String::from_utf8_lossy(conn.output()).into_owned();
    assert!(out.starts_with("HTTP/1.1 401"), "got {out:?}");
}
