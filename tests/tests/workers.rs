//! Workers on real processes: the copy daemon's `handyman` worker listed,
//! killed, restarted, paused, resumed, messaged, scaled and crash-looped,
//! and what is left behind once the daemon is gone.
//!
//! Every test runs its own daemon in its own directory. Nothing sleeps to
//! synchronise and nothing reads a clock: each test looks at `worker.list`
//! (or the process table) again on each event that could change it (a line
//! in the daemon's log, a process gone), with a deadline, until the state it
//! expects shows up.
//! The few checks that something does *not* happen (loops while paused, a
//! retired instance restarted) wait for an event of the daemon's own that
//! comes long after it would have: an idle connection closed at the
//! daemon's socket timeout. How fast things happen is measured by
//! `cargo xtask bench`, not asserted here.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixStream;

use forkd_tests::{alive, wait_gone, wait_until, Client, ClientError, Daemon, TempDir, Wake, DEADLINE};
use serde_json::{json, Value};

/// The fields of one `worker.list` entry: the seed's (name, pid, state,
/// looptime, forever), the loop and restart counters, the last exit status,
/// the instance in its pool and the last error the worker recorded.
const LIST_FIELDS: [&str; 11] = [
    "instance",
    "last_error",
    "last_exit",
    "looptime",
    "loops",
    "name",
    "pid",
    "restart",
    "restarts",
    "state",
    "uptime",
];

/// A copy daemon in `dir` with `env` (`COPY_LOOPTIME_MS`, `COPY_FOREVER`).
fn copy_daemon(dir: &TempDir, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(dir, "copy-daemon", &[], env)
}

/// Calls `method`, failing the test with the daemon's log if it fails.
fn call(d: &Daemon, method: &str, params: Value) -> Value {
    d.call(method, params).unwrap_or_else(|e| panic!("{method} failed: {e}\n{}", d.log()))
}

/// `worker.list`, as entries.
fn list(d: &Daemon) -> Vec<Value> {
    match call(d, "worker.list", Value::Null) {
        Value::Array(entries) => entries,
        other => panic!("worker.list answered {other}"),
    }
}

/// The one `handyman` entry of `worker.list`.
fn handyman(d: &Daemon) -> Value {
    let entries = list(d);
    assert_eq!(entries.len(), 1, "one worker instance: {entries:?}");
    entries.into_iter().next().unwrap()
}

fn pid_of(entry: &Value) -> i32 {
    entry["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {entry}")) as i32
}

/// Polls until the one `handyman` instance is looping with a pid other than
/// `not`, and returns its entry.
fn wait_looping(d: &Daemon, not: Option<i32>) -> Value {
    let mut found = Value::Null;
    wait_until("handyman looping with a new pid", DEADLINE, || {
        let entry = handyman(d);
        let fresh = entry["pid"].as_i64().is_some_and(|p| Some(p as i32) != not);
        let ok = fresh && entry["state"] == "looping";
        found = entry;
        ok
    });
    found
}

fn kill(pid: i32, sig: i32) {
    assert!(pid > 0, "refusing to signal pid {pid}");
    // Safety: a plain kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill {pid} {sig}: {}", std::io::Error::last_os_error());
}

/// The pids whose parent is `parent`, from the process table (zombies
/// excluded).
fn children(parent: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            out.insert(pid);
        }
    }
    out
}

/// The names in /dev/shm. The workers' regions are anonymous mappings, so
/// no daemon ever adds one, whatever other tests run meanwhile.
fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn assert_no_new_shm(before: &BTreeSet<String>) {
    let after = dev_shm();
    let new: Vec<&String> = after.difference(before).collect();
    assert!(new.is_empty(), "new entries in /dev/shm: {new:?}");
}

/// Waits until the daemon exits by itself and checks that it removed its
/// socket and pid file; returns its exit code.
fn wait_clean_exit(d: &mut Daemon) -> i32 {
    let code = d.wait_exit(DEADLINE);
    let forkd_os::Address::Unix(socket) = d.socket.clone() else { unreachable!("tests use unix sockets") };
    assert!(!socket.exists(), "the socket {} is left:\n{}", socket.display(), d.log());
    assert!(!d.pid_file.exists(), "the pid file {} is left:\n{}", d.pid_file.display(), d.log());
    code
}

/// A copy daemon whose idle connections are closed after one second, for the
/// tests that wait on that as an event (see [`one_socket_timeout`]).
fn copy_daemon_timing_out(dir: &TempDir, env: &[(&str, &str)]) -> Daemon {
    Daemon::start(dir, "copy-daemon", &["--socket-timeout", "1"], env)
}

