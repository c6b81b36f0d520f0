//! RPC figures: `my.echo` on the echo daemon's unix socket, in each
//! framing, and the floor it is judged against.
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

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::daemon::{bench_dir, Launch, Running, DEADLINE};
use super::report::{Figure, Of, Peer, Stat, Target};
use super::stats::{median, micros, quantiles, Quantiles};
use super::wire::{is_success, Framing, Proto, Request, Wire};
use super::{peer, sys, Env};

/// Clients of the throughput figures.
const CLIENTS: [usize; 3] = [1, 8, 32];
/// The pipelining figure: this many connections, each `PIPELINE_DEPTH`
/// requests in flight.
const PIPELINE_CLIENTS: usize = 8;
const PIPELINE_DEPTH: usize = 32;

/// The round trip of `request` on one connection, `samples` times after a
/// warm-up, from the calling thread (pin it first).
pub fn latency(
    socket: &Path,
    request: &Request,
    warmup: usize,
    samples: usize,
    check: bool,
) -> Result<Quantiles, String> {
    let mut w = Wire::connect(socket, request.framing, DEADLINE).map_err(|e| format!("connect: {e}"))?;
    let first = w.call(&request.bytes).map_err(|e| format!("first call: {e}"))?;
    if check && !is_success(first) {
        return Err(format!("unexpected answer: {}", String::from_utf8_lossy(first)));
    }
    for _ in 0..warmup {
        w.call(&request.bytes).map_err(|e| format!("warm-up: {e}"))?;
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        w.call(&request.bytes).map_err(|e| format!("call: {e}"))?;
        v.push(micros(t.elapsed()));
    }
    Ok(quantiles(v))
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
/// requests in flight, counted over `window`.
///
/// One client thread on `cpu` drives every connection with `poll(2)`, the
/// way wrk does: with one core for the clients, a blocking thread per
/// connection would spend it switching between threads. A connection gets
/// its next `depth` requests once all answers to the previous ones are in.
pub fn throughput(
    socket: &Path,
    request: &Request,
    clients: usize,
    depth: usize,
    cpu: usize,
    window: Duration,
    daemon: Option<i32>,
) -> Result<Load, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
    let thread = {
        let (stop, done) = (stop.clone(), done.clone());
        let (socket, request) = (socket.to_path_buf(), request.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let setup = (|| {
                sys::pin_current(cpu).map_err(|e| format!("pin: {e}"))?;
                let mut conns = Vec::with_capacity(clients);
                for _ in 0..clients {
                    let mut w =
                        Wire::connect(&socket, request.framing, DEADLINE).map_err(|e| format!("connect: {e}"))?;
                    let first = w.call(&request.bytes).map_err(|e| format!("first call: {e}"))?;
                    if !is_success(first) {
                        return Err(format!("unexpected answer: {}", String::from_utf8_lossy(first)));
                    }
                    for _ in 0..20 {
                        w.call(&request.bytes).map_err(|e| format!("warm-up: {e}"))?;
                    }
                    w.set_nonblocking().map_err(|e| format!("non-blocking: {e}"))?;
                    conns.push(w);
                }
                Ok(conns)
            })();
            let mut conns = match setup {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(sys::gettid()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let batch = request.repeated(depth);
            let mut owed = vec![depth; clients];
            for w in &mut conns {
                w.send_all(&batch).map_err(|e| format!("send: {e}"))?;
            }
            let mut fds: Vec<libc::pollfd> =
                conns.iter().map(|w| libc::pollfd { fd: w.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
            while !stop.load(Ordering::Relaxed) {
                // Safety: `fds` is a valid array of its length.
                let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(format!("poll: {e}"));
                }
                let mut answered = 0;
                for (i, pfd) in fds.iter_mut().enumerate() {
                    if pfd.revents == 0 {
                        continue;
                    }
                    let n = conns[i].drain().map_err(|e| format!("receive: {e}"))?;
                    if n > owed[i] {
                        return Err(format!("{n} answers to {} requests", owed[i]));
                    }
                    owed[i] -= n;
                    answered += n;
                    if owed[i] == 0 {
                        conns[i].send_all(&batch).map_err(|e| format!("send: {e}"))?;
                        owed[i] = depth;
                    }
                }
                done.fetch_add(answered as u64, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let tid = match ready_rx.recv_timeout(DEADLINE) {
        Ok(Ok(tid)) => tid,
        Ok(Err(_)) | Err(_) => {
            stop.store(true, Ordering::Relaxed);
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => "the client thread did not get ready".into(),
            });
        }
    };
    // Let the connections get going before the window opens.
    std::thread::sleep(Duration::from_millis(50));
    let busy = || (daemon.and_then(|p| sys::cpu_ns(p, p)), sys::cpu_ns(std::process::id() as i32, tid));
    let (n0, t0, (d0, c0)) = (done.load(Ordering::Relaxed), Instant::now(), busy());
    std::thread::sleep(window);
    let (n1, t1, (d1, c1)) = (done.load(Ordering::Relaxed), Instant::now(), busy());
    stop.store(true, Ordering::Relaxed);
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the client thread panicked".into()),
    }
    let secs = (t1 - t0).as_secs_f64();
    let share = |a: Option<u64>, b: Option<u64>| Some((b? - a?) as f64 / 1e9 / secs);
    Ok(Load { rate: (n1 - n0) as f64 / secs, daemon_busy: share(d0, d1), client_busy: share(c0, c1) })
}

/// The median of the plan's throughput windows, and a note of how busy
/// daemon and client were (their means over the windows).
pub fn throughput_runs(
    env: &Env,
    socket: &Path,
    request: &Request,
    clients: usize,
    depth: usize,
    daemon: Option<i32>,
) -> Result<(Stat, String), String> {
    let mut loads = Vec::new();
    for _ in 0..env.plan.tput_runs {
        loads.push(throughput(socket, request, clients, depth, env.cpus.other, env.plan.tput_window, daemon)?);
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
        socket: socket.clone(),
        pid_file: socket.clone(),
        detached: false,
        probe,
        cpu: env.cpus.daemon,
    };
    let mut server = Running::start(&mut cmd, launch)?;
    server.wait_answering(DEADLINE)?;
    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    let request = Request { bytes: Request::echo(Proto::Ndjson).bytes, framing: Framing::Line };
    latency(&socket, &request, env.plan.warmup, env.plan.latency_samples, false)
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

    let dir = bench_dir("rpc")?;
    let (socket, pid_file) = (dir.join("d.sock"), dir.join("d.pid"));
    let mut cmd = Command::new(env.bins.join("echo-daemon"));
    cmd.arg("-f").arg("--socket").arg(format!("unix://{}", socket.display())).arg("--pidfile").arg(&pid_file);
    cmd.args(["--max-connections", "256"]);
    let launch = Launch {
        name: "echo-daemon".into(),
        dir,
        socket: socket.clone(),
        pid_file,
        detached: false,
        probe: Request::ndjson("daemon.info", ""),
        cpu: env.cpus.daemon,
    };
    let mut d = Running::start(&mut cmd, launch)?;
    d.wait_answering(DEADLINE)?;
    let pid = d.pid()?;

    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    for proto in [Proto::Ndjson, Proto::HttpJson, Proto::HttpXml] {
        super::progress(&format!("rpc: latency {}", proto.name()));
        let q = latency(&socket, &Request::echo(proto), env.plan.warmup, env.plan.latency_samples, true)?;
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
