//! Fleets of idle workers (the pool daemon with 4 and with 1000) and many
//! idle connections: memory, stop, and what it takes to run a thousand.
//!
//! - Memory: `/proc/PID/smaps_rollup` of the master and of each worker once
//!   every worker is looping and the daemon is idle. RSS counts every page
//!   mapped; PSS divides shared pages (the binary, the libraries, what fork
//!   shared copy-on-write) among their sharers; USS counts only private
//!   pages, what killing that process alone would free.
//! - Stop: SIGTERM to the master until the master and every worker are
//!   gone (a zombie counts as gone).
//! - A thousand: launch until `worker.list` shows 1000 looping; the same
//!   reached with `worker.scale` from one; the latency of `worker.list` of
//!   1000, and of a scrape of `/metrics` (as with 4).
//! - Connections: the master's growth per idle connection, 1000 of them
//!   open, each having made one call.

use std::time::{Duration, Instant};

use serde_json::json;

use super::daemon::{poll_until, Running, DEADLINE};
use super::lifecycle::{start_fixture, wait_looping};
use super::peer::{self, FleetFigures};
use super::pm2;
use super::report::{Figure, Of, Peer, Stat, Target};
use super::rpc::{self, Endpoint};
use super::stats::{micros, millis, quantiles};
use super::sys::{self, Mem};
use super::wire::{count, is_success, Framing, Proto, Request, Wire};
use super::Env;

/// The large fleet: workers, and connections.
pub const THOUSAND: usize = 1000;
const LARGE_DEADLINE: Duration = Duration::from_secs(120);

