//! Helpers for the end-to-end tests: a temp dir per test, fixture daemons
//! started as real processes, and waits on conditions with deadlines.
//!
//! Every test gets its own directory, socket and pid file, so tests run in
//! parallel. Nothing sleeps to synchronise: a wait looks at its condition
//! again on each event that could change it (a file in a test's directory
//! written, a process gone: see [`wait`]) and fails at a deadline.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use forkd::{Client, ClientError, ConnectOptions};
use forkd_os::Address;
use serde_json::Value;

pub mod wait;
pub use wait::{wait_exit, wait_gone, wait_until, Progress, Wake};

/// Makes `cmd`'s process get descriptor `fd` of ours as its fd 3, open
/// across its exec: a socket handed over as systemd's socket activation
/// hands one (`LISTEN_FDS=1`).
pub fn pass_as_fd3(cmd: &mut Command, fd: i32) {
    // Safety: dup2 between fork and exec, on descriptors we own.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it then.
            let ok = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) >= 0 } else { libc::dup2(fd, 3) >= 0 };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The default bound of a wait.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A directory of the test's own, removed when dropped; every wait wakes
/// on what happens in it while it lives.
pub struct TempDir(forkd_os::testing::TempDir);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        TempDir::with_prefix("forkd-e2e", name).expect("create the test directory")
    }

    /// `TMP/PREFIX-PID-N-NAME`: the pid first, so that a sweep can tell the
    /// directories of processes that died before they cleaned up.
    pub fn with_prefix(prefix: &str, name: &str) -> std::io::Result<TempDir> {
        let dir = forkd_os::testing::TempDir::with_prefix(prefix, name)?;
        wait::watch_dir(dir.path().to_path_buf());
        Ok(TempDir(dir))
    }
}

impl std::ops::Deref for TempDir {
    type Target = forkd_os::testing::TempDir;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        wait::unwatch_dir(self.0.path());
    }
}

/// The path of a workspace binary (`echo-daemon`, `copy-daemon`), built by
/// `cargo xtask e2e` before the tests run.
pub fn bin(name: &str) -> PathBuf {
    // target/debug/deps/this-test -> target/debug/NAME
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (cargo xtask e2e does)",
        path.display()
    );
    path
}

/// Whether a process is alive (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A fixture daemon running in the foreground (`-f -v`) in a test's
/// directory, with its socket and pid file there; its stderr goes to
/// `stderr.log` there. Dropping it kills its process group.
pub struct Daemon {
    pub child: Child,
    pub socket: Address,
    pub pid_file: PathBuf,
    pub dir: PathBuf,
}

impl Daemon {
    /// Starts `bin` with `-f -v --socket unix://DIR/d.sock --pidfile
    /// DIR/d.pid` plus `args`, and waits until it answers.
    pub fn start(dir: &TempDir, bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let socket = Address::Unix(dir.join("d.sock"));
        Daemon::start_at(dir, bin_name, &socket, args, env)
    }

    pub fn start_at(dir: &TempDir, bin_name: &str, socket: &Address, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin(bin_name));
        cmd.args(["-f", "-v", "--socket", &socket.to_string(), "--pidfile"]).arg(dir.join("d.pid")).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::start_command(dir, cmd, socket)
    }

    /// Starts `cmd` (a daemon told to serve on `socket` with the pid file
    /// `DIR/d.pid`) in `dir`, in a process group of its own, its stderr in
    /// `DIR/stderr.log`, and waits until it answers.
    pub fn start_command(dir: &TempDir, mut cmd: Command, socket: &Address) -> Daemon {
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        cmd.current_dir(dir.path())
            // The daemon's clients find the token themselves; one in the
            // environment the tests run in must not stand in for it.
            .env_remove("FORKD_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let child = cmd.spawn().expect("start the daemon");
        let mut d =
            Daemon { child, socket: socket.clone(), pid_file: dir.join("d.pid"), dir: dir.path().to_path_buf() };
        d.wait_answering();
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until the daemon answers `daemon.info`.
    pub fn wait_answering(&mut self) {
        let socket = self.socket.clone();
        let options = self.connect_options();
        let log = self.dir.join("stderr.log");
        let pid = self.pid();
        let child = &mut self.child;
        // It creates its socket, then logs that it is ready; or it exits.
        Wake::new().process(pid).until("the daemon to answer", DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the daemon exited before answering: {status}\n{log}");
            }
            Client::connect_with(&socket, &options).and_then(|mut c| c.call("daemon.info", Value::Null)).is_ok()
        });
    }

    /// How a client reaches this daemon: on tcp with the token from the
    /// file beside its pid file, as the binary's own `call` finds it.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new(DEADLINE).token_file(self.token_file())
    }

    /// Where the daemon keeps its tcp token.
    pub fn token_file(&self) -> PathBuf {
        self.pid_file.with_extension("token")
    }

    /// The daemon's tcp token, once it is written.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file()).expect("read the token file").trim().to_string()
    }

    pub fn client(&self) -> Client {
        Client::connect_with(&self.socket, &self.connect_options()).expect("connect to the daemon")
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.client().call(method, params)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        // Safety: kill on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the daemon to exit and returns its exit code (or 128 +
    /// signal).
    pub fn wait_exit(&mut self, deadline: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match wait_exit(&mut self.child, deadline) {
            Some(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            None => panic!("the daemon did not exit within {deadline:?}:\n{}", self.log()),
        }
    }

    /// Runs the daemon binary as a control client: `BIN --socket S ARGS`.
    pub fn control(&self, bin_name: &str, args: &[&str]) -> std::process::Output {
        Command::new(bin(bin_name))
            .arg("--socket")
            .arg(self.socket.to_string())
            .args(args)
            .output()
            .expect("run the control command")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Safety: kill our own child's process group, then reap it.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Runs a command and returns its output, for tools such as curl.
pub fn run<I, S>(program: &str, args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}
