//! RPC figures: `my.echo` on the echo daemon's unix socket, in each
//! framing, and the floor it is judged against; and what the tcp token
//! costs: the same round trips on tcp with the token beside the same binary
//! with `--no-token`, measured interleaved.
//!
//! Latency: one client, sequential requests, client and daemon pinned to
//! one core, so that a round trip costs two context switches and no
//! wake-up across cores (about 20 µs on these virtual machines, more than
//! the work itself). The floor is the same round trip between two bare
//! processes pinned the same way: the bench and `forkd-bench
//! --floor-server`, which echoes bytes on a unix socket.
//!
//! Throughput: the daemon on its core, client threads on another, each
//! with its own connection and one request in flight (or `depth` when
//! pipelining: it writes them all, then reads all the answers). Counted
//! over a fixed window after every client is connected and warm.
//!
//! Token cost: two echo daemons on tcp at once, one with its token, one
//! with `--no-token`, both on the daemon's core with the client. Their
//! latencies are taken in alternate batches on one warm connection each,
//! so that whatever else the machine does meanwhile weighs on both.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use forkd_os::Address;

use super::daemon::{bench_dir, Launch, Running, DEADLINE};
use super::load::{Clients, Shape};
use super::report::{Figure, Of, Peer, Stat, Target};
use super::stats::{median, micros, quantiles, Quantiles};
use super::wire::{count, is_success, Framing, Proto, Request, Wire};
use super::{peer, sys, Env};

/// Clients of the throughput figures.
const CLIENTS: [usize; 3] = [1, 8, 32];
/// The pipelining figure: this many connections, each `PIPELINE_DEPTH`
/// requests in flight.
const PIPELINE_CLIENTS: usize = 8;
const PIPELINE_DEPTH: usize = 32;
/// Alternate batches per side of an interleaved latency pair.
const INTERLEAVE_BATCHES: usize = 20;

/// Where a latency client connects, and what it says first.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: Address,
    /// Sent once per connection, untimed, before anything else, and
    /// answered `true`: `rpc.authenticate` on tcp with a token.
    pub handshake: Option<Request>,
}

impl Endpoint {
    /// No handshake.
    pub fn plain(address: &Address) -> Endpoint {
        Endpoint { address: address.clone(), handshake: None }
    }
}

