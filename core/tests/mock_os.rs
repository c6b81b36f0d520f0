//! Focused tests of forkd-core against a mocked `Os`, where a whole simulated world
//! would be more than the test needs: each pins down the exact calls a
//! component makes, and a call it should not make fails the test.

use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use forkd_core::daemon::{Config, Daemon, NoHooks, StartError};
use forkd_core::worker::{
    run_worker, BoxError, Channel, Context, Worker, WorkerProcess, WorkerState, EXIT_OK, REGION_SIZE,
};
use forkd_os::{Address, Fd, Instant, Pid, PidFileError, Region, Signal};
use mockall::predicate::eq;
use mockall::Sequence;

#[path = "../../os/tests/support/mock_os.rs"]
mod mock_os;
use mock_os::MockOs;

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
    fn spinup(&mut self, _ctx: &mut Context<'_>) -> Result<(), BoxError> {
        panic!("user code ran in a worker whose daemon was gone");
    }
    fn work(&mut self, _ctx: &mut Context<'_>) -> Result<(), BoxError> {
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
