//! A connection drained for a handover to a new master: what it had read
//! is answered, nothing more is read, HTTP says `Connection: close`, and it
//! closes once what it owes is sent.

use super::test_rig::*;
use super::*;

#[test]
fn a_drained_http_connection_answers_its_deferred_call_with_connection_close() {
    let mut h = Harness::new();
    h.feed(&post("application/json", r#"{"jsonrpc":"2.0","method":"test.defer","id":7}"#));
    h.conn.drain();
    assert!(h.conn.is_draining() && h.conn.is_closing() && !h.conn.wants_read());
    assert!(!h.conn.should_close(), "the deferred answer is owed");
    h.feed(&post("application/json", r#"{"jsonrpc":"2.0","method":"get_data","id":8}"#));
    h.complete(0, Ok(Value::from(42)));
    let out = String::from_utf8(h.take()).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("Connection: close\r\n"), "{out}");
    assert!(out.ends_with(r#"{"jsonrpc":"2.0","result":42,"id":7}"#), "only the call it had read: {out}");
    assert!(h.conn.should_close());
}

#[test]
fn a_drained_ndjson_connection_answers_the_lines_it_had_buffered_then_closes() {
    let mut h = Harness::with_limits(Limits { max_pending: 1, ..Limits::default() });
    // The second line waits behind the deferred first one (one answer owed
    // at most), unparsed, when the drain comes.
    h.feed(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":1}\n\
          {\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"buffered\"],\"id\":2}\n\
          {\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"incompl",
    );
    h.conn.drain();
    h.complete(0, Ok(Value::from("deferred")));
    let out = String::from_utf8(h.take()).unwrap();
    assert_eq!(
        out,
        "{\"jsonrpc\":\"2.0\",\"result\":\"deferred\",\"id\":1}\n{\"jsonrpc\":\"2.0\",\"result\":\"buffered\",\"id\":2}\n",
        "the buffered line is answered, the incomplete one dropped"
    );
    assert!(h.conn.should_close());
}
