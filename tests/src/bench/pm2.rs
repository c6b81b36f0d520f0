//! The second peer: PM2, measured in the same run as forkd and supervisord,
//! shaped the same way, so that each figure that has a counterpart gets a
//! forkd/PM2 ratio too.
//!
//! When `node` and `npm` are on PATH, the bench installs PM2 (major
//! [`MAJOR`]) with npm into its own directory, `target/bench/pm2/`, never
//! globally, and reuses that install while its version matches. PM2 keeps
//! its state in `PM2_HOME`, which the bench points at `home/` in that
//! directory, emptied before each use, so that `~/.pm2` is never touched.
//!
//! PM2 is driven through its own API: a small node program
//! (`pm2-driver.js`, written next to the install) holds one connection to
//! PM2's daemon (the "God" process, which it starts) and answers the
//! bench's commands on its stdin and stdout. The driver runs on the bench's
//! CPU; the God daemon is pinned to the daemon's CPU before it starts any
//! process, so its processes run there too. The programs are `/bin/sleep
//! 100000`, as under supervisord, in fork mode with no interpreter, their
//! output to `/dev/null`. The list is PM2's `getMonitorData`, what `pm2
//! jlist` asks (it reads every process's CPU and memory on each call).
//!
//! No PM2 outlives the bench: the handle kills the God daemon and its
//! processes when dropped, and the driver does the same when its stdin
//! closes or it gets the bench's death signal.
//!
//! Without node or npm, or when the install fails, every PM2 figure says
//! "skipped" and why.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::{poll_until, DEADLINE};
use super::peer::FleetFigures;
use super::report::Stat;
use super::stats::{micros, millis, quantiles};
use super::sys;
use super::Env;

/// The major version of PM2 the bench installs.
pub const MAJOR: &str = "7";
/// The driver, written into the install's directory.
const DRIVER: &str = include_str!("pm2-driver.js");
/// The longest a launch or stop of a thousand processes may take.
const LARGE_DEADLINE: Duration = Duration::from_secs(120);

/// A local install of PM2.
#[derive(Clone, Debug)]
pub struct Install {
    /// `target/bench/pm2/`: `node_modules/pm2`, the driver, `home/`.
    pub dir: PathBuf,
    pub version: String,
}