/// A connection to `endpoint`, past its handshake and its first call of
/// `request` (checked for success when `check`), warmed with `warmup` more.
fn warm_connection(endpoint: &Endpoint, request: &Request, warmup: usize, check: bool) -> Result<Wire, String> {
    let mut w = Wire::connect(&endpoint.address, request.framing, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    if let Some(hello) = &endpoint.handshake {
        let answer = w.call(&hello.bytes).map_err(|e| format!("handshake: {e}"))?;
        if !(is_success(answer) && count(answer, br#""result":true"#) == 1) {
            return Err(format!("handshake answered: {}", String::from_utf8_lossy(answer)));
        }
    }
    let first = w.call(&request.bytes).map_err(|e| format!("first call: {e}"))?;
    if check && !is_success(first) {
        return Err(format!("unexpected answer: {}", String::from_utf8_lossy(first)));
    }
    for _ in 0..warmup {
        w.call(&request.bytes).map_err(|e| format!("warm-up: {e}"))?;
    }
    Ok(w)
}

/// `samples` timed round trips of `request` on `w`, in µs, added to `into`.
fn timed(w: &mut Wire, request: &Request, samples: usize, into: &mut Vec<f64>) -> Result<(), String> {
    for _ in 0..samples {
        let t = Instant::now();
        w.call(&request.bytes).map_err(|e| format!("call: {e}"))?;
        into.push(micros(t.elapsed()));
    }
    Ok(())
}

/// The round trip of `request` on one connection, `samples` times after a
/// warm-up, from the calling thread (pin it first).
pub fn latency(
    endpoint: &Endpoint,
    request: &Request,
    warmup: usize,
    samples: usize,
    check: bool,
) -> Result<Quantiles, String> {
    let mut w = warm_connection(endpoint, request, warmup, check)?;
    let mut v = Vec::with_capacity(samples);
    timed(&mut w, request, samples, &mut v)?;
    Ok(quantiles(v))
}

/// Two latencies taken interleaved, and how they compare.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub a: Quantiles,
    pub b: Quantiles,
    /// The median over batch pairs of a's batch p50 over b's.
    pub ratio: f64,
    /// The smallest and largest of those ratios.
    pub ratio_range: (f64, f64),
    pub batches: usize,
}

/// [`latency`] of two (endpoint, request) sides, each on a connection of
/// its own warmed as `latency` warms one, then `samples` round trips each
/// in [`INTERLEAVE_BATCHES`] alternate batches: a then b, b then a, and so
/// on, so that neither always goes first. From the calling thread.
pub fn latency_pair(
    a: (&Endpoint, &Request),
    b: (&Endpoint, &Request),
    warmup: usize,
    samples: usize,
) -> Result<Pair, String> {
    let mut wa = warm_connection(a.0, a.1, warmup, true).map_err(|e| format!("first side: {e}"))?;
    let mut wb = warm_connection(b.0, b.1, warmup, true).map_err(|e| format!("second side: {e}"))?;
    let batches = INTERLEAVE_BATCHES.min(samples).max(1);
    let (mut va, mut vb) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let mut ratios = Vec::with_capacity(batches);
    for i in 0..batches {
        // The last batch takes the remainder.
        let n = samples / batches + if i == batches - 1 { samples % batches } else { 0 };
        let (from_a, from_b) = (va.len(), vb.len());
        if i % 2 == 0 {
            timed(&mut wa, a.1, n, &mut va)?;
            timed(&mut wb, b.1, n, &mut vb)?;
        } else {
            timed(&mut wb, b.1, n, &mut vb)?;
            timed(&mut wa, a.1, n, &mut va)?;
        }
        ratios.push(median(va[from_a..].to_vec()) / median(vb[from_b..].to_vec()));
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(Pair { a: quantiles(va), b: quantiles(vb), ratio: median(ratios), ratio_range: (lo, hi), batches })
}

/// What a throughput window measured.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Answers per second.
    pub rate: f64,
    /// The share of the window the daemon (its main thread) was on a CPU.
    pub daemon_busy: Option<f64>,
    /// The same for the client thread.
    pub client_busy: Option<f64>,
}

/// Requests per second with `clients` connections, each with `depth`
/// requests in flight, counted over `window`, from one client thread on
/// `cpu` (see [`load`](super::load)).
pub fn throughput(
    address: &Address,
    request: &Request,
    clients: usize,
    depth: usize,
    cpu: usize,
    window: Duration,
    daemon: Option<i32>,
) -> Result<Load, String> {
    let load = Clients::start(address, request, Shape { clients, depth, cpu, record: false })?;
    let tid = load.tid;
    // A throughput is answers per second of a window of time: the warm-up
    // before the window (the connections get going) and the window itself
    // are spans of time by definition, not waits for an event, while the
    // client thread drives the load.
    std::thread::sleep(Duration::from_millis(50));
    let busy = || (daemon.and_then(|p| sys::cpu_ns(p, p)), sys::cpu_ns(std::process::id() as i32, tid));
    let (n0, t0, (d0, c0)) = (load.answered(), Instant::now(), busy());
    std::thread::sleep(window);
    let (n1, t1, (d1, c1)) = (load.answered(), Instant::now(), busy());
    load.stop()?;
    let secs = (t1 - t0).as_secs_f64();
    let share = |a: Option<u64>, b: Option<u64>| Some((b? - a?) as f64 / 1e9 / secs);
    Ok(Load { rate: (n1 - n0) as f64 / secs, daemon_busy: share(d0, d1), client_busy: share(c0, c1) })
}

/// The median of the plan's throughput windows, and a note of how busy
/// daemon and client were (their means over the windows).
pub fn throughput_runs(
    env: &Env,
    address: &Address,
    request: &Request,
    clients: usize,
    depth: usize,
    daemon: Option<i32>,
) -> Result<(Stat, String), String> {
    let mut loads = Vec::new();
    for _ in 0..env.plan.tput_runs {
        loads.push(throughput(address, request, clients, depth, env.cpus.other, env.plan.tput_window, daemon)?);
    }
    let mean = |get: fn(&Load) -> Option<f64>| {
        let v: Vec<f64> = loads.iter().filter_map(get).collect();
        (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64)
    };
    let pct = |x: Option<f64>| x.map(|x| format!("{x:.0}%")).unwrap_or_else(|| "?".into());
    // The daemon's CPU time per answer: what it could serve if never idle.
    let cost = mean(|l| Some(l.daemon_busy? / l.rate * 1e4)).map(|us| format!("; daemon {us:.1} µs CPU/request"));
    let note = format!(
        "daemon busy {}, client busy {}{}",
        pct(mean(|l| l.daemon_busy)),
        pct(mean(|l| l.client_busy)),
        cost.unwrap_or_default()
    );
    let rate = median(loads.iter().map(|l| l.rate).collect());
    Ok((Stat::Value { value: rate, runs: env.plan.tput_runs }, note))
}

/// `forkd-bench --floor-server PATH`: echoes what it reads on each
/// connection, one connection at a time, until killed.
pub fn floor_server(path: &str) -> ExitCode {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor server: bind {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// The floor: a bare unix-socket round trip of an echo request's size
/// between two processes on the daemon's core.
fn floor(env: &Env) -> Result<Quantiles, String> {
    let dir = bench_dir("floor")?;
    let socket = dir.join("floor.sock");
    let mut cmd = Command::new(&env.bench_exe);
    cmd.arg("--floor-server").arg(&socket);
    // The probe is echoed back as a line, which is all a Wire needs.
    let probe = Request::ndjson("probe", "");
    let launch = Launch {
        name: "floor server".into(),
        dir,
        address: Address::Unix(socket.clone()),
        pid_file: socket.clone(),
        detached: false,
        probe,
        cpu: env.cpus.daemon,
    };
    let mut server = Running::start(&mut cmd, launch)?;
    server.wait_answering(DEADLINE)?;
    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    let request = Request { bytes: Request::echo(Proto::Ndjson).bytes, framing: Framing::Line };
    latency(&Endpoint::plain(&Address::Unix(socket)), &request, env.plan.warmup, env.plan.latency_samples, false)
}

/// A tcp port on loopback that nothing listens on right now.
fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("find a free tcp port: {e}"))?;
    l.local_addr().map_err(|e| format!("find a free tcp port: {e}"))
}

/// Starts `echo-daemon -f --max-connections 256` on the daemon's core with
/// `extra` arguments, on a unix socket in its directory or on a free tcp
/// port on loopback, and waits until it answers.
fn echo_daemon(env: &Env, name: &str, tcp: bool, extra: &[&str]) -> Result<Running, String> {
    let dir = bench_dir(name)?;
    let pid_file = dir.join("d.pid");
    let address = if tcp { Address::Tcp(free_port()?) } else { Address::Unix(dir.join("d.sock")) };
    let mut cmd = Command::new(env.bins.join("echo-daemon"));
    cmd.arg("-f").arg("--socket").arg(address.to_string()).arg("--pidfile").arg(&pid_file);
    cmd.args(["--max-connections", "256"]).args(extra);
    // On tcp with a token this probe is refused, which is answer enough.
    let probe = Request::ndjson("daemon.info", "");
    let launch = Launch { name: name.into(), dir, address, pid_file, detached: false, probe, cpu: env.cpus.daemon };
    let mut d = Running::start(&mut cmd, launch)?;
    d.wait_answering(DEADLINE)?;
    Ok(d)
}

/// The token a daemon on tcp wrote beside its pid file: 64 hex digits and
/// a newline.
fn read_token(d: &Running) -> Result<String, String> {
    let path = d.pid_file.with_extension("token");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let token = text.strip_suffix('\n').unwrap_or(&text);
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{}: not a token ({} bytes)", path.display(), text.len()));
    }
    Ok(token.to_string())
}

