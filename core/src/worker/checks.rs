//! Worker scenarios written once, generic over `O: Os`, and run twice: in
//! simulated worlds by `core/tests/worker_sim.rs` and against the kernel by
//! `core/tests/worker_real.rs` (the contract suite's rule: one suite, two
//! arms, and a difference is a bug in the fake).
//!
//! Each scenario plays the daemon's part by hand — create a channel, fork a
//! [`Probe`] worker, send commands, wake the worker, wait for its byte, reap
//! it — and panics with a message saying what differed. Waits are `poll`s
//! with deadlines, never sleeps. What only one arm can promise (the
//! simulation's exact timing) is returned for that arm to check.

use std::io::ErrorKind;
use std::time::Duration;

use forkd_os::contract::reap_n;
use forkd_os::{ExitStatus, Fd, Instant, KillTarget, Os, Pid, PollFd, Ready, Signal, SpawnOptions};
use serde_json::{json, Value};

use super::{
    run_worker, BoxError, Channel, ChannelError, Command, Context, Reply, Worker, WorkerEvent, WorkerProcess,
    WorkerState, EXIT_OK, EXIT_PANIC, EXIT_SPINUP_FAILED, HEARTBEAT_INTERVAL, REGION_SIZE,
};

/// The longest any single wait of a scenario may take, beyond ten looptimes.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The test worker: counts its loops through the channel, echoes messages,
/// and reports its spinup and spindown with `Context::send`.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// `spinup` returns `Err("spinup says no")`.
    pub fail_spinup: bool,
    /// `work` panics with "probe panics".
    pub panic_in_work: bool,
    /// `work` spins, asking `should_stop` each time round, until it is told
    /// to stop (bounded, in case it never is).
    pub spin_in_work: bool,
    /// `spinup` says ready with `Context::ready`, then spins the same way
    /// until it is told to stop.
    pub ready_in_spinup: bool,
}

/// How many times a spinning probe asks `should_stop` before it gives up.
const SPINS: u32 = 10_000_000;

impl Worker for Probe {
    fn spinup(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        if self.fail_spinup {
            return Err("spinup says no".into());
        }
        if self.ready_in_spinup {
            ctx.ready();
            for _ in 0..SPINS {
                if ctx.should_stop() {
                    break;
                }
            }
        }
        Ok(ctx.send(json!({ "spinup": ctx.instance() }))?)
    }

    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        assert_eq!(ctx.events().last(), Some(&WorkerEvent::LoopStart));
        if self.panic_in_work {
            panic!("probe panics");
        }
        if self.spin_in_work {
            for _ in 0..SPINS {
                if ctx.should_stop() {
                    return Ok(());
                }
            }
            return Err("never told to stop".into());
        }
        Ok(())
    }

    fn spindown(&mut self, ctx: &mut Context<'_>) {
        let saw_stop = ctx.events().contains(&WorkerEvent::Stop);
        let should_stop = ctx.should_stop();
        let _ = ctx.send(json!({ "spindown": saw_stop && should_stop }));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, msg: Value) -> Result<Value, BoxError> {
        if msg == json!("fail") {
            return Err("asked to fail".into());
        }
        Ok(json!({ "echo": msg, "name": ctx.name(), "instance": ctx.instance() }))
    }
}

/// The daemon's end of a spawned probe.
pub struct Spawned {
    /// The probe's process.
    pub pid: Pid,
    /// The daemon's view of the probe's channel.
    pub channel: Channel,
    /// The daemon's end of the socket pair.
    pub wake: Fd,
    /// The looptime the probe was spawned with.
    pub looptime: Duration,
}

/// Creates a channel and a socket pair and forks `probe` as a worker, as the
/// daemon does. `daemon_pid` overrides the parent the worker expects.
pub fn spawn_probe<O: Os>(os: &mut O, probe: Probe, looptime: Duration, daemon_pid: Option<Pid>) -> Spawned {
    let region = os.shm_create(REGION_SIZE).expect("shm_create");
    let channel = Channel::create(region);
    let (ours, theirs) = os.socket_pair().expect("socket_pair");
    let process = WorkerProcess {
        name: "probe".into(),
        instance: 0,
        looptime,
        worker: Box::new(probe),
        channel: channel.clone(),
        wake: theirs,
        daemon_pid: daemon_pid.unwrap_or(os.pid()),
        close_fds: vec![ours],
        reopen_log: None,
    };
    let pid =
        os.spawn(SpawnOptions { new_group: true }, Box::new(move |os: &mut O| run_worker(os, process))).expect("spawn");
    os.close(theirs);
    Spawned { pid, channel, wake: ours, looptime }
}