fn tool_version(tool: &str) -> Result<String, String> {
    let out = Command::new(tool).arg("--version").output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{tool} not on PATH"),
        _ => format!("run {tool}: {e}"),
    })?;
    if !out.status.success() {
        return Err(format!("{tool} --version failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The version of PM2 installed in `dir`, if any.
fn installed(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules/pm2/package.json")).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_string)
}

/// Finds node and npm, and installs PM2 into `dir` unless a matching
/// version is there already; writes the driver.
pub fn find(dir: &Path) -> Result<Install, String> {
    let node = tool_version("node")?;
    tool_version("npm")?;
    let matches = |v: &Option<String>| v.as_deref().is_some_and(|v| v.split('.').next() == Some(MAJOR));
    let mut version = installed(dir);
    if !matches(&version) {
        super::progress(&format!("installing pm2@{MAJOR} with npm into {}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(dir)
            .arg(format!("pm2@{MAJOR}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run npm: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("npm install pm2@{MAJOR} failed ({}): {}", out.status, err.trim()));
        }
        version = installed(dir);
        if !matches(&version) {
            return Err(format!("npm installed pm2 {version:?}, not {MAJOR}.x"));
        }
    }
    let driver = dir.join("pm2-driver.js");
    std::fs::write(&driver, DRIVER).map_err(|e| format!("write {}: {e}", driver.display()))?;
    let version = version.unwrap_or_default();
    super::progress(&format!("pm2 {version} (node {node}) in {}", dir.display()));
    Ok(Install { dir: dir.to_path_buf(), version })
}

/// Whether `pid` is a PM2 daemon, by its title.
fn is_god(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(3).any(|w| w == b"PM2"))
}

/// A God daemon left by a bench that was killed outright, with its
/// processes: killed, and its home emptied.
fn clear_home(home: &Path) -> Result<(), String> {
    let stale = std::fs::read_to_string(home.join("pm2.pid")).ok().and_then(|t| t.trim().parse::<i32>().ok());
    if let Some(pid) = stale.filter(|p| *p > 1 && sys::alive(*p) && is_god(*p)) {
        sys::kill_tree(pid);
    }
    if home.exists() {
        std::fs::remove_dir_all(home).map_err(|e| format!("empty {}: {e}", home.display()))?;
    }
    std::fs::create_dir_all(home).map_err(|e| format!("create {}: {e}", home.display()))
}

/// A PM2 daemon and the driver that holds a connection to it.
pub struct Pm2 {
    driver: Child,
    input: Option<ChildStdin>,
    /// The driver's answers, without their `@@ ` mark.
    answers: mpsc::Receiver<String>,
    /// The God daemon's pid.
    pub god: i32,
    /// Known to be gone, with every process it had.
    gone: bool,
    /// The driver's stderr.
    log: PathBuf,
    /// `PM2_HOME`.
    home: PathBuf,
}

impl Pm2 {
    /// Starts the driver, which starts the God daemon; returns once the
    /// daemon answers and is pinned to the daemon's CPU.
    pub fn start(env: &Env, install: &Install) -> Result<Pm2, String> {
        let home = install.dir.join("home");
        clear_home(&home)?;
        let log_path = install.dir.join("driver.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let mut cmd = Command::new("node");
        cmd.arg("pm2-driver.js").current_dir(&install.dir).env("PM2_HOME", &home);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).process_group(0);
        let cpu = env.cpus.other;
        // Safety: the hook makes two system calls and touches no memory of
        // the parent's that another thread could hold a lock on.
        unsafe {
            cmd.pre_exec(move || {
                sys::pin_current(cpu)?;
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let mut driver = cmd.spawn().map_err(|e| format!("start node: {e}"))?;
        let out = driver.stdout.take().expect("piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(answer) = line.strip_prefix("@@ ") {
                    if tx.send(answer.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        let input = driver.stdin.take();
        let mut pm2 = Pm2 { driver, input, answers, god: 0, gone: false, log: log_path, home };
        let ready = pm2.answer(DEADLINE)?;
        pm2.god = ready["god"].as_i64().unwrap_or(0) as i32;
        if pm2.god <= 1 {
            return Err(format!("the driver named no daemon: {ready}"));
        }
        sys::pin_process(pm2.god, env.cpus.daemon).map_err(|e| format!("pin the pm2 daemon: {e}"))?;
        Ok(pm2)
    }

    /// The driver's next answer; an `error` in it is an error.
    fn answer(&mut self, deadline: Duration) -> Result<Value, String> {
        let line = self.answers.recv_timeout(deadline).map_err(|_| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            format!("the pm2 driver did not answer within {deadline:?}: {}", tail.join(" | "))
        })?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("pm2 driver: {e}: {line}"))?;
        match v["error"].as_str() {
            Some(e) => Err(format!("pm2: {e}")),
            None => Ok(v),
        }
    }

    fn call(&mut self, command: &str, deadline: Duration) -> Result<Value, String> {
        let input = self.input.as_mut().ok_or("the pm2 driver is closed")?;
        writeln!(input, "{command}").map_err(|e| format!("pm2 driver: {e}"))?;
        self.answer(deadline)
    }

    /// Starts `n` instances of the idle program.
    pub fn launch(&mut self, n: usize) -> Result<(), String> {
        self.call(&format!("start {n}"), LARGE_DEADLINE).map(drop)
    }

    /// How many processes are online, from the list.
    pub fn online(&mut self) -> Result<usize, String> {
        Ok(self.call("list", DEADLINE)?["online"].as_u64().unwrap_or(0) as usize)
    }

    /// Process `id`'s pid and status, from the list.
    pub fn status(&mut self, id: usize) -> Result<(i32, String), String> {
        let v = self.call(&format!("status {id}"), DEADLINE)?;
        Ok((v["pid"].as_i64().unwrap_or(0) as i32, v["status"].as_str().unwrap_or("").to_string()))
    }

    /// What `pm2 kill` does (delete every process, stop the daemon), until
    /// the daemon and every process it had are gone; the time that took.
    pub fn kill(&mut self, deadline: Duration) -> Result<Duration, String> {
        let mut rest = sys::descendants(self.god);
        rest.push(self.god);
        let start = Instant::now();
        self.call("kill", deadline)?;
        poll_until("pm2 and its processes to be gone", deadline, Duration::ZERO, || {
            rest.retain(|p| sys::alive(*p));
            Ok(rest.is_empty())
        })?;
        self.gone = true;
        Ok(start.elapsed())
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        if !self.gone {
            // A daemon that started but never said so is in its pid file.
            let pid_file = || std::fs::read_to_string(self.home.join("pm2.pid")).ok()?.trim().parse::<i32>().ok();
            let god = if self.god > 1 { Some(self.god) } else { pid_file() };
            if let Some(god) = god.filter(|p| *p > 1 && sys::alive(*p) && is_god(*p)) {
                sys::kill_tree(god);
            }
        }
        // The driver has nothing left to kill: it exits at once.
        drop(self.input.take());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A PM2 with `n` idle processes, all online.
fn with_online(env: &Env, install: &Install, n: usize) -> Result<Pm2, String> {
    let mut pm2 = Pm2::start(env, install)?;
    pm2.launch(n)?;
    poll_until("the pm2 processes to be online", LARGE_DEADLINE, Duration::from_millis(5), || Ok(pm2.online()? >= n))?;
    Ok(pm2)
}

/// kill -9 of each of `kills` processes until the list shows a new pid
/// online in its place, in µs.
pub fn restart(env: &Env, install: &Install, kills: usize) -> Result<Stat, String> {
    let mut pm2 = with_online(env, install, kills)?;
    let mut v = Vec::new();
    for id in 0..kills {
        let (old, _) = pm2.status(id)?;
        if old <= 1 {
            return Err(format!("pm2 process {id} has no pid"));
        }
        let t = Instant::now();
        sys::signal(old, libc::SIGKILL);
        poll_until(&format!("pm2 process {id} to be online again"), Duration::from_secs(10), Duration::ZERO, || {
            let (pid, status) = pm2.status(id)?;
            Ok(pid != old && pid != 0 && status == "online")
        })?;
        v.push(micros(t.elapsed()));
    }
    pm2.kill(DEADLINE)?;
    Ok(Stat::Q(quantiles(v)))
}

/// PM2's figures for `n` idle processes, the same as supervisord's: launch
/// until all are online (the daemon already up), the list's round trip,
/// the God daemon's memory, and `pm2 kill` until all are gone.
pub fn fleet(env: &Env, install: &Install, n: usize, runs: usize, list_samples: usize) -> Result<FleetFigures, String> {
    let (mut launch, mut stop, mut list, mut mem) = (Vec::new(), Vec::new(), Vec::new(), None);
    for run in 0..runs {
        let mut pm2 = Pm2::start(env, install)?;
        let t = Instant::now();
        pm2.launch(n)?;
        poll_until("the pm2 processes to be online", LARGE_DEADLINE, Duration::from_millis(5), || {
            Ok(pm2.online()? >= n)
        })?;
        launch.push(millis(t.elapsed()));
        if run == 0 {
            // As for supervisord: nothing PM2 tells says that it is done
            // with the launch once all are online. A fixed settle is the
            // measurement method for it.
            std::thread::sleep(Duration::from_millis(200));
            mem = Some(sys::smaps_rollup(pm2.god)?);
            for i in 0..list_samples + 2 {
                let t = Instant::now();
                pm2.online()?;
                // The first two warm the connection.
                if i >= 2 {
                    list.push(micros(t.elapsed()));
                }
            }
        }
        stop.push(millis(pm2.kill(LARGE_DEADLINE)?));
    }
    Ok(FleetFigures {
        launch: Stat::Q(quantiles(launch)),
        list: Stat::Q(quantiles(list)),
        mem: mem.expect("measured in the first run"),
        stop: Stat::Q(quantiles(stop)),
    })
}
