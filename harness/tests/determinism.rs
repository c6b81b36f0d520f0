//! The harness is only as good as its replays: the same seed must give the
//! same trace, bit for bit, however often it runs and however many worlds
//! run beside it (madsim's `check_determinism`, shuttle's replay tests).

use forkd_harness::{run_seed, run_seeds};

#[test]
fn a_seed_replayed_gives_the_same_trace() {
    for seed in [0, 7, 42] {
        let a = run_seed(seed, true);
        let b = run_seed(seed, true);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}: two runs hashed differently");
        assert_eq!(a.trace, b.trace, "seed {seed}: two runs traced differently");
        assert_eq!(a.failures, b.failures, "seed {seed}: two runs judged differently");
        assert!(a.trace.as_ref().is_some_and(|t| t.len() > 100), "seed {seed}: the trace is suspiciously short");
    }
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let seeds: Vec<u64> = (100..106).collect();
    let one = run_seeds(&seeds, 1, false);
    let three = run_seeds(&seeds, 3, false);
    let summary = |rs: &[forkd_harness::RunResult]| -> Vec<(u64, u64, usize)> {
        rs.iter().map(|r| (r.seed, r.trace_hash, r.failures.len())).collect()
    };
    assert_eq!(summary(&one), summary(&three));
}

#[test]
fn different_seeds_give_different_runs() {
    let a = run_seed(1, false);
    let b = run_seed(2, false);
    assert_ne!(a.trace_hash, b.trace_hash);
}
