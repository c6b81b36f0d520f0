//! A daemon built from code, ready to serve: the library's entry point,
//! for a service that has its own command line, or none.

use forkd_core::daemon::{StartError, Stopped};

use crate::serve::{self, Failed, Mode};

/// A daemon that [`Builder::build`](crate::Builder::build) checked, ready
/// to serve. Serving blocks until it stops.
///
/// ```no_run
/// use forkd::{Builder, Method};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let daemon = Builder::new("Embedded")
///         .socket("unix:///run/embedded.sock")
///         .pid_file("/run/embedded.pid")
///         .method(Method::new("my.ping", |_ctl, _args| "pong"))
///         .build()?;
///     let stopped = daemon.serve()?;
///     println!("stopped: {}", stopped.reason);
///     Ok(())
/// }
/// ```
pub struct Daemon {
    pub(crate) inner: forkd_core::daemon::Daemon,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("description", &self.inner.config.description)
            .field("address", &self.inner.config.address)
            .field("workers", &self.inner.workers.len())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Serves in the foreground (as under systemd's `Type=notify`, whose
    /// notifications it sends when `NOTIFY_SOCKET` is set) until it is
    /// stopped. Call it before starting any thread: a daemon forks.
    pub fn serve(self) -> Result<Stopped, StartError> {
        serve::serve_real(self.inner, Mode::Foreground).map_err(|f| f.error)
    }

    /// Detaches, as `-d` does, and serves. The calling process becomes the
    /// launcher: it waits until the daemon is ready and then exits 0, or 1
    /// with the daemon's error on stderr, so this returns only in the
    /// detached daemon, once it has stopped (or failed to start: then the
    /// launcher has said why).
    pub fn serve_detached(self) -> Result<Stopped, StartError> {
        serve::serve_real(self.inner, Mode::Detached).map_err(|Failed { error, .. }| error)
    }
}
