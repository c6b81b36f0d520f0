//! Zero downtime (`zerodowntime`): 32 clients call a pool daemon of 4
//! workers on its unix socket while its master is upgraded in place
//! (`daemon.upgrade`) and its pool reloaded (`worker.reload`), one after
//! another. The figures are what the clients saw (connections refused,
//! calls lost, calls resent after an orderly close, latency in each phase)
//! and what the operator saw (how long an upgrade takes until the new
//! master serves, how long a rolling reload of the pool takes, how few of
//! its instances were looping meanwhile).
//!
//! Each upgrade writes a new version into the file the fixture reads at
//! start, so the answer tells that a new master runs; the next operation
//! begins once the old master is gone.

mod clients;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::daemon::{bench_dir, poll_until, Running, DEADLINE};
use super::lifecycle::{looping, start_fixture, wait_looping};
use super::report::{Figure, Of, Stat, Target};
use super::stats::{millis, quantiles};
use super::wire::{Framing, Wire};
use super::{sys, Env};
use clients::{Load, Masters, Tally, CLIENTS, IDLE, RELOAD, STEADY, UPGRADE};

/// The pool's instances.
const POOL: usize = 4;
/// The pause between two `worker.list` samples during a reload: a reload
/// takes a few milliseconds.
const SAMPLE_PAUSE: Duration = Duration::from_micros(250);

/// What the operations measured, besides the clients' tallies.
#[derive(Default)]
struct Ops {
    /// From the `daemon.upgrade` call to its answer, ms.
    upgrade_answer: Vec<f64>,
    /// From the call to the first client answer with the new pid, ms.
    upgrade_serving: Vec<f64>,
    /// Each `worker.reload` call, ms.
    reload: Vec<f64>,
    /// The fewest instances looping seen during the reloads.
    fewest_looping: usize,
    /// How many `worker.list` samples that is the fewest of.
    looks: usize,
    /// Every worker pid seen, to check at the end that none is left.
    workers: BTreeSet<i32>,
}

/// The pool's worker pids, from `worker.list`.
fn worker_pids(d: &Running) -> Result<Vec<i32>, String> {
    let list = d.client()?.call("worker.list", Value::Null).map_err(|e| format!("worker.list: {e}"))?;
    Ok(list.as_array().into_iter().flatten().filter_map(|w| w["pid"].as_i64()).map(|p| p as i32).collect())
}

/// Waits for a process to be gone.
fn wait_gone(pid: i32, what: &str) -> Result<(), String> {
    poll_until(what, DEADLINE, Duration::from_millis(1), || Ok(!sys::alive(pid))).map(|_| ())
}

/// One upgrade to `version`: its answer, the new master's pid.
fn upgrade(d: &Running, load: &Load, version_file: &Path, version: &str, ops: &mut Ops) -> Result<i32, String> {
    std::fs::write(version_file, version).map_err(|e| format!("write the version: {e}"))?;
    let mut c = d.client()?;
    load.phase(UPGRADE);
    let start = Instant::now();
    let answer = c.call("daemon.upgrade", Value::Null).map_err(|e| format!("daemon.upgrade: {e}"))?;
    ops.upgrade_answer.push(millis(start.elapsed()));
    let (pid, old) = (answer["pid"].as_i64().unwrap_or(0) as i32, answer["previous"].as_i64().unwrap_or(0) as i32);
    if answer["version"] != json!(version) || pid == 0 || pid == old {
        return Err(format!("daemon.upgrade answered {answer}"));
    }
    wait_gone(old, "the old master to exit")?;
    load.phase(IDLE);
    // The new master answers once the old one has stopped accepting: some
    // client has had its pid by the time the old master is gone, but
    // maybe not yet told it, so wait for it a little.
    let mut serving = None;
    poll_until("a client answered by the new master", DEADLINE, Duration::from_millis(1), || {
        serving = load.first_seen(pid);
        Ok(serving.is_some())
    })?;
    ops.upgrade_serving.push(millis(serving.unwrap_or(start).saturating_duration_since(start)));
    Ok(pid)
}

/// One rolling reload of the pool, `worker.list` sampled meanwhile.
fn reload(d: &Running, load: &Load, ops: &mut Ops) -> Result<(), String> {
    let mut c = d.client()?;
    let mut sampler = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    load.phase(RELOAD);
    let start = Instant::now();
    let call =
        std::thread::spawn(move || c.call("worker.reload", json!({ "name": "idle" })).map_err(|e| e.to_string()));
    while !call.is_finished() {
        ops.fewest_looping = ops.fewest_looping.min(looping(&mut sampler)?);
        ops.looks += 1;
        std::thread::sleep(SAMPLE_PAUSE);
    }
    let answer = call.join().map_err(|_| "the reload's thread panicked".to_string())?;
    ops.reload.push(millis(start.elapsed()));
    load.phase(IDLE);
    answer.map_err(|e| format!("worker.reload: {e}"))?;
    ops.workers.extend(worker_pids(d)?);
    wait_looping(d, POOL, DEADLINE)
}

/// Stops the last master and checks that nothing is left: no master, no
/// worker, no socket, no pid file.
fn stop_last(d: &Running, masters: &Masters, ops: &Ops) -> Result<(), String> {
    let last = *masters.0.last().unwrap_or(&0);
    sys::signal(last, libc::SIGTERM);
    wait_gone(last, "the last master to stop")?;
    for pid in masters.0.iter().chain(&ops.workers) {
        wait_gone(*pid, &format!("process {pid} to be gone"))?;
    }
    let socket = d.dir.join("d.sock");
    poll_until("the socket and pid file removed", DEADLINE, Duration::from_millis(1), || {
        Ok(!socket.exists() && !d.pid_file.exists())
    })?;
    Ok(())
}

