//! The supervisor's table-driven tests: rows of (events in, actions and
//! states out), run in virtual time.

use super::*;

fn spec(forever: bool) -> WorkerSpec {
    let restart = if forever { policy::Restart::Always } else { policy::Restart::Never };
    WorkerSpec { restart, ..WorkerSpec::new("w", 1) }
}

fn t(ms: u64) -> Instant {
    Instant(ms * 1_000_000)
}

/// One input to the supervisor in a test row.
#[derive(Clone, Copy, Debug)]
enum Ev {
    /// The loop answers instance `id`'s spawn with this pid.
    Spawned(usize, i32),
    SpawnFailed(usize),
    Exit(i32, ExitStatus),
    /// `handle_timeout` with no instance hung.
    Tick,
    /// `handle_timeout` with instance `id` hung.
    Hung(usize),
    StopAll,
    Restart(usize),
    /// `scale` of worker 0.
    Scale(u32),
    /// A rolling reload of worker 0, this many at a time.
    Reload(u32),
    /// The loop read instance `id` ready.
    Ready(usize),
}
use Ev::*;

const KILLED: ExitStatus = ExitStatus::Signaled(9);
const OK: ExitStatus = ExitStatus::Exited(0);

fn show_action(a: &Action) -> String {
    match a {
        Action::Spawn(id) => format!("spawn {id}"),
        Action::RequestStop(id) => format!("ask {id}"),
        Action::Signal(KillTarget::Group(pid), Signal::Term) => format!("term {pid}"),
        Action::Signal(KillTarget::Group(pid), Signal::Kill) => format!("kill {pid}"),
        Action::Signal(target, sig) => format!("{sig} {target:?}"),
        Action::StopDaemon(why) => format!("stop daemon: {why}"),
    }
}

fn show_note(n: &RolloutNote) -> String {
    let pairs =
        |r: &[Replaced]| r.iter().map(|r| format!("{}:{}>{}", r.index, r.old_pid, r.new_pid)).collect::<Vec<_>>();
    match n {
        RolloutNote::Started { instances, batch, .. } => format!("reload {instances} by {batch}"),
        RolloutNote::Replaced { replaced, .. } => format!("replaced {}", pairs(std::slice::from_ref(replaced))[0]),
        RolloutNote::Done { replaced, .. } => format!("done {}", pairs(replaced).join(" ")),
        RolloutNote::Failed { index, reason, replaced, .. } => {
            format!("failed {index:?}: {reason} after [{}]", pairs(replaced).join(" "))
        }
    }
}

fn show_state(s: &InstanceState) -> String {
    match *s {
        InstanceState::Waiting { at } => format!("waiting@{:?}", Duration::from_nanos(at.0)),
        InstanceState::Joining { pid: None, .. } => "joining".into(),
        InstanceState::Joining { pid: Some(pid), .. } => format!("joining {pid}"),
        InstanceState::Running { pid } => format!("running {pid}"),
        InstanceState::Stopping { pid, step, then, .. } => {
            format!("stopping {pid} {step:?} then {then:?}").to_lowercase()
        }
        InstanceState::Stopped => "stopped".into(),
        InstanceState::Retired => "retired".into(),
        InstanceState::Failed => "failed".into(),
    }
}

