//! Rolling reloads on real processes: the pool daemon's four `idle`
//! instances replaced one at a time while a client keeps calling, a reload
//! whose new instance fails at spinup, SIGHUP's default, and the binary's
//! `reload` command.
//!
//! Each test runs its own daemon in its own directory. Nothing sleeps:
//! the tests wait for answers, for events on the daemon's stream, or for
//! `worker.list` to show what they expect, each with a deadline.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Instant;

use forkd_tests::{wait_until, ClientError, Daemon, TempDir, DEADLINE};
use serde_json::{json, Value};

/// The pool daemon with `size` idle instances looping every 50 ms, and
/// `env` besides.
fn pool(dir: &TempDir, size: &str, env: &[(&str, &str)]) -> Daemon {
    let mut all = vec![("POOL_SIZE", size), ("POOL_LOOPTIME_MS", "50")];
    all.extend_from_slice(env);
    Daemon::start(dir, "pool-daemon", &[], &all)
}

/// The pids of the pool's members, as `worker.list` gives them.
fn pids(d: &Daemon) -> BTreeSet<i64> {
    let list = d.call("worker.list", Value::Null).unwrap_or_else(|e| panic!("worker.list: {e}\n{}", d.log()));
    list.as_array().unwrap().iter().filter_map(|e| e["pid"].as_i64()).collect()
}

/// How many of the pool's members are looping.
fn looping(list: &Value) -> usize {
    list.as_array().map_or(0, |l| l.iter().filter(|e| e["state"] == "looping").count())
}

/// Waits until the 4 members all loop. A worker that begins to loop
/// tells nothing the test could wait on, so each look that finds one
/// still in spinup sends the daemon a SIGWINCH, which nothing listens to
/// but which the daemon logs (`-v`): its log line is what wakes the next
/// look.
fn wait_all_looping(d: &Daemon) {
    wait_until("4 instances looping", DEADLINE, || {
        let all = d.call("worker.list", Value::Null).is_ok_and(|l| looping(&l) == 4);
        if !all {
            d.signal(libc::SIGWINCH);
        }
        all
    });
}

/// The daemon's events, read on a thread of their own.
fn events(d: &Daemon) -> Receiver<Value> {
    let stream = d.client().subscribe().expect("subscribe");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for e in stream.flatten() {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    rx
}

/// Takes events until one of type `kind`, returning all taken.
fn until(rx: &Receiver<Value>, kind: &str) -> Vec<Value> {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(e) => {
                let done = e["type"] == kind;
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no {kind} within {DEADLINE:?}; seen: {seen:?}"),
        }
    }
}

