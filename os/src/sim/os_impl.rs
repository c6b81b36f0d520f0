//! The `Os` trait, as a simulated process calls it: each method is one
//! scheduling point, then a change to the world's state.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::files::FileNode;
use super::net::{Conn, End, Object};
use super::sched::{Run, Wait};
use super::state::State;
use super::trace::TraceEvent;
use super::{SimOs, EPHEMERAL_PORTS, STREAM_CAPACITY};
use crate::{
    Address, Entry, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError, PollFd,
    Ready, Region, Signal, SignalSet, SpawnOptions,
};

impl Os for SimOs {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn parent_pid(&self) -> Pid {
        self.shared.lock().procs[&self.pid.0].ppid
    }

    fn now(&self) -> Instant {
        Instant(self.shared.lock().clock)
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let st = self.enter();
        if st.clock < deadline.0 {
            let _st = self.block(st, Wait::Sleep { deadline: deadline.0 });
        }
    }

    fn spawn(&mut self, opts: SpawnOptions, entry: Entry<SimOs>) -> io::Result<Pid> {
        self.fork(opts, entry)
    }

    fn spawn_exec(&mut self, spec: &crate::ExecSpec) -> io::Result<Pid> {
        self.exec(spec)
    }

    fn try_reap(&mut self) -> io::Result<Option<(Pid, ExitStatus)>> {
        let me = self.pid.0;
        let mut st = self.enter();
        let zombies: Vec<(i32, ExitStatus)> = st
            .procs
            .values()
            .filter(|p| p.ppid.0 == me)
            .filter_map(|p| match p.run {
                Run::Zombie(s) => Some((p.pid.0, s)),
                _ => None,
            })
            .collect();
        if zombies.is_empty() {
            return Ok(None);
        }
        let i = st.below(zombies.len() as u64) as usize;
        let (pid, status) = zombies[i];
        st.procs.remove(&pid);
        st.record(me, TraceEvent::Reap { child: Pid(pid), status });
        Ok(Some((Pid(pid), status)))
    }

