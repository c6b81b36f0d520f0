//! `cargo xtask`: the project's own commands, in Rust so that they run the
//! same everywhere (rust-analyzer's pattern). No dependencies: this crate
//! must build in seconds on a fresh machine.
//!
//! - `test`: formatting, clippy, unit and contract tests, simulated runs;
//! - `e2e`: the tests against real daemon processes;
//! - `examples`: the forkd crate's examples and the guide's Rust snippets,
//!   built in a crate outside the workspace, as a user's;
//! - `ci`: `test`, `e2e` and `examples`, what `.ci/run` runs;
//! - `sim --seeds N | --seed S`: the deterministic simulation;
//! - `bench [--quick]`: release-build benchmarks of real daemons;
//! - `fuzz [--seconds N] [--target NAME]`: the cargo-fuzz targets of
//!   `core/fuzz` (nightly), N seconds in all split over the targets. A
//!   crash is not fixed until its input is saved in
//!   `core/fuzz/regressions/<target>/`, which `test` replays on stable.

use std::env;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

mod examples;

const USAGE: &str = "usage: cargo xtask <test|e2e|examples|ci|sim [--seeds N | --seed S]|bench [--quick]\
                     |fuzz [--seconds N] [--target NAME]>";

/// Seeds `cargo xtask test` runs: about 40 s of simulation on 2 cores
/// (`cargo xtask sim --seeds 1000` takes about two minutes).
const TEST_SEEDS: u64 = 300;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("e2e") => e2e(),
        Some("examples") => examples::examples(&root()),
        Some("ci") => test().and_then(|()| e2e()).and_then(|()| examples::examples(&root())),
        Some("sim") => sim(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
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
    // nextest runs no doc examples: the library crates' run here, and
    // their docs must build without a warning.
    cargo(&["test", "--doc", "-p", "forkd-os", "-p", "forkd-core", "-p", "forkd"])?;
    docs()?;
    sim(&["--seeds".into(), TEST_SEEDS.to_string()])?;
    // The harness must bite: with bugs planted on purpose, seeds fail for
    // the invariant that guards each one. In release: it runs many seeds.
    cargo(&["nextest", "run", "--release", "-p", "forkd-harness", "--features", "planted", "--test", "planted"])
}

/// `cargo doc` of the workspace, warnings denied (broken links, missing
/// docs).
fn docs() -> Result<(), String> {
    eprintln!("$ RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps");
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["doc", "--workspace", "--no-deps", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root())
        .status()
        .map_err(|e| format!("cargo doc: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo doc failed ({status})"))
    }
}

fn e2e() -> Result<(), String> {
    nextest_available()?;
    cargo(&["build", "--workspace", "--bins"])?;
    // tests/tests/examples.rs runs the forkd crate's examples.
    cargo(&["build", "-p", "forkd", "--examples"])?;
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

/// Seconds `cargo xtask fuzz` runs without `--seconds`, split over the
/// targets.
const FUZZ_SECONDS: u64 = 600;

/// Where cargo-fuzz finds the fuzz crate, from the workspace root.
const FUZZ_DIR: &str = "core/fuzz";

/// Extra libFuzzer flags per target, over its default input size of 4 KiB:
/// the channel's input is a whole region of about 13 KiB, and the
/// connection's limits (4 KiB requests) are only reached past 4 KiB.
fn fuzz_flags(target: &str) -> &'static [&'static str] {
    match target {
        "channel" | "conn" => &["-max_len=16384"],
        _ => &[],
    }
}

/// `cargo +nightly ...`: through rustup's `cargo`, not `$CARGO` (the
/// stable toolchain's own binary, which knows no `+toolchain`), and
/// without the variables that pin the stable toolchain for this process.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC").current_dir(root());
    cmd
}

/// The targets: the files of `core/fuzz/fuzz_targets/`, sorted.
fn fuzz_targets() -> Result<Vec<String>, String> {
    let dir = root().join(FUZZ_DIR).join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut targets: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .collect();
    targets.sort();
    Ok(targets)
}

