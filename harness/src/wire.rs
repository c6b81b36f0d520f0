//! Blocking-with-deadline I/O for the harness's own processes, over any
//! `Os`: what a client does with a non-blocking descriptor, written once.
//!
//! Every wait has a deadline, because a harness process that waits forever
//! would turn a daemon bug into a stalled run instead of a report. `poll`
//! may return early (the world injects interrupted calls), so each helper
//! loops until its condition or its deadline, never trusting one wake-up.

use std::io::{self, ErrorKind};

use forkd_os::{Fd, Instant, Os, PollFd, Ready};

/// How a write or a read ended short.
#[derive(Debug)]
pub enum Short {
    /// The deadline passed first.
    Deadline,
    /// The peer is gone (end of file, broken pipe, reset).
    Closed,
    /// Another error.
    Error(io::Error),
}

/// Writes all of `data` before `deadline`. On `Err`, says how much was
/// written.
pub fn write_all<O: Os>(os: &mut O, fd: Fd, data: &[u8], deadline: Instant) -> Result<(), (usize, Short)> {
    let mut done = 0;
    while done < data.len() {
        match os.write(fd, &data[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if os.now() >= deadline {
                    return Err((done, Short::Deadline));
                }
                let mut fds = [PollFd::new(fd, Ready::WRITE)];
                if let Err(e) = os.poll(&mut fds, Some(deadline)) {
                    return Err((done, Short::Error(e)));
                }
            }
            Err(e) if is_closed(&e) => return Err((done, Short::Closed)),
            Err(e) => return Err((done, Short::Error(e))),
        }
    }
    Ok(())
}

/// Reads what is there, waiting until `deadline` for something to come.
/// `Ok(0)` is end of file.
pub fn read_some<O: Os>(os: &mut O, fd: Fd, buf: &mut [u8], deadline: Instant) -> Result<usize, Short> {
    loop {
        match os.read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if os.now() >= deadline {
                    return Err(Short::Deadline);
                }
                let mut fds = [PollFd::new(fd, Ready::READ)];
                if let Err(e) = os.poll(&mut fds, Some(deadline)) {
                    return Err(Short::Error(e));
                }
            }
            Err(e) if is_closed(&e) => return Ok(0),
            Err(e) => return Err(Short::Error(e)),
        }
    }
}

/// Waits until `fd` is ready for `interest` or `deadline` passes.
pub fn wait_ready<O: Os>(os: &mut O, fd: Fd, interest: Ready, deadline: Instant) -> Result<Ready, Short> {
    loop {
        let mut fds = [PollFd::new(fd, interest)];
        os.poll(&mut fds, Some(deadline)).map_err(Short::Error)?;
        if !fds[0].ready.is_empty() {
            return Ok(fds[0].ready);
        }
        if os.now() >= deadline {
            return Err(Short::Deadline);
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted)
}
