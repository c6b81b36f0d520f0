//! The logger behind the `log` facade: to stderr in the foreground, to a
//! file (reopened on SIGUSR1, for logrotate) or nowhere in daemon mode.
//!
//! One line a record: `LEVEL target: message`, prefixed with the pid so that
//! the lines of the daemon and of its workers can be told apart. A failed
//! write is dropped: a full disk must not take the daemon down.
//!
//! The log file is opened for appending, created with mode 0640, and never
//! through a symbolic link; once open, it must be a regular file owned by
//! the daemon's effective user. A daemon often starts as root in a
//! directory others can write to, and a planted link or file would
//! otherwise have it append to any file of the attacker's choosing. A file
//! refused at start stops the start; one refused on reopen is reported in
//! the old file, which stays in use.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use forkd_os::real::{effective_uid, open_regular, OpenFor, OpenRegularError};
use log::{Level, LevelFilter, Log, Metadata, Record};

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
    Nowhere,
}

struct Logger {
    sink: Mutex<Sink>,
    level: LevelFilter,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Where the logs go.
pub(crate) enum Target {
    Stderr,
    File(PathBuf),
    Nowhere,
}

/// Installs the logger. Only the first call takes effect (a process has one
/// logger); later calls change nothing. Fails if the log file cannot be
/// opened or is refused.
pub(crate) fn init(target: Target, verbose: bool) -> Result<(), String> {
    let level = if verbose { LevelFilter::Debug } else { LevelFilter::Info };
    let sink = match target {
        Target::Stderr => Sink::Stderr,
        Target::File(path) => {
            let file = open(&path)?;
            Sink::File { path, file }
        }
        Target::Nowhere => Sink::Nowhere,
    };
    if LOGGER.set(Logger { sink: Mutex::new(sink), level }).is_ok() {
        let _ = log::set_logger(LOGGER.get().unwrap());
        log::set_max_level(level);
    }
    Ok(())
}

/// Opens the log file for appending, refusing a symbolic link, anything
/// but a regular file, and a file another user owns. O_NONBLOCK keeps a
/// FIFO planted at the path from blocking the open; on a regular file it
/// changes nothing.
fn open(path: &Path) -> Result<File, String> {
    let refused = |why: String| format!("log file {}: {why}", path.display());
    let (file, meta) = match open_regular(path, OpenFor::Append { mode: 0o640 }) {
        Ok(opened) => opened,
        Err(OpenRegularError::Io(e)) => return Err(refused(forkd_core::daemon::short_io(&e))),
        Err(e) => return Err(refused(e.to_string())),
    };
    let euid = effective_uid();
    if meta.uid() != euid {
        return Err(refused(format!("is owned by uid {}, not by the daemon's user ({euid})", meta.uid())));
    }
    // Another name for the file may be one the daemon must not write.
    if meta.nlink() != 1 {
        return Err(refused(format!("has {} hard links", meta.nlink())));
    }
    Ok(file)
}

/// The descriptor of the log file, if logging to one: a detached daemon
/// keeps it when it closes what it inherited.
pub(crate) fn file_fd() -> Option<i32> {
    use std::os::fd::AsRawFd;
    let logger = LOGGER.get()?;
    let sink = logger.sink.lock().ok()?;
    match &*sink {
        Sink::File { file, .. } => Some(file.as_raw_fd()),
        _ => None,
    }
}

/// Reopens the log file, if logging to one: logrotate has moved it. If the
/// new file is refused, the old one stays, and says why.
pub(crate) fn reopen() {
    let Some(logger) = LOGGER.get() else { return };
    let mut sink = logger.sink.lock().unwrap_or_else(|e| e.into_inner());
    if let Sink::File { path, file } = &mut *sink {
        if let Err(e) = reopen_file(path, file) {
            // Written directly: the lock is held, and the log macros would
            // take it again.
            let _ = file.write_all(line(Level::Error, module_path!(), &format_args!("reopen: {e}")).as_bytes());
        }
    }
}

/// Replaces `file` with a fresh open of `path`, or leaves it.
fn reopen_file(path: &Path, file: &mut File) -> Result<(), String> {
    *file = open(path)?;
    Ok(())
}

fn line(level: Level, target: &str, message: &dyn std::fmt::Display) -> String {
    let level = match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!("[{}] {level} {target}: {message}\n", std::process::id())
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = line(record.level(), record.target(), record.args());
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File { file, .. } => {
                let _ = file.write_all(line.as_bytes());
            }
            Sink::Nowhere => {}
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use forkd_os::testing::TempDir;

    #[test]
    fn the_log_file_is_created_private_and_appended_to() {
        let dir = TempDir::new("log-create");
        let path = dir.join("d.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = open(&path).unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        let fresh = dir.join("fresh.log");
        open(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().mode();
        assert_eq!(mode & 0o027, 0, "mode {mode:o}: no group write, nothing for others");
    }

    #[test]
    fn a_symlinked_log_file_is_refused_and_its_target_untouched() {
        let dir = TempDir::new("log-symlink");
        let target = dir.join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let link = dir.join("d.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open(&link).unwrap_err();
        assert_eq!(e, format!("log file {}: is a symbolic link", link.display()));
        let dangling = dir.join("dangling.log");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
        assert!(open(&dangling).unwrap_err().ends_with("is a symbolic link"));
        assert!(!dir.join("nowhere").exists(), "a dangling link is not followed to create its target");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn a_log_file_with_another_name_is_refused() {
        let dir = TempDir::new("log-hardlink");
        let other = dir.join("other");
        std::fs::write(&other, "precious\n").unwrap();
        let link = dir.join("d.log");
        std::fs::hard_link(&other, &link).unwrap();
        assert_eq!(open(&link).unwrap_err(), format!("log file {}: has 2 hard links", link.display()));
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "precious\n");
    }

    #[test]
    fn a_log_file_that_is_no_regular_file_is_refused() {
        let dir = TempDir::new("log-dir");
        let e = open(dir.path()).unwrap_err();
        assert!(e.starts_with("log file "), "{e}");
    }

    #[test]
    fn a_refused_reopen_keeps_the_old_file() {
        let dir = TempDir::new("log-reopen");
        let path = dir.join("d.log");
        let mut file = open(&path).unwrap();
        std::fs::rename(&path, dir.join("d.log.1")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).unwrap();
        assert!(reopen_file(&path, &mut file).unwrap_err().ends_with("is a symbolic link"));
        file.write_all(b"still here\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("d.log.1")).unwrap(), "still here\n");
    }
}