impl Spawned {
    fn timeout(&self) -> Duration {
        TIMEOUT + self.looptime * 10
    }

    /// Releases the daemon's end: the socket and the region.
    pub fn release<O: Os>(self, os: &mut O) {
        os.close(self.wake);
        // Safety: `self` is consumed; its channel was the test's only handle.
        unsafe { os.shm_unmap(self.channel.into_region()) };
    }
}

/// Reads the daemon's end of the socket empty; `true` at end of file.
fn drain<O: Os>(os: &mut O, fd: Fd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match os.read(fd, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) => panic!("read wake-up socket: {e}"),
        }
    }
}

/// Waits on the socket until `deadline` or a byte, and drains it; `true` at
/// end of file.
fn wait_byte<O: Os>(os: &mut O, fd: Fd, deadline: Instant) -> bool {
    let mut fds = [PollFd::new(fd, Ready::READ)];
    os.poll(&mut fds, Some(deadline)).expect("poll");
    !fds[0].ready.is_empty() && drain(os, fd)
}

/// Waits until `cond` holds, looking again on each byte from the worker and
/// every quarter looptime (loop counts change without a byte).
pub fn wait_until<O: Os>(os: &mut O, s: &Spawned, what: &str, mut cond: impl FnMut(&Channel) -> bool) {
    let deadline = os.now() + s.timeout();
    let tick = (s.looptime / 4).clamp(Duration::from_millis(1), HEARTBEAT_INTERVAL);
    while !cond(&s.channel) {
        assert!(os.now() < deadline, "worker: no {what} within {:?}", s.timeout());
        let until = deadline.min(os.now() + tick);
        wait_byte(os, s.wake, until);
    }
}

/// Sends `command`, wakes the worker and waits for the reply. Returns it and
/// the time from the wake-up byte to the reply.
pub fn command<O: Os>(os: &mut O, s: &Spawned, command: Command) -> (Reply, Duration) {
    let name = command.name();
    let seq = s.channel.send_command(command).expect("send_command");
    assert!(
        matches!(s.channel.send_command(Command::Pause), Err(ChannelError::Busy { pending }) if pending == seq),
        "a second command while one is in flight is refused"
    );
    forkd_os::contract::write_all(os, s.wake, &[1]);
    let sent = os.now();
    let deadline = sent + s.timeout();
    let mut eof = false;
    loop {
        // The reply first: a worker told to stop may be gone by now, but its
        // reply stays in the channel.
        if let Some(reply) = s.channel.take_reply().expect("take_reply") {
            assert_eq!(reply.seq, seq, "the reply answers the command");
            return (reply, os.now().saturating_duration_since(sent));
        }
        assert!(!eof, "worker: socket closed before the reply to {name}");
        assert!(os.now() < deadline, "worker: no reply to {name} within {:?}", s.timeout());
        eof = wait_byte(os, s.wake, deadline);
    }
}

/// What the pause/resume/stop scenario measured, for each arm to judge.
#[derive(Clone, Debug)]
pub struct Observed {
    /// From the pause command's wake-up byte to its reply.
    pub pause_ack: Duration,
    /// The loop count when the pause was acknowledged; it must not move
    /// while paused.
    pub loops_at_pause: u64,
    /// The first heartbeat seen five looptimes or more after the pause was
    /// acknowledged, and when it was seen.
    pub heartbeat_paused: Instant,
    /// When the daemon looked, on its own clock.
    pub paused_until: Instant,
}