/// Drives a supervisor of `workers` (default policy, created at 0 ms)
/// through `rows`: each is (time in ms, the event, the actions it
/// produced, the states of all instances after it and the next
/// deadline). The first row's actions include those of `new`.
fn check(workers: Vec<WorkerSpec>, rows: &[(u64, Ev, &str, &str)]) {
    let mut s = Supervisor::new(workers, RestartPolicy::default(), 1, t(0));
    let mut got = Vec::new();
    let mut want = Vec::new();
    for &(ms, ev, actions, states) in rows {
        let now = t(ms);
        match ev {
            Spawned(id, pid) => s.spawned(id, Pid(pid), now),
            SpawnFailed(id) => s.spawn_failed(id, now),
            Exit(pid, status) => {
                s.handle_exit(Pid(pid), status, now).unwrap();
            }
            Tick => s.handle_timeout(now, |_| false),
            Hung(id) => s.handle_timeout(now, |i| i == id),
            StopAll => s.stop_all(now),
            Restart(id) => s.restart(id, now),
            Scale(n) => s.scale(0, n, now),
            Reload(batch) => s.begin_rollout(0, batch, now).unwrap(),
            Ready(id) => s.handle_ready(id, now),
        }
        // The deadline is read before the actions are taken: a queued
        // spawn is not waited for.
        let mut got_states: Vec<String> = s.instances().iter().map(|i| show_state(&i.state)).collect();
        if let Some(at) = s.poll_timeout(|_| None) {
            got_states.push(format!("next@{:?}", Duration::from_nanos(at.0)));
        }
        let mut got_actions: Vec<String> = std::iter::from_fn(|| s.poll_action()).map(|a| show_action(&a)).collect();
        got_actions.extend(std::iter::from_fn(|| s.poll_note()).map(|n| show_note(&n)));
        got.push(format!("{ms} {ev:?} => [{}] {}", got_actions.join(", "), got_states.join("; ")));
        want.push(format!("{ms} {ev:?} => [{actions}] {states}"));
    }
    assert_eq!(got, want);
}

#[test]
fn exit_while_running_forever_restarts_at_once_then_backs_off() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (1, Exit(10, KILLED), "spawn 0", "waiting@1ms"),
            (1, Spawned(0, 11), "", "running 11"),
            (2, Exit(11, KILLED), "", "waiting@13.428519ms; next@13.428519ms"),
            (13, Tick, "", "waiting@13.428519ms; next@13.428519ms"),
            (14, Tick, "spawn 0", "waiting@13.428519ms"),
            (14, Spawned(0, 12), "", "running 12"),
        ],
    );
}

#[test]
fn exit_while_running_not_forever_stops_the_daemon() {
    check(
        vec![spec(false)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (5, Exit(10, OK), "stop daemon: worker w exited (exit 0)", "stopped"),
            (6, Restart(0), "spawn 0", "waiting@6ms"),
        ],
    );
}

#[test]
fn stop_all_escalates_to_term_then_kill_and_never_restarts() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (100, StopAll, "ask 0", "stopping 10 asked then stop; next@5.1s"),
            (5099, Tick, "", "stopping 10 asked then stop; next@5.1s"),
            (5100, Tick, "term 10", "stopping 10 termed then stop; next@10.1s"),
            (10100, Tick, "kill 10", "stopping 10 killed then stop; next@15.1s"),
            (15100, Tick, "", "stopping 10 killed then stop; next@15.1s"),
            (15101, Exit(10, KILLED), "", "stopped"),
            (15102, Restart(0), "", "stopped"),
        ],
    );
}

#[test]
fn exit_while_stopping_at_each_step_is_final() {
    // Asked, termed and killed.
    for until in [0, 5100, 10100] {
        let mut rows = vec![
            (0, Tick, "spawn 0", "waiting@0ns".to_string()),
            (0, Spawned(0, 10), "", "running 10".into()),
            (100, StopAll, "ask 0", "stopping 10 asked then stop; next@5.1s".into()),
        ];
        if until >= 5100 {
            rows.push((5100, Tick, "term 10", "stopping 10 termed then stop; next@10.1s".into()));
        }
        if until >= 10100 {
            rows.push((10100, Tick, "kill 10", "stopping 10 killed then stop; next@15.1s".into()));
        }
        rows.push((until + 1, Exit(10, OK), "", "stopped".into()));
        let rows: Vec<_> = rows.iter().map(|(ms, ev, a, st)| (*ms, *ev, *a, st.as_str())).collect();
        check(vec![spec(true)], &rows);
    }
}