#[test]
fn a_rolling_reload_under_load_keeps_three_of_four_looping_and_replaces_every_pid() {
    let dir = TempDir::new("reload-load");
    let d = pool(&dir, "4", &[]);
    wait_all_looping(&d);
    let before = pids(&d);
    assert_eq!(before.len(), 4);
    let rx = events(&d);

    // The load: one client calling as fast as it is answered, sampling
    // the pool between answers.
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = d.client();
    let flag = Arc::clone(&stop);
    let (first_tx, first) = channel();
    let load = std::thread::spawn(move || {
        let (mut answered, mut fewest, mut errors) = (0u64, usize::MAX, Vec::new());
        while !flag.load(Ordering::Relaxed) {
            match client.call("worker.list", Value::Null) {
                Ok(list) => {
                    answered += 1;
                    fewest = fewest.min(looping(&list));
                    if answered == 1 {
                        let _ = first_tx.send(());
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        (answered, fewest, errors)
    });
    // The load runs before the reload begins.
    first.recv_timeout(DEADLINE).expect("the load's first answer");

    let answer = d.call("worker.reload", json!({ "name": "idle" })).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    stop.store(true, Ordering::Relaxed);
    let (answered, fewest, errors) = load.join().unwrap();
    assert!(errors.is_empty(), "every request answered: {errors:?}");
    assert!(answered > 0);
    assert!(fewest >= 3, "never fewer than 3 looping, saw {fewest}");

    let replaced = answer.as_array().expect("an array of replacements");
    assert_eq!(replaced.len(), 4, "{answer}");
    let olds: BTreeSet<i64> = replaced.iter().map(|r| r["old_pid"].as_i64().unwrap()).collect();
    let news: BTreeSet<i64> = replaced.iter().map(|r| r["new_pid"].as_i64().unwrap()).collect();
    let indexes: BTreeSet<i64> = replaced.iter().map(|r| r["instance"].as_i64().unwrap()).collect();
    assert_eq!(olds, before);
    assert!(news.is_disjoint(&before), "{answer}");
    assert_eq!(indexes, (0..4).collect());
    assert_eq!(pids(&d), news, "the pool is the new processes");

    // On the stream: the reload began, and no old instance exited before
    // its replacement was ready; each exit of a replaced one says why.
    let seen = until(&rx, "reload.done");
    assert!(seen.iter().any(|e| e["type"] == "reload.started" && e["reload"] == "idle"), "{seen:?}");
    let mut ready = BTreeSet::new();
    for e in &seen {
        if e["type"] == "reload.replaced" {
            ready.insert(e["data"]["instance"].as_i64().unwrap());
        }
        if e["type"] == "worker.exited" {
            let i = e["instance"].as_i64().unwrap();
            assert_eq!(e["data"]["reason"], "reload", "{e}");
            assert!(ready.contains(&i), "instance {i} exited before its replacement was ready: {seen:?}");
        }
    }
    assert_eq!(ready.len(), 4, "{seen:?}");
    let metrics = d.call("daemon.metrics", Value::Null).unwrap();
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("forkd_worker_restarts_total{worker=\"idle\",instance=\"0\",reason=\"reload\"} 1"), "{text}");
}

#[test]
fn a_reload_whose_new_instance_fails_at_spinup_keeps_the_old_instances_and_answers_the_error() {
    let dir = TempDir::new("reload-fail");
    let fail = dir.join("fail");
    let d = pool(&dir, "4", &[("POOL_FAIL_IF", fail.to_str().unwrap())]);
    wait_all_looping(&d);
    let before = pids(&d);
    std::fs::write(&fail, "").unwrap();

    let e = d.call("worker.reload", json!({ "name": "idle" })).expect_err("the reload fails");
    let ClientError::Rpc(e) = e else { panic!("an rpc error: {e}") };
    assert_eq!(e.code, forkd::codes::WORKER_ERROR, "{e}");
    assert!(e.message.contains("worker idle") && e.message.contains("instance 0"), "{e}");
    assert!(e.message.contains("exists"), "the instance's own error: {e}");
    assert_eq!(e.data, Some(json!({ "replaced": [] })));
    // The old instances run on, untouched, and a second try is refused
    // no more: the rollout is over.
    assert_eq!(pids(&d), before);
    wait_all_looping(&d);
    std::fs::remove_file(&fail).unwrap();
    let answer = d.call("worker.reload", json!({ "name": "idle", "batch": 2 })).expect("reload after the fix");
    assert_eq!(answer.as_array().unwrap().len(), 4);
    assert!(pids(&d).is_disjoint(&before));
}

#[test]
fn sighup_reloads_every_worker() {
    let dir = TempDir::new("reload-hup");
    let d = pool(&dir, "2", &[]);
    wait_until("2 instances", DEADLINE, || pids(&d).len() == 2);
    let before = pids(&d);
    let rx = events(&d);
    d.signal(libc::SIGHUP);
    let seen = until(&rx, "reload.done");
    assert!(seen.iter().any(|e| e["type"] == "signal" && e["signal"] == "SIGHUP"), "{seen:?}");
    let after = pids(&d);
    assert_eq!(after.len(), 2);
    assert!(after.is_disjoint(&before), "{before:?} -> {after:?}");
}

#[test]
fn the_reload_command_exits_0_on_success_and_1_on_failure() {
    let dir = TempDir::new("reload-cli");
    let fail = dir.join("fail");
    let d = pool(&dir, "2", &[("POOL_FAIL_IF", fail.to_str().unwrap())]);
    wait_until("2 instances", DEADLINE, || pids(&d).len() == 2);

    let out = d.control("pool-daemon", &["reload", "idle"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 instance(s) replaced"), "{stdout}");
    assert!(stdout.contains("idle/0: pid "), "{stdout}");

    std::fs::write(&fail, "").unwrap();
    let out = d.control("pool-daemon", &["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reload of worker idle stopped"), "{stderr}");

    let out = d.control("pool-daemon", &["reload", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown worker"));

    let help = d.control("pool-daemon", &["reload", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("one batch at a time"));
}

#[test]
fn rpc_discover_describes_worker_reload_with_its_params_result_and_errors() {
    let dir = TempDir::new("reload-discover");
    let d = pool(&dir, "1", &[]);
    let doc = d.call("rpc.discover", Value::Null).unwrap();
    let methods = doc["methods"].as_array().unwrap();
    let reload = methods.iter().find(|m| m["name"] == "worker.reload").expect("worker.reload in rpc.discover");
    let params: Vec<&str> = reload["params"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(params, ["name", "batch"], "{reload}");
    assert!(reload["params"].as_array().unwrap().iter().all(|p| p["required"] != true), "{reload}");
    assert_eq!(reload["result"]["schema"]["type"], "array", "{reload}");
    let codes: Vec<i64> = reload["errors"].as_array().unwrap().iter().filter_map(|e| e["code"].as_i64()).collect();
    assert!(codes.contains(&forkd::codes::RELOADING) && codes.contains(&forkd::codes::WORKER_ERROR), "{reload}");
    let out = d.control("pool-daemon", &["describe", "--text"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("worker.reload(name: string, batch: int) -> array\n"), "{listing}");
}

#[test]
fn a_daemon_stopped_during_a_reload_answers_the_reload_with_an_error_and_leaves_nothing() {
    let dir = TempDir::new("reload-stop");
    let hold = dir.join("hold");
    let mut d = pool(&dir, "2", &[("POOL_HOLD_IF", hold.to_str().unwrap())]);
    wait_until("2 instances", DEADLINE, || pids(&d).len() == 2);
    let before = pids(&d);
    let rx = events(&d);
    std::fs::write(&hold, "").unwrap();
    let mut client = d.client();
    let reload = std::thread::spawn(move || client.call("worker.reload", json!({ "name": "idle" })));
    // The new instance is up and spinning up (it holds): stop the daemon.
    until(&rx, "reload.started");
    until(&rx, "worker.started");
    d.call("daemon.shutdown", Value::Null).expect("shutdown");
    let answer = reload.join().unwrap();
    let Err(ClientError::Rpc(e)) = answer else { panic!("the reload is answered an error: {answer:?}") };
    assert_eq!(e.code, forkd::codes::STOPPING, "{e}");
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log());
    for pid in before {
        assert!(!forkd_tests::alive(pid as i32), "old worker {pid} outlived the daemon");
    }
}
