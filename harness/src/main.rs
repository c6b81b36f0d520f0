//! `forkd-harness`: runs simulated daemons from seeds (`cargo xtask sim`).
//!
//! - `--seeds N [--from S]`: runs seeds S..S+N on two threads, prints a
//!   summary; each failure prints its seed and the command that replays it,
//!   and the exit code is 1;
//! - `--seed S`: replays one seed, prints its trace on stdout, one event a
//!   line, then the verdict;
//! - `--threads T`: how many worlds run at once (2 by default);
//! - `--plant BUG[,BUG]` (built with `--features planted`): runs with those
//!   bugs planted in forkd-core; `--plant list` names them;
//! - `--hunt [--seeds N]` (built with `--features planted`): plants each bug
//!   in turn and prints, for each, how many seeds it took to catch it (seeds
//!   from 0, up to N), what caught it, and how many of the N seeds fail.

use std::process::ExitCode;
use std::time::Instant;

use forkd_harness::{run_seed, run_seeds};

const USAGE: &str = "usage: forkd-harness (--seeds N [--from S] | --seed S) [--threads T] [--plant BUG,...]";

struct Args {
    seeds: Option<u64>,
    from: u64,
    seed: Option<u64>,
    threads: usize,
    plant: Vec<String>,
    hunt: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { seeds: None, from: 0, seed: None, threads: 2, plant: Vec::new(), hunt: false };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--seeds" => a.seeds = Some(number(value()?)?),
            "--from" => a.from = number(value()?)?,
            "--seed" => a.seed = Some(number(value()?)?),
            "--threads" => a.threads = number(value()?)? as usize,
            "--plant" => a.plant = value()?.split(',').map(str::to_string).collect(),
            "--hunt" => a.hunt = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.seeds.is_none() && a.seed.is_none() {
        a.seeds = Some(100);
    }
    Ok(a)
}

#[cfg(feature = "planted")]
fn plant(names: &[String]) -> Result<(), String> {
    use forkd_core::planted::{self, Bug};
    if names.iter().any(|n| n == "list") {
        let all: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        return Err(format!("bugs: {}", all.join(", ")));
    }
    let bugs = names
        .iter()
        .map(|n| Bug::from_name(n).ok_or_else(|| format!("no planted bug called {n}")))
        .collect::<Result<Vec<_>, _>>()?;
    planted::plant(&bugs);
    Ok(())
}

#[cfg(not(feature = "planted"))]
fn plant(names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        Ok(())
    } else {
        Err("--plant needs a build with `--features planted`".into())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args).and_then(|a| plant(&a.plant).map(|()| a)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        return replay(seed, &args.plant);
    }
    if args.hunt {
        return hunt(args.seeds.unwrap_or(100), args.threads);
    }
    let n = args.seeds.unwrap_or(0);
    let seeds: Vec<u64> = (args.from..args.from + n).collect();
    let started = Instant::now();
    let results = run_seeds(&seeds, args.threads, false);
    let wall = started.elapsed().as_secs_f64();
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    let steps: u64 = results.iter().map(|r| r.steps).sum();
    let virt: f64 = results.iter().map(|r| r.virtual_nanos as f64 / 1e9).sum();
    for r in &failed {
        println!("seed {} failed: {}", r.seed, r.failures.join("; "));
        println!("replay: {}", replay_command(r.seed, &args.plant));
    }
    println!(
        "sim: {} of {n} seeds passed ({}..{}) in {wall:.1}s on {} threads: {steps} steps, {virt:.1}s of virtual time",
        results.len() - failed.len(),
        args.from,
        args.from + n,
        args.threads,
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The command that replays a seed, with the bugs planted in this run.
fn replay_command(seed: u64, plant: &[String]) -> String {
    if plant.is_empty() {
        forkd_harness::replay_command(seed)
    } else {
        format!("cargo run --release -p forkd-harness --features planted -- --seed {seed} --plant {}", plant.join(","))
    }
}

fn replay(seed: u64, plant: &[String]) -> ExitCode {
    let sc = forkd_harness::Scenario::from_seed(seed);
    eprintln!("{}", sc.summary());
    let r = run_seed(seed, true);
    for line in r.trace.as_deref().unwrap_or_default() {
        println!("{line}");
    }
    println!("trace hash {:016x}, {} steps", r.trace_hash, r.steps);
    if r.passed() {
        println!("seed {seed} passed");
        ExitCode::SUCCESS
    } else {
        for f in &r.failures {
            println!("seed {seed} failed: {f}");
        }
        println!("replay: {}", replay_command(seed, plant));
        ExitCode::FAILURE
    }
}

#[cfg(feature = "planted")]
fn hunt(n: u64, threads: usize) -> ExitCode {
    use forkd_core::planted::{self, Bug};
    let seeds: Vec<u64> = (0..n).collect();
    let mut all_caught = true;
    println!("| bug | seeds to catch | caught by (first failing seed) | seeds failing of {n} |");
    println!("| --- | --- | --- | --- |");
    for bug in Bug::ALL {
        planted::plant(&[bug]);
        let results = run_seeds(&seeds, threads, false);
        planted::plant(&[]);
        let failing: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        match failing.first() {
            Some(first) => {
                let mut why = first.failures[0].clone();
                if why.len() > 140 {
                    let mut end = 140;
                    while !why.is_char_boundary(end) {
                        end -= 1;
                    }
                    why.truncate(end);
                    why.push_str("...");
                }
                println!("| {} | {} (seed {}) | {} | {} |", bug.name(), first.seed + 1, first.seed, why, failing.len());
            }
            None => {
                all_caught = false;
                println!("| {} | not caught | | 0 |", bug.name());
            }
        }
    }
    if all_caught {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(not(feature = "planted"))]
fn hunt(_n: u64, _threads: usize) -> ExitCode {
    eprintln!("--hunt needs a build with `--features planted`");
    ExitCode::from(2)
}
