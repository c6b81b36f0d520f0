//! The load generator: one client thread on a CPU of its own that drives
//! many connections with `poll(2)`, the way wrk does. With one core for the
//! clients, a blocking thread per connection would spend it switching
//! between threads.
//!
//! Each connection has `depth` requests in flight: it gets its next batch
//! once every answer to the previous one is in. The thread counts answers
//! as they come, so that a caller can read a rate over any window while the
//! load runs, and can record each batch's round trip (with one request in
//! flight, each request's latency) for a latency figure taken under load.
//! It never blocks the caller: [`Clients::stop`] ends it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use forkd_os::Address;

use super::daemon::DEADLINE;
use super::stats::micros;
use super::sys;
use super::wire::{is_success, Request, Wire};

/// The most round trips a load records: bounded memory (16 MB), and more
/// than a few seconds of 32 clients at the daemon's rate.
const MAX_RECORDED: usize = 2 << 20;

/// What the load is and where it runs.
#[derive(Clone, Debug)]
pub struct Shape {
    pub clients: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    pub cpu: usize,
    /// Whether to record each batch's round trip.
    pub record: bool,
}

/// A running load.
pub struct Clients {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: JoinHandle<Result<Vec<f64>, String>>,
    /// The client thread's id, for its CPU time.
    pub tid: i32,
}

/// Connects `clients` connections, each checked with one call and warmed
/// with 20 more, then made non-blocking.
fn connect_all(address: &Address, request: &Request, clients: usize) -> Result<Vec<Wire>, String> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut w = Wire::connect(address, request.framing, DEADLINE).map_err(|e| format!("connect: {e}"))?;
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
}

/// The client thread's loop, until `stop`: the recorded round trips, µs.
fn drive(
    mut conns: Vec<Wire>,
    request: &Request,
    shape: &Shape,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Result<Vec<f64>, String> {
    let batch = request.repeated(shape.depth);
    let mut owed = vec![shape.depth; conns.len()];
    let mut sent = vec![Instant::now(); conns.len()];
    let mut recorded = Vec::with_capacity(if shape.record { MAX_RECORDED.min(1 << 16) } else { 0 });
    for (w, at) in conns.iter_mut().zip(&mut sent) {
        *at = Instant::now();
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
                if shape.record && recorded.len() < MAX_RECORDED {
                    recorded.push(micros(sent[i].elapsed()));
                }
                sent[i] = Instant::now();
                conns[i].send_all(&batch).map_err(|e| format!("send: {e}"))?;
                owed[i] = shape.depth;
            }
        }
        done.fetch_add(answered as u64, Ordering::Relaxed);
    }
    Ok(recorded)
}

impl Clients {
    /// Connects and warms every client, then starts the load; returns once
    /// it runs (or the setup's error).
    pub fn start(address: &Address, request: &Request, shape: Shape) -> Result<Clients, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
        let thread = {
            let (stop, done) = (stop.clone(), done.clone());
            let (address, request) = (address.clone(), request.clone());
            std::thread::spawn(move || {
                let setup = sys::pin_current(shape.cpu)
                    .map_err(|e| format!("pin: {e}"))
                    .and_then(|()| connect_all(&address, &request, shape.clients));
                match setup {
                    Ok(conns) => {
                        let _ = ready_tx.send(Ok(sys::gettid()));
                        drive(conns, &request, &shape, &stop, &done)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        Err(e)
                    }
                }
            })
        };
        match ready_rx.recv_timeout(DEADLINE) {
            Ok(Ok(tid)) => Ok(Clients { stop, done, thread, tid }),
            Ok(Err(_)) | Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(match thread.join() {
                    Ok(Err(e)) => e,
                    _ => "the client thread did not get ready".into(),
                })
            }
        }
    }

    /// Answers received so far.
    pub fn answered(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Ends the load: the recorded round trips, in µs (none unless asked).
    pub fn stop(self) -> Result<Vec<f64>, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => Err("the client thread panicked".into()),
        }
    }
}
