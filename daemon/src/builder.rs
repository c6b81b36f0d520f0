//! The builder a daemon binary starts from: the seed's configuration array,
//! `setup()` and `install()` as method calls, then `run()`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::worker_options::WorkerOptions;
use forkd_core::daemon::{Config, Ctl, Daemon};
use forkd_core::event::{Event, ListenerId, Topic};
use forkd_core::rpc::Method;
use forkd_core::supervisor::{RestartPolicy, WorkerSpec};
use forkd_core::worker::Worker;
use forkd_os::Address;

/// Builds and runs a daemon. Every setter has the seed's default; an invalid
/// value is reported by `run` (or `build`) before anything starts.
pub struct Builder {
    pub(crate) daemon: Daemon,
    pub(crate) errors: Vec<String>,
    pub(crate) log_file: Option<PathBuf>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("description", &self.daemon.config.description)
            .field("address", &self.daemon.config.address)
            .field("workers", &self.daemon.workers.iter().map(|(s, _)| &s.name).collect::<Vec<_>>())
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A daemon with this description (the console's banner).
    pub fn new(description: impl Into<String>) -> Builder {
        Builder { daemon: Daemon::new(Config::new(description)), errors: Vec::new(), log_file: None }
    }

    fn config(&mut self) -> &mut Config {
        &mut self.daemon.config
    }

    /// The daemon's own version (typically `env!("CARGO_PKG_VERSION")` of
    /// the program), as `daemon.info`, `status` and the OpenRPC document
    /// tell it; forkd's version unless set (`daemon.info` tells forkd's
    /// too, as `forkd`).
    pub fn version(mut self, version: impl Into<String>) -> Builder {
        self.config().version = version.into();
        self
    }

    /// The control socket (seed: `sockethandler`): `unix:///abs.sock`,
    /// `unix://relative.sock` (relative to the launch directory),
    /// `tcp://127.0.0.1:10042` or `tcp://[::1]:10042`. Default
    /// `unix://daemon.sock`.
    pub fn socket(mut self, address: &str) -> Builder {
        match address.parse::<Address>() {
            Ok(a) => self.config().address = a,
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Permission bits of a unix control socket (default 0600: only the
    /// daemon's user may connect).
    pub fn socket_mode(mut self, mode: u32) -> Builder {
        if mode > 0o777 {
            self.errors.push(format!("invalid socket mode {mode:o}: expected at most 0777"));
        }
        self.config().socket_mode = mode;
        self
    }

    /// The pid file (seed: `pidfile`, default `daemon.pid`).
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Builder {
        let path = path.into();
        if path.as_os_str().is_empty() {
            self.errors.push("invalid pid file: empty path".into());
        }
        self.config().pid_file = path;
        self
    }

    /// Bytes read from a connection at a time (seed: `socketbuffer`, 1024).
    pub fn socket_buffer(mut self, bytes: usize) -> Builder {
        if bytes == 0 {
            self.errors.push("invalid socket buffer: 0 bytes".into());
        }
        self.config().socket_buffer = bytes;
        self
    }

    /// A connection idle this long is closed (seed: `sockettimeout`, 15 s).
    pub fn socket_timeout(mut self, timeout: Duration) -> Builder {
        if timeout.is_zero() {
            self.errors.push("invalid socket timeout: 0".into());
        }
        self.config().idle_timeout = timeout;
        self
    }

    /// Connections served at once (seed: `socketmaxconnections`, 10).
    pub fn socket_max_connections(mut self, n: usize) -> Builder {
        if n == 0 {
            self.errors.push("invalid max connections: 0".into());
        }
        self.config().max_connections = n;
        self
    }

    /// How many unsent bytes of events a subscriber of the event stream
    /// may have before it is dropped (default 256 KiB).
    pub fn event_buffer(mut self, bytes: usize) -> Builder {
        if bytes < 1024 {
            self.errors.push(format!("invalid event buffer: {bytes} bytes, at least 1024"));
        }
        self.config().event_buffer = bytes;
        self
    }

    /// The largest request accepted (default 1 MiB).
    pub fn max_request(mut self, bytes: usize) -> Builder {
        if bytes < 64 {
            self.errors.push(format!("invalid max request: {bytes} bytes is less than 64"));
        }
        self.config().max_request = bytes;
        self
    }

    /// The daemon's niceness (seed: `niceness`); a warning if not permitted.
    pub fn niceness(mut self, n: i32) -> Builder {
        if !(-20..=19).contains(&n) {
            self.errors.push(format!("invalid niceness {n}: expected -20 to 19"));
        }
        self.config().niceness = Some(n);
        self
    }

    /// tcp only: the file the daemon writes its token to at start (mode
    /// 0600), and where the console's `status`, `stop` and `call` read it.
    /// Default: the pid file's path with the extension `token`
    /// (`daemon.pid` → `daemon.token`).
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Builder {
        let path = path.into();
        if path.as_os_str().is_empty() {
            self.errors.push("invalid token file: empty path".into());
        }
        self.config().token_file = Some(path);
        self
    }

    /// tcp only: serve without a token, so that anyone who can reach the
    /// port controls the daemon. An explicit opt-out: it is logged as a
    /// warning at every start, and the daemon refuses to start with it on
    /// an address other than loopback.
    pub fn without_token(mut self) -> Builder {
        self.config().tcp_without_token = true;
        self
    }

    /// Accepts this name in an HTTP `Host` header, besides loopback names
    /// and literal IP addresses (which are always accepted): a name without
    /// a port, compared case-insensitively. Other names are refused, so
    /// that a web page cannot reach the daemon through DNS rebinding.
    pub fn allow_host(mut self, name: &str) -> Builder {
        match crate::validate::host(name) {
            Ok(h) => self.config().allowed_hosts.push(h),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Serves browser requests from this origin, `scheme://host[:port]`
    /// (e.g. `https://admin.example.com`). A request with any other
    /// `Origin` header is refused; none is allowed by default.
    pub fn allow_origin(mut self, origin: &str) -> Builder {
        match crate::validate::origin(origin) {
            Ok(o) => self.config().allowed_origins.push(o),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// unix only: lets this user id connect, besides the daemon's own user
    /// and root (the daemon checks the peer's credentials).
    pub fn allow_uid(mut self, uid: u32) -> Builder {
        self.config().allowed_uids.push(uid);
        self
    }

    /// unix only: lets users whose primary group is this one connect.
    pub fn allow_gid(mut self, gid: u32) -> Builder {
        self.config().allowed_gids.push(gid);
        self
    }

    /// The most entries in a JSON-RPC batch or a `system.multicall`
    /// (default 1000; at least 1).
    pub fn max_batch(mut self, n: usize) -> Builder {
        if n == 0 {
            self.errors.push("invalid max batch: 0".into());
        }
        self.config().max_batch = n;
        self
    }

    /// A request must arrive whole within this time from its first byte,
    /// however slowly it trickles in (default 10 s; more than 0).
    pub fn request_timeout(mut self, timeout: Duration) -> Builder {
        if timeout.is_zero() {
            self.errors.push("invalid request timeout: 0".into());
        }
        self.config().request_timeout = timeout;
        self
    }

    /// The most worker processes at once, stopping ones included;
    /// `worker.scale` cannot pass it (default 1024; at least 1).
    pub fn max_workers(mut self, n: usize) -> Builder {
        if n == 0 {
            self.errors.push("invalid max workers: 0".into());
        }
        self.config().max_workers = n;
        self
    }

    /// How workers are restarted, and how long a stopping worker gets.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Builder {
        self.config().restart = policy;
        self
    }

    /// How long a stopping worker gets to spin down before SIGTERM, and as
    /// long again before SIGKILL (the seed waits 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Builder {
        self.config().restart.stop_timeout = timeout;
        self
    }

    /// How long the new master of an upgrade in place (`daemon.upgrade`,
    /// SIGUSR2, the `upgrade` command) has to say it is ready before it is
    /// killed and the old master serves on (default 30 s).
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Builder {
        self.config().upgrade_timeout = timeout;
        self
    }

    /// In daemon mode, log to this file (reopened on SIGUSR1).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.log_file = Some(path.into());
        self
    }

    /// Adds an RPC method (the seed's `RpcMethod::create`).
    pub fn method(mut self, method: Method<Ctl>) -> Builder {
        if let Err(e) = self.daemon.registry.add(method) {
            self.errors.push(e.to_string());
        }
        self
    }

    /// Installs a worker (the seed's `install($worker, $looptime,
    /// $forever)`): `make` builds the worker object for each of its
    /// processes, `options` says its name, looptime, restart policy and
    /// how many instances run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use forkd::{BoxError, Builder, Context, Restart, Worker, WorkerOptions};
    ///
    /// struct Idle;
    ///
    /// impl Worker for Idle {
    ///     fn work(&mut self, _ctx: &mut Context<'_>) -> Result<(), BoxError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let daemon = Builder::new("Idle Daemon")
    ///     .worker(WorkerOptions::new("idle").looptime(Duration::from_millis(500)), || Idle)
    ///     .worker(WorkerOptions::new("pool").instances(4).restart(Restart::OnFailure), || Idle)
    ///     .build();
    /// assert!(daemon.is_ok());
    /// ```
    pub fn worker<W, F>(mut self, options: WorkerOptions, make: F) -> Builder
    where
        W: Worker,
        F: Fn() -> W + 'static,
    {
        let WorkerOptions { name, looptime, restart, instances, reload_batch, reload_timeout } = options;
        if self.daemon.workers.iter().any(|(s, _)| s.name == name) {
            self.errors.push(format!("worker {name:?} is installed twice"));
        } else if name.is_empty() {
            self.errors.push("a worker needs a name".into());
        } else if looptime.is_zero() {
            self.errors.push(format!("worker {name:?}: looptime must be more than 0"));
        } else if reload_batch == 0 || reload_timeout.is_zero() {
            self.errors.push(format!("worker {name:?}: reload batch and timeout must be more than 0"));
        } else {
            let spec = WorkerSpec { name, looptime, restart, instances, reload_batch, reload_timeout };
            self.daemon.workers.push((spec, Box::new(move || Box::new(make()) as Box<dyn Worker>)));
        }
        self
    }

    /// Subscribes a listener to events of `topic`.
    pub fn on(mut self, topic: Topic, listener: impl FnMut(&mut Ctl, &Event) + 'static) -> Builder {
        self.daemon.bus.subscribe(topic, listener);
        self
    }

    /// Subscribes a listener under a name; a default listener's name
    /// (see [`defaults`](crate::defaults)) replaces that default.
    pub fn on_named(mut self, topic: Topic, name: &str, listener: impl FnMut(&mut Ctl, &Event) + 'static) -> Builder {
        self.daemon.bus.subscribe_named(topic, name, listener);
        self
    }

    /// Removes a default listener by name, e.g. `defaults::STOP_ON_INT`.
    pub fn without_default(mut self, name: &str) -> Builder {
        self.daemon.bus.unsubscribe(&ListenerId(name.to_string()));
        self
    }

    /// Parses the console arguments (`std::env::args`) and acts on them:
    /// runs the daemon, or prints the usage, or controls a running one.
    /// For a binary that is its own console.
    pub fn run(self) -> ExitCode {
        let args: Vec<String> = std::env::args().collect();
        ExitCode::from(crate::cli::main(self, &args))
    }

    /// As [`run`](Builder::run), with the given arguments, the program's
    /// name first: for a service that parses its own command line and
    /// hands the daemon's part on.
    ///
    /// ```
    /// # use forkd::Builder;
    /// // `--help` prints the usage and exits 0, without starting anything.
    /// let code = Builder::new("Echo Daemon").run_from(["echo-daemon", "--help"]);
    /// assert_eq!(code, std::process::ExitCode::SUCCESS);
    /// ```
    pub fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.into().to_string_lossy().into_owned()).collect();
        ExitCode::from(crate::cli::main(self, &args))
    }

    /// Checks the configuration and returns the daemon, ready to serve,
    /// without a console: for a library that starts a daemon from code.
    /// Relative paths (a unix socket, the pid and token files) are resolved
    /// against the current directory now, since a detached daemon moves to
    /// `/`. Logging is the caller's: install a `log` logger first if the
    /// daemon's lines are wanted.
    ///
    /// ```
    /// # use forkd::Builder;
    /// let err = Builder::new("Bad").socket("ftp://nowhere").pid_file("").build().unwrap_err();
    /// assert_eq!(err.problems().len(), 2, "{err}");
    /// ```
    pub fn build(self) -> Result<crate::Daemon, BuildError> {
        if !self.errors.is_empty() {
            return Err(BuildError { problems: self.errors });
        }
        let mut daemon = self.daemon;
        if let Ok(cwd) = std::env::current_dir() {
            let c = &mut daemon.config;
            c.address = c.address.resolve(&cwd);
            c.pid_file = cwd.join(&c.pid_file);
            c.token_file = c.token_file.take().map(|p| cwd.join(p));
        }
        Ok(crate::Daemon { inner: daemon })
    }
}

/// Why [`Builder::build`] refused a configuration: every invalid value,
/// each with what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    problems: Vec<String>,
}

impl BuildError {
    /// One line per invalid value.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid daemon configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_setters_fill_the_config_and_refuse_invalid_values() {
        let b = Builder::new("d")
            .token_file("/run/d.token")
            .without_token()
            .allow_host("Box.Example")
            .allow_origin("https://admin.example:8443")
            .allow_uid(1001)
            .allow_gid(100)
            .max_batch(10)
            .request_timeout(Duration::from_secs(3))
            .max_workers(8);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let c = &b.daemon.config;
        assert_eq!(c.token_file, Some(PathBuf::from("/run/d.token")));
        assert!(c.tcp_without_token);
        assert_eq!(c.allowed_hosts, ["box.example"]);
        assert_eq!(c.allowed_origins, ["https://admin.example:8443"]);
        assert_eq!((&c.allowed_uids[..], &c.allowed_gids[..]), (&[1001][..], &[100][..]));
        assert_eq!((c.max_batch, c.request_timeout, c.max_workers), (10, Duration::from_secs(3), 8));

        let b = Builder::new("d")
            .token_file("")
            .allow_host("a:80")
            .allow_origin("https://x/")
            .max_batch(0)
            .request_timeout(Duration::ZERO)
            .max_workers(0);
        assert_eq!(b.errors.len(), 6, "{:?}", b.errors);
    }
}
