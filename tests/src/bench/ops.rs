//! The operator's surface: how long one scrape of `GET /metrics` takes
//! (Prometheus text, every process's memory read at scrape time) with 4
//! and with 1000 workers, and how large the status page is on the wire.

use std::io::{Read, Write};

use forkd_os::Address;

use super::report::{Figure, Of, Stat, Target};
use super::rpc::{self, Endpoint};
use super::sys;
use super::wire::{Framing, Request};
use super::Env;

/// The scrape's round trip on one keep-alive connection, from the
/// daemon's CPU as `worker.list`'s figure is taken.
pub fn scrape(env: &Env, address: &Address, workers: usize, samples: usize) -> Result<Figure, String> {
    let get = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let request = Request { bytes: get, framing: Framing::Http };
    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    let q = rpc::latency(&Endpoint::plain(address), &request, 3, samples, false);
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
    let figure = Figure::new(format!("metrics.scrape.w{workers}"), env.cpus.same(), "µs", Stat::Q(q?))
        .note("GET /metrics (text 0.0.4), each process's memory read at scrape time");
    Ok(match workers {
        1000 => figure.target(Target::below(Of::P50, 10_000.0, "p50 < 10000")),
        _ => figure,
    })
}

/// The status page's body, as `GET /` answers it.
pub fn page_size(env: &Env, address: &Address) -> Result<Figure, String> {
    let Address::Unix(path) = address else { return Err("the page is measured on a unix daemon".into()) };
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| format!("read the page: {e}"))?;
    let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| answer.len() - i - 4);
    let body = body.filter(|_| answer.starts_with(b"HTTP/1.1 200")).ok_or("GET / answered no page")?;
    Ok(Figure::new("page.size", env.cpus.same(), "KiB", Stat::Value { value: body as f64 / 1024.0, runs: 1 })
        .target(Target::below(Of::Value, 100.0, "< 100"))
        .note("GET /: HTML, CSS and JS in one file, compiled in"))
}