#[test]
fn stop_all_in_every_state() {
    // Instance 0 runs, 1 restarts, 2 backs off, 3 is failed, 4 waits to
    // be spawned, 5 is retired on its way out.
    let mut pool = spec(true);
    pool.instances = 2;
    let mut rows = vec![(0, Tick, "spawn 0, spawn 1", "waiting@0ns; waiting@0ns".to_string())];
    rows.push((0, Spawned(0, 10), "", "running 10; waiting@0ns; next@0ns".into()));
    rows.push((0, Spawned(1, 11), "", "running 10; running 11".into()));
    rows.push((1, Restart(1), "ask 1", "running 10; stopping 11 asked then restart; next@5.001s".into()));
    rows.push((2, StopAll, "ask 0", "stopping 10 asked then stop; stopping 11 asked then stop; next@5.001s".into()));
    rows.push((3, Exit(11, OK), "", "stopping 10 asked then stop; stopped; next@5.002s".into()));
    rows.push((4, Exit(10, OK), "", "stopped; stopped".into()));
    rows.push((5, Restart(0), "", "stopped; stopped".into()));
    let rows: Vec<_> = rows.iter().map(|(ms, ev, a, st)| (*ms, *ev, *a, st.as_str())).collect();
    check(vec![pool], &rows);

    // Instance 0 is killed as hung, 1 backs off, 2 waits for the answer
    // to its spawn, which comes after the stop.
    check(
        vec![spec(true), spec(true), spec(true)],
        &[
            (0, Tick, "spawn 0, spawn 1, spawn 2", "waiting@0ns; waiting@0ns; waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10; waiting@0ns; waiting@0ns; next@0ns"),
            (0, Spawned(1, 11), "", "running 10; running 11; waiting@0ns; next@0ns"),
            (1, Exit(11, KILLED), "spawn 1", "running 10; waiting@1ms; waiting@0ns; next@0ns"),
            (1, Spawned(1, 12), "", "running 10; running 12; waiting@0ns; next@0ns"),
            (2, Exit(12, KILLED), "", "running 10; waiting@13.428519ms; waiting@0ns; next@0ns"),
            // A spawn taken but not answered is asked for again.
            (
                3,
                Hung(0),
                "kill 10, spawn 2",
                "stopping 10 killed then recover; waiting@13.428519ms; waiting@0ns; next@13.428519ms",
            ),
            (4, StopAll, "", "stopping 10 killed then stop; stopped; stopped; next@15.003s"),
            (20, Tick, "", "stopping 10 killed then stop; stopped; stopped; next@15.003s"),
            (21, Exit(10, KILLED), "", "stopped; stopped; stopped"),
            (22, Spawned(2, 13), "ask 2", "stopped; stopped; stopping 13 asked then stop; next@5.022s"),
            (23, Restart(2), "", "stopped; stopped; stopping 13 asked then stop; next@5.022s"),
        ],
    );
}

#[test]
fn a_hung_instance_is_killed_once_and_restarted() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (50, Hung(0), "kill 10", "stopping 10 killed then recover; next@15.05s"),
            (60, Hung(0), "", "stopping 10 killed then recover; next@15.05s"),
            (61, Exit(10, KILLED), "spawn 0", "waiting@61ms"),
            (61, Spawned(0, 11), "", "running 11"),
        ],
    );
}

#[test]
fn a_hung_instance_of_a_worker_not_forever_stops_the_daemon() {
    check(
        vec![spec(false)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (50, Hung(0), "kill 10", "stopping 10 killed then recover; next@15.05s"),
            (51, Exit(10, KILLED), "stop daemon: worker w exited (killed by SIGKILL)", "stopped"),
        ],
    );
}

#[test]
fn restart_brings_back_even_a_non_forever_worker_once() {
    check(
        vec![spec(false)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (1, Restart(0), "ask 0", "stopping 10 asked then restart; next@5.001s"),
            (1, Restart(0), "", "stopping 10 asked then restart; next@5.001s"),
            (2, Exit(10, OK), "spawn 0", "waiting@2ms"),
            (2, Restart(0), "", "waiting@2ms; next@2ms"),
            (2, Spawned(0, 11), "", "running 11"),
        ],
    );
}

