//! The daemon's lifecycle on real processes: daemonizing with readiness,
//! the pid file, stopping by signal or command, stale files, start failures,
//! the console's usage and log reopening.
//!
//! Each test runs its own daemon in its own directory, with its own socket
//! and pid file there, so the tests run in parallel. A daemon started with
//! `-d` is not the test's child: a `Detached` guard kills it if the test
//! fails before stopping it.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use forkd_os::Address;
use forkd_tests::{alive, bin, wait_exit, wait_gone, wait_until, Client, Daemon, TempDir, Wake, DEADLINE};
use serde_json::Value;

/// A command that ran to its end.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `BIN ARGS` in the test's directory, with its output in files there
/// (so that a daemon which kept the launcher's stdout open could not make
/// the test wait for an end of file), and waits for it to exit.
fn run_in(dir: &TempDir, bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(&format!("run-{n}.out"));
    let err_path = dir.join(&format!("run-{n}.err"));
    let mut cmd = Command::new(bin(bin_name));
    cmd.args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the command");
    let Some(status) = wait_exit(&mut child, DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{bin_name} {}` did not exit within {DEADLINE:?}", args.join(" "));
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out_path).unwrap(),
        stderr: std::fs::read_to_string(err_path).unwrap(),
    }
}

/// The pid a pid file holds.
fn pid_in(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.trim().parse().unwrap_or_else(|_| panic!("{} holds {text:?}, not a pid", path.display()))
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid,
/// pgrp, session, tty_nr, ...
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    rest.split_whitespace().map(str::to_string).collect()
}

fn link_of(pid: i32, what: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/{what}")).unwrap_or_else(|e| panic!("readlink /proc/{pid}/{what}: {e}"))
}

/// The live processes (other than this one) of a test: those whose command
/// line mentions `dir`, a directory unique to the test, or that hold a file
/// in it open (a daemon launched with relative paths holds its pid file).
fn processes_of(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    // The kernel shows descriptors by their real path.
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id() as i32;
    let mentions = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
    };
    let holds = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok()).any(|target| target.starts_with(&real))
            })
            .unwrap_or(false)
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && alive(pid) && (mentions(pid) || holds(pid)))
        .collect();
    pids.sort();
    pids
}

/// Waits until the live processes of a test are `keep` and no others: on
/// the pidfds of the others found, looking again each time the set changes.
fn wait_only_left(what: &str, dir: &Path, keep: &[i32]) {
    let others = || processes_of(dir).into_iter().filter(|p| !keep.contains(p)).collect::<Vec<i32>>();
    loop {
        let found = others();
        if found.is_empty() {
            break;
        }
        Wake::new().processes(found.iter().copied()).until(what, DEADLINE, || others() != found);
    }
    assert_eq!(processes_of(dir), keep, "{what}");
}

fn client(socket: &Address) -> Client {
    Client::connect(socket, DEADLINE).unwrap_or_else(|e| panic!("connect to {socket}: {e}"))
}

/// The pid of the first worker `worker.list` names.
fn worker_pid(socket: &Address) -> i32 {
    let workers = client(socket).call("worker.list", Value::Null).expect("worker.list");
    workers[0]["pid"].as_i64().unwrap_or_else(|| panic!("no worker pid in {workers}")) as i32
}

/// Kills, when dropped, the daemons still running from a test's directory:
/// a failed test must not leave a detached daemon behind.
struct Detached(PathBuf);

impl Drop for Detached {
    fn drop(&mut self) {
        for pid in processes_of(&self.0) {
            // Safety: kill on a process that names or holds open this
            // test's own directory, so one this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Asserts that nothing of a stopped daemon is left: no pid file, no
/// socket file, no daemon or worker process.
fn assert_nothing_left(dir: &TempDir, daemon: i32, worker: Option<i32>) {
    wait_gone("the daemon process to be gone", DEADLINE, &[daemon]);
    assert!(!dir.join("d.pid").exists(), "the pid file is left");
    assert!(!dir.join("d.sock").exists(), "the socket file is left");
    if let Some(w) = worker {
        // The daemon reaps its workers before it exits.
        assert!(!alive(w), "worker {w} outlived the daemon");
    }
}

#[test]
fn daemonize_returns_once_ready_and_detaches() {
    let dir = TempDir::new("detach");
    let _guard = Detached(dir.path().to_path_buf());
    let sock = dir.join("d.sock");
    let pid_file = dir.join("d.pid");
    let socket_arg = format!("unix://{}", sock.display());
    let ran = run_in(
        &dir,
        "copy-daemon",
        &["-d", "--socket", &socket_arg, "--pidfile", pid_file.to_str().unwrap()],
        &[("COPY_LOOPTIME_MS", "50")],
    );
    assert_eq!(ran.code, 0, "the launcher failed: {ran:?}");

    // Ready means answering, with the pid file written: no wait here.
    let pid = pid_in(&pid_file);
    let socket = Address::Unix(sock.clone());
    let info = client(&socket).call("daemon.info", Value::Null).expect("daemon.info right after -d returned");
    assert_eq!(info["pid"].as_i64(), Some(i64::from(pid)), "{info}");
    let status = run_in(&dir, "copy-daemon", &["--socket", &socket_arg, "status"], &[]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains(&format!("(pid {pid},")), "{status:?}");
    let worker = worker_pid(&socket);
    assert!(alive(worker));

    // Detached: no controlling terminal, its own session and group.
    let stat = stat_fields(pid);
    let (pgrp, session, tty_nr) = (&stat[2], &stat[3], &stat[4]);
    assert_eq!(tty_nr, "0", "the daemon has a controlling terminal: {stat:?}");
    // Safety: getsid and getpgid only read.
    let (my_sid, my_pgrp) = unsafe { (libc::getsid(0), libc::getpgid(0)) };
    assert_ne!(session, &my_sid.to_string(), "the daemon is in the test's session");
    assert_ne!(pgrp, &my_pgrp.to_string(), "the daemon is in the test's process group");
    assert_ne!(session, &pid.to_string(), "the daemon is a session leader and could acquire a terminal");
    for fd in 0..3 {
        assert_eq!(link_of(pid, &format!("fd/{fd}")), Path::new("/dev/null"), "fd {fd}");
    }
    assert_eq!(link_of(pid, "cwd"), Path::new("/"));
    // The workers' shared memory is anonymous: nothing in /dev/shm could
    // outlive the processes.
    for p in [pid, worker] {
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap();
        assert!(!maps.contains("/dev/shm"), "process {p} maps a named shared memory file:\n{maps}");
    }

    let stop = run_in(&dir, "copy-daemon", &["--socket", &socket_arg, "stop"], &[]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(stop.stdout, format!("stopped (pid {pid})\n"));
    assert_nothing_left(&dir, pid, Some(worker));
    assert_eq!(processes_of(dir.path()), Vec::<i32>::new());
}

#[test]
fn a_detached_daemon_keeps_nothing_its_launcher_inherited() {
    let dir = TempDir::new("inherited");
    let _guard = Detached(dir.path().to_path_buf());
    let socket_arg = format!("unix://{}", dir.join("d.sock").display());
    let held = dir.join("held-by-the-caller");
    // fd 7, open without close-on-exec: what a caller's pipe or a make
    // jobserver looks like to the launcher.
    let script = format!(
        "exec 7>'{}'; exec '{}' -d --socket '{socket_arg}' --pidfile '{}'",
        held.display(),
        bin("pool-daemon").display(),
        dir.join("d.pid").display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("POOL_SIZE", "2")
        .stdin(Stdio::null())
        .spawn()
        .expect("run the launcher");
    let status = wait_exit(&mut child, DEADLINE).expect("the launcher exits");
    assert!(status.success(), "{status:?}");
    let pid = pid_in(&dir.join("d.pid"));
    let socket = Address::Unix(dir.join("d.sock"));
    let mut pids = vec![pid];
    pids.extend(
        client(&socket)
            .call("worker.list", Value::Null)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["pid"].as_i64().unwrap() as i32),
    );
    assert_eq!(pids.len(), 3, "the daemon and its two workers");
    for p in pids {
        for entry in std::fs::read_dir(format!("/proc/{p}/fd")).unwrap() {
            let fd = entry.unwrap().file_name();
            // A descriptor may close between the listing and the look.
            let Ok(target) = std::fs::read_link(format!("/proc/{p}/fd/{}", fd.to_string_lossy())) else { continue };
            assert_ne!(target, held, "process {p} still holds the launcher's fd {fd:?}");
        }
    }
    let stop = run_in(&dir, "pool-daemon", &["--socket", &socket_arg, "stop"], &[]);
    assert_eq!(stop.code, 0, "{stop:?}");
}

#[test]
fn daemonize_resolves_relative_paths_against_the_launch_directory() {
    let dir = TempDir::new("relative");
    let _guard = Detached(dir.path().to_path_buf());
    let ran = run_in(&dir, "echo-daemon", &["-d", "--socket", "unix://d.sock", "--pidfile", "d.pid"], &[]);
    assert_eq!(ran.code, 0, "the launcher failed: {ran:?}");
    let pid = pid_in(&dir.join("d.pid"));
    assert_eq!(link_of(pid, "cwd"), Path::new("/"), "the daemon did not move to /");
    assert!(dir.join("d.sock").exists(), "the socket is not in the launch directory");
    let info = client(&Address::Unix(dir.join("d.sock"))).call("daemon.info", Value::Null).unwrap();
    assert_eq!(info["pid"].as_i64(), Some(i64::from(pid)));
    assert_eq!(info["address"].as_str(), Some(format!("unix://{}", dir.join("d.sock").display()).as_str()));

    let stop = run_in(&dir, "echo-daemon", &["--socket", "unix://d.sock", "stop"], &[]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_nothing_left(&dir, pid, None);
}

#[test]
fn a_second_start_fails_and_leaves_the_first_untouched() {
    let dir = TempDir::new("second");
    let first = Daemon::start(&dir, "echo-daemon", &[], &[]);
    let pid = first.pid();
    assert_eq!(pid_in(&first.pid_file), pid);
    let socket_arg = first.socket.to_string();
    let pid_arg = first.pid_file.to_str().unwrap().to_string();

    for mode in ["-f", "-d"] {
        let ran = run_in(&dir, "echo-daemon", &[mode, "-v", "--socket", &socket_arg, "--pidfile", &pid_arg], &[]);
        assert_ne!(ran.code, 0, "a second daemon ({mode}) started: {ran:?}");
        assert!(ran.stderr.contains(&format!("already running (pid {pid})")), "{mode}: {ran:?}");
        // The pid file is never truncated, and the socket never touched.
        assert_eq!(pid_in(&first.pid_file), pid, "{mode}");
        assert!(dir.join("d.sock").exists(), "{mode}: the first daemon's socket was removed");
        first.call("daemon.info", Value::Null).expect("the first daemon still answers");
    }
    wait_only_left("no second daemon to be left", dir.path(), &[pid]);
}

#[test]
fn sigterm_stops_a_detached_daemon_leaving_nothing_behind() {
    let dir = TempDir::new("detached-term");
    let _guard = Detached(dir.path().to_path_buf());
    let args = ["-d", "--socket", "unix://d.sock", "--pidfile", "d.pid"];
    let ran = run_in(&dir, "copy-daemon", &args, &[("COPY_LOOPTIME_MS", "50")]);
    assert_eq!(ran.code, 0, "the launcher failed: {ran:?}");
    let pid = pid_in(&dir.join("d.pid"));
    let worker = worker_pid(&Address::Unix(dir.join("d.sock")));
    // Safety: kill on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_nothing_left(&dir, pid, Some(worker));
    assert_eq!(processes_of(dir.path()), Vec::<i32>::new());
}

/// How a test stops a foreground daemon.
enum StopBy {
    Signal(i32),
    Command,
}

/// Starts a copy daemon in the foreground (after `prepare` ran in its
/// directory, with `args`), stops it `how`, checks it exits 0 leaving
/// nothing behind, and returns its log.
fn check_clean_stop(name: &str, prepare: impl FnOnce(&TempDir), args: &[&str], how: StopBy) -> String {
    let dir = TempDir::new(name);
    prepare(&dir);
    let mut d = Daemon::start(&dir, "copy-daemon", args, &[("COPY_LOOPTIME_MS", "50")]);
    let pid = d.pid();
    assert_eq!(pid_in(&d.pid_file), pid, "the pid file does not hold the daemon's pid");
    let worker = worker_pid(&d.socket);
    assert!(alive(worker));
    match how {
        StopBy::Signal(sig) => d.signal(sig),
        StopBy::Command => {
            let out = d.control("copy-daemon", &["stop"]);
            assert!(out.status.success(), "stop failed: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("stopped (pid {pid})\n"));
        }
    }
    let code = d.wait_exit(DEADLINE);
    assert_eq!(code, 0, "the daemon exited with {code}:\n{}", d.log());
    assert_nothing_left(&dir, pid, Some(worker));
    let log = d.log();
    assert!(log.contains("info forkd::serve: stopped"), "{log}");
    log
}

#[test]
fn sigterm_stops_leaving_nothing_behind() {
    let log = check_clean_stop("term", |_| {}, &[], StopBy::Signal(libc::SIGTERM));
    assert!(log.contains("stopping (SIGTERM)"), "{log}");
}

#[test]
fn sigint_stops_leaving_nothing_behind() {
    let log = check_clean_stop("int", |_| {}, &[], StopBy::Signal(libc::SIGINT));
    assert!(log.contains("stopping (SIGINT)"), "{log}");
}

#[test]
fn the_stop_command_leaves_nothing_behind() {
    let log = check_clean_stop("stop", |_| {}, &[], StopBy::Command);
    assert!(log.contains("stopping (daemon.shutdown)"), "{log}");
}

/// A pid no process can have: above the kernel's largest `pid_max`. It is
/// also longer than a real pid, so a pid file not truncated would show.
const DEAD_PID: i32 = 4_194_305;

/// Writes a dead pid into `d.pid` and leaves a unix socket file nobody
/// listens on at `d.sock`.
fn stale_files(dir: &TempDir) {
    std::fs::write(dir.join("d.pid"), format!("{DEAD_PID}\n")).unwrap();
    drop(UnixListener::bind(dir.join("d.sock")).unwrap());
    assert!(dir.join("d.sock").exists(), "the stale socket file was not left");
}

#[test]
fn a_stale_pid_file_and_socket_do_not_block_a_start() {
    let log = check_clean_stop("stale", stale_files, &[], StopBy::Signal(libc::SIGTERM));
    assert!(log.contains("removing stale socket"), "{log}");
}

#[test]
fn a_hard_start_takes_over_a_stale_pid_file_and_socket() {
    let log = check_clean_stop("hardstart", stale_files, &["-s"], StopBy::Command);
    assert!(log.contains("stopping (daemon.shutdown)"), "{log}");
}

#[test]
fn ctrl_c_in_a_terminal_stops_the_foreground_daemon() {
    use rexpect::process::WaitStatus;

    let dir = TempDir::new("ctrlc");
    let mut cmd = Command::new(bin("echo-daemon"));
    cmd.args(["-f", "-v", "--socket"])
        .arg(format!("unix://{}", dir.join("d.sock").display()))
        .arg("--pidfile")
        .arg(dir.join("d.pid"))
        .current_dir(dir.path());
    let mut p = rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).expect("spawn under a pty");
    p.exp_string("info forkd::serve: ready").expect("the ready log line");
    let pid = p.process().child_pid.as_raw();
    assert_eq!(pid_in(&dir.join("d.pid")), pid);
    assert!(dir.join("d.sock").exists());

    p.send_control('c').expect("send ctrl-c");
    p.exp_string("stopping (SIGINT)").expect("the stop log line");
    p.exp_string("info forkd::serve: stopped").expect("the stopped log line");
    let mut exit = None;
    Wake::new().process(pid).until("the daemon to exit", DEADLINE, || {
        match p.process().status() {
            Some(WaitStatus::StillAlive) => {}
            other => exit = other,
        }
        exit.is_some()
    });
    assert!(matches!(exit, Some(WaitStatus::Exited(_, 0))), "the daemon ended with {exit:?}");
    assert_nothing_left(&dir, pid, None);
}

#[test]
fn a_bind_failure_under_daemonize_is_reported_and_leaves_nothing() {
    let dir = TempDir::new("bindfail");
    let _guard = Detached(dir.path().to_path_buf());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let socket_arg = format!("tcp://127.0.0.1:{port}");
    let pid_file = dir.join("d.pid");
    let ran =
        run_in(&dir, "echo-daemon", &["-d", "--socket", &socket_arg, "--pidfile", pid_file.to_str().unwrap()], &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.stderr.contains(&format!("error: bind {socket_arg}: ")) && ran.stderr.contains("in use"), "{ran:?}");
    assert!(!pid_file.exists(), "the pid file is left");
    wait_only_left("the failed daemon to be gone", dir.path(), &[]);
}

#[test]
fn a_pid_file_that_cannot_be_created_fails_a_daemonized_start_clearly() {
    let dir = TempDir::new("pidfail");
    let _guard = Detached(dir.path().to_path_buf());
    let pid_file = dir.join("missing/d.pid");
    let args = ["-d", "--socket", "unix://d.sock", "--pidfile", pid_file.to_str().unwrap()];
    let ran = run_in(&dir, "copy-daemon", &args, &[]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert_eq!(ran.stderr, format!("error: pid file {}: no such file or directory\n", pid_file.display()));
    // The pid file is taken first: the socket was never bound.
    assert!(!dir.join("d.sock").exists(), "a socket file is left");
    wait_only_left("the failed daemon to be gone", dir.path(), &[]);
}

#[test]
fn usage_and_invalid_arguments() {
    let dir = TempDir::new("usage");
    for args in [&[][..], &["-h"][..]] {
        let ran = run_in(&dir, "echo-daemon", args, &[]);
        assert_eq!(ran.code, 0, "{args:?}: {ran:?}");
        assert!(ran.stdout.starts_with("Echo Daemon\n"), "{args:?}: {ran:?}");
        assert!(ran.stdout.contains("--pidfile"), "{args:?}: {ran:?}");
    }
    let pid_file = dir.join("d.pid");
    for mode in ["-f", "-d"] {
        let ran =
            run_in(&dir, "echo-daemon", &[mode, "--socket", "udp://x", "--pidfile", pid_file.to_str().unwrap()], &[]);
        assert_eq!(ran.code, 2, "{mode}: {ran:?}");
        assert!(ran.stderr.contains("invalid address \"udp://x\""), "{mode}: {ran:?}");
        assert!(!pid_file.exists(), "{mode}: a pid file was created");
    }
}

#[test]
fn sigusr1_reopens_the_log_file() {
    let dir = TempDir::new("usr1");
    let _guard = Detached(dir.path().to_path_buf());
    let (log, rotated) = (dir.join("log"), dir.join("log.1"));
    let ran = run_in(
        &dir,
        "echo-daemon",
        &["-d", "-v", "--socket", "unix://d.sock", "--pidfile", "d.pid", "--log-file", "log"],
        &[],
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    let pid = pid_in(&dir.join("d.pid"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(read(&log).contains("info forkd::serve: ready"), "{}", read(&log));

    std::fs::rename(&log, &rotated).unwrap();
    // Safety: kill on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    // The signal is logged to the old file, then the file is reopened.
    wait_until("the daemon to reopen its log", DEADLINE, || log.exists());
    assert!(read(&rotated).contains("signal SIGUSR1"), "{}", read(&rotated));

    let stop = run_in(&dir, "echo-daemon", &["--socket", "unix://d.sock", "stop"], &[]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let new = read(&log);
    assert!(new.contains("stopping (daemon.shutdown)") && new.contains("info forkd::serve: stopped"), "{new}");
    assert!(!read(&rotated).contains("stopping"), "the daemon still writes to the moved file");
    assert_nothing_left(&dir, pid, None);
}
