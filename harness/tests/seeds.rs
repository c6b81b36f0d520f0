//! A handful of seeds, run as part of the ordinary test suite; `cargo xtask
//! test` runs hundreds more through the binary.

use forkd_harness::{replay_command, run_seeds};

#[test]
fn the_first_seeds_pass() {
    let seeds: Vec<u64> = (0..12).collect();
    let failed: Vec<String> = run_seeds(&seeds, 2, false)
        .into_iter()
        .filter(|r| !r.passed())
        .map(|r| format!("seed {} failed: {}\nreplay: {}", r.seed, r.failures.join("; "), replay_command(r.seed)))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
