//! The harness bites: with a bug planted in forkd-core on purpose, some
//! seed must fail, and fail for the invariant that guards against it.
//!
//! Runs only with `--features planted` (`cargo nextest run -p
//! forkd-harness --features planted`). The bugs are planted process-wide,
//! so the bugs are tried one after the other in a single test.
#![cfg(feature = "planted")]

use forkd_core::planted::{self, Bug};
use forkd_harness::run_seeds;

/// The first failing seed and its failures, scanning seeds from 0.
fn first_catch(bug: Bug, limit: u64) -> Option<(u64, Vec<String>)> {
    planted::plant(&[bug]);
    let mut found = None;
    let seeds: Vec<u64> = (0..limit).collect();
    for chunk in seeds.chunks(8) {
        if let Some(r) = run_seeds(chunk, 2, true).into_iter().find(|r| !r.passed()) {
            found = Some((r.seed, r.failures));
            break;
        }
    }
    planted::plant(&[]);
    found
}

#[test]
fn planted_bugs_are_caught_by_the_invariant_that_guards_them() {
    // Each bug, and the failures that may show it first (a bug often
    // breaks more than one invariant; the first seed to fail shows one).
    let cases: [(Bug, &[&str]); 10] = [
        (Bug::NoRestart, &["was not running again"]),
        (Bug::KeepOldRegion, &["exited still holding"]),
        (Bug::AnswerTwice, &["nothing was owed", "answer to"]),
        (Bug::DropPipelined, &["answer to", "eof-unanswered", "gave-up"]),
        // A zombie left unreaped also keeps a past deadline: the loop spins.
        (Bug::ReapOne, &["was not running again", "the run was cut", "the stop took"]),
        (Bug::PausedRuns, &["while paused"]),
        (Bug::EarlyPidUnlock, &["pidlock acquired"]),
        (Bug::NoHangKill, &["was not killed", "the run was cut"]),
        (Bug::ReloadNoWait, &["plus the reload's"]),
        (Bug::AcceptAfterHandOver, &["accepted after it handed over"]),
    ];
    let mut missed = Vec::new();
    for (bug, invariants) in cases {
        match first_catch(bug, 200) {
            Some((_, failures)) if failures.iter().any(|f| invariants.iter().any(|i| f.contains(i))) => {}
            Some((seed, failures)) => {
                missed.push(format!("{bug:?}: seed {seed} failed for another reason: {failures:?}"))
            }
            None => missed.push(format!("{bug:?}: no seed of 200 caught it")),
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}
