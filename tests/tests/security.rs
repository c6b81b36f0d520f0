//! The hardened control plane, end to end: what SECURITY.md promises, tried
//! on real daemon processes by real clients (curl, Python's xmlrpc.client,
//! raw sockets, the daemon's own CLI, `forkd::Client`) and by processes of
//! another user (uid 65534: the tests run as root).
//!
//! Every test has its own directory, socket, pid file, token file and port.
//! Nothing sleeps to synchronise: answers are waited for with read timeouts,
//! conditions with `wait_until` (which looks again on each change in the
//! test's directory), a flooder's progress on a condition variable, and a
//! helper process says it is ready by writing a line to a pipe. The slow
//! clients of the slow-header test wait for the daemon's answer or close
//! between bytes; their cadence, the attack itself, is that wait's bound.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use forkd::ConnectOptions;
use forkd_os::Address;
use forkd_tests::{alive, bin, run, wait_exit, wait_until, Client, ClientError, Daemon, Progress, TempDir, DEADLINE};
use serde_json::{json, Value};

const ECHO: &str = "echo-daemon";
const PROBE: &str = "probe-daemon";
/// The uid and gid of `nobody`: another user than the daemon's (root).
const NOBODY: u32 = 65534;
/// JSON-RPC error codes the tests expect.
const LIMIT_EXCEEDED: i64 = -32005;
const UNAUTHORIZED: i64 = -32006;
const INTERNAL_ERROR: i64 = -32603;
/// The RSS the master must stay under while it is being flooded.
const MAX_RSS: u64 = 64 << 20;

// Helpers

/// A tcp port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An echo daemon on 127.0.0.1 and a free port, answering.
fn start_tcp(dir: &TempDir, args: &[&str]) -> (Daemon, u16) {
    let port = free_port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    (Daemon::start_at(dir, ECHO, &address, args, &[]), port)
}

fn socket_path(d: &Daemon) -> PathBuf {
    match &d.socket {
        Address::Unix(p) => p.clone(),
        other => panic!("not a unix socket: {other}"),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the daemon binary as a control client the way an operator would:
/// in the daemon's directory, with its socket and pid file, and no token
/// given, so that it finds the token file by itself.
fn cli(d: &Daemon, bin_name: &str, args: &[&str]) -> Output {
    Command::new(bin(bin_name))
        .arg("--socket")
        .arg(d.socket.to_string())
        .arg("--pidfile")
        .arg(&d.pid_file)
        .args(args)
        .current_dir(&d.dir)
        .env_remove("FORKD_TOKEN")
        .output()
        .expect("run the control command")
}

/// The daemon still runs and answers `daemon.info` through its own CLI.
fn assert_still_serving(d: &Daemon, after: &str) {
    let out = cli(d, ECHO, &["call", "daemon.info"]);
    assert_eq!(out.status.code(), Some(0), "daemon.info after {after}: {}\n{}", stderr(&out), d.log());
    let info: Value = serde_json::from_str(&stdout(&out)).expect("daemon.info prints JSON");
    assert_eq!(info["pid"], json!(d.pid()), "daemon.info after {after}: {info}");
    assert!(alive(d.pid()), "the daemon is gone after {after}");
}

/// An NDJSON `my.echo` request line.
fn echo_line(id: u64, message: &str) -> String {
    format!("{}\n", json!({"jsonrpc": "2.0", "id": id, "method": "my.echo", "params": {"message": message}}))
}

/// Reads one line, failing on end of stream or after `DEADLINE`.
fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    let n = r.read_line(&mut line).expect("read an answer line");
    assert!(n > 0, "the daemon closed the connection instead of answering");
    line
}

/// The error code of an NDJSON answer line.
fn error_code(line: &str) -> Option<i64> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {e}: {line:?}"));
    v.get("error")?.get("code")?.as_i64()
}