/// Pause, resume, a custom message, stop: the worker's whole conversation
/// with its daemon. The signal `SIGCHLD` is installed here.
pub fn pause_resume_stop<O: Os>(os: &mut O, looptime: Duration) -> Observed {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let s = spawn_probe(os, Probe::default(), looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    wait_until(os, &s, "first loop", |c| c.loops().is_ok_and(|n| n >= 1));

    let loops_before_pause = s.channel.loops().unwrap();
    let (reply, pause_ack) = command(os, &s, Command::Pause);
    assert_eq!(reply.result, Ok(Value::Null), "pause is acknowledged");
    assert_eq!(s.channel.state(), Ok(WorkerState::Paused));
    let loops_at_pause = s.channel.loops().unwrap();
    // A turn takes its commands before it runs the body, so a pause sent
    // between two iterations is acknowledged with the count unchanged.
    assert_eq!(loops_at_pause, loops_before_pause, "pause is acknowledged before another iteration");
    // The worker's own heartbeat, not the checker's clock, tells that five
    // looptimes went by paused: a paused worker keeps beating, and one that
    // still looped would have looped by the beat that shows it.
    let acked_at = Instant(s.channel.heartbeat().unwrap());
    wait_until(os, &s, "a heartbeat five looptimes into the pause", |c| {
        c.heartbeat().is_ok_and(|beat| Instant(beat) >= acked_at + looptime * 5)
    });
    assert_eq!(s.channel.loops(), Ok(loops_at_pause), "no loop runs while paused");
    let paused_until = os.now();
    let heartbeat_paused = Instant(s.channel.heartbeat().unwrap());
    let (reply, _) = command(os, &s, Command::Pause);
    assert_eq!(reply.result, Ok(Value::Null), "pausing a paused worker is no error");

    let (reply, _) = command(os, &s, Command::Resume);
    assert_eq!(reply.result, Ok(Value::Null), "resume is acknowledged");
    assert_eq!(s.channel.state(), Ok(WorkerState::Looping));
    wait_until(os, &s, "loops after resume", |c| c.loops().is_ok_and(|n| n >= loops_at_pause + 2));

    let (reply, _) = command(os, &s, Command::Message(json!({ "ping": 1 })));
    assert_eq!(
        reply.result,
        Ok(json!({ "echo": { "ping": 1 }, "name": "probe", "instance": 0 })),
        "a message gets the handler's answer"
    );
    let (reply, _) = command(os, &s, Command::Message(json!("fail")));
    assert_eq!(reply.result, Err("asked to fail".to_string()));

    let (reply, _) = command(os, &s, Command::Stop);
    assert_eq!(reply.result, Ok(Value::Null), "stop is acknowledged");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_OK))], "a stopped worker exits 0");
    assert_eq!(s.channel.state(), Ok(WorkerState::Exited));
    assert_eq!(s.channel.last_error(), Ok(None));
    assert_eq!(
        s.channel.take_events(),
        Ok(vec![json!({ "spinup": 0 }), json!({ "spindown": true })]),
        "spinup and spindown ran, spindown after seeing the stop"
    );
    s.release(os);
    Observed { pause_ack, loops_at_pause, heartbeat_paused, paused_until }
}

/// The daemon closes its end of the socket (as its death would): the worker
/// sees end of file, runs spindown and exits 0.
pub fn daemon_gone<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let s = spawn_probe(os, Probe::default(), looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    os.close(s.wake);
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_OK))], "an orphaned worker exits 0");
    assert_eq!(s.channel.state(), Ok(WorkerState::Exited));
    assert_eq!(
        s.channel.take_events(),
        Ok(vec![json!({ "spinup": 0 }), json!({ "spindown": true })]),
        "an orphaned worker runs spindown"
    );
    // Safety: the channel was the test's only handle and is consumed here.
    unsafe { os.shm_unmap(s.channel.into_region()) };
}

/// SIGTERM stops a worker gracefully.
pub fn term_stops<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let s = spawn_probe(os, Probe::default(), looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    os.kill(KillTarget::Process(s.pid), Signal::Term).expect("kill");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_OK))], "SIGTERM stops gracefully");
    assert_eq!(s.channel.take_events(), Ok(vec![json!({ "spinup": 0 }), json!({ "spindown": true })]),);
    s.release(os);
}

/// A panic in the loop body: exit 70, `panic: ...` as the last error, no
/// spindown.
pub fn panic_in_work<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let probe = Probe { panic_in_work: true, ..Probe::default() };
    let s = spawn_probe(os, probe, looptime, None);
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_PANIC))]);
    let error = s.channel.last_error().unwrap().unwrap_or_default();
    assert!(error.starts_with("panic: probe panics"), "last error {error:?}");
    assert_eq!(s.channel.state(), Ok(WorkerState::Exited));
    assert_eq!(s.channel.loops(), Ok(0), "the panicking iteration is not counted");
    assert_eq!(s.channel.take_events(), Ok(vec![json!({ "spinup": 0 })]), "no spindown");
    s.release(os);
}

