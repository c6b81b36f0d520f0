//! The channel on a simulated region: round trips, the seqlock's torn-read
//! detection, and garbage that must come back as errors, never panics.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use forkd_os::{Instant, Region};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::layout::*;
use super::*;

fn region() -> Region {
    let buf: Arc<[AtomicU64]> = (0..WORDS).map(|_| AtomicU64::new(0)).collect();
    Region::from_buffer(buf, 1)
}

fn channel() -> Channel {
    Channel::create(region())
}

#[test]
fn a_fresh_channel_is_empty() {
    let c = channel();
    assert_eq!(c.state(), Ok(WorkerState::Spinup));
    assert_eq!(c.loops(), Ok(0));
    assert_eq!(c.heartbeat(), Ok(0));
    assert_eq!(c.last_error(), Ok(None));
    assert_eq!(c.take_reply(), Ok(None));
    assert_eq!(c.take_events(), Ok(vec![]));
    assert_eq!(c.read_command(), Ok(None));
    assert!(!c.command_pending() && !c.stop_pending());
}

#[test]
fn header_words_round_trip() {
    let c = channel();
    c.set_state(WorkerState::Paused);
    c.set_loops(41);
    c.beat(Instant::from_nanos(7_000));
    let daemon = Channel::attach(c.region().clone());
    assert_eq!(daemon.state(), Ok(WorkerState::Paused));
    assert_eq!(daemon.loops(), Ok(41));
    assert_eq!(daemon.heartbeat(), Ok(7_000));
}

#[test]
fn commands_and_replies_round_trip() {
    let c = channel();
    let seq = c.send_command(Command::Pause).unwrap();
    assert_eq!(seq, 1);
    assert!(c.command_pending());
    assert_eq!(c.read_command(), Ok(Some(PendingCommand { seq: 1, command: Ok(Command::Pause) })));
    c.write_reply(1, &Ok(Value::Null));
    assert!(!c.command_pending(), "an acknowledged command is no longer pending");
    assert_eq!(c.read_command(), Ok(None));
    assert_eq!(c.take_reply(), Ok(Some(Reply { seq: 1, result: Ok(Value::Null) })));
    assert_eq!(c.take_reply(), Ok(None), "a reply is taken once");

    let msg = json!({ "name": "ünïcode", "n": [1, 2, 3] });
    let seq = c.send_command(Command::Message(msg.clone())).unwrap();
    assert_eq!(seq, 2);
    assert_eq!(c.read_command(), Ok(Some(PendingCommand { seq: 2, command: Ok(Command::Message(msg)) })));
    c.write_reply(2, &Err("nope".into()));
    assert_eq!(c.take_reply(), Ok(Some(Reply { seq: 2, result: Err("nope".into()) })));

    c.send_command(Command::Stop).unwrap();
    assert!(c.stop_pending());
}

#[test]
fn one_command_in_flight_until_its_reply_is_taken() {
    let c = channel();
    c.send_command(Command::Resume).unwrap();
    assert_eq!(c.send_command(Command::Stop), Err(ChannelError::Busy { pending: 1 }));
    c.write_reply(1, &Ok(Value::Null));
    assert_eq!(
        c.send_command(Command::Stop),
        Err(ChannelError::Busy { pending: 1 }),
        "the reply must be taken before it can be overwritten"
    );
    c.take_reply().unwrap().unwrap();
    assert_eq!(c.send_command(Command::Stop), Ok(2));
}

#[test]
fn oversized_payloads_are_refused_or_replaced() {
    let c = channel();
    let big = Value::String("x".repeat(PAYLOAD_MAX));
    assert!(matches!(
        c.send_command(Command::Message(big.clone())),
        Err(ChannelError::TooLarge { max: PAYLOAD_MAX, .. })
    ));
    assert_eq!(c.send_command(Command::Pause), Ok(1), "a refused command leaves the mailbox free");
    c.write_reply(1, &Ok(big));
    let reply = c.take_reply().unwrap().unwrap();
    assert!(matches!(&reply.result, Err(e) if e.starts_with("reply of 2050 bytes over 2048")), "{reply:?}");
    assert!(matches!(
        c.push_event(&Value::String("y".repeat(EVENT_MAX))),
        Err(ChannelError::TooLarge { max: EVENT_MAX, .. })
    ));
}

#[test]
fn last_error_is_cut_on_a_character_boundary() {
    let c = channel();
    c.set_last_error("boom");
    assert_eq!(c.last_error(), Ok(Some("boom".into())));
    let long = "é".repeat(ERROR_MAX); // two bytes each
    c.set_last_error(&long);
    let got = c.last_error().unwrap().unwrap();
    assert_eq!(got.len(), ERROR_MAX);
    assert!(got.chars().all(|ch| ch == 'é'));
    let odd = format!("a{}", "é".repeat(ERROR_MAX));
    let got = c.last_error_after(&odd);
    assert_eq!(got.len(), ERROR_MAX - 1, "a character is never split");
}

