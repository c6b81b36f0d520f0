//! Lifecycle figures: how long a daemon takes to start, a killed worker to
//! come back, and a worker to pause.
//!
//! - Startup: from the bench's `spawn` until the socket answers
//!   `daemon.info`, with `-f` and with `-d` (whose launcher returns only
//!   once the daemon is ready). The bench probes from another core without
//!   pause, so the figure is the daemon's, not the probe's.
//! - Restart: `kill -9` of a forever worker until `worker.status` shows a
//!   new pid in state `looping`. The default restart policy restarts an
//!   instance at once only the first time (later ones back off, and five
//!   starts in ten seconds mark it failed), so the pool daemon runs one
//!   single-instance worker per kill and each is killed once. Measured
//!   twice: with the daemon otherwise idle, and while 32 clients load its
//!   socket with `daemon.info` calls (the rpc section's load generator),
//!   whose round trips over the kills make a figure of their own.
//! - Pause: the round trip of `worker.pause`, which answers only once the
//!   worker has acknowledged, with the worker idle in a 10 s looptime, then
//!   `worker.resume` (not timed) before the next sample.

use std::process::Command;
use std::time::{Duration, Instant};

use forkd_os::Address;
use serde_json::{json, Value};

use super::daemon::{bench_dir, poll_until, Launch, Running, DEADLINE};
use super::load::{Clients, Shape};
use super::report::{Figure, Of, Peer, Stat, Target};
use super::stats::{micros, quantiles, Quantiles};
use super::wire::{count, is_success, Framing, Request, Wire};
use super::{peer, pm2, sys, Env};

/// The clients that load the socket while workers are killed.
const LOAD_CLIENTS: usize = 32;

/// Starts a fixture daemon (`-f`, or `-d` when `detached`) in a temp dir of
/// its own on the daemon's CPU; returns at once.
pub fn start_fixture(
    env: &Env,
    bin: &str,
    detached: bool,
    args: &[&str],
    vars: &[(&str, String)],
) -> Result<Running, String> {
    let dir = bench_dir(bin)?;
    let (socket, pid_file) = (dir.join("d.sock"), dir.join("d.pid"));
    let mut cmd = Command::new(env.bins.join(bin));
    cmd.arg(if detached { "-d" } else { "-f" });
    cmd.arg("--socket").arg(format!("unix://{}", socket.display())).arg("--pidfile").arg(&pid_file);
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let probe = Request::ndjson("daemon.info", "");
    Running::start(
        &mut cmd,
        Launch {
            name: bin.into(),
            dir,
            address: Address::Unix(socket),
            pid_file,
            detached,
            probe,
            cpu: env.cpus.daemon,
        },
    )
}

/// How many workers `worker.list` shows looping. Counted in the raw answer:
/// only a state can be the string "looping".
pub fn looping(w: &mut Wire) -> Result<usize, String> {
    let body = w.call(&Request::ndjson("worker.list", "").bytes).map_err(|e| format!("worker.list: {e}"))?;
    Ok(count(body, b"\"looping\""))
}

/// Waits until `n` workers are looping: first, cheaply, until `n` have a
/// process (`daemon.info`), then until `worker.list` shows them all
/// looping. Nothing but the daemon's answers tells these states (see
/// [`poll_until`]): the polls pause between them so as not to load it.
pub fn wait_looping(d: &Running, n: usize, deadline: Duration) -> Result<(), String> {
    let mut c = d.client()?;
    poll_until(&format!("{n} worker processes"), deadline, Duration::from_millis(1), || {
        let info = c.call("daemon.info", Value::Null).map_err(|e| e.to_string())?;
        Ok(info["workers"].as_u64().unwrap_or(0) as usize >= n)
    })?;
    let mut w = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| e.to_string())?;
    poll_until(&format!("{n} workers looping"), deadline, Duration::from_millis(2), || Ok(looping(&mut w)? >= n))?;
    Ok(())
}

