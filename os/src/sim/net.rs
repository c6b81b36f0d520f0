//! Sockets and streams: the objects behind descriptors, the connections
//! between them, and when each is ready.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::process::Proc;
use super::state::State;
use super::{SimOs, STREAM_CAPACITY};
use crate::{Address, Fd, Pid, Ready};

#[derive(Debug)]
pub(super) enum Object {
    Stream { conn: u64, side: usize },
    Listener { addr: Address, backlog: VecDeque<u64>, max: usize, open: bool, owner: End },
    SignalWake { pid: i32 },
    PidLock { path: PathBuf },
}

impl Object {
    pub(super) fn describe(&self) -> String {
        match self {
            Object::Stream { conn, side } => format!("stream {conn}.{side}"),
            Object::Listener { addr, .. } => format!("listener {addr}"),
            Object::SignalWake { .. } => "signal pipe".to_string(),
            Object::PidLock { path } => format!("pid file {}", path.display()),
        }
    }
}

pub(super) struct Conn {
    /// `bufs[s]` holds what side `s` wrote and the other side has yet to read.
    pub(super) bufs: [VecDeque<u8>; 2],
    pub(super) open: [bool; 2],
    /// What `peer` on side `s` answers: `ends[1 - s]`, who is at the other
    /// end, as the kernel recorded it when the connection was made.
    pub(super) ends: [End; 2],
}

/// Who made one end of a connection.
#[derive(Clone, Copy, Debug)]
pub(super) enum End {
    /// The process that connected, listened or made the pair, with the
    /// user and group it had then.
    Unix {
        pid: Pid,
        uid: u32,
        gid: u32,
    },
    Tcp(SocketAddr),
}

impl End {
    /// Who this end is, as `Os::peer` tells it to the other end.
    pub(super) fn peer(&self) -> crate::Peer {
        match *self {
            End::Unix { pid, uid, gid } => crate::Peer::Unix { pid, uid, gid },
            End::Tcp(addr) => crate::Peer::Tcp(addr),
        }
    }
}

impl End {
    pub(super) fn of(p: &Proc) -> End {
        End::Unix { pid: p.pid, uid: p.uid, gid: p.gid }
    }
}

impl State {
    pub(super) fn readiness(&self, pid: i32, fd: i32, interest: Ready) -> Ready {
        let Some(id) = self.procs.get(&pid).and_then(|p| p.fds.get(&fd)) else {
            return Ready::ERROR;
        };
        let (obj, _) = &self.objects[id];
        let mut r = Ready::NONE;
        match obj {
            Object::Stream { conn, side } => {
                let c = &self.conns[conn];
                let other = 1 - side;
                if !c.bufs[other].is_empty() || !c.open[other] {
                    r |= Ready::READ;
                }
                if !c.open[other] {
                    r |= Ready::HUP | Ready::WRITE;
                } else if c.bufs[*side].len() < STREAM_CAPACITY {
                    r |= Ready::WRITE;
                }
            }
            Object::Listener { backlog, .. } => {
                if !backlog.is_empty() {
                    r |= Ready::READ;
                }
            }
            Object::SignalWake { pid } => {
                if self.procs.get(pid).is_some_and(|p| !p.pending.is_empty()) {
                    r |= Ready::READ;
                }
            }
            Object::PidLock { .. } => r |= Ready::READ | Ready::WRITE,
        }
        let keep = interest | Ready::HUP | Ready::ERROR;
        Ready::from_bits(r.bits() & keep.bits())
    }
}

impl Ready {
    pub(super) fn from_bits(bits: u8) -> Ready {
        let mut r = Ready::NONE;
        for flag in [Ready::READ, Ready::WRITE, Ready::HUP, Ready::ERROR] {
            if bits & flag.bits() != 0 {
                r |= flag;
            }
        }
        r
    }
}

impl SimOs {
    pub(super) fn ebadf() -> io::Error {
        io::Error::from_raw_os_error(libc::EBADF)
    }

    /// The world's trace so far is not reachable from a process; `note`
    /// writes into it.
    pub(super) fn stream_of(st: &State, pid: i32, fd: Fd) -> io::Result<(u64, usize)> {
        match st.object_of(pid, fd).map(|id| &st.objects[&id].0) {
            Some(Object::Stream { conn, side }) => Ok((*conn, *side)),
            Some(_) => Err(io::Error::from_raw_os_error(libc::ENOTSOCK)), // not a stream
            None => Err(Self::ebadf()),
        }
    }
}