    fn kill(&mut self, target: KillTarget, signal: Signal) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        let victims: Vec<i32> = match target {
            KillTarget::Process(pid) => st.procs.get(&pid.0).map(|p| vec![p.pid.0]).unwrap_or_default(),
            KillTarget::Group(g) => st.procs.values().filter(|p| p.pgid == g && p.alive()).map(|p| p.pid.0).collect(),
        };
        st.record(me, TraceEvent::Kill { target, signal, victims: victims.iter().map(|v| Pid(*v)).collect() });
        if victims.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for v in victims {
            st.deliver(v, signal);
        }
        Ok(())
    }

    fn wait_gone(&mut self, pid: Pid, deadline: Instant) -> io::Result<bool> {
        let me = self.pid.0;
        if pid.0 <= 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("wait: invalid pid {pid}")));
        }
        let mut st = self.enter();
        if !st.gone(pid.0) && st.clock < deadline.0 {
            st = self.block(st, Wait::Gone { pid: pid.0, deadline: deadline.0 });
        }
        let gone = st.gone(pid.0);
        st.record(me, TraceEvent::WaitGone { pid, gone });
        Ok(gone)
    }

    fn detach(&mut self, launcher: Entry<SimOs>) -> io::Result<()> {
        self.detach_from_launcher(launcher)
    }

    fn close_inherited(&mut self, keep: &[Fd]) {
        let me = self.pid.0;
        let mut st = self.enter();
        let fds: Vec<i32> =
            st.procs[&me].fds.keys().copied().filter(|fd| *fd > 2 && !keep.contains(&Fd(*fd))).collect();
        for fd in &fds {
            st.close_fd(me, *fd);
        }
        st.record(me, TraceEvent::Note(format!("closed inherited {fds:?}")));
    }

    fn setsid(&mut self) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        let p = st.proc(me);
        p.pgid = p.pid;
        Ok(())
    }

    /// Children inherit it. It shapes the files the world creates as the
    /// kernel's does: a new pid file gets `0600 & !umask`; a unix socket
    /// and a private file get their own mode whatever it is.
    fn set_umask(&mut self, umask: u32) -> u32 {
        let me = self.pid.0;
        let mut st = self.enter();
        std::mem::replace(&mut st.proc(me).umask, umask & 0o777)
    }

    fn chdir_root(&mut self) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.record(me, TraceEvent::Note("chdir /".into()));
        Ok(())
    }

    fn redirect_stdio_to_null(&mut self) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).console = false;
        st.record(me, TraceEvent::Note("stdio to /dev/null".into()));
        Ok(())
    }

    fn set_niceness(&mut self, niceness: i32) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).niceness = niceness;
        Ok(())
    }

    fn set_parent_death_signal(&mut self, signal: Signal) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).death_signal = Some(signal);
        Ok(())
    }

    fn install_signals(&mut self, signals: &[Signal]) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        for s in signals {
            assert!(*s != Signal::Kill && *s != Signal::Stop, "{s} cannot be caught");
            st.proc(me).installed.insert(*s);
        }
        if let Some(fd) = st.procs[&me].signal_fd {
            return Ok(Fd(fd));
        }
        let id = st.new_object(Object::SignalWake { pid: me });
        let fd = st.install_fd(me, id);
        st.proc(me).signal_fd = Some(fd.0);
        Ok(fd)
    }

    fn take_signals(&mut self) -> io::Result<SignalSet> {
        let me = self.pid.0;
        let mut st = self.enter();
        let set = std::mem::take(&mut st.proc(me).pending);
        if !set.is_empty() {
            st.record(me, TraceEvent::Signals(set));
        }
        Ok(set)
    }

    fn listen(&mut self, addr: &Address, opts: ListenOptions) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        match addr {
            Address::Unix(path) => {
                if st.files.contains_key(path) {
                    return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
                }
                // Made under a umask that lets exactly `unix_mode` through,
                // as the real bind is: the process's own umask plays no part.
                st.files.insert(path.clone(), FileNode::Socket { mode: opts.unix_mode & 0o777 });
            }
            Address::Tcp(sa) => {
                if st.tcp_ports.contains_key(sa) {
                    return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
                }
            }
        }
        let max = opts.backlog.max(1) as usize;
        let owner = match addr {
            Address::Unix(_) => End::of(&st.procs[&me]),
            Address::Tcp(sa) => End::Tcp(*sa),
        };
        let id =
            st.new_object(Object::Listener { addr: addr.clone(), backlog: VecDeque::new(), max, open: true, owner });
        if let Address::Tcp(sa) = addr {
            st.tcp_ports.insert(*sa, id);
        }
        let fd = st.install_fd(me, id);
        st.record(me, TraceEvent::Listen { addr: addr.clone(), fd });
        Ok(fd)
    }

    fn accept(&mut self, listener: Fd) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        let id = st.object_of(me, listener).ok_or_else(Self::ebadf)?;
        let rate = st.config.faults.accept_emfile;
        let Object::Listener { backlog, .. } = &mut st.objects.get_mut(&id).unwrap().0 else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if backlog.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if st.fault(rate) {
            st.record(me, TraceEvent::AcceptFault);
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let Object::Listener { backlog, .. } = &mut st.objects.get_mut(&id).unwrap().0 else { unreachable!() };
        let conn = backlog.pop_front().unwrap();
        let obj = st.new_object(Object::Stream { conn, side: 1 });
        let fd = st.install_fd(me, obj);
        st.record(me, TraceEvent::Accept { fd, conn });
        Ok(fd)
    }

    fn connect(&mut self, addr: &Address) -> io::Result<Fd> {
        let me = self.pid.0;
        let mut st = self.enter();
        let listener = match addr {
            Address::Unix(path) => {
                // connect follows symbolic links, as the kernel's does.
                let path = st.resolve(path)?;
                match st.files.get(&path) {
                    None => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
                    Some(FileNode::Regular { .. } | FileNode::Symlink { .. }) => {
                        return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
                    }
                    Some(FileNode::Socket { .. }) => {
                        let target = Address::Unix(path);
                        st.objects
                            .iter()
                            .find(
                                |(_, (o, _))| matches!(o, Object::Listener { addr: a, open: true, .. } if *a == target),
                            )
                            .map(|(id, _)| *id)
                    }
                }
            }
            Address::Tcp(sa) => st.tcp_ports.get(sa).copied(),
        };
        let Some(listener) = listener else {
            st.record(me, TraceEvent::ConnectRefused { addr: addr.clone() });
            return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        };
        let conn = st.next_conn;
        let client = match addr {
            Address::Unix(_) => End::of(&st.procs[&me]),
            Address::Tcp(_) => {
                let port = EPHEMERAL_PORTS + (conn % 20_000) as u16;
                End::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
            }
        };
        let Object::Listener { backlog, max, owner, .. } = &mut st.objects.get_mut(&listener).unwrap().0 else {
            unreachable!()
        };
        if backlog.len() >= *max {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN)); // the backlog is full
        }
        backlog.push_back(conn);
        let server = *owner;
        st.next_conn += 1;
        st.conns.insert(
            conn,
            Conn { bufs: [VecDeque::new(), VecDeque::new()], open: [true, true], ends: [client, server] },
        );
        let obj = st.new_object(Object::Stream { conn, side: 0 });
        let fd = st.install_fd(me, obj);
        st.record(me, TraceEvent::Connect { addr: addr.clone(), fd, conn });
        Ok(fd)
    }

    fn socket_pair(&mut self) -> io::Result<(Fd, Fd)> {
        let me = self.pid.0;
        let mut st = self.enter();
        let conn = st.next_conn;
        st.next_conn += 1;
        let end = End::of(&st.procs[&me]);
        st.conns.insert(conn, Conn { bufs: [VecDeque::new(), VecDeque::new()], open: [true, true], ends: [end, end] });
        let a = st.new_object(Object::Stream { conn, side: 0 });
        let b = st.new_object(Object::Stream { conn, side: 1 });
        let fa = st.install_fd(me, a);
        let fb = st.install_fd(me, b);
        st.record(me, TraceEvent::SocketPair { a: fa, b: fb, conn });
        Ok((fa, fb))
    }

    fn pipe(&mut self) -> io::Result<(Fd, Fd)> {
        self.socket_pair()
    }

    fn read(&mut self, fd: Fd, buf: &mut [u8]) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        let other = 1 - side;
        let available = st.conns[&conn].bufs[other].len();
        if available == 0 {
            if !st.conns[&conn].open[other] {
                st.record(me, TraceEvent::ReadEof { fd });
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = available.min(buf.len());
        let rate = st.config.faults.short_read;
        if n > 1 && st.fault(rate) {
            n = 1 + st.below(n as u64 - 1) as usize;
        }
        let c = st.conns.get_mut(&conn).unwrap();
        for (i, b) in c.bufs[other].drain(..n).enumerate() {
            buf[i] = b;
        }
        st.record(me, TraceEvent::Read { fd, n });
        Ok(n)
    }

    /// Descriptors 0 to 2, unless the process put something else there,
    /// are the console: what is written there is kept in the trace (or
    /// dropped, once they point at `/dev/null`).
    fn write(&mut self, fd: Fd, buf: &[u8]) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        if (0..=2).contains(&fd.0) && !st.procs[&me].fds.contains_key(&fd.0) {
            if st.procs[&me].console {
                st.record(me, TraceEvent::Console { fd, text: String::from_utf8_lossy(buf).into_owned() });
            }
            return Ok(buf.len());
        }
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        if !st.conns[&conn].open[1 - side] {
            st.record(me, TraceEvent::WriteBrokenPipe { fd });
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = STREAM_CAPACITY - st.conns[&conn].bufs[side].len();
        if room == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = room.min(buf.len());
        let rate = st.config.faults.short_write;
        if n > 1 && st.fault(rate) {
            n = 1 + st.below(n as u64 - 1) as usize;
        }
        st.conns.get_mut(&conn).unwrap().bufs[side].extend(&buf[..n]);
        st.record(me, TraceEvent::Write { fd, n });
        Ok(n)
    }

    /// A simulated process only has the descriptors the world gave it, so a
    /// number it was not given names nothing and its close does nothing.
    fn close(&mut self, fd: Fd) {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.procs[&me].signal_fd == Some(fd.0) {
            st.proc(me).signal_fd = None;
        }
        st.close_fd(me, fd.0);
        st.record(me, TraceEvent::Close(fd));
    }

    fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<usize> {
        let me = self.pid.0;
        let mut st = self.enter();
        let rate = st.config.faults.poll_interrupted;
        let interrupted = st.fault(rate);
        let scan = |st: &State, fds: &mut [PollFd]| {
            let mut n = 0;
            for p in fds.iter_mut() {
                p.ready = st.readiness(me, p.fd.0, p.interest);
                if !p.ready.is_empty() {
                    n += 1;
                }
            }
            n
        };
        if interrupted {
            for p in fds.iter_mut() {
                p.ready = Ready::NONE;
            }
            st.record(me, TraceEvent::PollInterrupted);
            return Ok(0);
        }
        let mut n = scan(&st, fds);
        let expired = deadline.is_some_and(|d| st.clock >= d.0);
        if n == 0 && !expired {
            let wait =
                Wait::Poll { fds: fds.iter().map(|p| (p.fd.0, p.interest)).collect(), deadline: deadline.map(|d| d.0) };
            st = self.block(st, wait);
            n = scan(&st, fds);
        }
        st.record(me, TraceEvent::Poll(n));
        Ok(n)
    }

    fn shm_create(&mut self, len: usize) -> io::Result<Region> {
        self.create_region(len)
    }

    fn shm_discard(&mut self, region: &Region) -> io::Result<()> {
        self.discard(region)
    }

    fn shm_keep_from_children(&mut self, region: &Region) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        if !st.procs[&me].regions.contains(&region.id()) {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM)); // not mapped
        }
        st.dont_fork.insert((me, region.id()));
        st.record(me, TraceEvent::ShmKeepFromChildren { region: region.id() });
        Ok(())
    }

    unsafe fn shm_unmap(&mut self, region: Region) {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.proc(me).regions.remove(&region.id()) {
            st.unmap(me, region.id());
        }
        st.record(me, TraceEvent::ShmUnmap { region: region.id() });
    }

    fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError> {
        let me = self.pid.0;
        let mut st = self.enter();
        let (uid, umask) = (st.procs[&me].uid, st.procs[&me].umask);
        let fresh = FileNode::Regular { content: Vec::new(), lock: None, uid, mode: 0o600 & !umask };
        // The real arm's rules, in its order: what is at the path is judged
        // before anything is done to it, and a refused file is left alone.
        let held = st.files.entry(path.to_path_buf()).or_insert(fresh).judge_pid_file(uid);
        let refusal = match held {
            Err(e) => Some(e),
            Ok(None) => None,
            // As `kill(pid, 0)` tells it: a zombie not yet reaped still runs.
            Ok(Some(Some(pid))) if pid > 0 && st.procs.contains_key(&pid) => Some(PidFileError::Locked(Some(pid))),
            Ok(Some(named)) => Some(PidFileError::LockedByOther(named)),
        };
        if let Some(e) = refusal {
            st.record(me, TraceEvent::PidLockRefused { path: path.to_path_buf(), error: e.to_string() });
            return Err(e);
        }
        let id = st.new_object(Object::PidLock { path: path.to_path_buf() });
        if let Some(FileNode::Regular { content, lock, .. }) = st.files.get_mut(path) {
            *lock = Some(id);
            *content = format!("{me}\n").into_bytes();
        }
        let fd = st.install_fd(me, id);
        st.record(me, TraceEvent::PidLock { path: path.to_path_buf(), fd });
        Ok(fd)
    }

    fn rewrite_pid_file(&mut self, lock: Fd, pid: Pid) -> io::Result<()> {
        self.rewrite_pid(lock, pid)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.record(me, TraceEvent::Unlink(path.to_path_buf()));
        match st.files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn file_exists(&self, path: &Path) -> bool {
        self.shared.lock().files.contains_key(path)
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        self.shared.lock().files.get(path).map(FileNode::kind)
    }

    fn read_private_file(&mut self, path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let me = self.pid.0;
        let mut st = self.enter();
        let uid = st.procs[&me].uid;
        let result = match st.files.get(path) {
            None => Ok(None),
            Some(node) => node.read_private(uid, limit).map(Some),
        };
        let outcome = match &result {
            Ok(Some(data)) => format!("{} bytes", data.len()),
            Ok(None) => "none".to_string(),
            Err(e) => e.to_string(),
        };
        st.record(me, TraceEvent::ReadPrivate { path: path.to_path_buf(), outcome });
        result
    }

    fn write_private_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        if st.files.contains_key(path) {
            st.record(me, TraceEvent::WritePrivate { path: path.to_path_buf(), bytes: None });
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let uid = st.procs[&me].uid;
        st.files.insert(path.to_path_buf(), FileNode::Regular { content: data.to_vec(), lock: None, uid, mode: 0o600 });
        st.record(me, TraceEvent::WritePrivate { path: path.to_path_buf(), bytes: Some(data.len()) });
        Ok(())
    }

    fn env_var(&self, name: &str) -> Option<std::ffi::OsString> {
        self.env_of_self(name)
    }

    fn remove_env(&mut self, name: &str) {
        self.remove_env_of_self(name)
    }

    fn take_inherited(&mut self, fd: Fd) -> io::Result<Fd> {
        let me = self.pid.0;
        let st = self.enter();
        if st.procs[&me].fds.contains_key(&fd.0) {
            Ok(fd)
        } else {
            Err(io::Error::from_raw_os_error(libc::EBADF))
        }
    }

    fn send_datagram(&mut self, to: &std::ffi::OsStr, data: &[u8]) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.record(me, TraceEvent::Datagram { to: to.to_owned(), len: data.len() });
        st.datagrams.push((Pid(me), to.to_owned(), data.to_vec()));
        Ok(())
    }

    fn uid(&self) -> u32 {
        self.shared.lock().procs[&self.pid.0].uid
    }

    fn peer(&mut self, fd: Fd) -> io::Result<Peer> {
        let me = self.pid.0;
        let st = self.enter();
        let (conn, side) = Self::stream_of(&st, me, fd)?;
        Ok(st.conns[&conn].ends[1 - side].peer())
    }

    /// Drawn from the world's generator, so a seed replays its secrets too.
    fn random_bytes(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let me = self.pid.0;
        self.enter().fill_random(me, buf);
        Ok(())
    }

    fn process_stats(&mut self, pid: Pid) -> io::Result<crate::ProcessStats> {
        super::process::stats_of(&self.enter(), pid)
    }

    fn resident_memory(&mut self, pid: Pid) -> io::Result<u64> {
        super::process::stats_of(&self.enter(), pid).map(|s| s.rss_bytes)
    }

    fn note(&mut self, event: std::fmt::Arguments<'_>) {
        let me = self.pid.0;
        self.shared.lock().note(me, event);
    }
}