#[test]
fn spawn_failures_back_off_and_count_as_starts() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, SpawnFailed(0), "spawn 0", "waiting@0ns"),
            (0, SpawnFailed(0), "", "waiting@11.428519ms; next@11.428519ms"),
            (15, Tick, "spawn 0", "waiting@11.428519ms"),
            (15, SpawnFailed(0), "", "waiting@37.89059ms; next@37.89059ms"),
            (39, Tick, "spawn 0", "waiting@37.89059ms"),
            (39, SpawnFailed(0), "", "waiting@80.780235ms; next@80.780235ms"),
            (84, Tick, "spawn 0", "waiting@80.780235ms"),
            (84, SpawnFailed(0), "stop daemon: worker w failed: 5 starts within 10s", "failed"),
            (90, Restart(0), "spawn 0", "waiting@90ms"),
            (90, Spawned(0, 10), "", "running 10"),
        ],
    );
}

#[test]
fn stop_all_leaves_a_failed_instance_failed() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, SpawnFailed(0), "spawn 0", "waiting@0ns"),
            (0, SpawnFailed(0), "", "waiting@11.428519ms; next@11.428519ms"),
            (15, Tick, "spawn 0", "waiting@11.428519ms"),
            (15, SpawnFailed(0), "", "waiting@37.89059ms; next@37.89059ms"),
            (39, Tick, "spawn 0", "waiting@37.89059ms"),
            (39, SpawnFailed(0), "", "waiting@80.780235ms; next@80.780235ms"),
            (84, Tick, "spawn 0", "waiting@80.780235ms"),
            (84, SpawnFailed(0), "stop daemon: worker w failed: 5 starts within 10s", "failed"),
            (90, StopAll, "", "failed"),
            (91, Restart(0), "", "failed"),
        ],
    );
}

#[test]
fn scale_retires_the_last_instances_and_reuses_them() {
    check(
        vec![spec(true)],
        &[
            (0, Tick, "spawn 0", "waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10"),
            (1, Scale(4), "spawn 1, spawn 2, spawn 3", "running 10; waiting@1ms; waiting@1ms; waiting@1ms"),
            (1, Spawned(1, 11), "", "running 10; running 11; waiting@1ms; waiting@1ms; next@1ms"),
            (1, Spawned(2, 12), "", "running 10; running 11; running 12; waiting@1ms; next@1ms"),
            // Instance 3 is retired before it was spawned, 2 while it
            // runs, 1 while it restarts.
            (2, Restart(1), "ask 1", "running 10; stopping 11 asked then restart; running 12; waiting@1ms; next@1ms"),
            (
                3,
                Scale(1),
                "ask 2",
                "running 10; stopping 11 asked then retire; stopping 12 asked then retire; retired; next@5.002s",
            ),
            (
                4,
                Restart(2),
                "",
                "running 10; stopping 11 asked then retire; stopping 12 asked then retire; retired; next@5.002s",
            ),
            (5, Exit(12, OK), "", "running 10; stopping 11 asked then retire; retired; retired; next@5.002s"),
            (6, Exit(11, OK), "", "running 10; retired; retired; retired"),
            (7, Tick, "", "running 10; retired; retired; retired"),
            // The lowest indexes come back first.
            (8, Scale(3), "spawn 1, spawn 2", "running 10; waiting@8ms; waiting@8ms; retired"),
            (8, Spawned(1, 13), "", "running 10; running 13; waiting@8ms; retired; next@8ms"),
            (9, Scale(1), "ask 1", "running 10; stopping 13 asked then retire; retired; retired; next@5.009s"),
        ],
    );
}

#[test]
fn scale_down_of_a_failed_instance_retires_it() {
    let mut pool = spec(true);
    pool.instances = 2;
    check(
        vec![pool],
        &[
            (0, Tick, "spawn 0, spawn 1", "waiting@0ns; waiting@0ns"),
            (0, Spawned(0, 10), "", "running 10; waiting@0ns; next@0ns"),
            (0, SpawnFailed(1), "spawn 1", "running 10; waiting@0ns"),
            (0, SpawnFailed(1), "", "running 10; waiting@11.428519ms; next@11.428519ms"),
            (1, Scale(1), "", "running 10; retired"),
            (20, Tick, "", "running 10; retired"),
            (21, Scale(2), "spawn 1", "running 10; waiting@21ms"),
        ],
    );
}