/// Opens a connection that sends nothing and waits until the daemon closes
/// it at its socket timeout: proof that the daemon's loop has gone on for
/// that long since the call, by its own clock, without the test reading one.
fn one_socket_timeout(d: &Daemon) {
    let forkd_os::Address::Unix(socket) = &d.socket else { unreachable!("tests use unix sockets") };
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect: {e}\n{}", d.log()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or_else(|e| panic!("the idle connection was not closed: {e}\n{}", d.log()));
    assert_eq!(n, 0, "an idle connection got an answer");
}

fn rpc_error(result: Result<Value, ClientError>) -> (i64, String) {
    match result {
        Err(ClientError::Rpc(e)) => (e.code, e.message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[test]
fn worker_list_tells_every_field_with_states_by_name() {
    let shm = dev_shm();
    let dir = TempDir::new("list");
    let d = copy_daemon(&dir, &[]);
    let entry = wait_looping(&d, None);
    let fields: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, LIST_FIELDS.into_iter().collect(), "fields of {entry}");
    // The method's help names each of them.
    let help = call(&d, "system.methodHelp", json!(["worker.list"]));
    let help = help.as_str().unwrap_or_default();
    for field in LIST_FIELDS {
        assert!(help.contains(field), "worker.list's help does not name {field}: {help}");
    }
    assert_eq!(entry["name"], "handyman");
    assert_eq!(entry["instance"], 0);
    assert!(pid_of(&entry) > 0 && pid_of(&entry) != d.pid() && alive(pid_of(&entry)));
    assert_eq!(entry["state"], "looping");
    assert_eq!(entry["looptime"].as_f64(), Some(10.0));
    assert_eq!(entry["restart"], "always");
    assert!(entry["uptime"].as_f64().is_some_and(|u| u >= 0.0), "uptime in seconds: {entry}");
    // The first iteration runs as soon as spinup is over.
    assert!(entry["loops"].as_u64().is_some(), "loops is a count: {entry}");
    assert_eq!(entry["restarts"], 0);
    assert_eq!(entry["last_exit"], Value::Null);
    assert_eq!(entry["last_error"], Value::Null);
    // worker.status answers an array of entries, with or without a name.
    let every = call(&d, "worker.status", Value::Null);
    let named = call(&d, "worker.status", json!({ "name": "handyman" }));
    for status in [&every, &named] {
        assert_eq!(status.as_array().map(Vec::len), Some(1), "{status}");
        assert_eq!(status[0]["state"], "looping");
        assert_eq!(status[0]["pid"], entry["pid"]);
    }
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn a_killed_forever_worker_is_looping_again_shortly_after() {
    let shm = dev_shm();
    let dir = TempDir::new("kill-worker");
    let d = copy_daemon(&dir, &[]);
    let old = pid_of(&wait_looping(&d, None));
    kill(old, libc::SIGKILL);
    let entry = wait_looping(&d, Some(old));
    assert!(!alive(old), "the killed worker {old} is still there");
    assert_eq!(entry["restarts"], 1, "{entry}");
    assert_eq!(entry["last_exit"], json!({ "signal": "SIGKILL" }), "{entry}");
    // The first restart is immediate (no backoff, no looptime to wait); how
    // long it takes is `cargo xtask bench`'s restart latency.
    assert_eq!(children(d.pid()), BTreeSet::from([pid_of(&entry)]), "one worker process");
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn a_worker_that_is_not_forever_exiting_stops_the_daemon_cleanly() {
    let shm = dev_shm();
    let dir = TempDir::new("not-forever");
    let mut d = copy_daemon(&dir, &[("COPY_FOREVER", "0")]);
    let entry = wait_looping(&d, None);
    assert_eq!(entry["restart"], "never");
    kill(pid_of(&entry), libc::SIGKILL);
    let code = wait_clean_exit(&mut d);
    assert_eq!(code, 0, "exit code:\n{}", d.log());
    assert!(d.log().contains("worker handyman exited"), "the log says why:\n{}", d.log());
    assert!(!alive(pid_of(&entry)));
    assert_no_new_shm(&shm);
}

#[test]
fn pause_answers_once_acknowledged_and_well_within_the_looptime() {
    let shm = dev_shm();
    let dir = TempDir::new("pause-slow");
    let d = copy_daemon(&dir, &[]);
    wait_looping(&d, None);
    let mut client = d.client();
    // The worker logs each iteration as it runs it. It counts the first one
    // before it takes the next command: the pause sees it counted.
    wait_until("the first iteration", DEADLINE, || d.log().contains("handyman loop 0 ("));

    assert_eq!(
        client.call("worker.pause", json!({ "name": "handyman" })).unwrap(),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    // Acknowledged before the answer: the state is already paused.
    assert_eq!(client.call("worker.status", json!({ "name": "handyman" })).unwrap()[0]["state"], "paused");
    assert_eq!(
        client.call("worker.resume", json!({ "name": "handyman" })).unwrap(),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    assert_eq!(client.call("worker.status", json!({ "name": "handyman" })).unwrap()[0]["state"], "looping");
    // Both were acknowledged between two iterations, ten seconds apart: by
    // the wake-up byte, not at the next iteration. How fast is measured by
    // `cargo xtask bench`'s pause latency.
    assert_eq!(handyman(&d)["loops"].as_u64(), Some(1), "pause and resume waited for an iteration");

    // Without a name: every worker, in the same shape.
    assert_eq!(
        client.call("worker.pause", Value::Null).unwrap(),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    assert_eq!(client.call("worker.status", Value::Null).unwrap()[0]["state"], "paused");
    assert_eq!(
        client.call("worker.resume", Value::Null).unwrap(),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    assert_eq!(client.call("worker.status", Value::Null).unwrap()[0]["state"], "looping");
    drop(client);
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn a_paused_worker_does_not_loop_and_loops_again_once_resumed() {
    let shm = dev_shm();
    let dir = TempDir::new("pause-fast");
    let d = copy_daemon_timing_out(&dir, &[("COPY_LOOPTIME_MS", "20")]);
    wait_until("a few loops", DEADLINE, || handyman(&d)["loops"].as_u64() >= Some(3));

    assert_eq!(
        call(&d, "worker.pause", json!({ "name": "handyman" })),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    let entry = handyman(&d);
    assert_eq!(entry["state"], "paused");
    let loops = entry["loops"].as_u64().unwrap();
    // A socket timeout of the daemon's is fifty looptimes: a worker that
    // still looped while paused would have looped by the time it fires.
    one_socket_timeout(&d);
    let entry = handyman(&d);
    assert_eq!(entry["state"], "paused");
    assert_eq!(entry["loops"].as_u64(), Some(loops), "looped while paused: {entry}");

    assert_eq!(
        call(&d, "worker.resume", json!({ "name": "handyman" })),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    wait_until("loops to go on after resume", DEADLINE, || handyman(&d)["loops"].as_u64() > Some(loops + 2));
    assert_eq!(handyman(&d)["state"], "looping");
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn custom_messages_reach_the_worker_and_unknown_workers_are_clear_errors() {
    let shm = dev_shm();
    let dir = TempDir::new("message");
    let d = copy_daemon(&dir, &[]);
    wait_looping(&d, None);

    assert_eq!(call(&d, "handyman.changename", json!({ "name": "bob" })), json!({ "old": "handyman", "new": "bob" }));
    assert_eq!(call(&d, "handyman.changename", json!({ "name": "alice" })), json!({ "old": "bob", "new": "alice" }));
    // The same through worker.send.
    let reply = call(&d, "worker.send", json!({ "name": "handyman", "message": { "changename": "carol" } }));
    assert_eq!(reply, json!({ "old": "alice", "new": "carol" }));
    // The worker's own error is the answer, and the worker lives on.
    let (code, message) = rpc_error(d.call("worker.send", json!({ "name": "handyman", "message": { "x": 1 } })));
    assert_eq!(code, -32003);
    assert!(message.contains("unknown message"), "{message}");

    let (code, message) = rpc_error(d.call("worker.send", json!({ "name": "nobody", "message": {} })));
    assert_eq!(code, -32001);
    assert!(message.contains("unknown worker") && message.contains("nobody"), "{message}");
    let (code, message) = rpc_error(d.call("worker.status", json!({ "name": "nobody" })));
    assert_eq!(code, -32001);
    assert!(message.contains("unknown worker") && message.contains("nobody"), "{message}");
    let (code, message) = rpc_error(d.call("worker.pause", json!({ "name": "nobody" })));
    assert_eq!(code, -32001);
    assert!(message.contains("nobody"), "{message}");

    let entry = handyman(&d);
    assert_eq!((entry["state"].clone(), entry["restarts"].clone()), (json!("looping"), json!(0)));
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn a_killed_daemon_leaves_no_worker_behind() {
    let shm = dev_shm();
    let dir = TempDir::new("kill-daemon");
    let mut d = copy_daemon(&dir, &[]);
    let worker = pid_of(&wait_looping(&d, None));
    d.signal(libc::SIGKILL);
    assert_eq!(d.wait_exit(DEADLINE), 128 + libc::SIGKILL);
    wait_gone("the worker to die with the daemon", DEADLINE, &[worker]);
    assert_no_new_shm(&shm);
}

#[test]
fn nothing_is_left_in_dev_shm_after_a_daemon_s_whole_life() {
    let before = dev_shm();
    let dir = TempDir::new("shm");
    let mut d = copy_daemon(&dir, &[("COPY_LOOPTIME_MS", "20")]);
    let worker = pid_of(&wait_looping(&d, None));

    // The region is an anonymous shared mapping in both processes: the
    // kernel shows it as /dev/zero, never as a file in /dev/shm.
    for pid in [d.pid(), worker] {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        assert!(!maps.contains("/dev/shm"), "pid {pid} maps a file of /dev/shm:\n{maps}");
        assert!(
            maps.lines().any(|l| l.contains("rw-s") && l.contains("/dev/zero")),
            "pid {pid} has no anonymous shared mapping:\n{maps}"
        );
    }

    // A life: messages, pause and resume, a crash, a restart, a pool.
    call(&d, "handyman.changename", json!({ "name": "x" }));
    call(&d, "worker.pause", Value::Null);
    call(&d, "worker.resume", Value::Null);
    kill(worker, libc::SIGKILL);
    let worker = pid_of(&wait_looping(&d, Some(worker)));
    assert_eq!(
        call(&d, "worker.restart", json!({ "name": "handyman" })),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    wait_looping(&d, Some(worker));
    assert_eq!(call(&d, "worker.scale", json!({ "name": "handyman", "instances": 3 })), 3);
    wait_until("three instances looping", DEADLINE, || {
        list(&d).iter().filter(|e| e["state"] == "looping").count() == 3
    });
    assert_eq!(call(&d, "worker.scale", json!({ "name": "handyman", "instances": 1 })), 1);
    Wake::new().processes(children(d.pid())).until("one worker process", DEADLINE, || children(d.pid()).len() == 1);
    assert_no_new_shm(&before);

    assert_eq!(call(&d, "daemon.shutdown", Value::Null), true);
    assert_eq!(wait_clean_exit(&mut d), 0);
    assert_no_new_shm(&before);

    // And after a daemon killed outright.
    let dir = TempDir::new("shm-killed");
    let mut d = copy_daemon(&dir, &[("COPY_LOOPTIME_MS", "20")]);
    let worker = pid_of(&wait_looping(&d, None));
    d.signal(libc::SIGKILL);
    d.wait_exit(DEADLINE);
    wait_gone("the worker to die with the daemon", DEADLINE, &[worker]);
    assert_no_new_shm(&before);
}

#[test]
fn a_worker_has_its_own_process_group_and_restart_replaces_it() {
    let shm = dev_shm();
    let dir = TempDir::new("group");
    let d = copy_daemon(&dir, &[]);
    let old = pid_of(&wait_looping(&d, None));
    // Safety: getpgid on a process of ours.
    let pgid = unsafe { libc::getpgid(old) };
    assert_eq!(pgid, old, "the worker leads its own process group");
    // Safety: as above.
    assert_ne!(pgid, unsafe { libc::getpgid(d.pid()) }, "not the daemon's group");

    assert_eq!(
        call(&d, "worker.restart", json!({ "name": "handyman" })),
        json!([{ "name": "handyman", "instance": 0, "ok": true }])
    );
    let entry = wait_looping(&d, Some(old));
    let new = pid_of(&entry);
    wait_gone("the old worker to exit", DEADLINE, &[old]);
    // Safety: as above.
    assert_eq!(unsafe { libc::getpgid(new) }, new, "the new worker leads its own process group");
    assert_eq!(children(d.pid()), BTreeSet::from([new]), "one worker process");
    // A restart asked for is a clean stop, not a crash.
    assert_eq!(entry["last_exit"], json!({ "code": 0 }), "{entry}");
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn scale_adds_looping_instances_and_retires_them_for_good() {
    let shm = dev_shm();
    let dir = TempDir::new("scale");
    let d = copy_daemon_timing_out(&dir, &[]);
    let first = pid_of(&wait_looping(&d, None));

    assert_eq!(call(&d, "worker.scale", json!({ "name": "handyman", "instances": 3 })), 3);
    let mut entries = Vec::new();
    wait_until("three instances looping", DEADLINE, || {
        entries = list(&d);
        entries.len() == 3 && entries.iter().all(|e| e["state"] == "looping")
    });
    let pids: BTreeSet<i32> = entries.iter().map(pid_of).collect();
    assert_eq!(pids.len(), 3, "three processes: {entries:?}");
    assert!(pids.contains(&first), "the first instance stays: {entries:?}");
    assert!(entries.iter().all(|e| e["name"] == "handyman"));
    let indexes: BTreeSet<u64> = entries.iter().map(|e| e["instance"].as_u64().unwrap()).collect();
    assert_eq!(indexes, BTreeSet::from([0, 1, 2]));
    assert_eq!(children(d.pid()), pids);

    assert_eq!(call(&d, "worker.scale", json!({ "name": "handyman", "instances": 1 })), 1);
    let retired: Vec<i32> = pids.iter().copied().filter(|&p| p != first).collect();
    wait_gone("the two retired instances to exit", DEADLINE, &retired);
    // A retired instance that came back would be back at once: the first
    // restart of a worker is immediate. Look again once the daemon's loop
    // has run for a whole socket timeout since.
    one_socket_timeout(&d);
    let entry = handyman(&d);
    assert_eq!((pid_of(&entry), entry["state"].clone()), (first, json!("looping")));
    assert_eq!(children(d.pid()), BTreeSet::from([first]), "no retired instance restarted");
    assert_eq!(call(&d, "daemon.info", Value::Null)["workers"], 1);
    drop(d);
    assert_no_new_shm(&shm);
}

#[test]
fn a_crash_looping_worker_fails_and_stops_the_daemon() {
    let shm = dev_shm();
    let dir = TempDir::new("crash-loop");
    let mut d = copy_daemon(&dir, &[]);
    let mut pid = pid_of(&wait_looping(&d, None));
    let mut kills = 0;
    // Kill each new worker as soon as it loops, up to six times; the
    // default policy allows five starts in ten seconds.
    while kills < 6 {
        kill(pid, libc::SIGKILL);
        kills += 1;
        let mut next = None;
        Wake::new().process(d.pid()).until("a new worker, or the daemon gone", DEADLINE, || {
            if d.child.try_wait().unwrap().is_some() {
                return true;
            }
            // Between kills the control socket answers; it closes once the
            // daemon stops.
            match Client::connect(&d.socket, DEADLINE).and_then(|mut c| c.call("worker.list", Value::Null)) {
                Ok(entries) => {
                    let e = &entries[0];
                    if e["state"] == "looping" && pid_of(e) != pid {
                        next = Some(pid_of(e));
                    }
                    next.is_some() || e["state"] == "failed"
                }
                Err(ClientError::Io(..) | ClientError::Closed(_)) => true,
                Err(e) => panic!("worker.list: {e}\n{}", d.log()),
            }
        });
        match next {
            Some(p) => pid = p,
            None => break,
        }
    }
    let code = wait_clean_exit(&mut d);
    assert_eq!(kills, 5, "five starts within ten seconds, then failed:\n{}", d.log());
    assert_eq!(code, 1, "a daemon stopped by a failed worker exits with a failure:\n{}", d.log());
    assert!(d.log().contains("worker handyman failed"), "the log says the worker failed:\n{}", d.log());
    assert!(!alive(pid));
    assert_no_new_shm(&shm);
}

#[test]
fn a_command_too_large_to_send_does_not_strand_the_commands_behind_it() {
    let shm = dev_shm();
    let dir = TempDir::new("stranded");
    let d = copy_daemon(&dir, &[]);
    wait_looping(&d, None);
    // One batch, dispatched in one turn: the pause goes in the mailbox, the
    // two others wait behind it; the message is over the mailbox's size.
    let big = "x".repeat(4096);
    let calls = [
        ("worker.pause", json!({ "name": "handyman" })),
        ("worker.send", json!({ "name": "handyman", "message": { "changename": big } })),
        ("worker.resume", json!({ "name": "handyman" })),
    ];
    let answers = d.client().batch(&calls).unwrap_or_else(|e| panic!("batch: {e}\n{}", d.log()));
    let mut answers = answers.into_iter();
    assert_eq!(answers.next().unwrap().unwrap(), json!([{ "name": "handyman", "instance": 0, "ok": true }]));
    let (code, message) = rpc_error(answers.next().unwrap());
    assert_eq!(code, -32003);
    assert!(message.contains("cannot reach worker"), "{message}");
    assert_eq!(answers.next().unwrap().unwrap()[0]["ok"], true, "the resume behind it was sent");
    assert_eq!(handyman(&d)["state"], "looping");
    drop(d);
    assert_no_new_shm(&shm);
}