/// The files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds = FUZZ_SECONDS;
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let n = args.next().ok_or("--seconds needs a number")?;
                seconds = n.parse().map_err(|_| format!("--seconds {n}: not a number of seconds"))?;
            }
            "--target" => only = Some(args.next().ok_or("--target needs a name")?.clone()),
            other => return Err(format!("fuzz: unexpected argument {other}\n{USAGE}")),
        }
    }
    let installed = nightly_cargo().args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !installed {
        return Err("fuzzing needs a nightly toolchain and cargo-fuzz:\n  \
                    rustup toolchain install nightly\n  \
                    cargo +nightly install cargo-fuzz --locked"
            .into());
    }
    let mut targets = fuzz_targets()?;
    if let Some(name) = only {
        if !targets.contains(&name) {
            return Err(format!("no fuzz target {name}; there are: {}", targets.join(", ")));
        }
        targets = vec![name];
    }
    let each = (seconds / targets.len().max(1) as u64).max(1);
    let mut results = Vec::new();
    for target in &targets {
        results.push((target.clone(), fuzz_one(target, each)?));
    }
    eprintln!("fuzzed {} target(s), {each} s each:", results.len());
    let mut crashed = Vec::new();
    for (target, outcome) in &results {
        let execs = outcome.execs.map_or("unknown".to_string(), |n| n.to_string());
        eprintln!("  {target}: {execs} executions{}", if outcome.crashes.is_empty() { "" } else { ", CRASHED" });
        for crash in &outcome.crashes {
            eprintln!("    {}", crash.display());
            crashed.push((target, crash));
        }
    }
    if crashed.is_empty() {
        return Ok(());
    }
    let mut message = String::from("fuzzing found crashes; minimise each, then save it as a regression:");
    for (target, crash) in crashed {
        let crash = crash.display();
        message.push_str(&format!(
            "\n  cargo +nightly fuzz tmin {target} --fuzz-dir {FUZZ_DIR} {crash}\
             \n  cp <minimised input> {FUZZ_DIR}/regressions/{target}/"
        ));
    }
    Err(message)
}

/// What one target's run left.
struct FuzzOutcome {
    /// libFuzzer's `stat::number_of_executed_units`.
    execs: Option<u64>,
    /// Crash, leak, timeout and out-of-memory inputs that appeared.
    crashes: Vec<PathBuf>,
}

/// Runs one target for `seconds`, its working corpus under
/// `target/fuzz-corpus/<target>` and its seeds read-only.
fn fuzz_one(target: &str, seconds: u64) -> Result<FuzzOutcome, String> {
    let corpus = root().join("target").join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("create {}: {e}", corpus.display()))?;
    let artifacts = root().join(FUZZ_DIR).join("artifacts").join(target);
    let before = files_in(&artifacts);
    let seeds = format!("{FUZZ_DIR}/seeds/{target}");
    let corpus = corpus.display().to_string();
    let time = format!("-max_total_time={seconds}");
    let mut args = vec!["fuzz", "run", target, "--fuzz-dir", FUZZ_DIR, &corpus, &seeds, "--"];
    args.extend([time.as_str(), "-rss_limit_mb=2048", "-print_final_stats=1"]);
    args.extend(fuzz_flags(target));
    eprintln!("$ cargo +nightly {}", args.join(" "));
    let started = Instant::now();
    let mut child = nightly_cargo()
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run cargo +nightly fuzz: {e}"))?;
    // libFuzzer reports on stderr: pass it on, and keep the final count.
    let mut execs = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                execs = n.trim().parse().ok();
            }
        }
    }
    let status = child.wait().map_err(|e| format!("wait for cargo +nightly fuzz: {e}"))?;
    eprintln!("  ({:.1}s)", started.elapsed().as_secs_f64());
    let crashes: Vec<PathBuf> = files_in(&artifacts).into_iter().filter(|f| !before.contains(f)).collect();
    if !status.success() && crashes.is_empty() {
        return Err(format!("`cargo +nightly fuzz run {target}` failed ({status}) without leaving an artifact"));
    }
    Ok(FuzzOutcome { execs, crashes })
}
