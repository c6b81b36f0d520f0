//! The event stream on one connection: when events begin, how they are
//! framed, and how a subscriber that does not keep up is dropped.

use std::rc::Rc;

use super::test_rig::Harness;
use super::*;

fn event(n: u64) -> EventFrame {
    EventFrame::new(n, &serde_json::json!({ "type": "custom", "seq": n }))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sse_events_follow_the_head_and_nothing_is_read_after_it() {
    let mut h = Harness::new();
    assert_eq!(h.conn.push_event(&event(1), 1 << 16), Pushed::Skipped, "not a subscriber yet");
    h.feed(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(h.conn.is_subscriber());
    assert_eq!(h.conn.push_event(&event(2), 1 << 16), Pushed::Queued);
    let out = text(&h.take());
    assert!(out.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"), "{out}");
    assert!(!out.contains("Content-Length"), "a stream has no length: {out}");
    assert!(out.ends_with("\r\n\r\nid: 2\ndata: {\"seq\":2,\"type\":\"custom\"}\n\n"), "{out}");
    assert!(!out.contains("\"status\""), "the request after the stream's is not answered: {out}");
    assert!(h.conn.wants_read() && !h.conn.is_closing(), "still read, to see the hangup");
    h.conn.handle_eof();
    assert!(h.conn.should_close());
}

#[test]
fn ndjson_subscribes_with_a_call_and_gets_notifications() {
    let mut h = Harness::new();
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.subscribe\",\"id\":7}\n");
    assert_eq!(h.conn.push_event(&event(1), 1 << 16), Pushed::Queued);
    let out = text(&h.take());
    assert_eq!(
        out,
        "{\"jsonrpc\":\"2.0\",\"result\":{\"subscribed\":true},\"id\":7}\n\
         {\"jsonrpc\":\"2.0\",\"method\":\"daemon.event\",\"params\":{\"seq\":1,\"type\":\"custom\"}}\n"
    );
}

#[test]
fn subscribing_wants_the_token_on_tcp_and_ndjson_only() {
    let policy = Policy { token: Some("t".repeat(64)), ..Policy::default() };
    let access = Access { policy: Rc::new(policy), peer: "127.0.0.1:1".into() };
    let mut h = Harness::with_access(Limits::default(), access);
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.subscribe\",\"id\":1}\n");
    assert!(!h.conn.is_subscriber(), "not before rpc.authenticate");
    assert!(text(&h.take()).contains("-32006"));

    let mut h = Harness::new();
    let body = r#"{"jsonrpc":"2.0","method":"daemon.subscribe","id":1}"#;
    h.feed(&super::test_rig::post("application/json", body));
    assert!(!h.conn.is_subscriber());
    assert!(text(&h.take()).contains("GET /events"), "HTTP is told where its stream is");
}

#[test]
fn a_subscriber_past_its_bound_is_dropped_with_a_notice_then_closes() {
    let mut h = Harness::new();
    h.feed(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n");
    h.take();
    let one = event(1);
    let mut n = 0;
    while h.conn.output().len() < 1000 {
        assert_eq!(h.conn.push_event(&one, 4000), Pushed::Queued);
        n += 1;
    }
    assert!(!h.conn.drop_if_behind(4000), "within the bound");
    assert!(h.conn.drop_if_behind(999), "past it");
    assert_eq!(h.conn.push_event(&one, 4000), Pushed::Skipped, "nothing after the notice");
    assert!(h.conn.is_closing() && !h.conn.should_close(), "it closes once the notice is sent");
    let out = text(&h.take());
    assert_eq!(out.matches("id: 1\n").count(), n, "what it had not read stays");
    assert!(out.ends_with(
        "data: {\"reason\":\"the subscriber did not keep up with the events\",\"type\":\"stream.dropped\"}\n\n"
    ));
    assert!(h.conn.should_close());

    let mut h = Harness::new();
    h.feed(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n");
    h.take();
    let burst: Vec<Pushed> = (0..100).map(|_| h.conn.push_event(&one, 500)).collect();
    assert!(burst.contains(&Pushed::Dropped), "past the hard bound within one turn");
}
