//! The master's upgrade in place (`daemon.upgrade`, the `upgrade`
//! command, SIGUSR2): the binary at the daemon's path is executed again and
//! takes the socket over without a connection refused or a call lost.
//!
//! Each test copies the echo fixture into its own directory and starts it
//! from there, its version read at start from `ECHO_VERSION_FILE`; a new
//! build is installed by writing a new version and renaming a fresh copy
//! over the binary (the running master's file is then deleted), or a
//! script that exits at once in its place.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use forkd::Address;
use forkd_tests::{alive, bin, Client, ClientError, ConnectOptions, Daemon, TempDir, Wake, DEADLINE};
use serde_json::{json, Value};

/// Copies the echo fixture to `dir/echo-daemon` (by a rename, so that
/// the file a running master was started from is replaced, not
/// rewritten), with `version` for it to read at start.
fn install(dir: &TempDir, version: &str) -> PathBuf {
    std::fs::write(dir.join("version"), version).unwrap();
    let staged = dir.join("echo-daemon.new");
    std::fs::copy(bin("echo-daemon"), &staged).unwrap();
    let path = dir.join("echo-daemon");
    std::fs::rename(&staged, &path).unwrap();
    path
}

/// Installs, in place of the binary, a build that exits 3 at once.
fn install_broken(dir: &TempDir) {
    let staged = dir.join("echo-daemon.new");
    std::fs::write(&staged, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&staged, dir.join("echo-daemon")).unwrap();
}

