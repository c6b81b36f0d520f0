//! The real operating system, on nix and signal-hook.
//!
//! `RealOs` is where forkd's system calls are made, and it makes them
//! plainly: each `Os` method is one call or a short sequence of them,
//! with no policy of its own, so that what the simulation models is what the
//! kernel does. The pieces live in one file per job:
//!
//! - `sys`: the `syscall!` macro and `retry`, the one place where `EINTR` is
//!   retried and a failure becomes an `io::Error`;
//! - `process`: fork, reap, kill and the calls that shape a process;
//! - `exec`: forking a child that executes a program (a master's upgrade);
//! - `signals`: handlers that only record a signal and wake a self-pipe;
//! - `net`, `io`: sockets, reads, writes and `poll`;
//! - `memory`: anonymous shared mappings;
//! - `files`: the pid file, private files and what a path names;
//! - `random`: bytes for secrets from `getrandom(2)`;
//! - `time`: the monotonic clock.
//!
//! Descriptors are plain numbers (`Fd`) that the caller closes through
//! `Os::close`. `RealOs` remembers which numbers it handed out, and `close`
//! ignores any other: a stale or foreign number must not close a descriptor
//! that something else in the process holds (a log file, a service
//! manager's socket). A descriptor that came from elsewhere and is the
//! caller's to close is given to [`RealOs::adopt`] first. A forked child
//! copies the `RealOs` value, and with it the set of what it inherited.
//! `forkd-os` has no logger, so an ignored close is silent.
//! `RealOs` owns its signal pipe itself. Forking is refused in a process with
//! several threads (see `process`), which is why [`thread_count`] is public:
//! a daemon checks it before it starts anything.

#[macro_use]
mod sys;
mod exec;
mod files;
mod io;
#[cfg(feature = "testing")]
mod isolated;
mod memory;
mod net;
mod process;
mod procfs;
mod random;
mod signals;
mod time;

use std::path::Path;

pub use files::{effective_uid, open_regular, OpenFor, OpenRegularError};
#[cfg(feature = "testing")]
pub use isolated::isolated;
pub use net::connect_unix_timeout;
pub use process::thread_count;

use crate::{
    Address, Entry, ExecSpec, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid,
    PidFileError, PollFd, Region, Signal, SignalSet, SpawnOptions,
};
use signals::SignalPipe;

/// The `Os` of a real process.
pub struct RealOs {
    /// `getpid`, cached; a spawned child refreshes its own.
    pid: Pid,
    /// Made by the first `install_signals`; a spawned child starts without.
    signals: Option<SignalPipe>,
    /// The descriptors handed out and not yet closed, which `close` may
    /// close; any other number it ignores.
    owned: FdSet,
    /// The children's `statm` files, kept open between scrapes.
    statm: procfs::StatmFiles,
}

/// A set of descriptor numbers, one bit each, in one allocation. A forked
/// worker closes the hundreds of descriptors it inherited through this
/// set: clearing bits in one small block copies a page or two of the
/// parent's memory, where freeing the nodes of a tree scattered over the
/// heap would copy a page for each.
#[derive(Debug, Default)]
struct FdSet {
    words: Vec<u64>,
}

impl FdSet {
    fn insert(&mut self, fd: i32) {
        let Ok(fd) = usize::try_from(fd) else { return };
        let (word, bit) = (fd / 64, fd % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    /// Whether `fd` was in the set; it is not any more.
    fn remove(&mut self, fd: i32) -> bool {
        let Ok(fd) = usize::try_from(fd) else { return false };
        let (word, bit) = (fd / 64, fd % 64);
        match self.words.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => {
                *w &= !(1 << bit);
                true
            }
            _ => false,
        }
    }

    /// The numbers in the set as runs of consecutive ones, first and last.
    fn runs(&self) -> impl Iterator<Item = (i32, i32)> + '_ {
        let mut bits = self
            .words
            .iter()
            .enumerate()
            .filter(|(_, &word)| word != 0)
            .flat_map(|(w, &word)| (0..64).filter(move |b| word & (1 << b) != 0).map(move |b| (w * 64 + b) as i32))
            .peekable();
        std::iter::from_fn(move || {
            let first = bits.next()?;
            let mut last = first;
            while bits.next_if_eq(&(last + 1)).is_some() {
                last += 1;
            }
            Some((first, last))
        })
    }
}

impl RealOs {
    /// The real kernel, for the calling process. No signal handler is
    /// installed until [`Os::install_signals`] asks for one.
    ///
    /// The `Result` is for symmetry with the other constructors of the
    /// world; today it never fails.
    ///
    /// ```
    /// use forkd_os::{real::RealOs, Os};
    ///
    /// let os = RealOs::new().unwrap();
    /// assert_eq!(os.pid().0, std::process::id() as i32);
    /// ```
    pub fn new() -> std::io::Result<RealOs> {
        return_large_blocks();
        Ok(RealOs {
            pid: Pid(nix::unistd::getpid().as_raw()),
            signals: None,
            owned: FdSet::default(),
            statm: Default::default(),
        })
    }