impl Channel {
    fn last_error_after(&self, msg: &str) -> String {
        self.set_last_error(msg);
        self.last_error().unwrap().unwrap()
    }
}

#[test]
fn events_fill_the_ring_and_drain_in_order() {
    let c = channel();
    for i in 0..EVENT_SLOTS {
        c.push_event(&json!(i)).unwrap();
    }
    assert_eq!(c.push_event(&json!("one too many")), Err(ChannelError::Full));
    let all: Vec<Value> = (0..EVENT_SLOTS).map(|i| json!(i)).collect();
    assert_eq!(c.take_events(), Ok(all));
    assert_eq!(c.take_events(), Ok(vec![]));
    // Around the ring's end.
    for round in 0..3 {
        for i in 0..5 {
            c.push_event(&json!([round, i])).unwrap();
        }
        let got = c.take_events().unwrap();
        assert_eq!(got, (0..5).map(|i| json!([round, i])).collect::<Vec<_>>());
    }
}

#[test]
fn a_bad_event_is_reported_alone_and_skipped() {
    let c = channel();
    for i in 0..3 {
        c.push_event(&json!(i)).unwrap();
    }
    c.region().store(ev_slot(1), (EVENT_MAX + 1) as u64, Relaxed);
    assert_eq!(c.take_events(), Ok(vec![json!(0)]), "the events before it come first");
    assert!(matches!(c.take_events(), Err(ChannelError::BadLength { field: "event", .. })));
    assert_eq!(c.take_events(), Ok(vec![json!(2)]), "then the ones after it");
    c.push_event(&json!(3)).unwrap();
    c.region().write_bytes(byte(ev_slot(3) + 1), b"{");
    assert!(matches!(c.take_events(), Err(ChannelError::BadPayload(_))));
    assert_eq!(c.take_events(), Ok(vec![]));
}

#[test]
fn garbage_ring_counters_reset_the_ring() {
    let c = channel();
    c.region().store(S_EV_HEAD, 1_000, Relaxed);
    assert_eq!(c.take_events(), Err(ChannelError::Inconsistent("event ring")));
    assert_eq!(c.take_events(), Ok(vec![]));
    c.push_event(&json!("after")).unwrap();
    assert_eq!(c.take_events(), Ok(vec![json!("after")]));
}

#[test]
fn an_odd_version_reads_as_torn_after_bounded_retries() {
    let c = channel();
    c.send_command(Command::Pause).unwrap();
    c.write_reply(1, &Ok(Value::Null));
    c.set_last_error("x");
    // A writer that died mid-write: each version left odd.
    for ver in [CMD_VER, REP_VER, ERR_VER] {
        let v = c.region().load(ver, Relaxed);
        c.region().store(ver, v + 1, Relaxed);
    }
    assert_eq!(c.take_reply(), Err(ChannelError::Torn));
    assert_eq!(c.last_error(), Err(ChannelError::Torn));
    c.region().store(REP_SEQ, 0, Relaxed); // so that the command is pending again
    assert_eq!(c.read_command(), Err(ChannelError::Torn));
    assert!(!c.stop_pending(), "a torn mailbox holds no stop");
    // The next complete write makes it readable again.
    c.set_last_error("y");
    assert_eq!(c.last_error(), Ok(Some("y".into())));
}

