//! Daemonizing with readiness: `-d` returns only once the daemon is ready,
//! and fails with the daemon's own error if it could not start.
//!
//! The double fork is the `Os`'s ([`Os::detach`]): the daemon goes on in a
//! grandchild that leads no session, so it can never reacquire a
//! controlling terminal; it sets its umask, moves to `/`, and points fds
//! 0–2 at `/dev/null` (never leaving them closed, or the next socket would
//! become someone's stdout). The process that was started stays behind as
//! the launcher.
//!
//! The daemon then closes every other descriptor it inherited, but its
//! log file: a pipe that the caller of `-d` reads to end of file must end
//! when the launcher exits, not when the daemon stops.
//!
//! Readiness travels on a pipe made before the fork: the daemon writes `ok`
//! once it is ready, or `err MESSAGE` if it failed to start; the launcher
//! reads that one line and exits 0 or 1 with the message. A daemon that
//! dies before it writes closes the pipe, and the launcher says so. The
//! launcher reads one line, not to end of file, because workers forked
//! before readiness inherit the pipe's write end.
//!
//! Everything goes through the `Os`, so the simulation runs `-d` as it is:
//! the launcher, the daemon, and a daemon that dies before it is ready.

use std::io;

use forkd_os::{Fd, Os, PollFd, Ready};

/// The longest line the launcher reads: an error message, cut short.
const MAX_LINE: usize = 4096;

/// The launcher's console: the terminal `-d` was typed at.
const STDERR: Fd = Fd(2);

/// The daemon's end of the readiness pipe.
#[derive(Debug)]
pub(crate) struct Readiness {
    fd: Option<Fd>,
}

impl Readiness {
    pub(crate) fn fd(&self) -> Option<Fd> {
        self.fd
    }

    /// Tells the launcher the daemon is ready.
    pub(crate) fn ready<O: Os>(&mut self, os: &mut O) {
        self.say(os, "ok\n");
    }

    /// Tells the launcher why the daemon could not start.
    pub(crate) fn failed<O: Os>(&mut self, os: &mut O, message: &str) {
        self.say(os, &format!("err {}\n", message.replace('\n', " ")));
    }

    fn say<O: Os>(&mut self, os: &mut O, line: &str) {
        if let Some(fd) = self.fd.take() {
            // The launcher reads at once: a line this short fits the pipe.
            let _ = write_all(os, fd, line.as_bytes());
            os.close(fd);
        }
    }
}

/// Detaches the daemon: returns in the daemon, with its end of the
/// readiness pipe. The process that called it becomes the launcher, which
/// never returns: it exits with the daemon's verdict.
pub(crate) fn daemonize<O: Os>(os: &mut O) -> io::Result<Readiness> {
    let (read_end, write_end) = os.pipe()?;
    let launcher = Box::new(move |os: &mut O| {
        os.close(write_end);
        let (code, message) = verdict(&read_line(os, read_end));
        if let Some(message) = message {
            let _ = write_all(os, STDERR, format!("error: {message}\n").as_bytes());
        }
        code
    });
    if let Err(e) = os.detach(launcher) {
        os.close(read_end);
        os.close(write_end);
        return Err(e);
    }
    os.close(read_end);
    // Nothing of the launcher's caller stays open in the daemon and its
    // workers (a pipe the caller reads to end of file would never end):
    // only the readiness pipe and the log file.
    let mut keep = vec![write_end];
    keep.extend(crate::logger::file_fd().map(Fd));
    os.close_inherited(&keep);
    restrict_umask(os);
    os.chdir_root()?;
    os.redirect_stdio_to_null()?;
    Ok(Readiness { fd: Some(write_end) })
}

/// The daemon's umask, in the foreground as under `-d`: 027, so that what
/// it creates (pid file, socket, token, logs, workers' files) is never
/// writable by its group nor accessible to others. Set before the daemon
/// creates anything.
pub(crate) fn restrict_umask<O: Os>(os: &mut O) {
    os.set_umask(UMASK);
}

const UMASK: u32 = 0o027;

/// The launcher's exit code for the line the daemon wrote, and what it
/// says on the terminal.
fn verdict(line: &[u8]) -> (i32, Option<String>) {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    if line == "ok" {
        (0, None)
    } else if let Some(message) = line.strip_prefix("err ") {
        (1, Some(message.to_string()))
    } else {
        (1, Some("the daemon exited before it was ready".into()))
    }
}

/// Reads up to the first newline, or to end of file, waiting as long as
/// it takes: the daemon either writes or dies, and either ends the wait.
fn read_line<O: Os>(os: &mut O, fd: Fd) -> Vec<u8> {
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < MAX_LINE {
        match os.read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(fd, Ready::READ)];
                if os.poll(&mut fds, None).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Some(end) = line.iter().position(|&b| b == b'\n') {
        line.truncate(end + 1);
    }
    line
}

/// Writes all of `data`, waiting for room; stops at the first error.
pub(crate) fn write_all<O: Os>(os: &mut O, fd: Fd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match os.write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(fd, Ready::WRITE)];
                os.poll(&mut fds, None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn the_launcher_reads_the_daemons_line() {
        assert_eq!(verdict(b"ok\n"), (0, None));
        assert_eq!(
            verdict(b"err bind tcp://127.0.0.1:1: address in use\n"),
            (1, Some("bind tcp://127.0.0.1:1: address in use".into()))
        );
        assert_eq!(verdict(b""), (1, Some("the daemon exited before it was ready".into())));
        assert_eq!(verdict(b"o"), (1, Some("the daemon exited before it was ready".into())));
    }
}