    /// Makes a descriptor this `RealOs` did not create its own, so that
    /// [`Os::close`] closes it: one handed over by a service manager (fd 3
    /// of systemd's socket activation), or one the caller opened itself and
    /// wants closed through the `Os`, in forked children too.
    ///
    /// ```
    /// use forkd_os::{real::RealOs, Fd, Os};
    /// use std::os::fd::IntoRawFd;
    ///
    /// let mut os = RealOs::new().unwrap();
    /// let fd = Fd(std::fs::File::open("/dev/null").unwrap().into_raw_fd());
    /// os.adopt(fd);
    /// os.close(fd);
    /// ```
    pub fn adopt(&mut self, fd: Fd) {
        self.owned.insert(fd.0);
    }

    /// Records a descriptor just handed out.
    fn owns(&mut self, fd: Fd) -> Fd {
        self.owned.insert(fd.0);
        fd
    }
}

/// Makes glibc's allocator give a large block back to the kernel when it is
/// freed. By default it raises its threshold for that each time one is
/// freed, and keeps the next in its heap: a daemon that answered one scrape
/// of a thousand workers (a megabyte, copied twice on its way out) would
/// hold those megabytes for the rest of its life. A fixed threshold of
/// 128 KiB, glibc's own default, stops the raising; allocators other than
/// glibc's are not touched.
fn return_large_blocks() {
    #[cfg(target_env = "gnu")]
    {
        const BLOCK: libc::c_int = 128 * 1024;
        // Safety: mallopt only sets the allocator's parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, BLOCK);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * BLOCK);
        }
    }
}

impl std::fmt::Debug for RealOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealOs")
            .field("pid", &self.pid)
            .field("signal_fd", &self.signals.as_ref().map(SignalPipe::fd))
            .finish()
    }
}

impl Os for RealOs {
    fn pid(&self) -> Pid {
        self.pid
    }

    fn parent_pid(&self) -> Pid {
        Pid(nix::unistd::getppid().as_raw())
    }

    fn now(&self) -> Instant {
        time::now()
    }

    fn sleep_until(&mut self, deadline: Instant) {
        time::sleep_until(deadline)
    }

    fn spawn(&mut self, opts: SpawnOptions, entry: Entry<Self>) -> std::io::Result<Pid> {
        process::spawn(self, opts, entry)
    }

    fn spawn_exec(&mut self, spec: &ExecSpec) -> std::io::Result<Pid> {
        exec::spawn_exec(spec)
    }

    fn try_reap(&mut self) -> std::io::Result<Option<(Pid, ExitStatus)>> {
        let reaped = process::try_reap()?;
        if let Some((pid, _)) = reaped {
            self.statm.forget(pid);
        }
        Ok(reaped)
    }

    fn kill(&mut self, target: KillTarget, signal: Signal) -> std::io::Result<()> {
        process::kill(target, signal)
    }

    fn wait_gone(&mut self, pid: Pid, deadline: Instant) -> std::io::Result<bool> {
        process::wait_gone(pid, deadline)
    }

    fn detach(&mut self, launcher: Entry<Self>) -> std::io::Result<()> {
        process::detach(self, launcher)
    }

    fn close_inherited(&mut self, keep: &[Fd]) {
        for fd in process::open_descriptors() {
            if fd > 2 && !keep.contains(&Fd(fd)) {
                self.owned.remove(fd);
                io::close(Fd(fd));
            }
        }
    }

    fn setsid(&mut self) -> std::io::Result<()> {
        process::setsid()
    }

    fn set_umask(&mut self, umask: u32) -> u32 {
        process::set_umask(umask)
    }

    fn chdir_root(&mut self) -> std::io::Result<()> {
        process::chdir_root()
    }

    fn redirect_stdio_to_null(&mut self) -> std::io::Result<()> {
        process::redirect_stdio_to_null()
    }

    fn set_niceness(&mut self, niceness: i32) -> std::io::Result<()> {
        process::set_niceness(niceness)
    }

    fn set_parent_death_signal(&mut self, signal: Signal) -> std::io::Result<()> {
        process::set_parent_death_signal(signal)
    }

    fn install_signals(&mut self, signals: &[Signal]) -> std::io::Result<Fd> {
        let pipe = match &mut self.signals {
            Some(pipe) => pipe,
            none => none.insert(SignalPipe::new()?),
        };
        // The pipe is not in `owned`: `close` knows it by its number, and a
        // forked child, which drops the pipe, must not close that number.
        pipe.install(signals)?;
        Ok(pipe.fd())
    }

