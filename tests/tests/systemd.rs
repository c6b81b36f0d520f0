//! Under systemd (`Type=notify`, `-f`): readiness and stop notifications on
//! `NOTIFY_SOCKET`, watchdog keep-alives, and socket activation.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::{Command, Stdio};

use forkd_tests::{bin, TempDir, DEADLINE};
use serde_json::Value;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let notify = UnixDatagram::bind(dir.join("notify")).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let socket = format!("unix://{}", dir.join("d.sock").display());
    let mut child = Command::new(bin("echo-daemon"))
        .args(["-f", "--socket", &socket, "--pidfile"])
        .arg(dir.join("d.pid"))
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .env("WATCHDOG_USEC", "100000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(recv(&notify), "READY=1", "readiness comes first");
    // The socket answers once READY=1 was sent.
    let address = socket.parse().unwrap();
    let info = forkd_tests::Client::connect(&address, DEADLINE).unwrap().call("daemon.info", Value::Null).unwrap();
    assert_eq!(info["pid"], child.id());
    assert_eq!(recv(&notify), "WATCHDOG=1", "keep-alives at half the watchdog period");
    // Safety: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == "STOPPING=1") {
        seen.push(recv(&notify));
    }
    assert!(seen.iter().all(|s| s == "WATCHDOG=1" || s == "STOPPING=1"), "{seen:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn socket_activation_serves_the_passed_socket() {
    let dir = TempDir::new("activation");
    let path = dir.join("activated.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    // LISTEN_PID must be the daemon's own pid, which is known only in the
    // child: a shell sets it and execs the daemon, with the socket on fd 3.
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 exec {} -f --socket unix://{} --pidfile {}",
        bin("echo-daemon").display(),
        dir.join("other.sock").display(),
        dir.join("d.pid").display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script]).stderr(Stdio::null());
    forkd_tests::pass_as_fd3(&mut cmd, fd);
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    // The socket listens from before the daemon starts: the call waits in
    // its backlog until the daemon, once up, takes and answers it.
    let stream = UnixStream::connect(&path).expect("connect to the activated socket");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut c = std::io::BufReader::new(stream);
    c.get_mut().write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"my.echo\",\"params\":[\"on fd 3\"]}\n").unwrap();
    let mut answered = String::new();
    c.read_line(&mut answered).expect("an answer on the activated socket within the deadline");
    assert_eq!(answered.trim_end(), r#"{"jsonrpc":"2.0","result":"on fd 3","id":1}"#);
    assert!(!dir.join("other.sock").exists(), "the configured address was not bound");
    // Safety: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(path.exists(), "the service manager's socket file is left alone");
}