/// A peer's side of a figure: measured with `f` when the peer is there.
pub fn measured<T>(peer: &Result<T, String>, f: impl FnOnce(&T) -> Result<Stat, String>) -> Peer {
    match peer {
        Ok(p) => match f(p) {
            Ok(s) => Peer::Measured(s),
            Err(e) => Peer::Skipped(format!("failed: {e}")),
        },
        Err(why) => Peer::Skipped(why.clone()),
    }
}

pub fn startup(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    for (detached, flag) in [(false, "foreground"), (true, "daemonized")] {
        super::progress(&format!("startup: {flag}"));
        let mut v = Vec::new();
        for _ in 0..env.plan.startup_runs {
            let t = Instant::now();
            let mut d = start_fixture(env, "echo-daemon", detached, &[], &[])?;
            d.wait_answering(DEADLINE)?;
            v.push(micros(t.elapsed()));
            d.terminate(DEADLINE)?;
        }
        super::progress(&format!("startup: {flag}, supervisord"));
        let peer = measured(&env.peer, |sd| peer::startup(env, sd, detached, env.plan.peer_startup_runs));
        out.push(
            Figure::new(format!("startup.{flag}"), env.cpus.watched(), "µs", Stat::Q(quantiles(v)))
                .target(Target::below(Of::P50, 5000.0, "p50 < 5000"))
                .peer(peer)
                .note(if detached {
                    "echo-daemon -d; peer: supervisord daemonizing"
                } else {
                    "echo-daemon -f; peer: supervisord -n"
                }),
        );
    }
    Ok(())
}

/// kill -9 of each of `kills` single-instance workers of a fresh pool
/// daemon until `worker.status` shows a new pid looping, in µs; with a load
/// of 32 clients on its socket meanwhile when `load`, whose round trips
/// over the kills are returned too.
fn kill_each(env: &Env, kills: usize, load: bool) -> Result<(Vec<f64>, Option<Loaded>), String> {
    let vars = [("POOL_SIZE", "0".to_string()), ("POOL_WORKERS", kills.to_string())];
    // Room for the clients, the poll and the bench's other connections.
    let args: &[&str] = if load { &["--max-connections", "64"] } else { &[] };
    let mut d = start_fixture(env, "pool-daemon", false, args, &vars)?;
    d.wait_answering(DEADLINE)?;
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
    wait_looping(&d, kills, DEADLINE)?;
    let mut c = d.client()?;
    let clients = if load {
        let shape = Shape { clients: LOAD_CLIENTS, depth: 1, cpu: env.cpus.other, record: true };
        Some(Clients::start(&d.address, &Request::ndjson("daemon.info", ""), shape)?)
    } else {
        None
    };
    let (t0, n0) = (Instant::now(), clients.as_ref().map_or(0, Clients::answered));
    let mut v = Vec::new();
    for i in 0..kills {
        let name = format!("w{i}");
        let status = |c: &mut forkd::Client| {
            let s = c.call("worker.status", json!({ "name": name })).map_err(|e| format!("worker.status: {e}"))?;
            Ok::<_, String>((
                s[0]["pid"].as_i64().unwrap_or(0) as i32,
                s[0]["state"].as_str().unwrap_or("").to_string(),
            ))
        };
        let (old, _) = status(&mut c)?;
        let t = Instant::now();
        sys::signal(old, libc::SIGKILL);
        poll_until(&format!("{name} to loop again"), Duration::from_secs(10), Duration::ZERO, || {
            let (pid, state) = status(&mut c)?;
            Ok(pid != old && pid != 0 && state == "looping")
        })?;
        v.push(micros(t.elapsed()));
    }
    let loaded = match clients {
        Some(clients) => {
            let (secs, answered) = (t0.elapsed().as_secs_f64(), clients.answered() - n0);
            let round_trips = clients.stop()?;
            if round_trips.is_empty() {
                return Err("the clients completed no call during the kills".into());
            }
            Some(Loaded { round_trips: quantiles(round_trips), rate: answered as f64 / secs })
        }
        None => None,
    };
    d.terminate(DEADLINE)?;
    Ok((v, loaded))
}

