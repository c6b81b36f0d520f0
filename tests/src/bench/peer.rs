//! The peer: supervisord, measured in the same run as forkd, shaped the
//! same way, so that each forkd figure that has a counterpart gets a ratio.
//!
//! supervisord runs from a configuration written in a temp dir: its
//! XML-RPC on a unix socket, and one program group `idle` of N processes
//! (`numprocs`) of `/bin/sleep 100000`, with `startsecs=0` so that a
//! process is RUNNING as soon as it is spawned (forkd's "looping" also
//! comes as soon as spinup returns). Its cheap call is
//! `supervisor.getState`, its listing `supervisor.getAllProcessInfo`; both
//! go through the same raw HTTP client as forkd's XML-RPC figures.
//!
//! When `supervisord` is not on PATH, every peer figure says "skipped".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use forkd_os::Address;

use super::daemon::{bench_dir, poll_until, Dir, Launch, Running, DEADLINE};
use super::report::Stat;
use super::rpc::{self, Endpoint};
use super::stats::{micros, millis, quantiles};
use super::sys::{self, Mem};
use super::wire::{count, xml_member, Framing, Request, Wire};
use super::Env;

/// Finds `supervisord` on PATH. A pyenv shim is resolved to the script it
/// runs, so that the shim's own start (a shell and pyenv, tens of
/// milliseconds) is not counted as supervisord's.
pub fn find() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("supervisord"))
        .find(|p| p.is_file())
        .ok_or_else(|| "supervisord not on PATH (pip install supervisor)".to_string())?;
    if found.components().any(|c| c.as_os_str() == "shims") {
        if let Ok(out) = Command::new("pyenv").args(["which", "supervisord"]).output() {
            let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && Path::new(&real).is_file() {
                return Ok(PathBuf::from(real));
            }
        }
    }
    Ok(found)
}

fn conf(dir: &Dir, programs: usize) -> String {
    let d = dir.path().display();
    // supervisord refuses to start below `minfds` descriptors; each program
    // takes a few (its pipes), and the bench has raised the limit already.
    let minfds = (programs * 4 + 64).max(1024);
    let mut c = format!(
        "[unix_http_server]\nfile={d}/s.sock\n\n\
         [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/s.pid\nloglevel=warn\nminfds={minfds}\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
    );
    if programs > 0 {
        c.push_str(&format!(
            "[program:idle]\ncommand=/bin/sleep 100000\nnumprocs={programs}\n\
             process_name=%(program_name)s_%(process_num)d\nstartsecs=0\nautorestart=true\n\
             stdout_logfile=NONE\nstderr_logfile=NONE\nstopwaitsecs=10\n"
        ));
    }
    c
}

fn get_state() -> Request {
    Request::xmlrpc("/RPC2", "supervisor.getState", &[])
}

/// Starts supervisord with `programs` idle processes on `cpu`, in the
/// foreground (`-n`) or daemonizing; returns at once.
pub fn start(env: &Env, sd: &Path, programs: usize, detached: bool) -> Result<Running, String> {
    let dir = bench_dir("supervisord")?;
    let conf_path = dir.join("supervisord.conf");
    std::fs::write(&conf_path, conf(&dir, programs)).map_err(|e| format!("write the config: {e}"))?;
    let mut cmd = Command::new(sd);
    if !detached {
        cmd.arg("-n");
    }
    cmd.arg("-c").arg(&conf_path);
    let (socket, pid_file) = (dir.join("s.sock"), dir.join("s.pid"));
    let launch = Launch {
        name: "supervisord".into(),
        dir,
        address: Address::Unix(socket),
        pid_file,
        detached,
        probe: get_state(),
        cpu: env.cpus.daemon,
    };
    Running::start(&mut cmd, launch)
}

/// How many of the programs are RUNNING, from `getAllProcessInfo`.
fn running(w: &mut Wire) -> Result<usize, String> {
    let body =
        w.call(&Request::xmlrpc("/RPC2", "supervisor.getAllProcessInfo", &[]).bytes).map_err(|e| e.to_string())?;
    Ok(count(body, b"<string>RUNNING</string>"))
}

/// A program's pid and state name, from `getProcessInfo`.
fn process_info(w: &mut Wire, name: &str) -> Result<(i32, String), String> {
    let req = Request::xmlrpc("/RPC2", "supervisor.getProcessInfo", &[name]);
    let body = w.call(&req.bytes).map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(body);
    let pid = xml_member(&body, "pid").and_then(|p| p.parse().ok()).ok_or_else(|| format!("no pid in {body}"))?;
    let state = xml_member(&body, "statename").unwrap_or_default().to_string();
    Ok((pid, state))
}

/// The peer's RPC figures.
pub struct RpcFigures {
    pub latency: Stat,
    pub tput_1: Stat,
    pub tput_32: Stat,
}

