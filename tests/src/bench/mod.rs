//! The benchmarks of forkd: fixture daemons built in release mode and run
//! as real processes, measured from outside the way a client, an operator
//! or a supervisor sees them; supervisord and PM2 measured the same way in
//! the same run when they are installed (PM2 when node is: the bench
//! installs it locally).
//!
//! The bench prints a table and writes `target/bench/report.json`;
//! `docs/benchmarks.md` explains each figure and how to read it. Targets
//! are goals: a missed one is reported, not failed. A failed measurement
//! (a daemon that does not start, a timeout) is, and the bench exits 1
//! after reporting what it did measure.
//!
//! Where a process runs changes the figures (a wake-up across cores costs
//! about 20 µs on a virtual machine), so every daemon is pinned to a CPU
//! before it executes its first instruction, the bench pins its own
//! threads, and each figure says where things ran.
//!
//! The bench must never leave a process behind: every daemon lives in a
//! handle that kills it, and all it forked, when dropped; every wait has a
//! deadline.

mod daemon;
mod fleet;
mod lifecycle;
mod load;
mod ops;
mod peer;
mod pm2;
mod report;
mod rpc;
mod stats;
mod sys;
mod wire;
mod zerodowntime;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use report::Figure;
use serde_json::json;

/// How much of each measurement to take: the full run takes a few minutes,
/// `--quick` under one.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Round trips per latency figure, after `warmup`.
    pub latency_samples: usize,
    pub warmup: usize,
    /// Each throughput figure is the median of `tput_runs` windows.
    pub tput_window: Duration,
    pub tput_runs: usize,
    pub startup_runs: usize,
    pub peer_startup_runs: usize,
    pub restart_kills: usize,
    pub pause_samples: usize,
    /// Runs of the 4-worker daemon (stop samples).
    pub stop_runs: usize,
    /// Runs of the 1000-worker daemon.
    pub thousand_runs: usize,
    /// `worker.list` calls of 1000 workers.
    pub list_samples: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                latency_samples: 2_000,
                warmup: 200,
                tput_window: Duration::from_millis(300),
                tput_runs: 1,
                startup_runs: 10,
                peer_startup_runs: 3,
                restart_kills: 10,
                pause_samples: 30,
                stop_runs: 3,
                thousand_runs: 1,
                list_samples: 10,
            }
        } else {
            Plan {
                quick,
                latency_samples: 20_000,
                warmup: 2_000,
                tput_window: Duration::from_secs(2),
                tput_runs: 3,
                startup_runs: 60,
                peer_startup_runs: 10,
                restart_kills: 60,
                pause_samples: 300,
                stop_runs: 20,
                thousand_runs: 3,
                list_samples: 100,
            }
        }
    }
}

/// What every section gets.
pub struct Env {
    pub plan: Plan,
    /// Where the fixture daemons are: next to this binary.
    pub bins: PathBuf,
    pub bench_exe: PathBuf,
    pub cpus: sys::Cpus,
    /// supervisord's path, or why the peer is skipped.
    pub peer: Result<PathBuf, String>,
    /// PM2's local install, or why that peer is skipped.
    pub pm2: Result<pm2::Install, String>,
}

/// A line on stderr so that a long run shows where it is.
pub fn progress(what: &str) {
    eprintln!("bench: {what}");
}

type Section = (&'static str, fn(&Env, &mut Vec<Figure>) -> Result<(), String>);

const SECTIONS: [Section; 6] = [
    ("rpc", rpc::run),
    ("startup", lifecycle::startup),
    ("restart", lifecycle::restart),
    ("control", lifecycle::pause),
    ("fleet", fleet::run),
    ("zerodowntime", zerodowntime::run),
];

const USAGE: &str = "usage: forkd-bench [--quick] [--only SECTION,...] [--no-peer]
sections: rpc, startup, restart, control, fleet, zerodowntime
--no-peer: measure neither supervisord nor PM2
Run through `cargo xtask bench [--quick]`, which builds in release mode.";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// `CARGO_TARGET_DIR`, or the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace().join(d)
            }
        }
        None => workspace().join("target"),
    }
}