/// What the clients saw while workers were killed.
struct Loaded {
    round_trips: Quantiles,
    /// Answers per second over the kills.
    rate: f64,
}

pub fn restart(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let kills = env.plan.restart_kills;
    super::progress(&format!("restart: {kills} kills"));
    let (idle, _) = kill_each(env, kills, false)?;
    super::progress("restart: supervisord");
    let peer = measured(&env.peer, |sd| peer::restart(env, sd, kills));
    super::progress("restart: pm2");
    let pm2 = measured(&env.pm2, |p| pm2::restart(env, p, kills));
    out.push(
        Figure::new("restart.kill9", env.cpus.watched(), "µs", Stat::Q(quantiles(idle)))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
            .peer(peer)
            .pm2(pm2)
            .note(format!(
                "{kills} single-instance workers, each killed once; polled with worker.status; \
                 peers: the same number of /bin/sleep, polled with getProcessInfo, and PM2's list"
            )),
    );
    super::progress(&format!("restart: {kills} kills, {LOAD_CLIENTS} clients loading the socket"));
    let (loaded, clients) = kill_each(env, kills, true)?;
    let clients = clients.expect("loaded");
    out.push(
        Figure::new("restart.kill9.loaded", env.cpus.watched(), "µs", Stat::Q(quantiles(loaded)))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
            .note(format!(
                "as restart.kill9, while {LOAD_CLIENTS} clients on cpu{} call daemon.info (ndjson, one in flight each)",
                env.cpus.other
            )),
    );
    out.push(Figure::new("restart.loaded.clients", env.cpus.split(), "µs", Stat::Q(clients.round_trips)).note(
        format!(
            "the round trips of the {LOAD_CLIENTS} clients' daemon.info calls during restart.kill9.loaded; {:.0} req/s",
            clients.rate
        ),
    ));
    Ok(())
}

pub fn pause(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    super::progress("control: worker.pause");
    let vars = [("COPY_LOOPTIME_MS", "10000".to_string())];
    let mut d = start_fixture(env, "copy-daemon", false, &[], &vars)?;
    d.wait_answering(DEADLINE)?;
    wait_looping(&d, 1, DEADLINE)?;
    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    let mut w = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| e.to_string())?;
    let pause = Request::ndjson("worker.pause", r#"{"name":"handyman"}"#);
    let resume = Request::ndjson("worker.resume", r#"{"name":"handyman"}"#);
    // The answer is one entry per instance, each saying whether it was
    // done: `[{"instance":0,"name":"handyman","ok":true}]`.
    let mut call = |r: &Request| -> Result<(), String> {
        let body = w.call(&r.bytes).map_err(|e| e.to_string())?;
        if is_success(body) && count(body, b"\"ok\":true") == 1 && count(body, b"\"ok\":false") == 0 {
            Ok(())
        } else {
            Err(format!("unexpected answer: {}", String::from_utf8_lossy(body)))
        }
    };
    for _ in 0..10 {
        call(&pause)?;
        call(&resume)?;
    }
    let mut v = Vec::new();
    for _ in 0..env.plan.pause_samples {
        let t = Instant::now();
        call(&pause)?;
        v.push(micros(t.elapsed()));
        call(&resume)?;
    }
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
    d.terminate(DEADLINE)?;
    out.push(
        Figure::new("control.pause", env.cpus.same(), "µs", Stat::Q(quantiles(v)))
            .target(Target::below(Of::P99, 1000.0, "p99 < 1000"))
            .note("worker.pause answers once the worker acknowledged; looptime 10 s; supervisord has no pause"),
    );
    Ok(())
}
