//! The zero-downtime section's clients: a thread each, on a connection
//! of its own, calling `daemon.info` with a short pause between calls.
//!
//! Each client holds its own connection and does what `forkd::Client`
//! does: a call whose connection ends before any byte of its answer is
//! sent once more on a fresh connection (retried); a call that gets no
//! whole answer after that, or whose answer is cut, is lost. A connection
//! that cannot be made is refused.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bench::daemon::{poll_until, DEADLINE};
use crate::bench::stats::micros;
use crate::bench::sys;

/// The clients, each on a connection of its own.
pub const CLIENTS: usize = 32;
/// A client's pause between two calls: 32 clients calling flat out would
/// take both cores from the daemons being upgraded.
const THINK: Duration = Duration::from_millis(2);
/// The most latencies a client records (bounded memory).
const MAX_SAMPLES: usize = 1 << 16;
/// The call the clients make.
const CALL: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.info\",\"id\":1}\n";

/// What the daemon is going through, as a client reads it when it sends.
pub const IDLE: u8 = 0;
pub const STEADY: u8 = 1;
pub const UPGRADE: u8 = 2;
pub const RELOAD: u8 = 3;

/// What the clients share with the bench.
struct Shared {
    stop: AtomicBool,
    phase: AtomicU8,
    /// Clients that have had their first answer.
    ready: AtomicUsize,
    /// When a client first saw each master's pid in an answer.
    seen: Mutex<Vec<(Instant, i32)>>,
}

/// One client's counts.
#[derive(Default)]
pub struct Tally {
    pub sent: u64,
    pub answered: u64,
    pub retried: u64,
    pub lost: u64,
    pub refused: u64,
    /// (phase, latency in µs) of each answered call.
    pub samples: Vec<(u8, f32)>,
    /// The first few reasons for a lost call or a refused connection.
    pub errors: Vec<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        if self.errors.len() < 3 {
            self.errors.push(e);
        }
    }
}

/// How a call failed.
enum Fail {
    /// No byte of the answer came: the daemon had not taken the call.
    Unanswered(String),
    Lost(String),
}

fn connect(path: &Path) -> io::Result<BufReader<UnixStream>> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    Ok(BufReader::new(s))
}

/// Whether an error means the peer closed the connection (rather than a
/// timeout or a fault).
fn closed(e: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected};
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected)
}

/// One call: its answer line in `line`.
fn exchange(conn: &mut BufReader<UnixStream>, line: &mut String) -> Result<(), Fail> {
    line.clear();
    if let Err(e) = conn.get_mut().write_all(CALL) {
        return Err(if closed(&e) { Fail::Unanswered(e.to_string()) } else { Fail::Lost(format!("send: {e}")) });
    }
    match conn.read_line(line) {
        Ok(0) => Err(Fail::Unanswered("end of file".into())),
        Ok(_) if line.ends_with('\n') => Ok(()),
        Ok(_) => Err(Fail::Lost("the connection closed in the middle of an answer".into())),
        Err(e) if line.is_empty() && closed(&e) => Err(Fail::Unanswered(e.to_string())),
        Err(e) => Err(Fail::Lost(format!("receive: {e}"))),
    }
}

/// The master's pid in a `daemon.info` answer: its first `"pid"`.
fn pid_of(answer: &str) -> Option<i32> {
    let rest = &answer[answer.find("\"pid\":")? + 6..];
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Connects again after a lost call, until it works or the load ends.
fn reconnect(path: &Path, shared: &Shared, t: &mut Tally) -> Option<BufReader<UnixStream>> {
    let start = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
        match connect(path) {
            Ok(c) => return Some(c),
            Err(e) => {
                t.refused += 1;
                t.error(format!("connect: {e}"));
                std::thread::sleep(THINK);
            }
        }
    }
    None
}