/// The installed echo fixture as a foreground daemon in `dir`, started by
/// a relative path as a user would type it.
fn start_foreground(dir: &TempDir, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
    let mut cmd = Command::new("./echo-daemon");
    cmd.args(["-f", "-v", "--socket", "unix://d.sock", "--pidfile", "d.pid"])
        .env("ECHO_VERSION_FILE", dir.join("version"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon::start_command(dir, cmd, &Address::Unix(dir.join("d.sock")))
}

/// Kills what is left of a test's daemons at its end, however it ends: a
/// new master is no child of the test.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            // Safety: signalling a daemon this test started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

fn info(socket: &Address) -> Value {
    Client::connect_with(socket, &ConnectOptions::new(DEADLINE)).unwrap().call("daemon.info", Value::Null).unwrap()
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

fn wait_gone(pid: i32, what: &str) {
    Wake::new().process(pid).until(what, DEADLINE, || !alive(pid));
}

#[test]
fn upgrade_in_the_foreground_runs_the_new_build_and_the_old_master_exits_0() {
    let dir = TempDir::new("upgrade-f");
    install(&dir, "1.0");
    let mut old = start_foreground(&dir, &[]);
    let old_pid = old.pid();
    let mut reaper = Reaper(vec![-old_pid]);
    assert_eq!(info(&old.socket)["version"], "1.0");
    install(&dir, "2.0");

    let answer = old.client().call("daemon.upgrade", Value::Null).expect("the upgrade answers");
    let new_pid = answer["pid"].as_i64().unwrap() as i32;
    reaper.0.push(new_pid);
    assert_eq!((answer["version"].clone(), answer["previous"].clone()), (json!("2.0"), json!(old_pid)));
    assert_ne!(new_pid, old_pid);
    assert_eq!(old.wait_exit(DEADLINE), 0, "the old master exits 0 once it handed over");
    let now = info(&old.socket);
    assert_eq!((now["pid"].clone(), now["version"].clone()), (json!(new_pid), json!("2.0")));
    assert_eq!(pid_in(&old.pid_file), new_pid, "the pid file names the new master");
    assert!(dir.join("d.sock").exists(), "the socket file stays for the new master");

    // The new master is the daemon now, and stops as one.
    // Safety: signalling the daemon this test started.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    wait_gone(new_pid, "the new master to stop");
    assert!(!dir.join("d.sock").exists() && !old.pid_file.exists(), "the last master cleans up");
}

#[test]
fn upgrade_of_a_detached_daemon_by_the_command_rewrites_the_pid_file() {
    let dir = TempDir::new("upgrade-d");
    let program = install(&dir, "1.0");
    let launched = Command::new("./echo-daemon")
        .args(["-d", "--socket", "unix://d.sock", "--pidfile", "d.pid"])
        .current_dir(dir.path())
        .env("ECHO_VERSION_FILE", dir.join("version"))
        .output()
        .unwrap();
    assert!(launched.status.success(), "{launched:?}");
    let socket = Address::Unix(dir.join("d.sock"));
    let old_pid = pid_in(&dir.join("d.pid"));
    let mut reaper = Reaper(vec![old_pid]);
    install(&dir, "2.0");

    let out = Command::new(&program).args(["--socket", "unix://d.sock", "upgrade"]).current_dir(dir.path()).output();
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let new_pid = pid_in(&dir.join("d.pid"));
    reaper.0.push(new_pid);
    assert_eq!(text, format!("upgraded: pid {old_pid} -> {new_pid} (version 2.0)\n"));
    wait_gone(old_pid, "the old master to exit");
    let now = info(&socket);
    assert_eq!((now["pid"].clone(), now["version"].clone()), (json!(new_pid), json!("2.0")));

    // Detached still: it forked no launcher of its own, and `stop` finds it.
    let stop = Command::new(&program).args(["--socket", "unix://d.sock", "stop"]).current_dir(dir.path()).output();
    assert!(stop.unwrap().status.success());
    assert!(!alive(new_pid) && !dir.join("d.pid").exists());
}

#[test]
fn a_new_master_that_exits_at_start_leaves_the_old_one_serving() {
    let dir = TempDir::new("upgrade-broken");
    install(&dir, "1.0");
    let old = start_foreground(&dir, &[]);
    let _reaper = Reaper(vec![-old.pid()]);
    install_broken(&dir);

    let refused = old.client().call("daemon.upgrade", Value::Null);
    let Err(ClientError::Rpc(e)) = refused else { panic!("expected an error answer: {refused:?}") };
    assert_eq!(e.code, forkd::codes::UPGRADE_FAILED);
    assert!(e.message.contains("exited before it took over (exit 3)"), "the build's own exit: {}", e.message);
    // A file that is no program: the exec fails, and the reason says so.
    std::fs::write(dir.join("echo-daemon.new"), "not a program").unwrap();
    std::fs::set_permissions(dir.join("echo-daemon.new"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(dir.join("echo-daemon.new"), dir.join("echo-daemon")).unwrap();
    let refused = old.client().call("daemon.upgrade", Value::Null);
    let Err(ClientError::Rpc(e)) = refused else { panic!("expected an error answer: {refused:?}") };
    assert!(e.message.contains("could not be executed"), "{}", e.message);
    let now = info(&old.socket);
    assert_eq!((now["pid"].clone(), now["version"].clone()), (json!(old.pid()), json!("1.0")));
    assert_eq!(pid_in(&old.pid_file), old.pid(), "the old master keeps the pid file");

    // One at a time: with a good build, the next one works.
    install(&dir, "2.0");
    let answer = old.client().call("daemon.upgrade", Value::Null).expect("the second upgrade answers");
    assert_eq!(answer["version"], "2.0");
}

/// The children of `pid`, from `/proc`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            ppid == Some(pid)
        })
        .collect()
}

#[test]
fn a_new_master_not_ready_in_time_is_killed_and_reaped() {
    let dir = TempDir::new("upgrade-late");
    install(&dir, "1.0");
    let old = start_foreground(&dir, &[("ECHO_UPGRADE_TIMEOUT_MS", std::ffi::OsStr::new("300"))]);
    let _reaper = Reaper(vec![-old.pid()]);
    let staged = dir.join("echo-daemon.new");
    std::fs::write(&staged, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&staged, dir.join("echo-daemon")).unwrap();

    let refused = old.client().call("daemon.upgrade", Value::Null);
    let Err(ClientError::Rpc(e)) = refused else { panic!("expected an error answer: {refused:?}") };
    assert_eq!(e.code, forkd::codes::UPGRADE_FAILED);
    assert!(e.message.contains("not ready within 0.3 s"), "{}", e.message);
    assert_eq!(info(&old.socket)["pid"], old.pid(), "the old master serves on");
    forkd_tests::wait_until("the late master to be reaped", DEADLINE, || children_of(old.pid()).is_empty());
}

#[test]
fn a_second_upgrade_during_one_is_refused() {
    let dir = TempDir::new("upgrade-twice");
    install(&dir, "1.0");
    let mut old = start_foreground(&dir, &[]);
    let mut reaper = Reaper(vec![-old.pid()]);
    install(&dir, "2.0");
    // Both on one connection's pipeline: the second is taken while the
    // first is under way.
    let socket = old.socket.clone();
    let Address::Unix(path) = &socket else { unreachable!() };
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    use std::io::{BufRead, Write};
    let mut c = std::io::BufReader::new(stream);
    let call = |id: u32| format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"daemon.upgrade\"}}\n");
    c.get_mut().write_all(format!("{}{}", call(1), call(2)).as_bytes()).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        answers.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let new_pid = answers[0]["result"]["pid"].as_i64().expect("the first upgrade succeeds") as i32;
    reaper.0.push(new_pid);
    assert_eq!(answers[1]["error"]["code"], forkd::codes::UPGRADE_FAILED);
    assert!(answers[1]["error"]["message"].as_str().unwrap().contains("already under way"), "{answers:?}");
    let mut rest = String::new();
    assert_eq!(c.read_line(&mut rest).unwrap(), 0, "the old master closes after the last owed answer");
    assert_eq!(old.wait_exit(DEADLINE), 0);
}

#[test]
fn under_systemd_the_new_master_notifies_mainpid_then_ready_and_sigusr2_upgrades() {
    let dir = TempDir::new("upgrade-notify");
    install(&dir, "1.0");
    let notify = UnixDatagram::bind(dir.join("notify")).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut old = start_foreground(&dir, &[("NOTIFY_SOCKET", dir.join("notify").as_os_str())]);
    let mut reaper = Reaper(vec![-old.pid()]);
    let recv = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification within the deadline");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    install(&dir, "2.0");
    old.signal(libc::SIGUSR2);
    // The old master names its successor (it is the main process still),
    // then the new one names itself and says it is ready.
    let mainpid = recv();
    let new_pid: i32 = mainpid.strip_prefix("MAINPID=").expect("MAINPID first").parse().unwrap();
    reaper.0.push(new_pid);
    assert_ne!(new_pid, old.pid());
    let mut then = vec![recv()];
    while then.last().map(String::as_str) != Some("READY=1") {
        then.push(recv());
    }
    assert_eq!(then, [format!("MAINPID={new_pid}"), "READY=1".to_string()], "then ready");
    assert_eq!(old.wait_exit(DEADLINE), 0);
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let left = notify.recv(&mut buf).map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(left.is_err(), "the old master sent nothing more (no STOPPING=1): {left:?}");
    assert_eq!(info(&old.socket)["pid"], new_pid);
}

#[test]
fn a_socket_handed_over_by_systemd_is_served_across_an_upgrade() {
    let dir = TempDir::new("upgrade-activated");
    let program = install(&dir, "1.0");
    let path = dir.join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 exec {} -f --socket unix://{} --pidfile {}",
        program.display(),
        dir.join("other.sock").display(),
        dir.join("d.pid").display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script]).env("ECHO_VERSION_FILE", dir.join("version")).stderr(Stdio::null());
    forkd_tests::pass_as_fd3(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    let mut reaper = Reaper(vec![child.id() as i32]);
    drop(listener);
    let socket = Address::Unix(path.clone());
    let old = info(&socket);
    install(&dir, "2.0");
    let mut client = Client::connect_with(&socket, &ConnectOptions::new(DEADLINE)).unwrap();
    let answer = client.call("daemon.upgrade", Value::Null).unwrap();
    let new_pid = answer["pid"].as_i64().unwrap() as i32;
    reaper.0.push(new_pid);
    assert!(child.wait().unwrap().success());
    // The same client, reconnected after the old master closed it.
    let now = client.call("daemon.info", Value::Null).unwrap();
    assert_eq!((now["pid"].clone(), now["version"].clone()), (json!(new_pid), json!("2.0")));
    assert_ne!(now["pid"], old["pid"]);
    assert!(!dir.join("other.sock").exists(), "the configured address was never bound");
    // Safety: signalling the daemon this test started.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    wait_gone(new_pid, "the new master to stop");
    assert!(path.exists(), "the service manager's socket file is left alone");
}

