//! `cargo xtask`: the project's own commands, in Rust so that they run the
//! same everywhere (rust-analyzer's pattern). No dependencies: this crate
//! must build in seconds on a fresh machine.
//!
//! - `test`: formatting, clippy, unit and contract tests, simulated runs;
//! - `e2e`: the tests against real daemon processes;
//! - `ci`: both, what `.ci/run` runs;
//! - `sim --seeds N | --seed S`: the deterministic simulation;
//! - `bench [--quick]`: release-build benchmarks of real daemons.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask <test|e2e|ci|sim [--seeds N | --seed S]|bench [--quick]>";

/// Seeds `cargo xtask test` runs: about 40 s of simulation on 2 cores
/// (`cargo xtask sim --seeds 1000` takes about two minutes).
const TEST_SEEDS: u64 = 300;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("e2e") => e2e(),
        Some("ci") => test().and_then(|()| e2e()),
        Some("sim") => sim(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs `cargo ARGS` in the workspace root, failing on a non-zero exit.
fn cargo(args: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("run cargo: {e}"))?;
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn nextest_available() -> Result<(), String> {
    let ok = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err("cargo-nextest is needed (each test that forks runs in a process of its own): \
             cargo install cargo-nextest --locked"
            .into())
    }
}

fn test() -> Result<(), String> {
    nextest_available()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&["nextest", "run", "--workspace", "--exclude", "forkd-tests", "--no-fail-fast"])?;
    sim(&["--seeds".into(), TEST_SEEDS.to_string()])?;
    // The harness must bite: with bugs planted on purpose, seeds fail for
    // the invariant that guards each one. In release: it runs many seeds.
    cargo(&["nextest", "run", "--release", "-p", "forkd-harness", "--features", "planted", "--test", "planted"])
}

fn e2e() -> Result<(), String> {
    nextest_available()?;
    cargo(&["build", "--workspace", "--bins"])?;
    cargo(&["nextest", "run", "-p", "forkd-tests", "--no-fail-fast"])
}

fn sim(args: &[String]) -> Result<(), String> {
    let mut cmd = vec!["run", "--release", "--quiet", "-p", "forkd-harness", "--"];
    let rest: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd.extend(rest);
    cargo(&cmd)
}

fn bench(args: &[String]) -> Result<(), String> {
    let mut cmd = vec!["run", "--release", "--quiet", "-p", "forkd-tests", "--bin", "forkd-bench", "--"];
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd)
}
