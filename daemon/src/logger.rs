//! The logger behind the `log` facade: to stderr in the foreground, to a
//! file (reopened on SIGUSR1, for logrotate) or nowhere in daemon mode.
//!
//! One line a record: `LEVEL target: message`, prefixed with the pid so that
//! the lines of the daemon and of its workers can be told apart. A failed
//! write is dropped: a full disk must not take the daemon down.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

enum Sink {
    Stderr,
    File { path: PathBuf, file: Option<File> },
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
/// logger); later calls change nothing.
pub(crate) fn init(target: Target, verbose: bool) {
    let level = if verbose { LevelFilter::Debug } else { LevelFilter::Info };
    let sink = match target {
        Target::Stderr => Sink::Stderr,
        Target::File(path) => {
            let file = open(&path);
            Sink::File { path, file }
        }
        Target::Nowhere => Sink::Nowhere,
    };
    if LOGGER.set(Logger { sink: Mutex::new(sink), level }).is_ok() {
        let _ = log::set_logger(LOGGER.get().unwrap());
        log::set_max_level(level);
    }
}

fn open(path: &PathBuf) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

/// Reopens the log file, if logging to one: logrotate has moved it.
pub(crate) fn reopen() {
    if let Some(logger) = LOGGER.get() {
        let mut sink = logger.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Sink::File { path, file } = &mut *sink {
            *file = open(path);
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let line = format!("[{}] {level} {}: {}\n", std::process::id(), record.target(), record.args());
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File { file: Some(f), .. } => {
                let _ = f.write_all(line.as_bytes());
            }
            Sink::File { file: None, .. } | Sink::Nowhere => {}
        }
    }

    fn flush(&self) {}
}