#[test]
fn a_bad_header_fails_every_daemon_read() {
    let c = channel();
    c.region().store(S_MAGIC, 0xdead, Relaxed);
    assert_eq!(c.state(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.loops(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.heartbeat(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.last_error(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.take_reply(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.take_events(), Err(ChannelError::BadMagic(0xdead)));
    assert_eq!(c.send_command(Command::Stop), Err(ChannelError::BadMagic(0xdead)));
    c.region().store(S_MAGIC, MAGIC, Relaxed);
    c.region().store(S_VERSION, 99, Relaxed);
    assert_eq!(c.state(), Err(ChannelError::BadVersion(99)));
}

#[test]
fn unknown_words_are_errors() {
    let c = channel();
    c.region().store(S_STATE, 99, Relaxed);
    assert_eq!(c.state(), Err(ChannelError::BadState(99)));

    // A command kind nobody knows: the worker gets its sequence number, to
    // acknowledge it with an error.
    seqlock::write(c.region(), CMD_VER, |r| {
        r.store(CMD_SEQ, 1, Relaxed);
        r.store(CMD_KIND, 9, Relaxed);
    });
    assert_eq!(c.read_command(), Ok(Some(PendingCommand { seq: 1, command: Err(ChannelError::BadKind(9)) })));

    // A reply that was written but cannot be read is still a reply.
    seqlock::write(c.region(), REP_VER, |r| {
        r.store(REP_SEQ, 1, Relaxed);
        r.store(REP_RESULT, RESULT_OK, Relaxed);
        r.store(REP_LEN, 1, Relaxed);
        r.write_bytes(byte(REP_BYTES), b"{");
    });
    published_reply(&c);
    let reply = c.take_reply().unwrap().unwrap();
    assert_eq!(reply.seq, 1);
    assert!(matches!(&reply.result, Err(e) if e.starts_with("bad reply: bad payload")), "{reply:?}");

    c.send_command(Command::Pause).unwrap();
    seqlock::write(c.region(), REP_VER, |r| {
        r.store(REP_SEQ, 2, Relaxed);
        r.store(REP_RESULT, 5, Relaxed);
        r.store(REP_LEN, 0, Relaxed);
    });
    published_reply(&c);
    let reply = c.take_reply().unwrap().unwrap();
    assert_eq!(reply.result, Err("bad reply: unknown reply result 5".into()));

    // A reply to a command never sent.
    seqlock::write(c.region(), REP_VER, |r| r.store(REP_SEQ, 7, Relaxed));
    published_reply(&c);
    assert_eq!(c.take_reply(), Err(ChannelError::Inconsistent("reply sequence")));
    assert_eq!(c.send_command(Command::Stop), Err(ChannelError::Inconsistent("command sequence")));
}

/// Publishes the reply written by hand in the mailbox, as `write_reply`
/// does after its block: its number in the slot.
fn published_reply(c: &Channel) {
    c.region().store(S_REP_SEQ, c.region().load(REP_SEQ, Relaxed), Release);
}

#[test]
fn a_command_sequence_at_its_maximum_is_inconsistent() {
    // With every sequence word at u64::MAX the mailbox looks idle, and the
    // next sequence overflowed: a panic in the daemon from a scribbled
    // region (core/fuzz/regressions/channel/send_command_seq_at_max.patch).
    let c = channel();
    for w in [CMD_SEQ, REP_SEQ, S_REP_SEQ, S_REP_TAKEN] {
        c.region().store(w, u64::MAX, Relaxed);
    }
    assert_eq!(c.send_command(Command::Pause), Err(ChannelError::Inconsistent("command sequence")));
    assert_eq!(c.region().load(CMD_SEQ, Relaxed), u64::MAX);
}

/// Words that reach past the cheap checks: lengths near their bounds, small
/// kinds and states, sequence numbers close together, and anything at all.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, 0u64..(PAYLOAD_MAX as u64 + 16), Just(MAGIC), Just(VERSION), any::<u64>(),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn garbage_never_panics(words in prop::collection::vec(word(), WORDS), keep_header in any::<bool>()) {
        let c = channel();
        for (i, w) in words.iter().enumerate() {
            c.region().store(i, *w, Relaxed);
        }
        if keep_header {
            c.region().store(S_MAGIC, MAGIC, Relaxed);
            c.region().store(S_VERSION, VERSION, Relaxed);
        }
        // Daemon side.
        let _ = c.state();
        let _ = c.loops();
        let _ = c.heartbeat();
        let _ = c.last_error();
        let _ = c.take_reply();
        for _ in 0..=EVENT_SLOTS {
            let _ = c.take_events();
        }
        let _ = c.send_command(Command::Message(json!({ "k": "v" })));
        // Worker side.
        let _ = c.command_pending();
        let _ = c.stop_pending();
        let _ = c.read_command();
        c.write_reply(3, &Ok(json!([1, 2])));
        let _ = c.push_event(&json!("e"));
        c.set_last_error("after garbage");
        let valid = c.region().load(S_MAGIC, Relaxed) == MAGIC && c.region().load(S_VERSION, Relaxed) == VERSION;
        prop_assert!(valid || !keep_header);
        prop_assert_eq!(c.last_error().ok(), valid.then(|| Some("after garbage".to_string())));
    }
}

#[test]
fn a_channel_in_a_table_keeps_its_hot_words_in_its_slot_and_a_reused_slot_starts_afresh() {
    let words = Table::bytes(2) / 8;
    let table = Table::new(Region::from_buffer((0..words).map(|_| AtomicU64::new(0)).collect(), 1));
    assert_eq!(table.capacity(), 2);
    let region = || Region::from_buffer((0..REGION_SIZE / 8).map(|_| AtomicU64::new(0)).collect(), 2);
    let first = region();
    let c = Channel::create_in(first.clone(), table.slot(1));
    let worker = Channel::attach_in(first.clone(), table.slot(1));
    worker.set_state(WorkerState::Looping);
    worker.set_loops(7);
    worker.push_event(&json!({"n": 1})).unwrap();
    assert_eq!((c.state(), c.loops()), (Ok(WorkerState::Looping), Ok(7)));
    assert!((0..SLOT_WORDS).all(|w| first.load(w, Relaxed) == 0), "the region's own slot words stay unused");
    assert_eq!(c.take_events(), Ok(vec![json!({"n": 1})]));
    // The slot serves the next worker: everything of the last one is gone.
    let next = Channel::create_in(region(), table.slot(1));
    assert_eq!((next.state(), next.loops()), (Ok(WorkerState::Spinup), Ok(0)));
    assert_eq!(next.take_events(), Ok(vec![]));
    assert_eq!(next.take_reply(), Ok(None));
    assert_eq!(Channel::create_in(region(), table.slot(0)).state(), Ok(WorkerState::Spinup));
}