/// Builds the fixture daemons with the profile this bench was built with;
/// they land next to it.
fn build_fixtures(bins: &std::path::Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", "forkd-fixtures", "--bins"]).current_dir(workspace());
    if bins.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("building the fixtures failed ({status})"));
    }
    for bin in ["echo-daemon", "copy-daemon", "pool-daemon"] {
        if !bins.join(bin).is_file() {
            return Err(format!("{} is not built", bins.join(bin).display()));
        }
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The command line.
struct Args {
    quick: bool,
    only: Option<Vec<String>>,
    no_peer: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args { quick: false, only: None, no_peer: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => parsed.quick = true,
            "--no-peer" => parsed.no_peer = true,
            "--only" => {
                let list = it.next().ok_or("--only needs a list of sections")?;
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                if let Some(bad) = names.iter().find(|n| !SECTIONS.iter().any(|(s, _)| s == n)) {
                    return Err(format!("unknown section {bad:?}"));
                }
                parsed.only = Some(names);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

/// What the sections produced.
struct Outcome {
    figures: Vec<Figure>,
    errors: Vec<serde_json::Value>,
    /// Per section: its duration and the other processes' load meanwhile.
    sections: serde_json::Map<String, serde_json::Value>,
    /// Sections during which other processes loaded the machine.
    loaded: Vec<String>,
}

/// Runs the sections asked for; a section that fails (or panics) is
/// recorded and the next one runs.
fn run_sections(env: &Env, only: Option<&[String]>) -> Outcome {
    let mut out =
        Outcome { figures: Vec::new(), errors: Vec::new(), sections: serde_json::Map::new(), loaded: Vec::new() };
    for (name, section) in SECTIONS {
        if only.is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let t = Instant::now();
        let (machine0, own0) = (sys::machine_busy(), sys::own_busy());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| section(env, &mut out.figures)));
        let secs = t.elapsed().as_secs_f64();
        // What other processes used meanwhile, in CPUs: the machine's busy
        // time less the bench's and its reaped daemons'. `/proc/stat`
        // counts in ticks of 10 ms: too coarse for a section under 1 s.
        let foreign = ((sys::machine_busy() - machine0) - (sys::own_busy() - own0)).max(0.0) / secs;
        let foreign = (secs >= 1.0).then_some(foreign);
        out.sections
            .insert(name.to_string(), json!({ "seconds": round1(secs), "other_load_cpus": foreign.map(round2) }));
        if let Some(foreign) = foreign.filter(|f| *f > 0.1) {
            progress(&format!("{name}: other processes kept {foreign:.2} CPUs busy meanwhile"));
            out.loaded.push(format!("{name} {foreign:.2}"));
        }
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        eprintln!("bench: {name} failed: {error}");
        out.errors.push(json!({ "section": name, "error": error }));
    }
    out
}

/// The table, the warnings and the notes, on stdout.
fn print_report(mode: &str, machine: &sys::Machine, env: &Env, out: &Outcome, elapsed: Duration) {
    println!();
    println!(
        "forkd benchmarks ({mode}) on {} CPUs, {}, kernel {}; {:.1} s",
        machine.cpus,
        machine.model,
        machine.kernel,
        elapsed.as_secs_f64()
    );
    print!("{}", report::table(&out.figures));
    if let Err(why) = &env.peer {
        println!("supervisord figures skipped: {why}");
    }
    if let Err(why) = &env.pm2 {
        println!("pm2 figures skipped: {why}");
    }
    if !out.loaded.is_empty() {
        println!(
            "warning: other processes loaded the machine (CPUs, by section: {}): figures are pessimistic",
            out.loaded.join(", ")
        );
    }
    let notes: Vec<String> =
        out.figures.iter().filter_map(|f| f.note.as_ref().map(|n| format!("  {}: {n}", f.name))).collect();
    if !notes.is_empty() {
        println!("notes:\n{}", notes.join("\n"));
    }
    let missed: Vec<&str> = out.figures.iter().filter(|f| f.met() == Some(false)).map(|f| f.name.as_str()).collect();
    let met = out.figures.iter().filter(|f| f.met() == Some(true)).count();
    println!(
        "targets: {met} met, {} missed{}",
        missed.len(),
        if missed.is_empty() { String::new() } else { format!(": {}", missed.join(", ")) }
    );
    for e in &out.errors {
        println!("FAILED {}: {}", e["section"].as_str().unwrap_or(""), e["error"].as_str().unwrap_or(""));
    }
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = args.as_slice() {
        if flag == "--floor-server" {
            return rpc::floor_server(path);
        }
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let started = Instant::now();
    let bench_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: current exe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bins = bench_exe.parent().expect("an executable is in a directory").to_path_buf();
    daemon::sweep_stale_dirs();
    progress("building the fixture daemons");
    if let Err(e) = build_fixtures(&bins) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // A thousand connections, a thousand workers' sockets, supervisord's
    // pipes for a thousand programs: the daemons inherit this limit.
    let nofile = sys::raise_nofile(16_384);
    let peer = if args.no_peer { Err("--no-peer".to_string()) } else { peer::find() };
    // Only the restart and fleet sections have PM2 figures: no install
    // without them.
    let wants_pm2 = args.only.as_ref().is_none_or(|o| o.iter().any(|s| s == "restart" || s == "fleet"));
    let pm2 = match (args.no_peer, wants_pm2) {
        (true, _) => Err("--no-peer".to_string()),
        (false, false) => Err("no section run has pm2 figures".to_string()),
        (false, true) => pm2::find(&target_dir().join("bench/pm2")),
    };
    let machine = sys::machine();
    let env = Env { plan: Plan::new(args.quick), bins, bench_exe, cpus: sys::Cpus::detect(), peer, pm2 };
    let mode = if args.quick { "quick" } else { "full" };
    progress(&format!(
        "{mode} run on {} CPUs ({}), kernel {}, nofile {nofile}; supervisord: {}; pm2: {}",
        machine.cpus,
        machine.model,
        machine.kernel,
        match &env.peer {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("skipped: {e}"),
        },
        match &env.pm2 {
            Ok(p) => p.version.clone(),
            Err(e) => format!("skipped: {e}"),
        }
    ));
    if machine.cpus < 2 {
        progress("one CPU only: throughput clients share the daemon's core");
    }

    let out = run_sections(&env, args.only.as_deref());
    let elapsed = started.elapsed();
    print_report(mode, &machine, &env, &out, elapsed);

    let report = json!({
        "mode": mode,
        "machine": { "cpus": machine.cpus, "model": machine.model, "kernel": machine.kernel },
        "placement": { "daemon_cpu": env.cpus.daemon, "other_cpu": env.cpus.other },
        "peers": {
            "supervisord": match &env.peer { Ok(p) => json!({ "path": p.display().to_string() }), Err(e) => json!({ "skipped": e }) },
            "pm2": match &env.pm2 {
                Ok(p) => json!({ "version": p.version, "dir": p.dir.display().to_string() }),
                Err(e) => json!({ "skipped": e }),
            },
        },
        "seconds": round1(elapsed.as_secs_f64()),
        "sections": out.sections,
        "figures": out.figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "errors": out.errors,
    });
    let dir = target_dir().join("bench");
    let path = dir.join("report.json");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"));
    match written {
        Ok(()) => println!("report: {}", path.display()),
        Err(e) => {
            eprintln!("error: write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if out.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