#[test]
fn scaling_up_and_down_keeps_the_table_small() {
    let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
    let mut sim = Sim::default();
    sim.answer(&mut s, t(0));
    for round in 0..5 {
        s.scale(0, 3, t(4 + round));
        sim.answer(&mut s, t(4 + round));
        s.scale(0, 1, t(5 + round));
        sim.answer(&mut s, t(5 + round));
        for pid in sim.pids.split_off(1) {
            s.handle_exit(pid, OK, t(5 + round)).unwrap();
        }
    }
    assert_eq!(s.instances().len(), 3, "scaling up and down reuses retired instances");
}

/// The daemon's loop in virtual time: spawns what the supervisor asks
/// for, and remembers the pids.
#[derive(Default)]
struct Sim {
    next_pid: i32,
    pids: Vec<Pid>,
    stop_daemon: Option<String>,
}

impl Sim {
    fn answer(&mut self, s: &mut Supervisor, now: Instant) {
        while let Some(a) = s.poll_action() {
            match a {
                Action::Spawn(id) => {
                    self.next_pid += 1;
                    let pid = Pid(100 + self.next_pid);
                    s.spawned(id, pid, now);
                    self.pids.push(pid);
                }
                Action::StopDaemon(why) => {
                    self.stop_daemon.get_or_insert(why);
                }
                Action::RequestStop(_) | Action::Signal(..) => {}
            }
        }
    }

    /// Kills instance `id`'s process if it has one, as SIGKILL would.
    fn kill(&mut self, s: &mut Supervisor, id: usize, now: Instant) {
        if let Some(pid) = s.instance(id).state.pid() {
            self.pids.retain(|&p| p != pid);
            s.handle_exit(pid, KILLED, now).unwrap();
        }
        self.answer(s, now);
    }

    /// Advances virtual time to `until`, waking at every deadline.
    fn run_until(&mut self, s: &mut Supervisor, until: Instant) {
        while let Some(at) = s.poll_timeout(|_| None).filter(|&at| at <= until) {
            s.handle_timeout(at, |_| false);
            self.answer(s, at);
        }
    }
}

#[test]
fn a_pool_of_32_killed_round_robin_every_200_ms_for_60_s_is_never_failed() {
    let mut pool = spec(true);
    pool.instances = 32;
    let mut s = Supervisor::new(vec![pool], RestartPolicy::default(), 1, t(0));
    let mut sim = Sim::default();
    sim.answer(&mut s, t(0));
    let mut kills = 0;
    for k in 1..=300u64 {
        let now = t(k * 200);
        sim.run_until(&mut s, now);
        let id = (k as usize - 1) % 32;
        if s.instance(id).state.pid().is_some() {
            kills += 1;
        }
        sim.kill(&mut s, id, now);
        assert!(s.instances().iter().all(|i| i.state != InstanceState::Failed), "failed at {k}: {:?}", s.instance(id));
        assert_eq!(sim.stop_daemon, None);
    }
    assert!(kills > 250, "most kills found a process: {kills}");
    assert!(s.instances().iter().all(|i| i.restarts >= 8));
}

#[test]
fn a_single_instance_killed_six_times_within_10_s_is_failed() {
    let mut s = Supervisor::new(vec![spec(true)], RestartPolicy::default(), 1, t(0));
    let mut sim = Sim::default();
    sim.answer(&mut s, t(0));
    for k in 1..=6u64 {
        let now = t(k * 1500);
        sim.run_until(&mut s, now);
        sim.kill(&mut s, 0, now);
    }
    // The fifth kill already fails it: five starts within 10 s.
    assert_eq!(s.instance(0).state, InstanceState::Failed);
    assert_eq!(s.instance(0).restarts, 4);
    assert_eq!(sim.stop_daemon.as_deref(), Some("worker w failed: 5 starts within 10s"));
    assert!(sim.pids.is_empty());
}

mod rollout;
