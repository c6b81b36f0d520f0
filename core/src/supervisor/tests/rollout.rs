//! Rolling reloads in the supervisor's table: each new instance ready
//! before the old one is asked to stop, a batch at a time, and what a
//! failure, a crash or the daemon's stop does to a rollout.

use super::*;

fn pool(n: u32) -> WorkerSpec {
    WorkerSpec { reload_timeout: Duration::from_secs(1), ..WorkerSpec::new("w", n) }
}

const UP: [(u64, Ev, &str, &str); 3] = [
    (0, Tick, "spawn 0, spawn 1", "waiting@0ns; waiting@0ns"),
    (0, Spawned(0, 10), "", "running 10; waiting@0ns; next@0ns"),
    (0, Spawned(1, 11), "", "running 10; running 11"),
];

fn rows(rest: &[(u64, Ev, &'static str, &'static str)]) -> Vec<(u64, Ev, &'static str, &'static str)> {
    UP.iter().chain(rest).copied().collect()
}

#[test]
fn a_pool_of_two_is_replaced_one_at_a_time_each_new_one_ready_first() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(1), "spawn 2, reload 2 by 1", "running 10; running 11; joining"),
            (5, Spawned(2, 20), "", "running 10; running 11; joining 20; next@1.005s"),
            (
                6,
                Ready(2),
                "ask 0, replaced 0:10>20",
                "stopping 10 asked then replace; running 11; running 20; next@5.006s",
            ),
            (7, Exit(10, OK), "spawn 0", "joining; running 11; running 20"),
            (7, Spawned(0, 21), "", "joining 21; running 11; running 20; next@1.007s"),
            (
                8,
                Ready(0),
                "ask 1, replaced 1:11>21",
                "running 21; stopping 11 asked then replace; running 20; next@5.008s",
            ),
            (9, Exit(11, OK), "done 0:10>20 1:11>21", "running 21; retired; running 20"),
        ]),
    );
}

#[test]
fn two_at_a_time_the_pool_may_run_two_more_processes_and_ends_when_both_old_ones_exited() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(2), "spawn 2, spawn 3, reload 2 by 2", "running 10; running 11; joining; joining"),
            (5, Spawned(2, 20), "", "running 10; running 11; joining 20; joining; next@1.005s"),
            (5, Spawned(3, 21), "", "running 10; running 11; joining 20; joining 21; next@1.005s"),
            (
                6,
                Ready(3),
                "ask 1, replaced 1:11>21",
                "running 10; stopping 11 asked then replace; joining 20; running 21; next@1.005s",
            ),
            (
                6,
                Ready(2),
                "ask 0, replaced 0:10>20",
                "stopping 10 asked then replace; stopping 11 asked then replace; running 20; running 21; next@5.006s",
            ),
            (7, Exit(11, OK), "", "stopping 10 asked then replace; retired; running 20; running 21; next@5.006s"),
            (7, Exit(10, OK), "done 1:11>21 0:10>20", "retired; retired; running 20; running 21"),
        ]),
    );
}

#[test]
fn a_new_instance_that_exits_before_it_is_ready_fails_the_rollout_and_leaves_the_old_ones() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(1), "spawn 2, reload 2 by 1", "running 10; running 11; joining"),
            (5, Spawned(2, 20), "", "running 10; running 11; joining 20; next@1.005s"),
            (
                6,
                Exit(20, ExitStatus::Exited(3)),
                "failed Some(0): exited before it was ready (exit 3) after []",
                "running 10; running 11; retired",
            ),
        ]),
    );
}

#[test]
fn a_new_instance_not_ready_in_time_is_stopped_and_the_rollout_fails_once_it_exited() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(1), "spawn 2, reload 2 by 1", "running 10; running 11; joining"),
            (5, Spawned(2, 20), "", "running 10; running 11; joining 20; next@1.005s"),
            (1004, Tick, "", "running 10; running 11; joining 20; next@1.005s"),
            (1005, Tick, "ask 2", "running 10; running 11; stopping 20 asked then retire; next@6.005s"),
            (1006, Ready(2), "", "running 10; running 11; stopping 20 asked then retire; next@6.005s"),
            (1007, Exit(20, OK), "failed Some(0): not ready within 1s after []", "running 10; running 11; retired"),
        ]),
    );
}

#[test]
fn the_daemon_stopping_abandons_the_rollout_and_stops_the_new_instance_too() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(1), "spawn 2, reload 2 by 1", "running 10; running 11; joining"),
            (5, Spawned(2, 20), "", "running 10; running 11; joining 20; next@1.005s"),
            (
                6,
                StopAll,
                "ask 0, ask 1, ask 2, failed None: the daemon is stopping after []",
                "stopping 10 asked then stop; stopping 11 asked then stop; stopping 20 asked then stop; next@5.006s",
            ),
        ]),
    );
}

#[test]
fn an_old_instance_that_crashes_meanwhile_is_restarted_then_replaced() {
    check(
        vec![pool(2)],
        &rows(&[
            (5, Reload(1), "spawn 2, reload 2 by 1", "running 10; running 11; joining"),
            (6, Exit(10, KILLED), "spawn 0", "waiting@6ms; running 11; joining"),
            (6, Spawned(0, 12), "", "running 12; running 11; joining"),
            (6, Spawned(2, 20), "", "running 12; running 11; joining 20; next@1.006s"),
            (
                7,
                Ready(2),
                "ask 0, replaced 0:12>20",
                "stopping 12 asked then replace; running 11; running 20; next@5.007s",
            ),
            (8, Exit(12, OK), "spawn 0", "joining; running 11; running 20"),
        ]),
    );
}