/// A raw unix connection and a line reader on it, with `DEADLINE` timeouts.
fn unix_lines(d: &Daemon) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(socket_path(d)).expect("connect to the daemon");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// A raw tcp connection and a line reader on it, with `DEADLINE` timeouts.
fn tcp_lines(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// A fresh client with the token gets its echo.
fn assert_echoes(d: &Daemon, message: &str) {
    let got = d.client().call("my.echo", json!({ "message": message })).expect("a fresh client gets its echo");
    assert_eq!(got, json!(message));
}

/// The master's resident set size, from /proc/PID/status.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the daemon's status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

fn assert_rss_bounded(d: &Daemon, when: &str) {
    let bytes = rss(d.pid());
    assert!(bytes < MAX_RSS, "the daemon's RSS is {} MiB {when}, over {} MiB", bytes >> 20, MAX_RSS >> 20);
}

/// Runs `cmd` (a daemon expected to refuse to start) to its exit within
/// `DEADLINE`, and returns its exit code and stderr.
fn run_to_exit(mut cmd: Command) -> (i32, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let Some(status) = wait_exit(&mut child, DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon did not exit within {DEADLINE:?}: it should have refused to start");
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

/// The daemon binary in the foreground with its socket and pid file in `dir`.
fn daemon_command(dir: &TempDir, socket: &Path, pid_file: &Path) -> Command {
    let mut cmd = Command::new(bin(ECHO));
    cmd.args(["-f", "-v", "--socket", &format!("unix://{}", socket.display()), "--pidfile"])
        .arg(pid_file)
        .current_dir(dir.path())
        .process_group(0);
    cmd
}

/// Makes `cmd` run as uid and gid 65534 with no supplementary groups.
fn as_nobody(cmd: &mut Command) -> &mut Command {
    // Safety: only async-signal-safe calls between fork and exec; the group
    // first, while the process may still change it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Lets uid 65534 reach the test's directory.
fn open_to_others(dir: &TempDir) {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

// 1. forged cross-origin POSTs over tcp

/// `curl -s -o /dev/null -w %{http_code} ARGS http://127.0.0.1:PORT/`.
fn http_status(port: u16, args: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{port}/");
    let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"];
    all.extend_from_slice(args);
    all.push(&url);
    let out = run("curl", &all);
    assert!(out.status.success(), "curl failed: {out:?}");
    stdout(&out)
}

const SHUTDOWN: &str = r#"{"jsonrpc":"2.0","method":"daemon.shutdown","id":1}"#;

#[test]
fn forged_cross_origin_posts_are_refused_and_the_daemon_runs_on() {
    let dir = TempDir::new("sec-forged");
    let (d, port) = start_tcp(&dir, &[]);
    let bearer = format!("Authorization: Bearer {}", d.token());
    let cases: [(&str, Vec<&str>, &str); 4] = [
        // What a page may send cross-origin without a preflight.
        ("a text/plain POST", vec!["-H", "Content-Type: text/plain", "-d", SHUTDOWN], "415"),
        ("a form POST", vec!["-H", "Content-Type: application/x-www-form-urlencoded", "-d", SHUTDOWN], "415"),
        // Even with the token, a foreign origin and a rebound name.
        (
            "a foreign Origin",
            vec![
                "-H",
                "Content-Type: application/json",
                "-H",
                &bearer,
                "-H",
                "Origin: http://evil.example",
                "-d",
                SHUTDOWN,
            ],
            "403",
        ),
        (
            "a foreign Host",
            vec!["-H", "Content-Type: application/json", "-H", &bearer, "-H", "Host: attacker.example", "-d", SHUTDOWN],
            "421",
        ),
    ];
    for (what, args, want) in &cases {
        assert_eq!(http_status(port, args), *want, "{what}");
        assert_still_serving(&d, what);
    }
    assert!(!d.log().contains("shutting down"), "{}", d.log());
}

// 2. tcp wants the token

#[test]
fn tcp_without_a_token_is_refused_over_http_and_ndjson() {
    let dir = TempDir::new("sec-notoken");
    let (d, port) = start_tcp(&dir, &[]);
    // HTTP: 401 with a challenge.
    let body = r#"{"jsonrpc":"2.0","method":"my.echo","params":["hi"],"id":1}"#;
    let url = format!("http://127.0.0.1:{port}/");
    let out = run("curl", ["-s", "-i", "--max-time", "10", "-H", "Content-Type: application/json", "-d", body, &url]);
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nwww-authenticate: "), "no WWW-Authenticate header:\n{text}");
    assert!(!text.contains("\"result\""), "{text}");
    // NDJSON: -32006 for each call until the token comes.
    let (mut s, mut r) = tcp_lines(port);
    s.write_all(echo_line(1, "hi").as_bytes()).unwrap();
    let line = read_line(&mut r);
    assert_eq!(error_code(&line), Some(UNAUTHORIZED), "{line}");
    // And the in-process client without a token is told so.
    match Client::connect_with(&d.socket, &ConnectOptions::new(DEADLINE))
        .and_then(|mut c| c.call("daemon.info", Value::Null))
    {
        Err(ClientError::NoToken { .. }) | Err(ClientError::Rpc(forkd::RpcError { code: UNAUTHORIZED, .. })) => {}
        other => panic!("a client without a token got {other:?}"),
    }
    assert!(d.log().contains("127.0.0.1"), "refusals are logged with the peer's address:\n{}", d.log());
    assert_still_serving(&d, "the refusals");
}

#[test]
fn tcp_token_file_is_0600_64_hex_digits_and_removed_at_stop() {
    let dir = TempDir::new("sec-tokenfile");
    let (mut d, _) = start_tcp(&dir, &[]);
    let path = d.token_file();
    let meta = std::fs::symlink_metadata(&path).expect("the token file exists");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
    let content = std::fs::read_to_string(&path).unwrap();
    let hex = content.strip_suffix('\n').unwrap_or_else(|| panic!("no final newline: {content:?}"));
    assert_eq!(hex.len(), 64, "{content:?}");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{content:?}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(DEADLINE), 0, "{}", d.log());
    assert!(!path.exists(), "the token file is left behind");
}

#[test]
fn tcp_with_the_token_serves_curl_python_ndjson_and_the_clients() {
    let dir = TempDir::new("sec-token");
    let (d, port) = start_tcp(&dir, &[]);
    let token = d.token();
    let url = format!("http://127.0.0.1:{port}/");

    // curl with a bearer token.
    let bearer = format!("Authorization: Bearer {token}");
    let body = r#"{"jsonrpc":"2.0","method":"my.echo","params":{"message":"curl"},"id":1}"#;
    let out = run(
        "curl",
        ["-s", "--max-time", "10", "-H", "Content-Type: application/json", "-H", &bearer, "-d", body, &url],
    );
    assert!(out.status.success(), "curl failed: {out:?}");
    assert_eq!(stdout(&out), r#"{"jsonrpc":"2.0","result":"curl","id":1}"#);

    // Python's stock XML-RPC client, the token as the Basic password.
    let script = format!(
        "import xmlrpc.client\np = xmlrpc.client.ServerProxy('http://forkd:{token}@127.0.0.1:{port}/')\nprint(p.my.echo('py'))\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().expect("run python3");
    assert!(out.status.success(), "python failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "py\n");

    // NDJSON: rpc.authenticate first, then calls.
    let (mut s, mut r) = tcp_lines(port);
    let auth = json!({"jsonrpc": "2.0", "method": "rpc.authenticate", "params": {"token": token}, "id": 0});
    s.write_all(format!("{auth}\n").as_bytes()).unwrap();
    let line = read_line(&mut r);
    assert_eq!(error_code(&line), None, "rpc.authenticate was refused: {line}");
    s.write_all(echo_line(1, "ndjson").as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), "{\"jsonrpc\":\"2.0\",\"result\":\"ndjson\",\"id\":1}\n");

    // forkd::Client with the token file.
    let got = d.client().call("my.echo", json!({"message": "client"})).unwrap();
    assert_eq!(got, json!("client"));

    // Plain Client::connect in a child process given FORKD_TOKEN.
    let out = Command::new(bin("forkd-connect"))
        .args([&d.socket.to_string(), "my.echo", r#"{"message":"env"}"#])
        .env("FORKD_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\"env\"\n"), "{}", stderr(&out));
    // The same child without it is refused: the token did the work.
    let out = Command::new(bin("forkd-connect"))
        .args([&d.socket.to_string(), "my.echo", r#"{"message":"env"}"#])
        .env_remove("FORKD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a child without FORKD_TOKEN got {}", stdout(&out));

    // The daemon's own CLI finds the token file from the pid file's path.
    let out = cli(&d, ECHO, &["call", "my.echo", "message=hi"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\"hi\"\n"), "{}", stderr(&out));
}

// 3. a unix peer of another user

#[test]
fn a_unix_client_of_another_user_is_refused_and_logged() {
    let dir = TempDir::new("sec-peer");
    open_to_others(&dir);
    let d = Daemon::start(&dir, PROBE, &[], &[("PROBE_SOCKET_MODE", "666")]);
    let sock = socket_path(&d);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "the fixture did not widen the socket's mode");

    // curl as nobody: it connects (the mode lets it) and posts a call.
    let body = r#"{"jsonrpc":"2.0","method":"my.echo","params":["nobody"],"id":1}"#;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "--unix-socket"])
        .arg(&sock)
        .args(["-H", "Content-Type: application/json", "-d", body, "http://localhost/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = as_nobody(&mut cmd).spawn().expect("run curl as nobody");
    let curl_pid = child.id();
    let out = child.wait_with_output().unwrap();
    // Closed under it: 52, an empty reply; 55 or 56, a failed send or
    // receive; 7 when curl sees it closed as soon as it connected.
    assert!(matches!(out.status.code(), Some(7 | 52 | 55 | 56)), "curl as nobody: {out:?}");
    assert_eq!(stdout(&out), "", "the other user got an answer");
    let want = format!("refused unix peer pid {curl_pid} uid {NOBODY}");
    wait_until("the refusal to be logged", DEADLINE, || d.log().contains(&want));

    // A raw NDJSON call from another user's process: closed, no answer.
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(10)\ns.connect({:?})\n\
         try:\n    s.sendall(b'{{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"raw\"],\"id\":1}}\\n')\n\
         except (BrokenPipeError, ConnectionResetError):\n    pass\n\
         try:\n    print(repr(s.recv(4096)))\nexcept ConnectionResetError:\n    print('reset')\n",
        sock.to_str().unwrap()
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", &script]);
    let child = as_nobody(&mut cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let python_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python as nobody: {}", stderr(&out));
    assert!(matches!(stdout(&out).as_str(), "b''\n" | "reset\n"), "the other user got {:?}", stdout(&out));
    let want = format!("refused unix peer pid {python_pid} uid {NOBODY}");
    wait_until("the second refusal to be logged", DEADLINE, || d.log().contains(&want));

    // Root still gets answers.
    let (mut s, mut r) = unix_lines(&d);
    s.write_all(echo_line(1, "root").as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), "{\"jsonrpc\":\"2.0\",\"result\":\"root\",\"id\":1}\n");
    assert!(alive(d.pid()));
}

// 4. the daemon's files

#[test]
fn a_symlinked_pid_file_stops_the_start_and_its_target_is_untouched() {
    let dir = TempDir::new("sec-pidlink");
    let target = dir.join("target.conf");
    std::fs::write(&target, "keep = me\n").unwrap();
    let pid_file = dir.join("daemon.pid");
    std::os::unix::fs::symlink("target.conf", &pid_file).unwrap();
    let (code, err) = run_to_exit(daemon_command(&dir, &dir.join("d.sock"), &pid_file));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pid file") && err.contains("symbolic link"), "unclear error: {err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep = me\n");
    assert!(std::fs::symlink_metadata(&pid_file).unwrap().file_type().is_symlink());
    assert!(!dir.join("d.sock").exists(), "a socket was left behind");
}

#[test]
fn a_regular_file_at_the_socket_path_stops_the_start_and_is_untouched() {
    let dir = TempDir::new("sec-sockfile");
    let sock = dir.join("d.sock");
    std::fs::write(&sock, "not a socket\n").unwrap();
    let pid_file = dir.join("d.pid");
    let (code, err) = run_to_exit(daemon_command(&dir, &sock, &pid_file));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a socket is in the way"), "unclear error: {err}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket\n");
    assert!(!pid_file.exists(), "a pid file was left behind");
}

#[test]
fn a_pid_file_read_locked_by_another_user_is_reported_as_such() {
    let dir = TempDir::new("sec-pidlock");
    open_to_others(&dir);
    // A stale pid file naming a dead process.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    assert!(!alive(dead as i32));
    let pid_file = dir.join("d.pid");
    let content = format!("{dead}\n");
    std::fs::write(&pid_file, &content).unwrap();
    std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Another user opens it read-only and holds a shared lock; it says so
    // on its stdout once it holds it, then waits on its stdin.
    let mut cmd = Command::new("flock");
    cmd.arg("--shared")
        .arg(&pid_file)
        .args(["sh", "-c", "echo locked; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0);
    let holder = as_nobody(&mut cmd).spawn().expect("run flock as nobody");
    let mut holder = Holder(holder);
    let mut ready = String::new();
    BufReader::new(holder.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready, "locked\n", "the lock holder did not get its lock");

    let (code, err) = run_to_exit(daemon_command(&dir, &dir.join("d.sock"), &pid_file));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pid file") && err.contains("locked by another process"), "unclear error: {err}");
    assert!(!err.contains("already running"), "a lock holder was taken for the daemon: {err}");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), content);
    drop(holder);
}

/// A helper process, killed with its group when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        // Safety: kill our own child's process group, then reap it.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

// 5. bounds

#[test]
fn a_one_mib_batch_is_one_error_and_the_daemon_stays_small() {
    let dir = TempDir::new("sec-bigbatch");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    // `[1,1,...,1]` just under the 1 MiB request bound, newline included.
    let n = ((1 << 20) - 2) / 2 - 1;
    let mut batch = String::with_capacity(1 << 20);
    batch.push('[');
    for i in 0..n {
        batch.push_str(if i == 0 { "1" } else { ",1" });
    }
    batch.push_str("]\n");
    assert!(batch.len() < 1 << 20 && batch.len() > 1_000_000);
    let (mut s, mut r) = unix_lines(&d);
    s.write_all(batch.as_bytes()).unwrap();
    let line = read_line(&mut r);
    assert!(line.len() < 4096, "a batch of {n} was answered entry by entry ({} bytes)", line.len());
    assert_eq!(error_code(&line), Some(LIMIT_EXCEEDED), "{line}");
    assert_rss_bounded(&d, "after a 1 MiB batch");
    // The same connection and a fresh one are served.
    s.write_all(echo_line(2, "after").as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), "{\"jsonrpc\":\"2.0\",\"result\":\"after\",\"id\":2}\n");
    assert_echoes(&d, "fresh");
}

#[test]
fn a_100k_entry_multicall_is_one_error_and_the_daemon_stays_small() {
    let dir = TempDir::new("sec-multicall");
    let d = Daemon::start(&dir, ECHO, &[], &[]);
    let entries = vec!["{}"; 100_000].join(",");
    let request =
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"system.multicall\",\"params\":[[{entries}]],\"id\":1}}\n");
    assert!(request.len() < 1 << 20);
    let (mut s, mut r) = unix_lines(&d);
    s.write_all(request.as_bytes()).unwrap();
    let line = read_line(&mut r);
    assert!(line.len() < 4096, "a multicall of 100k was answered entry by entry ({} bytes)", line.len());
    assert_eq!(error_code(&line), Some(LIMIT_EXCEEDED), "{line}");
    assert_rss_bounded(&d, "after a 100k-entry multicall");
    assert_echoes(&d, "fresh");
}

#[test]
fn ten_flooders_that_never_read_leave_the_daemon_small_and_serving() {
    let dir = TempDir::new("sec-flooders");
    // Room for the ten flooders and the normal clients: with the default
    // of ten connections the flooders alone would hold every slot.
    let d = Daemon::start(&dir, ECHO, &["--max-connections", "16"], &[]);
    let (flooders, line, flood, stop) = start_flooders(&d);
    // Each flooder got three lines in: the daemon read and answered at
    // least two of them (the socket holds well under one).
    for (i, (_, written, _)) in flooders.iter().enumerate() {
        written.wait_until(&format!("flooder {i} to get three batches in"), DEADLINE, |n, _| n >= 3 * line.len());
        assert_echoes(&d, &format!("between floods {i}"));
    }
    // All ten still connected, blocked, unread.
    for i in 0..5 {
        assert_rss_bounded(&d, "with ten flooders connected");
        assert_echoes(&d, &format!("during the flood {i}"));
    }
    for (i, (_, written, _)) in flooders.iter().enumerate() {
        assert!(written.get() < flood.len(), "the daemon took flooder {i}'s whole flood");
    }
    assert_rss_bounded(&d, "with ten flooders connected");
    stop.store(true, Ordering::SeqCst);
    for (s, _, thread) in flooders {
        thread.join().unwrap();
        drop(s);
    }
    assert_echoes(&d, "after the flood");
    assert!(alive(d.pid()));
}

/// A batch line of 1000 echoes and ten clients writing fifty of them each,
/// never reading: (the clients with how much each wrote and its thread,
/// the line, the whole flood, the flag that stops them).
#[allow(clippy::type_complexity)]
fn start_flooders(
    d: &Daemon,
) -> (Vec<(UnixStream, Arc<Progress>, std::thread::JoinHandle<()>)>, String, Arc<Vec<u8>>, Arc<AtomicBool>) {
    // A line is a batch of 1000 echoes of 240 bytes: about 300 KB in, 275 KB
    // out. Fifty of them per client, never reading: 15 MB each.
    const LINES: usize = 50;
    let message = "f".repeat(240);
    let batch: Vec<Value> = (1..=1000)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "my.echo", "params": {"message": message}}))
        .collect();
    let line = format!("{}\n", Value::Array(batch));
    let flood = Arc::new(line.repeat(LINES).into_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for _ in 0..10 {
        let s = UnixStream::connect(socket_path(d)).unwrap();
        let written = Arc::new(Progress::default());
        let thread = {
            let (mut s, written, flood, stop) = (s.try_clone().unwrap(), written.clone(), flood.clone(), stop.clone());
            // Short write timeouts so that the thread can see `stop` while
            // the daemon holds it blocked.
            s.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
            std::thread::spawn(move || {
                let mut at = 0;
                while at < flood.len() && !stop.load(Ordering::SeqCst) {
                    match s.write(&flood[at..(at + 64 * 1024).min(flood.len())]) {
                        Ok(n) => at += n,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                    written.set(at);
                }
                written.finish();
            })
        };
        flooders.push((s, written, thread));
    }
    (flooders, line, flood, stop)
}

#[test]
fn ten_non_readers_holding_every_slot_are_closed_after_the_request_timeout() {
    let dir = TempDir::new("sec-non-readers");
    // The default --max-connections, 10: the ten flooders hold every slot.
    let d = Daemon::start(&dir, ECHO, &["--request-timeout", "2"], &[]);
    let (flooders, line, flood, stop) = start_flooders(&d);
    for (i, (_, written, _)) in flooders.iter().enumerate() {
        written.wait_until(&format!("flooder {i} to get three batches in"), DEADLINE, |n, _| n >= 3 * line.len());
    }
    // Their answers wait unread: after the request timeout they are closed,
    // and a normal client, waiting in the backlog meanwhile, is answered.
    let got = d.client().call("my.echo", json!({ "message": "after them" })).expect("answered once they are closed");
    assert_eq!(got, json!("after them"));
    // The daemon closed them: their writes fail, and each flooder's
    // thread ends without being told to.
    for (i, (_, written, _)) in flooders.iter().enumerate() {
        written.wait_until(&format!("flooder {i}'s connection to be closed"), DEADLINE, |_, done| done);
        assert!(written.get() < flood.len(), "flooder {i} ended by writing it all, not by a close");
    }
    stop.store(true, Ordering::SeqCst);
    for (s, _, thread) in flooders {
        thread.join().unwrap();
        drop(s);
    }
    assert!(d.log().contains("have not been read"), "the closing is logged:\n{}", d.log());
    assert!(alive(d.pid()));
}

// 6. slow headers

/// How long a slow client waits for the daemon before its next byte.
const CADENCE: Duration = Duration::from_secs(1);

/// Whether `s` turns readable (an answer, or the daemon's close) within
/// `within`. Nothing is read: what came is left for the test to read.
fn readable_within(s: &UnixStream, within: Duration) -> bool {
    let mut fd = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // Safety: one valid pollfd.
    let n = unsafe { libc::poll(&mut fd, 1, within.as_millis() as libc::c_int) };
    n > 0
}

#[test]
fn slow_header_clients_holding_every_slot_are_dropped_at_their_deadline() {
    let dir = TempDir::new("sec-slowloris");
    // The default --max-connections, 10: the slow clients take them all.
    let d = Daemon::start(&dir, ECHO, &["--request-timeout", "2"], &[]);
    let head = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-Slow: ".to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..10 {
        let s = UnixStream::connect(socket_path(&d)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let thread = {
            let (mut s, stop, head) = (s.try_clone().unwrap(), stop.clone(), head.clone());
            std::thread::spawn(move || {
                // One byte now, then one more each second in which the
                // daemon neither answered nor closed: the cadence is the
                // attack, and the daemon's answer or close ends it at once.
                for i in 0.. {
                    let byte = head.get(i).copied().unwrap_or(b'x');
                    if s.write_all(&[byte]).is_err() || stop.load(Ordering::SeqCst) || readable_within(&s, CADENCE) {
                        return;
                    }
                }
            })
        };
        slow.push((s, thread));
    }
    // A normal client now waits in the backlog until a slot frees. The slow
    // clients go on trickling for as long as they are not closed, so only
    // their request deadline can free a slot for it.
    let (tx, rx) = mpsc::channel();
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Client::connect(&socket, DEADLINE).and_then(|mut c| c.call("daemon.info", Value::Null)));
    });
    let answer = rx.recv_timeout(DEADLINE);
    stop.store(true, Ordering::SeqCst);
    let info = match answer {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => panic!("daemon.info failed while slow clients held the slots: {e}\n{}", d.log()),
        Err(_) => {
            panic!("daemon.info was not answered while slow clients held the slots\n{}", d.log())
        }
    };
    assert_eq!(info["pid"], json!(d.pid()));
    // The slow clients were told why, and closed.
    for (i, (mut s, thread)) in slow.into_iter().enumerate() {
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("slow client {i}: the daemon did not close it: {e}"),
        }
        // Two or three bytes in, "POS" could still become newline-delimited
        // JSON: the daemon answers as the protocol it can tell, 408 on HTTP
        // and -32600 on NDJSON.
        let got = String::from_utf8_lossy(&got);
        let timed_out = got.starts_with("HTTP/1.1 408")
            || (got.lines().count() == 1 && error_code(&got) == Some(-32600) && got.contains("not received in time"));
        assert!(timed_out, "slow client {i} got {got:?}");
        thread.join().unwrap();
    }
    assert_echoes(&d, "after the slow clients");
}

#[test]
fn connections_without_the_token_cannot_hold_every_slot() {
    let dir = TempDir::new("sec-unauth-slots");
    // The default ten slots.
    let (d, port) = start_tcp(&dir, &[]);
    // Ten connections without the token, each keeping itself busy with an
    // empty line now and then (which resets its idle timer).
    let mut holders: Vec<(TcpStream, BufReader<TcpStream>)> = (0..10).map(|_| tcp_lines(port)).collect();
    for (s, _) in holders.iter_mut() {
        s.write_all(b"\n").unwrap();
    }
    let auth =
        format!(r#"{{"jsonrpc":"2.0","method":"rpc.authenticate","params":{{"token":"{}"}},"id":0}}"#, d.token());
    // Clients with the token are answered: each takes the slot of the
    // oldest holder (once its second of grace is over), which is told why
    // and closed.
    let mut served = Vec::new();
    for (i, (_, holder)) in holders.iter_mut().enumerate() {
        let (mut s, mut r) = tcp_lines(port);
        s.write_all(format!("{auth}\n{}", echo_line(1, "in")).as_bytes()).unwrap();
        assert_eq!(read_line(&mut r).trim_end(), r#"{"jsonrpc":"2.0","result":true,"id":0}"#, "client {i}");
        assert_eq!(read_line(&mut r).trim_end(), r#"{"jsonrpc":"2.0","result":"in","id":1}"#, "client {i}");
        let told = read_line(holder);
        assert_eq!(error_code(&told), Some(UNAUTHORIZED), "holder {i} is told why: {told}");
        let mut rest = Vec::new();
        let end = holder.read_to_end(&mut rest).map_err(|e| e.kind());
        assert!(matches!(end, Ok(0) | Err(ErrorKind::ConnectionReset)), "holder {i} is closed: {end:?}");
        served.push((s, r));
    }
    assert!(d.log().contains("has not shown the token"), "{}", d.log());
    // Every slot is now an authenticated connection's, and none is pushed
    // out: they all still answer.
    for (i, (s, r)) in served.iter_mut().enumerate() {
        s.write_all(echo_line(2, "still").as_bytes()).unwrap();
        assert_eq!(read_line(r).trim_end(), r#"{"jsonrpc":"2.0","result":"still","id":2}"#, "client {i}");
    }
}

// 7. panics

#[test]
fn a_panicking_handler_answers_internal_error_and_the_daemon_serves_on() {
    let dir = TempDir::new("sec-panic");
    let d = Daemon::start(&dir, PROBE, &[], &[]);
    let pid = d.pid();
    let mut c = d.client();
    match c.call("test.panic", Value::Null) {
        Err(ClientError::Rpc(forkd::RpcError { code: INTERNAL_ERROR, .. })) => {}
        other => panic!("test.panic answered {other:?}"),
    }
    // The same connection and a fresh one are served by the same process.
    assert_eq!(c.call("my.echo", json!({"message": "same"})).unwrap(), json!("same"));
    assert_echoes(&d, "fresh");
    let info = d.client().call("daemon.info", Value::Null).unwrap();
    assert_eq!(info["pid"], json!(pid));
    assert!(alive(pid));
    wait_until("the panic to be logged", DEADLINE, || d.log().contains("test.panic panicked"));
}