#[test]
fn clients_loading_the_socket_during_an_upgrade_get_every_answer() {
    let dir = TempDir::new("upgrade-load");
    install(&dir, "1.0");
    let mut old = start_foreground(&dir, &[]);
    let mut reaper = Reaper(vec![-old.pid()]);
    install(&dir, "2.0");
    let upgraded = Arc::new(AtomicBool::new(false));
    let socket = old.socket.clone();
    // Two clients keep their connection (and reconnect after the orderly
    // close), two connect afresh for every call.
    let loaders: Vec<_> = (0..4)
        .map(|n| {
            let (socket, upgraded) = (socket.clone(), Arc::clone(&upgraded));
            std::thread::spawn(move || {
                let options = ConnectOptions::new(DEADLINE);
                let mut kept = Client::connect_with(&socket, &options).unwrap();
                let (mut calls, mut after) = (0u32, 0u32);
                // Until this client has been answered by the new master a few times.
                while after < 20 {
                    let message = format!("{n}-{calls}");
                    let answer = if n % 2 == 0 {
                        kept.call("my.echo", json!({ "message": message }))
                    } else {
                        Client::connect_with(&socket, &options)
                            .unwrap_or_else(|e| panic!("client {n}: connect refused: {e}"))
                            .call("my.echo", json!({ "message": message }))
                    };
                    assert_eq!(answer.unwrap_or_else(|e| panic!("client {n}, call {calls}: {e}")), json!(message));
                    calls += 1;
                    if upgraded.load(Ordering::SeqCst) {
                        after += 1;
                    }
                }
                calls
            })
        })
        .collect();
    let answer = old.client().call("daemon.upgrade", Value::Null).unwrap();
    reaper.0.push(answer["pid"].as_i64().unwrap() as i32);
    assert_eq!(old.wait_exit(DEADLINE), 0);
    upgraded.store(true, Ordering::SeqCst);
    for l in loaders {
        let calls = l.join().expect("a loader got every answer");
        assert!(calls >= 20);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn worker_pids(client: &mut Client) -> Vec<i64> {
    let list = client.call("worker.list", Value::Null).unwrap();
    list.as_array().unwrap().iter().filter_map(|w| w["pid"].as_i64()).collect()
}

#[test]
fn on_tcp_the_token_goes_over_a_pipe_and_the_workers_are_the_new_masters() {
    let dir = TempDir::new("upgrade-tcp");
    let socket: Address = format!("tcp://127.0.0.1:{}", free_port()).parse().unwrap();
    let mut old = Daemon::start_at(&dir, "pool-daemon", &socket, &[], &[("POOL_SIZE", "2")]);
    let mut reaper = Reaper(vec![-old.pid()]);
    let token = old.token();
    let mut client = old.client();
    Wake::new().until("two workers", DEADLINE, || worker_pids(&mut client).len() == 2);
    let before = worker_pids(&mut client);

    let answer = client.call("daemon.upgrade", Value::Null).unwrap();
    let new_pid = answer["pid"].as_i64().unwrap() as i32;
    reaper.0.push(new_pid);
    assert_eq!(old.wait_exit(DEADLINE), 0);
    for pid in &before {
        wait_gone(*pid as i32, "the old master's workers to stop");
    }
    for what in ["environ", "cmdline"] {
        let seen = std::fs::read(format!("/proc/{new_pid}/{what}")).unwrap();
        assert!(!String::from_utf8_lossy(&seen).contains(&token), "the token is in the new master's {what}");
    }
    assert_eq!(old.token(), token, "the token file stays, the same");
    // The same client, reconnected with the token, reaches the new master
    // and its own workers.
    assert_eq!(client.call("daemon.info", Value::Null).unwrap()["pid"], new_pid);
    Wake::new().until("the new master's two workers", DEADLINE, || worker_pids(&mut client).len() == 2);
    let after = worker_pids(&mut client);
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} then {after:?}");

    // Safety: signalling the daemon this test started.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    wait_gone(new_pid, "the new master to stop");
    assert!(!old.token_file().exists(), "the last master removes the token the first one made");
}

#[test]
fn the_upgrade_answers_once_the_new_masters_workers_are_all_looping() {
    let dir = TempDir::new("upgrade-workers-ready");
    let mut old = Daemon::start(&dir, "pool-daemon", &[], &[("POOL_SIZE", "3")]);
    let mut reaper = Reaper(vec![-old.pid()]);
    let mut client = old.client();
    Wake::new().until("three workers", DEADLINE, || worker_pids(&mut client).len() == 3);

    let answer = client.call("daemon.upgrade", Value::Null).unwrap();
    let new_pid = answer["pid"].as_i64().unwrap() as i32;
    reaper.0.push(new_pid);
    // The old workers are spun down only once the new ones work: at the
    // answer, every one of the new master's is looping already.
    let list = info_list(&old.socket);
    let states: Vec<&str> = list.as_array().unwrap().iter().filter_map(|w| w["state"].as_str()).collect();
    assert_eq!(states, ["looping"; 3], "{list}");
    assert_eq!(old.wait_exit(DEADLINE), 0);
    // Safety: signalling the daemon this test started.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    wait_gone(new_pid, "the new master to stop");
}

/// `worker.list` on a fresh connection: whichever master serves it.
fn info_list(socket: &Address) -> Value {
    Client::connect_with(socket, &ConnectOptions::new(DEADLINE)).unwrap().call("worker.list", Value::Null).unwrap()
}
