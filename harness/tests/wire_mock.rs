//! The harness's byte-stream helpers (`forkd_harness::wire`) against a
//! mocked `Os`: each test pins down the exact calls a helper makes around
//! short writes, `WouldBlock` and its deadline.

use std::io::{self, ErrorKind};
use std::path::Path;

use forkd_harness::wire::{self, Short};
use forkd_os::{
    Address, Entry, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError, PollFd,
    Ready, Region, Signal, SignalSet, SpawnOptions,
};
use mockall::{mock, Sequence};

mock! {
    pub Os {}
    impl Os for Os {
        fn pid(&self) -> Pid;
        fn parent_pid(&self) -> Pid;
        fn now(&self) -> Instant;
        fn sleep_until(&mut self, deadline: Instant);
        fn spawn(&mut self, opts: SpawnOptions, entry: Entry<MockOs>) -> io::Result<Pid>;
        fn try_reap(&mut self) -> io::Result<Option<(Pid, ExitStatus)>>;
        fn kill(&mut self, target: KillTarget, signal: Signal) -> io::Result<()>;
        fn wait_gone(&mut self, pid: Pid, deadline: Instant) -> io::Result<bool>;
        fn setsid(&mut self) -> io::Result<()>;
        fn set_umask(&mut self, umask: u32) -> u32;
        fn chdir_root(&mut self) -> io::Result<()>;
        fn redirect_stdio_to_null(&mut self) -> io::Result<()>;
        fn set_niceness(&mut self, niceness: i32) -> io::Result<()>;
        fn set_parent_death_signal(&mut self, signal: Signal) -> io::Result<()>;
        fn install_signals(&mut self, signals: &[Signal]) -> io::Result<Fd>;
        fn take_signals(&mut self) -> io::Result<SignalSet>;
        fn listen(&mut self, addr: &Address, opts: ListenOptions) -> io::Result<Fd>;
        fn accept(&mut self, listener: Fd) -> io::Result<Fd>;
        fn connect(&mut self, addr: &Address) -> io::Result<Fd>;
        fn socket_pair(&mut self) -> io::Result<(Fd, Fd)>;
        fn pipe(&mut self) -> io::Result<(Fd, Fd)>;
        fn read(&mut self, fd: Fd, buf: &mut [u8]) -> io::Result<usize>;
        fn write(&mut self, fd: Fd, buf: &[u8]) -> io::Result<usize>;
        fn close(&mut self, fd: Fd);
        fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<usize>;
        fn shm_create(&mut self, len: usize) -> io::Result<Region>;
        unsafe fn shm_unmap(&mut self, region: Region);
        fn shm_keep_from_children(&mut self, region: &Region) -> io::Result<()>;
        fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError>;
        fn remove_file(&mut self, path: &Path) -> io::Result<()>;
        fn file_exists(&self, path: &Path) -> bool;
        fn file_kind(&self, path: &Path) -> Option<FileKind>;
        fn read_private_file(&mut self, path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>>;
        fn write_private_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
        fn env_var(&self, name: &str) -> Option<std::ffi::OsString>;
        fn take_inherited(&mut self, fd: Fd) -> io::Result<Fd>;
        fn send_datagram(&mut self, to: &std::ffi::OsStr, data: &[u8]) -> io::Result<()>;
        fn uid(&self) -> u32;
        fn peer(&mut self, fd: Fd) -> io::Result<Peer>;
        fn random_bytes(&mut self, buf: &mut [u8]) -> io::Result<()>;
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

#[test]
fn write_all_goes_on_after_short_writes_and_would_block() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, buf| {
        assert_eq!(buf, b"hello world");
        Ok(5)
    });
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Err(ErrorKind::WouldBlock.into()));
    os.expect_now().times(1).in_sequence(&mut seq).return_const(at(1));
    os.expect_poll().times(1).in_sequence(&mut seq).returning(|fds, deadline| {
        assert_eq!((fds.len(), fds[0].fd, fds[0].interest), (1, Fd(7), Ready::WRITE));
        assert_eq!(deadline, Some(at(10)));
        fds[0].ready = Ready::WRITE;
        Ok(1)
    });
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, buf| {
        assert_eq!(buf, b" world", "the rest, not the whole buffer again");
        Ok(buf.len())
    });
    wire::write_all(&mut os, Fd(7), b"hello world", at(10)).unwrap();
}

#[test]
fn write_all_gives_up_at_its_deadline_and_says_how_much_went() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Ok(2));
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Err(ErrorKind::WouldBlock.into()));
    os.expect_now().times(1).in_sequence(&mut seq).return_const(at(10));
    match wire::write_all(&mut os, Fd(7), b"abcd", at(10)) {
        Err((2, Short::Deadline)) => {}
        other => panic!("expected 2 bytes and the deadline, got {other:?}"),
    }
}

#[test]
fn read_some_takes_a_reset_for_the_end_of_file() {
    let mut os = MockOs::new();
    os.expect_read().times(1).returning(|_, _| Err(ErrorKind::ConnectionReset.into()));
    let mut buf = [0u8; 8];
    assert_eq!(wire::read_some(&mut os, Fd(3), &mut buf, at(5)).unwrap(), 0);
}