/// `getState`: latency with client and supervisord on one core, throughput
/// with 1 and 32 clients on the other.
pub fn rpc(env: &Env, sd: &Path) -> Result<RpcFigures, String> {
    let mut s = start(env, sd, 4, false)?;
    s.wait_answering(DEADLINE)?;
    let req = get_state();
    sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
    // supervisord is slow enough that a tenth of the samples are plenty.
    let samples = (env.plan.latency_samples / 10).max(100);
    let latency = rpc::latency(&Endpoint::plain(&s.address), &req, env.plan.warmup / 10, samples, true)?;
    sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
    let pid = s.pid()?;
    let (tput_1, _) = rpc::throughput_runs(env, &s.address, &req, 1, 1, Some(pid))?;
    let (tput_32, _) = rpc::throughput_runs(env, &s.address, &req, 32, 1, Some(pid))?;
    s.terminate(DEADLINE)?;
    Ok(RpcFigures { latency: Stat::Q(latency), tput_1, tput_32 })
}

/// Launch until `getState` answers, in µs, `runs` times, with no programs.
pub fn startup(env: &Env, sd: &Path, detached: bool, runs: usize) -> Result<Stat, String> {
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut s = start(env, sd, 0, detached)?;
        s.wait_answering(DEADLINE)?;
        v.push(micros(t.elapsed()));
        s.terminate(DEADLINE)?;
    }
    Ok(Stat::Q(quantiles(v)))
}

/// kill -9 of each of `kills` programs until its new pid is RUNNING, in µs.
pub fn restart(env: &Env, sd: &Path, kills: usize) -> Result<Stat, String> {
    let mut s = start(env, sd, kills, false)?;
    s.wait_answering(DEADLINE)?;
    let mut w = Wire::connect(&s.address, Framing::Http, DEADLINE).map_err(|e| e.to_string())?;
    poll_until("the programs to run", DEADLINE, Duration::from_millis(5), || Ok(running(&mut w)? >= kills))?;
    let mut v = Vec::new();
    for i in 0..kills {
        let name = format!("idle:idle_{i}");
        let (old, _) = process_info(&mut w, &name)?;
        let t = Instant::now();
        sys::signal(old, libc::SIGKILL);
        poll_until(&format!("{name} to run again"), Duration::from_secs(10), Duration::ZERO, || {
            let (pid, state) = process_info(&mut w, &name)?;
            Ok(pid != old && pid != 0 && state == "RUNNING")
        })?;
        v.push(micros(t.elapsed()));
    }
    s.terminate(DEADLINE)?;
    Ok(Stat::Q(quantiles(v)))
}

/// The peer's figures for a fleet of `programs` idle processes.
pub struct FleetFigures {
    /// Launch until every program is RUNNING, ms.
    pub launch: Stat,
    /// `getAllProcessInfo`, µs.
    pub list: Stat,
    /// supervisord's own memory, once all run.
    pub mem: Mem,
    /// SIGTERM until every process is gone, ms.
    pub stop: Stat,
}

pub fn fleet(env: &Env, sd: &Path, programs: usize, runs: usize, list_samples: usize) -> Result<FleetFigures, String> {
    let (mut launch, mut stop, mut list, mut mem) = (Vec::new(), Vec::new(), None, Mem::default());
    for run in 0..runs {
        let t = Instant::now();
        let mut s = start(env, sd, programs, false)?;
        s.wait_answering(DEADLINE)?;
        let mut w = Wire::connect(&s.address, Framing::Http, DEADLINE).map_err(|e| e.to_string())?;
        poll_until("the programs to run", Duration::from_secs(120), Duration::from_millis(5), || {
            Ok(running(&mut w)? >= programs)
        })?;
        launch.push(millis(t.elapsed()));
        drop(w);
        if run == 0 {
            // supervisord tells no more than that the programs run: nothing
            // it answers or writes says that it is done with the launch
            // (forkd's fleet is measured once every worker has looped).
            // A fixed settle is the measurement method for it.
            std::thread::sleep(Duration::from_millis(200));
            mem = sys::smaps_rollup(s.pid()?)?;
            sys::pin_current(env.cpus.daemon).map_err(|e| format!("pin: {e}"))?;
            let req = Request::xmlrpc("/RPC2", "supervisor.getAllProcessInfo", &[]);
            list = Some(rpc::latency(&Endpoint::plain(&s.address), &req, 2, list_samples, true));
            sys::pin_current(env.cpus.other).map_err(|e| format!("pin: {e}"))?;
        }
        stop.push(millis(s.terminate(Duration::from_secs(120))?));
    }
    Ok(FleetFigures {
        launch: Stat::Q(quantiles(launch)),
        list: Stat::Q(list.expect("measured in the first run")?),
        mem,
        stop: Stat::Q(quantiles(stop)),
    })
}
