//! systemd integration, without libsystemd: readiness and stop
//! notifications on `NOTIFY_SOCKET`, watchdog keep-alives when
//! `WATCHDOG_USEC` is set, and socket activation through `LISTEN_FDS`.
//! Under systemd a forkd daemon runs with `-f` (`Type=notify`).
//!
//! The environment and the notify socket are the world's, so they are
//! reached through the [`Os`]: the simulation sets the environment and
//! keeps the notifications.

use std::time::Duration;

use forkd_os::{Fd, Os};

/// The descriptor of the first socket systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Sends a notification (`READY=1`, `STOPPING=1`, `WATCHDOG=1`) if systemd
/// asked for them. Failures are ignored: notifications are advisory.
pub(crate) fn notify<O: Os>(os: &mut O, state: &str) {
    let Some(socket) = os.env_var("NOTIFY_SOCKET") else { return };
    let _ = os.send_datagram(&socket, state.as_bytes());
}

/// Half the watchdog period systemd set for this process, if any.
pub(crate) fn watchdog_interval<O: Os>(os: &O) -> Option<Duration> {
    if let Some(pid) = env_number::<O, i32>(os, "WATCHDOG_PID") {
        if pid != os.pid().0 {
            return None;
        }
    }
    let usec: u64 = env_number(os, "WATCHDOG_USEC")?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The listening socket systemd passed (fd 3), if it passed one to this
/// process; made non-blocking, close-on-exec and the `Os`'s to close. The
/// `LISTEN_*` variables are removed from the environment.
pub(crate) fn activated_listener<O: Os>(os: &mut O) -> Option<Fd> {
    let pid: Option<i32> = env_number(os, "LISTEN_PID");
    let n: Option<u32> = env_number(os, "LISTEN_FDS");
    // As `sd_listen_fds(1)` does: the variables are for this process alone,
    // not for its workers nor what they start.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        os.remove_env(name);
    }
    let (pid, n) = (pid?, n?);
    if pid != os.pid().0 || n < 1 {
        return None;
    }
    os.take_inherited(Fd(LISTEN_FDS_START)).ok()
}

fn env_number<O: Os, T: std::str::FromStr>(os: &O, name: &str) -> Option<T> {
    os.env_var(name)?.to_str()?.parse().ok()
}