fn pool_vars(size: usize) -> [(&'static str, String); 2] {
    [("POOL_SIZE", size.to_string()), ("POOL_LOOPTIME_MS", "10000".to_string())]
}

fn peer_fleet(env: &Env, n: usize, runs: usize) -> Result<FleetFigures, String> {
    if env.plan.quick && n == THOUSAND {
        // supervisord takes about half a minute to start and stop a thousand.
        return Err("skipped in --quick".into());
    }
    match &env.peer {
        Ok(sd) => {
            super::progress(&format!("fleet: supervisord, {n} programs"));
            // getAllProcessInfo of 1000 takes about half a second: fewer samples.
            let list_samples = (env.plan.list_samples / 5).max(10);
            peer::fleet(env, sd, n, runs, list_samples).map_err(|e| format!("failed: {e}"))
        }
        Err(why) => Err(why.clone()),
    }
}

/// PM2's figures for `n` processes, as [`peer_fleet`]'s.
fn pm2_fleet(env: &Env, n: usize, runs: usize) -> Result<FleetFigures, String> {
    if env.plan.quick && n == THOUSAND {
        return Err("skipped in --quick".into());
    }
    match &env.pm2 {
        Ok(install) => {
            super::progress(&format!("fleet: pm2, {n} processes"));
            // Its list of 1000 takes hundreds of milliseconds: fewer samples.
            let list_samples = (env.plan.list_samples / 5).max(10);
            pm2::fleet(env, install, n, runs, list_samples).map_err(|e| format!("failed: {e}"))
        }
        Err(why) => Err(why.clone()),
    }
}

fn peer_of(p: &Result<FleetFigures, String>, pick: impl Fn(&FleetFigures) -> Stat) -> Peer {
    match p {
        Ok(f) => Peer::Measured(pick(f)),
        Err(e) => Peer::Skipped(e.clone()),
    }
}

type Field = (&'static str, fn(&Mem) -> f64);
const FIELDS: [Field; 3] = [("rss", |m| m.rss), ("pss", |m| m.pss), ("uss", |m| m.uss)];

/// How many workers `worker.list` shows that have not run their body yet.
/// Counted in the raw answer, whose keys are sorted: `loops` comes before
/// `name`.
fn not_looped(w: &mut Wire) -> Result<usize, String> {
    let body = w.call(&Request::ndjson("worker.list", "").bytes).map_err(|e| format!("worker.list: {e}"))?;
    Ok(count(body, b"\"loops\":0,"))
}

/// The master's and the workers' memory, once all loop and the fleet is
/// idle: every worker has run its (empty) body once and waits for the next
/// looptime, and the master, which said so, has nothing left to do.
fn memory(d: &mut Running) -> Result<(Mem, Vec<Mem>), String> {
    let mut w = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| e.to_string())?;
    poll_until("every worker to have looped once", LARGE_DEADLINE, Duration::from_millis(2), || {
        Ok(not_looped(&mut w)? == 0)
    })?;
    let pid = d.pid()?;
    let master = sys::smaps_rollup(pid)?;
    let workers = sys::children(pid).into_iter().map(sys::smaps_rollup).collect::<Result<Vec<_>, _>>()?;
    if workers.is_empty() {
        return Err("the master has no worker processes".into());
    }
    Ok((master, workers))
}

fn memory_figures(
    out: &mut Vec<Figure>,
    env: &Env,
    n: usize,
    (master, workers): &(Mem, Vec<Mem>),
    (peer, pm2): (&Result<FleetFigures, String>, &Result<FleetFigures, String>),
) {
    let placement = format!("idle, daemon cpu{}", env.cpus.daemon);
    for (field, get) in FIELDS {
        let mut f = Figure::new(
            format!("mem.master.{field}.w{n}"),
            &placement,
            "kB",
            Stat::Value { value: get(master), runs: 1 },
        )
        .peer(peer_of(peer, |p| Stat::Value { value: get(&p.mem), runs: 1 }))
        .pm2(peer_of(pm2, |p| Stat::Value { value: get(&p.mem), runs: 1 }));
        if field == "rss" {
            f = f.target(Target::below(Of::Value, 4096.0, "< 4096"));
        }
        if field == "pss" {
            f = f.note("peers: supervisord itself, PM2's God daemon");
        }
        out.push(f);
    }
    for (field, get) in FIELDS {
        let q = quantiles(workers.iter().map(get).collect());
        let mut f = Figure::new(format!("mem.worker.{field}.w{n}"), &placement, "kB", Stat::Q(q));
        if field == "uss" {
            f = f.target(Target::below(Of::P99, 512.0, "p99 < 512"));
        }
        if field == "rss" {
            f = f.note(format!("over the {} workers", workers.len()));
        }
        out.push(f);
    }
}

/// Four workers: memory, and stop over several runs.
fn small(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    super::progress("fleet: 4 workers");
    let (mut mem, mut stops) = (None, Vec::new());
    for _ in 0..env.plan.stop_runs {
        let mut d = start_fixture(env, "pool-daemon", false, &[], &pool_vars(4))?;
        d.wait_answering(DEADLINE)?;
        wait_looping(&d, 4, DEADLINE)?;
        if mem.is_none() {
            mem = Some(memory(&mut d)?);
            out.push(super::ops::scrape(env, &d.address, 4, env.plan.latency_samples.min(2_000))?);
            out.push(super::ops::page_size(env, &d.address)?);
        }
        stops.push(millis(d.terminate(DEADLINE)?));
    }
    let peer = peer_fleet(env, 4, env.plan.stop_runs.min(5));
    let pm2 = pm2_fleet(env, 4, env.plan.stop_runs.min(5));
    memory_figures(out, env, 4, mem.as_ref().expect("one run at least"), (&peer, &pm2));
    out.push(
        Figure::new("stop.w4", env.cpus.watched(), "ms", Stat::Q(quantiles(stops)))
            .target(Target::below(Of::P50, 50.0, "p50 < 50"))
            .peer(peer_of(&peer, |p| p.stop))
            .pm2(peer_of(&pm2, |p| p.stop))
            .note("SIGTERM until all are gone; pm2: pm2 kill until all are gone"),
    );
    Ok(())
}

/// A thousand workers: launch until all loop, `worker.list`, memory, stop.
fn large(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let (mut launch, mut stops, mut mem, mut list) = (Vec::new(), Vec::new(), None, None);
    for run in 0..env.plan.thousand_runs {
        super::progress(&format!("fleet: {THOUSAND} workers, run {}", run + 1));
        let t = Instant::now();
        let mut d = start_fixture(env, "pool-daemon", false, &[], &pool_vars(THOUSAND))?;
        d.wait_answering(LARGE_DEADLINE)?;
        wait_looping(&d, THOUSAND, LARGE_DEADLINE)?;
        launch.push(millis(t.elapsed()));
        if run == 0 {
            mem = Some(memory(&mut d)?);
            sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
            let req = Request::ndjson("worker.list", "");
            list = Some(rpc::latency(&Endpoint::plain(&d.address), &req, 3, env.plan.list_samples, true)?);
            sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
            out.push(super::ops::scrape(env, &d.address, THOUSAND, env.plan.list_samples)?);
        }
        stops.push(millis(d.terminate(LARGE_DEADLINE)?));
    }
    let peer = peer_fleet(env, THOUSAND, env.plan.thousand_runs.min(2));
    // PM2 takes over a minute to stop a thousand: one run.
    let pm2 = pm2_fleet(env, THOUSAND, 1);
    out.push(
        Figure::new(format!("scale.launch.w{THOUSAND}"), env.cpus.watched(), "ms", Stat::Q(quantiles(launch)))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
            .peer(peer_of(&peer, |p| p.launch))
            .pm2(peer_of(&pm2, |p| p.launch))
            .note("launch until worker.list shows all looping; supervisord: until all RUNNING; pm2: from pm2.start, its daemon up, until all online"),
    );
    out.push(
        Figure::new(format!("scale.list.w{THOUSAND}"), env.cpus.same(), "µs", Stat::Q(list.expect("first run")))
            .target(Target::below(Of::P50, 5000.0, "p50 < 5000"))
            .peer(peer_of(&peer, |p| p.list))
            .pm2(peer_of(&pm2, |p| p.list))
            .note("worker.list; supervisord: getAllProcessInfo; pm2: its list (pm2 jlist's call) through its API"),
    );
    memory_figures(out, env, THOUSAND, mem.as_ref().expect("first run"), (&peer, &pm2));
    out.push(
        Figure::new(format!("stop.w{THOUSAND}"), env.cpus.watched(), "ms", Stat::Q(quantiles(stops)))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
            .peer(peer_of(&peer, |p| p.stop))
            .pm2(peer_of(&pm2, |p| p.stop)),
    );
    Ok(())
}

/// `worker.scale` from one instance to a thousand, until all loop.
fn scale_up(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let mut v = Vec::new();
    for run in 0..env.plan.thousand_runs {
        super::progress(&format!("fleet: worker.scale to {THOUSAND}, run {}", run + 1));
        let mut d = start_fixture(env, "pool-daemon", false, &[], &pool_vars(1))?;
        d.wait_answering(DEADLINE)?;
        wait_looping(&d, 1, DEADLINE)?;
        let mut c = d.client()?;
        let t = Instant::now();
        c.call("worker.scale", json!({ "name": "idle", "instances": THOUSAND }))
            .map_err(|e| format!("worker.scale: {e}"))?;
        wait_looping(&d, THOUSAND, LARGE_DEADLINE)?;
        v.push(millis(t.elapsed()));
        d.terminate(LARGE_DEADLINE)?;
    }
    out.push(
        Figure::new(format!("scale.up.w{THOUSAND}"), env.cpus.watched(), "ms", Stat::Q(quantiles(v)))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
            .note("worker.scale from 1 to 1000 until all looping"),
    );
    Ok(())
}

/// The master's growth per idle connection.
fn connections(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    super::progress(&format!("fleet: {THOUSAND} idle connections"));
    let max = (THOUSAND + 100).to_string();
    let mut d = start_fixture(env, "echo-daemon", false, &["--max-connections", &max, "--socket-timeout", "600"], &[])?;
    d.wait_answering(DEADLINE)?;
    let pid = d.pid()?;
    let echo = Request::echo(Proto::Ndjson);
    let call = |w: &mut Wire| -> Result<(), String> {
        let body = w.call(&echo.bytes).map_err(|e| format!("my.echo: {e}"))?;
        if is_success(body) {
            Ok(())
        } else {
            Err(format!("unexpected answer: {}", String::from_utf8_lossy(body)))
        }
    };
    // Warm the daemon's allocator with a connection that comes and goes.
    for _ in 0..3 {
        let mut w = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| e.to_string())?;
        call(&mut w)?;
    }
    // One connection open through both measurements, so counted in both:
    // two round trips on it before each say that the daemon has served all
    // that came before (the closes of the warm ones, the thousand calls)
    // and ended the turn that did.
    let mut settle = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| e.to_string())?;
    let mut settled = || call(&mut settle).and_then(|()| call(&mut settle));
    settled()?;
    let before = sys::smaps_rollup(pid)?;
    let t = Instant::now();
    let mut open = Vec::with_capacity(THOUSAND);
    for _ in 0..THOUSAND {
        let mut w = Wire::connect(&d.address, Framing::Line, DEADLINE).map_err(|e| format!("connect: {e}"))?;
        call(&mut w)?;
        open.push(w);
    }
    let took = t.elapsed();
    settled()?;
    let after = sys::smaps_rollup(pid)?;
    // Still served, all of them: the last one opened answers.
    call(open.last_mut().expect("connections"))?;
    drop(open);
    d.terminate(DEADLINE)?;
    let per = |get: fn(&Mem) -> f64| (get(&after) - get(&before)) * 1024.0 / THOUSAND as f64;
    for (field, get) in [FIELDS[0], FIELDS[2]] {
        out.push(
            Figure::new(
                format!("mem.conn.{field}"),
                format!("idle, daemon cpu{}", env.cpus.daemon),
                "B/conn",
                Stat::Value { value: per(get), runs: 1 },
            )
            .note(format!(
                "{THOUSAND} connections, one my.echo each; master {field} {:.0} -> {:.0} kB; opened in {:.0} µs",
                get(&before),
                get(&after),
                micros(took)
            )),
        );
    }
    Ok(())
}

pub fn run(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    small(env, out)?;
    large(env, out)?;
    scale_up(env, out)?;
    connections(env, out)
}