/// A client's loop, until told to stop.
fn client(path: &Path, shared: &Shared) -> Tally {
    let mut t = Tally::default();
    let Some(mut conn) = reconnect(path, shared, &mut t) else { return t };
    let (mut line, mut last_pid) = (String::new(), 0);
    while !shared.stop.load(Ordering::Relaxed) {
        let phase = shared.phase.load(Ordering::Relaxed);
        let start = Instant::now();
        t.sent += 1;
        let result = match exchange(&mut conn, &mut line) {
            Err(Fail::Unanswered(why)) => match connect(path) {
                Ok(fresh) => {
                    conn = fresh;
                    t.retried += 1;
                    exchange(&mut conn, &mut line)
                }
                Err(e) => {
                    t.refused += 1;
                    Err(Fail::Lost(format!("{why}, then connect: {e}")))
                }
            },
            r => r,
        };
        let lat = start.elapsed();
        match result {
            Ok(()) if line.contains("\"result\"") => {
                t.answered += 1;
                if t.samples.len() < MAX_SAMPLES {
                    t.samples.push((phase, micros(lat) as f32));
                }
                let pid = pid_of(&line).unwrap_or(0);
                if pid != last_pid {
                    if last_pid == 0 {
                        shared.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    last_pid = pid;
                    shared.seen.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), pid));
                }
            }
            Ok(()) => {
                t.lost += 1;
                t.error(format!("error answer: {}", line.trim()));
            }
            Err(Fail::Lost(e) | Fail::Unanswered(e)) => {
                t.lost += 1;
                t.error(e);
                match reconnect(path, shared, &mut t) {
                    Some(c) => conn = c,
                    None => break,
                }
            }
        }
        std::thread::sleep(THINK);
    }
    t
}

/// The clients' threads.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// Starts the clients on `cpu`; returns once each has an answer.
    pub fn start(path: &Path, cpu: usize) -> Result<Load, String> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            phase: AtomicU8::new(IDLE),
            ready: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let threads = (0..CLIENTS)
            .map(|_| {
                let (shared, path) = (shared.clone(), path.to_path_buf());
                std::thread::spawn(move || {
                    let _ = sys::pin_current(cpu);
                    client(&path, &shared)
                })
            })
            .collect();
        let load = Load { shared, threads };
        poll_until("every client's first answer", DEADLINE, Duration::from_millis(5), || {
            Ok(load.shared.ready.load(Ordering::Relaxed) == CLIENTS)
        })?;
        Ok(load)
    }

    pub fn phase(&self, phase: u8) {
        self.shared.phase.store(phase, Ordering::Relaxed);
    }

    /// When a client first saw `pid` in an answer.
    pub fn first_seen(&self, pid: i32) -> Option<Instant> {
        let seen = self.shared.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().filter(|(_, p)| *p == pid).map(|(at, _)| *at).min()
    }

    /// Ends the load: every client's tally.
    pub fn stop(mut self) -> Vec<Tally> {
        self.shared.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.threads).into_iter().filter_map(|t| t.join().ok()).collect()
    }
}

impl Drop for Load {
    /// A section that fails midway stops its clients, too.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Kills, however the section ends, every master it saw that is still
/// there, with all it forked.
pub struct Masters(pub Vec<i32>);

impl Drop for Masters {
    fn drop(&mut self) {
        for pid in &self.0 {
            if sys::alive(*pid) {
                sys::kill_tree(*pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call to a daemon end that reads it, sends `answer` and closes.
    fn after(answer: &'static [u8]) -> (Result<(), Fail>, String) {
        let (client, daemon) = UnixStream::pair().unwrap();
        let daemon = std::thread::spawn(move || {
            let mut daemon = BufReader::new(daemon);
            let mut call = String::new();
            daemon.read_line(&mut call).unwrap();
            daemon.get_mut().write_all(answer).unwrap();
            call
        });
        let (mut conn, mut line) = (BufReader::new(client), String::new());
        let r = exchange(&mut conn, &mut line);
        assert_eq!(daemon.join().unwrap().as_bytes(), CALL);
        (r, line)
    }

    #[test]
    fn a_close_before_any_byte_is_unanswered_and_a_cut_answer_is_lost() {
        let (r, line) = after(b"{\"jsonrpc\":\"2.0\",\"result\":{\"pid\":42},\"id\":1}\n");
        assert!(r.is_ok());
        assert_eq!(pid_of(&line), Some(42));
        assert!(matches!(after(b"").0, Err(Fail::Unanswered(_))));
        assert!(matches!(after(b"{\"jsonrpc\":\"2.0\",\"res").0, Err(Fail::Lost(_))));
        // A connection the daemon closed before the call is written.
        let (client, daemon) = UnixStream::pair().unwrap();
        drop(daemon);
        let r = exchange(&mut BufReader::new(client), &mut String::new());
        assert!(matches!(r, Err(Fail::Unanswered(_))));
    }

    #[test]
    fn the_pid_is_the_first_one_in_the_answer() {
        let info = r#"{"jsonrpc":"2.0","result":{"description":"Pool Daemon","pid": 24590,"workers":4},"id":1}"#;
        assert_eq!(pid_of(info), Some(24590));
        assert_eq!(pid_of(r#"{"result":{}}"#), None);
    }
}