    fn take_signals(&mut self) -> std::io::Result<SignalSet> {
        match &mut self.signals {
            Some(pipe) => pipe.take(),
            None => Ok(SignalSet::EMPTY),
        }
    }

    fn listen(&mut self, addr: &Address, opts: ListenOptions) -> std::io::Result<Fd> {
        net::listen(addr, opts).map(|fd| self.owns(fd))
    }

    fn accept(&mut self, listener: Fd) -> std::io::Result<Fd> {
        net::accept(listener).map(|fd| self.owns(fd))
    }

    fn connect(&mut self, addr: &Address) -> std::io::Result<Fd> {
        net::connect(addr).map(|fd| self.owns(fd))
    }

    fn socket_pair(&mut self) -> std::io::Result<(Fd, Fd)> {
        let (a, b) = net::socket_pair()?;
        Ok((self.owns(a), self.owns(b)))
    }

    fn pipe(&mut self) -> std::io::Result<(Fd, Fd)> {
        let (r, w) = io::pipe()?;
        Ok((self.owns(r), self.owns(w)))
    }

    fn read(&mut self, fd: Fd, buf: &mut [u8]) -> std::io::Result<usize> {
        io::read(fd, buf)
    }

    fn write(&mut self, fd: Fd, buf: &[u8]) -> std::io::Result<usize> {
        io::write(fd, buf)
    }

    fn close_all(&mut self, fds: &[Fd]) {
        let mut closing = FdSet::default();
        for &fd in fds {
            if self.signals.as_ref().is_some_and(|s| s.fd() == fd) {
                self.signals = None;
            } else if self.owned.remove(fd.0) {
                closing.insert(fd.0);
            }
        }
        for (first, last) in closing.runs() {
            io::close_range(first, last);
        }
    }

    fn close(&mut self, fd: Fd) {
        // The signal pipe is the Os's own: closing it uninstalls the
        // handlers (as in the simulation), and its owner closes the fds.
        if self.signals.as_ref().is_some_and(|s| s.fd() == fd) {
            self.signals = None;
            return;
        }
        // A number this Os did not hand out (or has closed) is someone
        // else's, or stale: closing it could close what another part of
        // the process has just opened.
        if self.owned.remove(fd.0) {
            io::close(fd)
        }
    }

    fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> std::io::Result<usize> {
        io::poll(fds, io::timeout_millis(self.now(), deadline))
    }

    fn shm_create(&mut self, len: usize) -> std::io::Result<Region> {
        memory::create(len)
    }

    unsafe fn shm_unmap(&mut self, region: Region) {
        // Safety: the caller uses no other handle to the region afterwards.
        unsafe { memory::unmap(region) }
    }

    fn shm_keep_from_children(&mut self, region: &Region) -> std::io::Result<()> {
        memory::keep_from_children(region)
    }

    fn shm_discard(&mut self, region: &Region) -> std::io::Result<()> {
        memory::discard(region)
    }

    fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError> {
        files::lock_pid_file(path, self.pid).map(|fd| self.owns(fd))
    }

    fn rewrite_pid_file(&mut self, lock: Fd, pid: Pid) -> std::io::Result<()> {
        files::rewrite_pid_file(lock, pid)
    }

    fn remove_file(&mut self, path: &Path) -> std::io::Result<()> {
        files::remove_file(path)
    }

    fn file_exists(&self, path: &Path) -> bool {
        files::file_exists(path)
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        files::file_kind(path)
    }

    fn read_private_file(&mut self, path: &Path, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
        files::read_private_file(path, limit)
    }

    fn write_private_file(&mut self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        files::write_private_file(path, data)
    }

    fn env_var(&self, name: &str) -> Option<std::ffi::OsString> {
        std::env::var_os(name)
    }

    fn remove_env(&mut self, name: &str) {
        std::env::remove_var(name)
    }

    fn take_inherited(&mut self, fd: Fd) -> std::io::Result<Fd> {
        io::make_nonblocking_cloexec(fd)?;
        Ok(self.owns(fd))
    }

    fn send_datagram(&mut self, to: &std::ffi::OsStr, data: &[u8]) -> std::io::Result<()> {
        net::send_datagram(to, data)
    }

    fn uid(&self) -> u32 {
        files::euid()
    }

    fn peer(&mut self, fd: Fd) -> std::io::Result<Peer> {
        net::peer(fd)
    }

    fn random_bytes(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        random::fill(buf)
    }

    fn process_stats(&mut self, pid: Pid) -> std::io::Result<crate::ProcessStats> {
        procfs::stats(pid)
    }

    fn resident_memory(&mut self, pid: Pid) -> std::io::Result<u64> {
        self.statm.resident(pid)
    }

    fn trim_memory(&mut self) {
        #[cfg(target_env = "gnu")]
        // Safety: malloc_trim only returns free memory to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
