//! Focused tests of forkd-core against a mocked `Os`, where a whole simulated world
//! would be more than the test needs: each pins down the exact calls a
//! component makes, and a call it should not make fails the test.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use forkd_core::daemon::{Config, Daemon, NoHooks, StartError};
use forkd_core::worker::{run_worker, Channel, Context, Worker, WorkerProcess, WorkerState, EXIT_OK, REGION_SIZE};
use forkd_os::{
    Address, Entry, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError, PollFd,
    Region, Signal, SignalSet, SpawnOptions,
};
use mockall::predicate::eq;
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

fn config() -> Config {
    let mut c = Config::new("mocked");
    c.address = Address::Unix(PathBuf::from("/run/m.sock"));
    c.pid_file = PathBuf::from("/run/m.pid");
    c
}

#[test]
fn a_daemon_whose_pid_file_is_locked_touches_nothing_else() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_now().return_const(at(0));
    // Its own signal handlers, taken first and given back; no listen, no
    // remove_file: any other call fails the test.
    os.expect_install_signals().times(1).in_sequence(&mut seq).returning(|_| Ok(Fd(4)));
    os.expect_lock_pid_file()
        .with(eq(PathBuf::from("/run/m.pid")))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(PidFileError::Locked(Some(4242))));
    os.expect_close().with(eq(Fd(4))).times(1).in_sequence(&mut seq).return_const(());
    match forkd_core::daemon::run(&mut os, Daemon::new(config()), &mut NoHooks) {
        Err(StartError::AlreadyRunning(Some(4242))) => {}
        other => panic!("expected AlreadyRunning(4242), got {other:?}"),
    }
}

#[test]
fn a_daemon_that_cannot_bind_gives_back_its_signals_and_pid_file() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_now().return_const(at(0));
    os.expect_install_signals().times(1).in_sequence(&mut seq).returning(|sigs| {
        assert!(sigs.contains(&Signal::Term) && sigs.contains(&Signal::Chld));
        Ok(Fd(4))
    });
    os.expect_lock_pid_file().times(1).in_sequence(&mut seq).returning(|_| Ok(Fd(3)));
    os.expect_listen()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Err(io::Error::from(ErrorKind::PermissionDenied)));
    os.expect_close().with(eq(Fd(4))).times(1).in_sequence(&mut seq).return_const(());
    os.expect_remove_file().with(eq(PathBuf::from("/run/m.pid"))).times(1).in_sequence(&mut seq).returning(|_| Ok(()));
    os.expect_close().with(eq(Fd(3))).times(1).in_sequence(&mut seq).return_const(());
    match forkd_core::daemon::run(&mut os, Daemon::new(config()), &mut NoHooks) {
        Err(StartError::Listen(Address::Unix(p), e)) => {
            assert_eq!(p, PathBuf::from("/run/m.sock"));
            assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        }
        other => panic!("expected a listen error, got {other:?}"),
    }
}

struct NeverCalled;

impl Worker for NeverCalled {
    fn spinup(&mut self, _ctx: &mut Context<'_>) -> Result<(), String> {
        panic!("user code ran in a worker whose daemon was gone");
    }
    fn work(&mut self, _ctx: &mut Context<'_>) -> Result<(), String> {
        panic!("user code ran in a worker whose daemon was gone");
    }
}

#[test]
fn a_worker_whose_daemon_died_before_it_started_runs_no_user_code() {
    let words = REGION_SIZE.div_ceil(8);
    let buf: Arc<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let region = Region::from_buffer(buf, 9);
    let channel = Channel::create(region.clone());
    let daemon_view = channel.clone();
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_close().with(eq(Fd(10))).times(1).in_sequence(&mut seq).return_const(());
    os.expect_now().return_const(at(3));
    os.expect_set_parent_death_signal().with(eq(Signal::Term)).times(1).in_sequence(&mut seq).returning(|_| Ok(()));
    // Init adopted it: the daemon is gone.
    os.expect_parent_pid().times(1).in_sequence(&mut seq).return_const(Pid(1));
    os.expect_close().with(eq(Fd(11))).times(1).in_sequence(&mut seq).return_const(());
    os.expect_shm_unmap().times(1).in_sequence(&mut seq).returning(|r| assert_eq!(r.id(), 9));
    let process = WorkerProcess {
        name: "w".into(),
        instance: 0,
        looptime: Duration::from_millis(5),
        worker: Box::new(NeverCalled),
        channel,
        wake: Fd(11),
        daemon_pid: Pid(500),
        close_fds: vec![Fd(10)],
        reopen_log: None,
    };
    assert_eq!(run_worker(&mut os, process), EXIT_OK);
    assert_eq!(daemon_view.state(), Ok(WorkerState::Exited));
    assert_eq!(daemon_view.heartbeat(), Ok(at(3).as_nanos()));
}