/// `rpc.latency.tcp.{ndjson,http}.{token,notoken}` and their ratios: the
/// echo daemon on tcp with its token beside the same binary with
/// `--no-token`, interleaved, from the calling thread (pinned to the
/// daemon's core).
fn tcp_token_latency(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let same = env.cpus.same();
    let with = echo_daemon(env, "rpc-tcp-token", true, &[])?;
    let without = echo_daemon(env, "rpc-tcp-notoken", true, &["--no-token"])?;
    let token = read_token(&with)?;
    // The figures compare nothing unless the token is really asked for.
    let mut w = Wire::connect(&with.address, Framing::Line, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    let refused = w.call(&Request::echo(Proto::Ndjson).bytes).map_err(|e| format!("call without the token: {e}"))?;
    if is_success(refused) {
        return Err(format!("{} answered a call without its token", with.address));
    }
    drop(w);
    let authenticated = Endpoint { address: with.address.clone(), handshake: Some(Request::authenticate(&token)) };
    let sides = [
        (
            "ndjson",
            (authenticated, Request::echo(Proto::Ndjson)),
            (Endpoint::plain(&without.address), Request::echo(Proto::Ndjson)),
            "rpc.authenticate once per connection, untimed",
        ),
        (
            "http",
            (Endpoint::plain(&with.address), Request::echo(Proto::HttpJson).bearer(&token)),
            (Endpoint::plain(&without.address), Request::echo(Proto::HttpJson)),
            "JSON-RPC, Authorization: Bearer on every request",
        ),
    ];
    for (framing, a, b, how) in &sides {
        super::progress(&format!("rpc: latency tcp {framing}, token and --no-token interleaved"));
        let pair = latency_pair((&a.0, &a.1), (&b.0, &b.1), env.plan.warmup, env.plan.latency_samples)?;
        let name = format!("rpc.latency.tcp.{framing}");
        let batches = format!("interleaved with the other in {} alternate batches", pair.batches);
        out.push(
            Figure::new(format!("{name}.token"), &same, "µs", Stat::Q(pair.a))
                .note(format!("echo-daemon on tcp 127.0.0.1 with its token; {how}; {batches}")),
        );
        out.push(
            Figure::new(format!("{name}.notoken"), &same, "µs", Stat::Q(pair.b))
                .note(format!("the same binary with --no-token; {batches}")),
        );
        out.push(
            Figure::new(format!("{name}.ratio"), &same, "x", Stat::Value { value: pair.ratio, runs: pair.batches })
                .target(Target::at_most(Of::Value, 1.05, "within 5% (<= 1.05)"))
                .note(format!(
                    "token p50 / notoken p50: median over {} batch pairs (range {:.3}-{:.3}); of all samples {:.3}",
                    pair.batches,
                    pair.ratio_range.0,
                    pair.ratio_range.1,
                    pair.a.p50 / pair.b.p50
                )),
        );
    }
    Ok(())
}

pub fn run(env: &Env, out: &mut Vec<Figure>) -> Result<(), String> {
    let same = env.cpus.same();
    let split = env.cpus.split();

    super::progress("rpc: floor");
    let floor = floor(env)?;
    out.push(
        Figure::new("rpc.latency.floor", &same, "µs", Stat::Q(floor))
            .note("bare unix-socket round trip between two processes, request-sized"),
    );

    let peer = match &env.peer {
        Ok(sd) => {
            super::progress("rpc: supervisord");
            peer::rpc(env, sd)
        }
        Err(why) => Err(why.clone()),
    };
    let peer_of = |pick: fn(&peer::RpcFigures) -> Stat| match &peer {
        Ok(p) => Peer::Measured(pick(p)),
        Err(e) => Peer::Skipped(e.clone()),
    };

    let mut d = echo_daemon(env, "rpc", false, &[])?;
    let socket = d.address.clone();
    let pid = d.pid()?;

    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    for proto in [Proto::Ndjson, Proto::HttpJson, Proto::HttpXml] {
        super::progress(&format!("rpc: latency {}", proto.name()));
        let endpoint = Endpoint::plain(&socket);
        let q = latency(&endpoint, &Request::echo(proto), env.plan.warmup, env.plan.latency_samples, true)?;
        let mut f = Figure::new(format!("rpc.latency.{}", proto.name()), &same, "µs", Stat::Q(q));
        match proto {
            Proto::Ndjson | Proto::HttpJson => {
                f = f
                    .target(Target::below(Of::P50, 2.0 * floor.p50, format!("p50 < 2x floor ({:.1})", 2.0 * floor.p50)))
                    .target(Target::below(Of::P99, 50.0, "p99 < 50"));
            }
            Proto::HttpXml => f = f.peer(peer_of(|p| p.latency)).note("peer: supervisor.getState over XML-RPC"),
        }
        out.push(f);
    }
    tcp_token_latency(env, out)?;
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;

    for proto in [Proto::Ndjson, Proto::HttpJson] {
        let request = Request::echo(proto);
        for clients in CLIENTS {
            super::progress(&format!("rpc: throughput {} x{clients}", proto.name()));
            let (stat, busy) = throughput_runs(env, &socket, &request, clients, 1, Some(pid))?;
            let mut f =
                Figure::new(format!("rpc.throughput.{}.c{clients}", proto.name()), &split, "req/s", stat).note(busy);
            if clients == 32 {
                f = f.target(Target::at_least(Of::Value, 150_000.0, ">= 150000"));
            }
            out.push(f);
        }
        super::progress(&format!("rpc: throughput {} pipelined", proto.name()));
        let (stat, busy) = throughput_runs(env, &socket, &request, PIPELINE_CLIENTS, PIPELINE_DEPTH, Some(pid))?;
        out.push(
            Figure::new(format!("rpc.throughput.{}.pipelined", proto.name()), &split, "req/s", stat)
                .note(format!("{PIPELINE_CLIENTS} connections x {PIPELINE_DEPTH} requests in flight; {busy}")),
        );
    }
    let request = Request::echo(Proto::HttpXml);
    for (clients, pick) in
        [(1, (|p: &peer::RpcFigures| p.tput_1) as fn(&peer::RpcFigures) -> Stat), (32, |p| p.tput_32)]
    {
        super::progress(&format!("rpc: throughput http-xml x{clients}"));
        let (stat, busy) = throughput_runs(env, &socket, &request, clients, 1, Some(pid))?;
        out.push(
            Figure::new(format!("rpc.throughput.http-xml.c{clients}"), &split, "req/s", stat)
                .peer(peer_of(pick))
                .note(format!("peer: supervisor.getState over XML-RPC; {busy}")),
        );
    }
    Ok(())
}
