//! The event stream on real daemons: `GET /events` (Server-Sent Events),
//! `daemon.subscribe` on newline-delimited JSON and the binary's `events`
//! command all see a killed worker's exit, then its restart, in order; a
//! subscriber that never reads is dropped with a notice while the others
//! get every event.
//!
//! Each subscriber reads on a thread of its own into a channel; the test
//! waits on the channels with deadlines.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use forkd_tests::{bin, wait_until, Daemon, TempDir, DEADLINE};
use serde_json::{json, Value};

/// Reads `lines` on a thread, sending each event it finds (parsed by
/// `event`) to the channel.
fn pump(lines: impl BufRead + Send + 'static, event: fn(&str) -> Option<Value>) -> Receiver<Value> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { break };
            if let Some(e) = event(&line) {
                if tx.send(e).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn sse_event(line: &str) -> Option<Value> {
    serde_json::from_str(line.strip_prefix("data: ")?).ok()
}

fn json_event(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// Opens `GET /events` on the daemon's unix socket; returns once the
/// answer's head has come, so the stream is open.
fn sse(d: &Daemon) -> Receiver<Value> {
    let forkd_os::Address::Unix(path) = &d.socket else { panic!("a unix daemon") };
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "GET /events answered {status}");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if header.to_ascii_lowercase().starts_with("content-type:") {
            assert!(header.contains("text/event-stream"), "{header}");
        }
    }
    pump(reader, sse_event)
}

/// Takes events from `rx` until one matches `want`, returning all taken.
fn until(rx: &Receiver<Value>, what: &str, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => {
                let done = want(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no {what} within {DEADLINE:?}; seen: {seen:?}"),
        }
    }
}

fn is(e: &Value, kind: &str) -> bool {
    e["type"] == kind && e["worker"] == "idle" && e["instance"] == 0
}

#[test]
fn every_kind_of_subscriber_sees_a_killed_worker_exit_then_restart() {
    let dir = TempDir::new("events-kill");
    let d = Daemon::start(&dir, "pool-daemon", &[], &[("POOL_SIZE", "1"), ("POOL_LOOPTIME_MS", "100")]);
    let list = d.call("worker.list", Value::Null).unwrap();
    let pid = list[0]["pid"].as_i64().expect("a running worker") as i32;

    let ndjson = d.client().subscribe().expect("subscribe");
    let (tx, from_ndjson) = channel();
    std::thread::spawn(move || {
        for e in ndjson.flatten() {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    let from_sse = sse(&d);
    let mut tail = Command::new(bin("pool-daemon"))
        .args(["--socket", &d.socket.to_string(), "events", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let from_tail = pump(BufReader::new(tail.stdout.take().unwrap()), json_event);
    // The tail is subscribed once a custom event raised after its start
    // reaches it: a signal to the daemon is one.
    wait_until("the events command to subscribe", DEADLINE, || {
        d.signal(libc::SIGWINCH);
        from_tail.recv_timeout(std::time::Duration::from_millis(200)).is_ok_and(|e| e["signal"] == "SIGWINCH")
    });

    // Safety: kill the daemon's worker process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for (name, rx) in [("ndjson", &from_ndjson), ("sse", &from_sse), ("events command", &from_tail)] {
        let seen = until(rx, "restart", |e| is(e, "worker.restarted"));
        let exit = seen.iter().find(|e| is(e, "worker.exited")).unwrap_or_else(|| panic!("{name}: no exit: {seen:?}"));
        assert_eq!(exit["data"], json!({"signal": "SIGKILL", "reason": "signal"}), "{name}");
        let restart = seen.last().unwrap();
        assert!(exit["seq"].as_u64() < restart["seq"].as_u64(), "{name}: exit before restart: {seen:?}");
        let seqs: Vec<u64> = seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name}: in order: {seqs:?}");
    }
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_and_the_others_get_every_event() {
    let dir = TempDir::new("events-drop");
    let d = Daemon::start(&dir, "probe-daemon", &[], &[("PROBE_EVENT_BUFFER", "16384")]);
    let reader = d.client().subscribe().expect("subscribe");
    let (tx, from_reader) = channel();
    std::thread::spawn(move || {
        for e in reader.flatten() {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    let forkd_os::Address::Unix(path) = &d.socket else { panic!("a unix daemon") };
    let mut stuck = UnixStream::connect(path).unwrap();
    stuck.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.subscribe\",\"id\":1}\n").unwrap();

    // Bursts of 100 events (about 10 KiB, within the bound even unsent)
    // until the one that never reads is dropped.
    let mut client = d.client();
    let mut sent = 0;
    let dropped = |c: &mut forkd::Client| {
        let text = c.call("daemon.metrics", Value::Null).unwrap();
        text.as_str().unwrap().contains("forkd_event_subscribers_dropped_total 1\n")
    };
    while !dropped(&mut client) {
        assert!(sent < 200_000, "the subscriber that never reads was not dropped:\n{}", d.log());
        client.call("test.emit", json!({"count": 100, "from": sent})).unwrap();
        sent += 100;
    }
    client.call("test.emit", json!({"count": 100, "from": sent})).unwrap();
    sent += 100;

    let bursts = until(&from_reader, "the last event", |e| e["data"]["n"] == sent - 1);
    let numbers: Vec<i64> =
        bursts.iter().filter(|e| e["name"] == "test.burst").map(|e| e["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (0..sent).collect::<Vec<_>>(), "the reader got every event, in order");

    // The one that never read gets what it had not read, the notice, then
    // the end of the stream.
    let mut rest = String::new();
    stuck.read_to_string(&mut rest).expect("read until the daemon closes");
    let last = rest.lines().last().expect("something was sent");
    let notice: Value = serde_json::from_str(last).unwrap();
    assert_eq!(notice["params"]["type"], "stream.dropped", "{last}");
    let got = rest.lines().filter(|l| l.contains("test.burst")).count() as i64;
    assert!(got < sent, "it was dropped before the end: {got} of {sent}");
    assert!(d.log().contains("dropping event subscriber"), "{}", d.log());
}

/// Followers of the event stream get at most half the connection slots:
/// past that, `GET /events` is answered 503 and `daemon.subscribe` an
/// error, and `status` and `/health` are still answered.
#[test]
fn subscribers_cannot_take_the_slots_calls_need() {
    let dir = TempDir::new("events-cap");
    // The default ten slots: five for followers.
    let d = Daemon::start(&dir, "pool-daemon", &[], &[("POOL_SIZE", "1")]);
    let followers: Vec<Receiver<Value>> = (0..5).map(|_| sse(&d)).collect();
    let forkd_os::Address::Unix(path) = &d.socket else { panic!("a unix daemon") };
    let mut sixth = UnixStream::connect(path).unwrap();
    sixth.set_read_timeout(Some(DEADLINE)).unwrap();
    sixth.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut status = String::new();
    BufReader::new(&sixth).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 503"), "a sixth follower got {status}");
    let refused = d.client().call("daemon.subscribe", ()).expect_err("a sixth subscription");
    assert!(refused.to_string().contains("too many event subscribers"), "{refused}");
    // Calls still get their slots.
    let info = d.client().call("daemon.info", ()).expect("daemon.info beside five followers");
    assert_eq!(info["pid"].as_i64(), Some(i64::from(d.pid())));
    let status = d.control("pool-daemon", &["status"]);
    assert!(status.status.success(), "{status:?}");
    drop(followers);
}
