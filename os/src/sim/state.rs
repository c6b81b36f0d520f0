//! The world's state behind its one lock: the process table, descriptors,
//! connections, files, regions and the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::files::FileNode;
use super::net::{Conn, Object};
use super::process::Proc;
use super::trace::{TraceEvent, TraceLine};
use super::{Config, Held, Outcome, Report, ROOT_PID};
use crate::rng::SplitMix64;
use crate::{Address, ExitStatus, Fd, Instant, Pid};

pub(super) struct State {
    pub(super) config: Config,
    pub(super) rng: SplitMix64,
    pub(super) clock: u64,
    pub(super) steps: u64,
    pub(super) procs: BTreeMap<i32, Proc>,
    pub(super) running: Option<i32>,
    pub(super) next_pid: i32,
    pub(super) objects: BTreeMap<u64, (Object, usize)>,
    pub(super) next_object: u64,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) next_conn: u64,
    pub(super) files: BTreeMap<PathBuf, FileNode>,
    pub(super) tcp_ports: BTreeMap<SocketAddr, u64>,
    pub(super) regions: BTreeMap<u64, BTreeSet<i32>>,
    /// Regions marked `MADV_DONTFORK`, by the process that marked them.
    pub(super) dont_fork: BTreeSet<(i32, u64)>,
    pub(super) next_region: u64,
    pub(super) trace: Vec<TraceLine>,
    pub(super) exits: Vec<(Pid, ExitStatus)>,
    pub(super) datagrams: Vec<(Pid, std::ffi::OsString, Vec<u8>)>,
    pub(super) panics: Vec<(Pid, String)>,
    pub(super) held_at_exit: BTreeMap<Pid, Held>,
    pub(super) root_status: Option<ExitStatus>,
    pub(super) outcome: Option<Outcome>,
    pub(super) aborting: bool,
    pub(super) done: bool,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
    /// What `spawn_exec` finds at a path: the programs installed with
    /// `SimOs::install_program`.
    pub(super) programs: BTreeMap<PathBuf, super::Program>,
}

impl State {
    pub(super) fn new(config: Config) -> State {
        State {
            rng: SplitMix64::new(config.seed ^ 0x9E37_79B9_7F4A_7C15),
            config,
            clock: 0,
            steps: 0,
            procs: BTreeMap::new(),
            running: None,
            next_pid: ROOT_PID.0 + 1,
            objects: BTreeMap::new(),
            next_object: 1,
            conns: BTreeMap::new(),
            next_conn: 1,
            files: BTreeMap::new(),
            programs: BTreeMap::new(),
            tcp_ports: BTreeMap::new(),
            regions: BTreeMap::new(),
            dont_fork: BTreeSet::new(),
            next_region: 1,
            trace: Vec::new(),
            exits: Vec::new(),
            panics: Vec::new(),
            held_at_exit: BTreeMap::new(),
            root_status: None,
            datagrams: Vec::new(),
            outcome: None,
            aborting: false,
            done: false,
            threads: Vec::new(),
        }
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// Whether a fault with this rate (per million) strikes now.
    pub(super) fn fault(&mut self, rate: u32) -> bool {
        rate > 0 && self.below(1_000_000) < u64::from(rate)
    }

    /// A fork that fails by an injected fault (EAGAIN), traced.
    pub(super) fn fork_fault(&mut self, pid: i32) -> std::io::Result<()> {
        let rate = self.config.faults.spawn_fails;
        if self.fault(rate) {
            self.record(pid, TraceEvent::SpawnFault);
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        Ok(())
    }

    pub(super) fn record(&mut self, pid: i32, event: TraceEvent) {
        if self.config.trace {
            self.trace.push(TraceLine { at: Instant(self.clock), pid: Pid(pid), event });
        }
    }

    pub(super) fn proc(&mut self, pid: i32) -> &mut Proc {
        self.procs.get_mut(&pid).expect("a running process is in the table")
    }

    pub(super) fn object_of(&self, pid: i32, fd: Fd) -> Option<u64> {
        self.procs.get(&pid).and_then(|p| p.fds.get(&fd.0)).copied()
    }

    pub(super) fn new_object(&mut self, obj: Object) -> u64 {
        let id = self.next_object;
        self.next_object += 1;
        self.objects.insert(id, (obj, 0));
        id
    }

    /// Puts object `id` at the lowest free descriptor of `pid`.
    pub(super) fn install_fd(&mut self, pid: i32, id: u64) -> Fd {
        self.objects.get_mut(&id).expect("object exists").1 += 1;
        let p = self.proc(pid);
        let fd = p.lowest_free_fd();
        p.fds.insert(fd, id);
        Fd(fd)
    }

    pub(super) fn close_fd(&mut self, pid: i32, fd: i32) {
        let Some(id) = self.procs.get_mut(&pid).and_then(|p| p.fds.remove(&fd)) else {
            return;
        };
        let entry = self.objects.get_mut(&id).expect("object exists");
        entry.1 -= 1;
        if entry.1 > 0 {
            return;
        }
        let (obj, _) = self.objects.remove(&id).unwrap();
        match obj {
            Object::Stream { conn, side } => {
                let c = self.conns.get_mut(&conn).expect("conn exists");
                c.open[side] = false;
                if !c.open[0] && !c.open[1] {
                    self.conns.remove(&conn);
                }
            }
            Object::Listener { addr, backlog, .. } => {
                // Connections nobody accepted are reset, as the kernel does.
                for conn in backlog {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.open[1] = false;
                        c.bufs[0].clear();
                    }
                }
                if let Address::Tcp(sa) = addr {
                    self.tcp_ports.remove(&sa);
                }
                // A unix socket file outlives its listener: it is stale now.
            }
            Object::SignalWake { .. } => {}
            Object::PidLock { path } => {
                if let Some(FileNode::Regular { lock, .. }) = self.files.get_mut(&path) {
                    if *lock == Some(id) {
                        *lock = None;
                    }
                }
            }
        }
    }

    pub(super) fn report(&mut self) -> Report {
        Report {
            outcome: self.outcome.clone().unwrap_or(Outcome::Finished),
            root_status: self.root_status,
            exits: self.exits.clone(),
            panics: self.panics.clone(),
            held_at_exit: self.held_at_exit.clone(),
            files: self.files.keys().cloned().collect(),
            live_regions: self.regions.len(),
            datagrams: std::mem::take(&mut self.datagrams),
            trace: std::mem::take(&mut self.trace),
            now: Instant(self.clock),
            steps: self.steps,
        }
    }

    /// Fills `buf` from the world's generator, and records it.
    pub(super) fn fill_random(&mut self, me: i32, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.record(me, TraceEvent::Random(buf.len()));
    }

    /// Records a note of the daemon's, when the world keeps a trace.
    pub(super) fn note(&mut self, me: i32, event: std::fmt::Arguments<'_>) {
        if self.config.trace {
            self.record(me, TraceEvent::Note(event.to_string()));
        }
    }
}