/// Readiness: not ready while `spinup` runs, ready once the first loop
/// begins; or ready during `spinup` when it says so with `Context::ready`.
pub fn ready_at_first_loop_or_when_said<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let s = spawn_probe(os, Probe::default(), looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    assert_eq!(s.channel.ready(), Ok(true), "ready once looping");
    os.kill(KillTarget::Process(s.pid), Signal::Term).expect("kill");
    assert_eq!(reap_n(os, sig, 1), vec![(s.pid, ExitStatus::Exited(EXIT_OK))]);
    s.release(os);

    let s = spawn_probe(os, Probe { ready_in_spinup: true, ..Probe::default() }, looptime, None);
    wait_until(os, &s, "ready during spinup", |c| c.ready() == Ok(true));
    assert_eq!(s.channel.state(), Ok(WorkerState::Spinup), "said ready before its spinup is over");
    os.kill(KillTarget::Process(s.pid), Signal::Term).expect("kill");
    assert_eq!(reap_n(os, sig, 1), vec![(s.pid, ExitStatus::Exited(EXIT_OK))]);
    s.release(os);
}

/// `spinup` failing: exit 1, its error recorded, no loop, no spindown.
pub fn spinup_fails<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let probe = Probe { fail_spinup: true, ..Probe::default() };
    let s = spawn_probe(os, probe, looptime, None);
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_SPINUP_FAILED))]);
    assert_eq!(s.channel.last_error(), Ok(Some("spinup says no".into())));
    assert_eq!(s.channel.state(), Ok(WorkerState::Exited));
    assert_eq!(s.channel.loops(), Ok(0));
    assert_eq!(s.channel.ready(), Ok(false), "never ready");
    assert_eq!(s.channel.take_events(), Ok(vec![]), "no spindown after a failed spinup");
    s.release(os);
}

/// A worker whose parent is not the daemon it was told of (the daemon died
/// before the worker asked for its death signal) exits at once.
pub fn orphan_at_start<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let stranger = Pid(os.pid().0.wrapping_add(100_000));
    let s = spawn_probe(os, Probe::default(), looptime, Some(stranger));
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_OK))]);
    assert_eq!(s.channel.state(), Ok(WorkerState::Exited));
    assert_eq!(s.channel.take_events(), Ok(vec![]), "no user code ran");
    s.release(os);
}

/// SIGTERM during a long loop body: the body sees it through `should_stop`
/// and returns, then the worker spins down and exits 0.
pub fn term_during_long_work<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let probe = Probe { spin_in_work: true, ..Probe::default() };
    let s = spawn_probe(os, probe, looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    os.kill(KillTarget::Process(s.pid), Signal::Term).expect("kill");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Exited(EXIT_OK))]);
    assert_eq!(s.channel.last_error(), Ok(None), "the body returned when told to");
    assert_eq!(s.channel.loops(), Ok(1));
    assert_eq!(s.channel.take_events(), Ok(vec![json!({ "spinup": 0 }), json!({ "spindown": true })]),);
    s.release(os);
}

/// SIGKILL in the middle of user code: the process dies of it (in the
/// simulation its unwinding passes through the worker's `catch_unwind`, which
/// must not take it for a panic), and the daemon can still read the channel.
pub fn killed_in_work<O: Os>(os: &mut O, looptime: Duration) {
    let sig = os.install_signals(&[Signal::Chld]).expect("install signals");
    let probe = Probe { spin_in_work: true, ..Probe::default() };
    let s = spawn_probe(os, probe, looptime, None);
    wait_until(os, &s, "looping state", |c| c.state() == Ok(WorkerState::Looping));
    os.kill(KillTarget::Process(s.pid), Signal::Kill).expect("kill");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(s.pid, ExitStatus::Signaled(Signal::Kill.number()))]);
    assert_eq!(s.channel.last_error(), Ok(None), "a kill is not a panic");
    assert_eq!(s.channel.state(), Ok(WorkerState::Looping), "the state it died in");
    assert_eq!(s.channel.take_events(), Ok(vec![json!({ "spinup": 0 })]), "no spindown");
    s.release(os);
}