/// The section.
pub fn run(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let rounds = if env.plan.quick { 3 } else { 10 };
    super::progress(&format!("zerodowntime: {CLIENTS} clients, {rounds} upgrades, {rounds} reloads"));
    let files = bench_dir("zerodowntime-version")?;
    let version_file = files.join("version");
    std::fs::write(&version_file, "1.0").map_err(|e| format!("write the version: {e}"))?;
    let vars = [
        ("POOL_SIZE", POOL.to_string()),
        ("POOL_LOOPTIME_MS", "50".to_string()),
        ("POOL_VERSION_FILE", version_file.display().to_string()),
    ];
    // Room for the clients, the operations' connections and the sampler.
    let mut d = start_fixture(env, "pool-daemon", false, &["--max-connections", "64"], &vars)?;
    d.wait_answering(DEADLINE)?;
    let mut masters = Masters(vec![d.pid()?]);
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
    wait_looping(&d, POOL, DEADLINE)?;
    let mut ops = Ops { fewest_looping: POOL, ..Ops::default() };
    ops.workers.extend(worker_pids(&d)?);

    let path = d.dir.join("d.sock");
    let load = Load::start(&path, env.cpus.other)?;
    load.phase(STEADY);
    std::thread::sleep(if env.plan.quick { Duration::from_millis(500) } else { Duration::from_secs(2) });
    for i in 0..rounds {
        let pid = upgrade(&d, &load, &version_file, &format!("2.{i}"), &mut ops)?;
        masters.0.push(pid);
        wait_looping(&d, POOL, DEADLINE)?;
        ops.workers.extend(worker_pids(&d)?);
    }
    for _ in 0..rounds {
        reload(&d, &load, &mut ops)?;
    }
    let tallies = load.stop();
    stop_last(&d, &masters, &ops)?;
    figures(env, &tallies, &ops, out)
}

/// The clients' latencies in `phase`, µs.
fn latencies(tallies: &[Tally], phase: u8) -> Result<Stat, String> {
    let v: Vec<f64> =
        tallies.iter().flat_map(|t| &t.samples).filter(|(p, _)| *p == phase).map(|(_, l)| f64::from(*l)).collect();
    if v.is_empty() {
        return Err(format!("no answer in phase {phase}"));
    }
    Ok(Stat::Q(quantiles(v)))
}

fn count(value: u64) -> Stat {
    Stat::Value { value: value as f64, runs: 1 }
}

fn figures(env: &Env, tallies: &[Tally], ops: &Ops, out: &mut Vec<Figure>) -> Result<(), String> {
    if tallies.len() != CLIENTS {
        return Err(format!("{} of {CLIENTS} client threads panicked", CLIENTS - tallies.len()));
    }
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (sent, answered) = (sum(|t| t.sent), sum(|t| t.answered));
    let errors: Vec<&str> = tallies.iter().flat_map(|t| &t.errors).take(3).map(String::as_str).collect();
    let why = if errors.is_empty() { String::new() } else { format!("; first: {}", errors.join(" | ")) };
    let place = env.cpus.split();
    let zero = || Target::at_most(Of::Value, 0.0, "= 0");
    let rounds = ops.reload.len();
    out.push(
        Figure::new("zerodowntime.refused", place.clone(), "connections", count(sum(|t| t.refused)))
            .target(zero())
            .note(format!(
                "{CLIENTS} clients' connects that failed, across {rounds} upgrades and {rounds} reloads{why}"
            )),
    );
    out.push(
        Figure::new("zerodowntime.lost", place.clone(), "calls", count(sum(|t| t.lost)))
            .target(zero())
            .note(format!("{sent} calls sent, {answered} answered; lost: never answered, even once resent")),
    );
    out.push(
        Figure::new("zerodowntime.retried", place.clone(), "calls", count(sum(|t| t.retried)))
            .note("resent once on a fresh connection after an orderly close before any byte of answer"),
    );
    for (name, phase) in [("steady", STEADY), ("upgrade", UPGRADE), ("reload", RELOAD)] {
        let f = Figure::new(format!("zerodowntime.latency.{name}"), place.clone(), "µs", latencies(tallies, phase)?);
        out.push(f.note("daemon.info round trip of 32 clients pausing 2 ms between calls; a resent call counts once"));
    }
    let ms = |v: &[f64]| Stat::Q(quantiles(v.to_vec()));
    out.push(
        Figure::new("zerodowntime.upgrade.answer", place.clone(), "ms", ms(&ops.upgrade_answer))
            .note("daemon.upgrade call to its deferred answer: the new master ready, its 4 workers running"),
    );
    out.push(
        Figure::new("zerodowntime.upgrade.serving", place.clone(), "ms", ms(&ops.upgrade_serving))
            .note("daemon.upgrade call to the first client answer with the new master's pid"),
    );
    out.push(
        Figure::new("zerodowntime.reload.time", place.clone(), "ms", ms(&ops.reload))
            .note("worker.reload of the 4-instance pool, one at a time, each new one looping before the old stops"),
    );
    out.push(
        Figure::new("zerodowntime.reload.fewest_looping", place, "workers", count(ops.fewest_looping as u64))
            .target(Target::at_least(Of::Value, (POOL - 1) as f64, ">= 3"))
            .note(format!(
                "the fewest pool instances looping in {} worker.list samples, 250 µs apart, during the reloads",
                ops.looks
            )),
    );
    Ok(())
}
