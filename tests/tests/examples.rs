//! The forkd crate's examples (`daemon/examples/`), each run as a real
//! process in a directory of its own, doing what it is there to show: the
//! echo daemon's plain and typed methods, the handyman's copies and
//! messages, a pool scaled, a deferred answer, a reload on SIGHUP, a
//! service's own command line, and a client program. Each is stopped at
//! the end, and nothing of it may be left: no process, socket or pid file.
//!
//! `cargo xtask e2e` builds the examples (`cargo build -p forkd
//! --examples`) into `target/debug/examples/`. Nothing sleeps: every wait
//! looks again when the daemon logs a line (`-v`) or a process ends.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use forkd::Address;
use forkd_tests::{bin, wait_gone, wait_until, ClientError, Daemon, TempDir, DEADLINE};
use serde_json::{json, Value};

/// The name `Daemon::start` and `bin` take for an example's binary.
fn example(name: &str) -> String {
    format!("examples/{name}")
}

/// Calls `method`, failing the test with the daemon's log if it fails.
fn call(d: &Daemon, method: &str, params: Value) -> Value {
    d.call(method, params).unwrap_or_else(|e| panic!("{method} failed: {e}\n{}", d.log()))
}

/// Runs an example's binary to completion in `dir`.
fn run_example(dir: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(bin(&example(name)))
        .args(args)
        .current_dir(dir)
        .env_remove("FORKD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run the {name} example: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The pids of the worker processes `worker.list` shows.
fn worker_pids(d: &Daemon) -> Vec<i32> {
    match call(d, "worker.list", Value::Null) {
        Value::Array(entries) => entries.iter().filter_map(|e| e["pid"].as_i64()).map(|p| p as i32).collect(),
        other => panic!("worker.list answered {other}"),
    }
}

/// Stops the daemon with SIGTERM and checks that it exits 0 and leaves no
/// process, and no file in its directory but `keep` and its log.
fn stop_leaving_nothing(mut d: Daemon, workers: &[i32], keep: &[&str]) {
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log());
    wait_gone("the workers to be gone", DEADLINE, workers);
    assert_left(&d.dir, keep);
}

/// The directory holds `keep` and `stderr.log`, nothing else.
fn assert_left(dir: &Path, keep: &[&str]) {
    let left: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("read the test directory")
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = keep.iter().chain(&["stderr.log"]).map(|s| s.to_string()).collect();
    assert_eq!(left, expected, "what the example left in {}", dir.display());
}

#[test]
fn echo_answers_plain_and_typed_methods() {
    let dir = TempDir::new("example-echo");
    let d = Daemon::start(&dir, &example("echo"), &[], &[]);
    assert_eq!(call(&d, "my.echo", json!({ "message": "hi" })), json!("hi"));
    // The typed method takes its params by name or by position.
    assert_eq!(call(&d, "my.repeat", json!({ "message": "hi", "times": 3 })), json!("hi hi hi"));
    assert_eq!(call(&d, "my.repeat", json!(["ab", 2])), json!("ab ab"));
    match d.call("my.repeat", json!({ "message": "x", "times": 101 })) {
        Err(ClientError::Rpc(e)) => assert!(e.code == -32602 && e.message.contains("at most 100"), "{e:?}"),
        other => panic!("101 repeats answered {other:?}"),
    }
    // The declared signature is what introspection sees.
    assert_eq!(call(&d, "system.methodSignature", json!(["my.repeat"])), json!([["string", "string", "int"]]));
    // The binary is its own console: options after the params too.
    let socket = d.socket.to_string();
    let out = run_example(&d.dir, "echo", &["call", "my.repeat", "message=yo", "times=2", "--socket", &socket]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "\"yo yo\"");
    stop_leaving_nothing(d, &[], &[]);
}

#[test]
fn handyman_copies_files_answers_messages_and_reports_io_errors() {
    let dir = TempDir::new("example-handyman");
    std::fs::create_dir(dir.join("inbox")).unwrap();
    std::fs::write(dir.join("inbox/a.txt"), "hello\n").unwrap();
    let d = Daemon::start(&dir, &example("handyman"), &[], &[]);
    // The worker logs each copy.
    let copy = dir.join("outbox/a.txt");
    wait_until("a.txt copied", DEADLINE, || std::fs::read_to_string(&copy).is_ok_and(|t| t == "hello\n"));
    wait_until("the copy counted", DEADLINE, || call(&d, "handyman.stats", Value::Null)["copied"] == json!(1));

    let renamed = call(&d, "handyman.changename", json!({ "name": "bob" }));
    assert_eq!(renamed, json!({ "old": "handyman", "new": "bob" }));
    assert_eq!(call(&d, "handyman.stats", Value::Null), json!({ "name": "bob", "copied": 1 }));

    // An I/O error in the loop goes up with `?`: it is logged, and the
    // loop goes on in the same process, copying again once it can.
    let workers = worker_pids(&d);
    std::fs::remove_file(dir.join("inbox/a.txt")).unwrap();
    std::fs::remove_dir(dir.join("inbox")).unwrap();
    wait_until("the I/O error logged", DEADLINE, || d.log().contains("No such file or directory (os error 2)"));
    // The running worker's last error is what worker.status tells (the
    // worker logs it before it records it: looked at again as it logs).
    wait_until("the error in worker.status", DEADLINE, || {
        let status = call(&d, "worker.status", json!({ "name": "handyman" }));
        status[0]["last_error"].as_str().is_some_and(|e| e.contains("No such file or directory"))
    });
    std::fs::create_dir(dir.join("inbox")).unwrap();
    std::fs::write(dir.join("inbox/b.txt"), "again\n").unwrap();
    let copy = dir.join("outbox/b.txt");
    wait_until("b.txt copied", DEADLINE, || std::fs::read_to_string(&copy).is_ok_and(|t| t == "again\n"));
    assert_eq!(worker_pids(&d), workers, "the worker was not restarted");
    assert_eq!(call(&d, "handyman.stats", Value::Null), json!({ "name": "bob", "copied": 2 }));
    stop_leaving_nothing(d, &workers, &["inbox", "outbox"]);
}

#[test]
fn pool_is_resized_at_run_time() {
    let dir = TempDir::new("example-pool");
    let d = Daemon::start(&dir, &example("pool"), &[], &[]);
    let live = || call(&d, "pool.live", Value::Null);
    // Each start is a worker event, which the example logs.
    wait_until("2 crunchers", DEADLINE, || live() == json!(2) && worker_pids(&d).len() == 2);

    assert_eq!(call(&d, "worker.scale", json!({ "name": "crunchers", "instances": 4 })), json!(4));
    wait_until("4 crunchers", DEADLINE, || live() == json!(4) && worker_pids(&d).len() == 4);
    let four = worker_pids(&d);

    assert_eq!(call(&d, "worker.scale", json!({ "name": "crunchers", "instances": 1 })), json!(1));
    wait_until("1 cruncher", DEADLINE, || live() == json!(1) && worker_pids(&d).len() == 1);
    let one = worker_pids(&d);
    let retired: Vec<i32> = four.iter().copied().filter(|p| !one.contains(p)).collect();
    assert_eq!(retired.len(), 3, "{four:?} -> {one:?}");
    wait_gone("the retired crunchers", DEADLINE, &retired);
    assert!(d.log().contains("cruncher 3 down"), "{}", d.log());
    stop_leaving_nothing(d, &one, &[]);
}

#[test]
fn deferred_answers_when_the_worker_has_done_a_batch() {
    let dir = TempDir::new("example-deferred");
    let d = Daemon::start(&dir, &example("deferred"), &[], &[]);
    let first = call(&d, "batch.next", Value::Null);
    let n = first["batch"].as_u64().unwrap_or_else(|| panic!("batch.next answered {first}"));
    assert!(n >= 1, "{first}");
    assert_eq!(first["instance"], json!(0));
    // The next call waits for the next batch.
    let second = call(&d, "batch.next", Value::Null);
    assert!(second["batch"].as_u64().is_some_and(|m| m > n), "{first} then {second}");
    // A multicall cannot wait: it refuses the deferred method before it
    // runs.
    let multi = call(&d, "system.multicall", json!([[{ "methodName": "batch.next", "params": [] }]]));
    assert_eq!(multi[0]["faultCode"], json!(-32600), "{multi}");
    let workers = worker_pids(&d);
    stop_leaving_nothing(d, &workers, &[]);
}

#[test]
fn reload_rereads_its_configuration_on_sighup() {
    let dir = TempDir::new("example-reload");
    std::fs::write(dir.join("greeting.conf"), "Hello\n").unwrap();
    let d = Daemon::start(&dir, &example("reload"), &[], &[]);
    let greet = || call(&d, "greet", json!({ "name": "Ada" }));
    assert_eq!(greet(), json!("Hello, Ada!"));

    std::fs::write(dir.join("greeting.conf"), "Bonjour\n").unwrap();
    d.signal(libc::SIGHUP);
    wait_until("the reload logged", DEADLINE, || d.log().contains("greeting \"Bonjour\""));
    assert_eq!(greet(), json!("Bonjour, Ada!"));

    // A bad file keeps the greeting, and the daemon runs on.
    std::fs::write(dir.join("greeting.conf"), "").unwrap();
    d.signal(libc::SIGHUP);
    wait_until("the failed reload logged", DEADLINE, || d.log().contains("reload failed, keeping \"Bonjour\""));
    assert_eq!(greet(), json!("Bonjour, Ada!"));
    stop_leaving_nothing(d, &[], &["greeting.conf"]);
}

/// Starts the service example: `service ARGS`, its stderr in `stderr.log`.
fn start_service(dir: &TempDir, args: &[&str]) -> Daemon {
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let child = Command::new(bin(&example("service")))
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("start the service");
    let socket = Address::Unix(dir.join("s.sock"));
    let mut d = Daemon { child, socket, pid_file: dir.join("s.pid"), dir: dir.path().to_path_buf() };
    d.wait_answering();
    d
}

#[test]
fn service_parses_its_own_flags_and_embeds_the_daemon() {
    let dir = TempDir::new("example-service");
    let help = run_example(dir.path(), "service", &["--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(help.contains("--greeting") && help.contains("serve") && help.contains("ctl"), "{help}");
    let bad = run_example(dir.path(), "service", &["--bogus", "serve"]);
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
    assert!(text(&bad.stderr).contains("--bogus"), "{}", text(&bad.stderr));
    // A configuration `build` refuses is an error that says what is wrong.
    let refused = run_example(dir.path(), "service", &["serve", "--socket", "ftp://nowhere"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("invalid daemon configuration"), "{}", text(&refused.stderr));

    let socket = format!("unix://{}", dir.join("s.sock").display());
    let pid_file = dir.join("s.pid").display().to_string();
    let d = start_service(&dir, &["--greeting", "Hi", "serve", "--socket", &socket, "--pidfile", &pid_file]);
    assert!(d.log().contains("serving on"), "{}", d.log());
    // `ctl` hands the rest of the command line to forkd's console.
    let hello = run_example(dir.path(), "service", &["ctl", "--socket", &socket, "call", "service.hello", "name=Ada"]);
    assert!(hello.status.success(), "{}", text(&hello.stderr));
    assert_eq!(text(&hello.stdout).trim(), "\"Hi, Ada!\"");
    let stop = run_example(dir.path(), "service", &["ctl", "--socket", &socket, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let mut d = d;
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log());
    assert!(d.log().contains("stopped: "), "{}", d.log());
    assert_left(&d.dir, &[]);
}

#[test]
fn client_calls_the_echo_example_over_tcp_with_its_token_file() {
    let dir = TempDir::new("example-client");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let socket: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, &example("echo"), &socket, &[], &[]);
    let address = socket.to_string();
    let pid_file = d.pid_file.display().to_string();

    let out = run_example(&d.dir, "client", &["--socket", &address, "--pidfile", &pid_file, "hi", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("daemon: \"Echo Daemon\""), "{stdout}");
    assert!(stdout.contains("my.echo: \"hi\""), "{stdout}");
    assert!(stdout.contains("my.repeat: \"hi hi hi\""), "{stdout}");
    assert!(stdout.contains("my.echo 42: error -32602"), "{stdout}");

    // Without the token the daemon refuses it, and the client says why.
    let elsewhere = dir.join("elsewhere.pid").display().to_string();
    let out = run_example(&d.dir, "client", &["--socket", &address, "--pidfile", &elsewhere, "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("token"), "{}", text(&out.stderr));
    stop_leaving_nothing(d, &[], &[]);
}

#[test]
fn service_serves_detached_from_code() {
    let dir = TempDir::new("example-service-detached");
    let socket = format!("unix://{}", dir.join("s.sock").display());
    let pid_file = dir.join("s.pid");
    let pid_path = pid_file.display().to_string();
    // `Daemon::serve_detached`: the launcher returns once the daemon is
    // ready, 0.
    let out = run_example(dir.path(), "service", &["serve", "--detach", "--socket", &socket, "--pidfile", &pid_path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid: i32 = std::fs::read_to_string(&pid_file).expect("the pid file").trim().parse().expect("a pid");
    let _guard = KillOnDrop(pid);
    assert!(forkd_tests::alive(pid));
    let hello = run_example(dir.path(), "service", &["ctl", "--socket", &socket, "call", "service.hello", "name=Bo"]);
    assert_eq!(text(&hello.stdout).trim(), "\"Hello, Bo!\"", "{}", text(&hello.stderr));
    let stop = run_example(dir.path(), "service", &["ctl", "--socket", &socket, "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    wait_gone("the detached service to be gone", DEADLINE, &[pid]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Kills a detached daemon that a failed test left running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if forkd_tests::alive(self.0) {
            // Safety: kill the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}
