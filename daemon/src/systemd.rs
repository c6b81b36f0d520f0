//! systemd integration, without libsystemd: readiness and stop
//! notifications on `NOTIFY_SOCKET`, watchdog keep-alives when
//! `WATCHDOG_USEC` is set, and socket activation through `LISTEN_FDS`.
//! Under systemd a forkd daemon runs with `-f` (`Type=notify`).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends a notification (`READY=1`, `STOPPING=1`, `WATCHDOG=1`) if systemd
/// asked for them. Failures are ignored: notifications are advisory.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// Half the watchdog period systemd set for this process, if any.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The listening socket systemd passed (fd 3), if it passed one to this
/// process; made non-blocking and close-on-exec.
pub(crate) fn activated_listener() -> Option<i32> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || n < 1 {
        return None;
    }
    let fd = 3;
    // Safety: fcntl on a descriptor systemd handed to this process.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return None;
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Some(fd)
}
