//! The mock of the `Os` trait that tests of other crates use where a whole
//! simulated world would be more than they need. mockall needs the trait's
//! methods spelled out: they are, once, here, beside the trait. A test file
//! includes it with `#[path = ".../os/tests/support/mock_os.rs"] mod mock_os;`.

use std::io;
use std::path::Path;

use forkd_os::{
    Address, Entry, ExitStatus, Fd, FileKind, Instant, KillTarget, ListenOptions, Os, Peer, Pid, PidFileError, PollFd,
    ProcessStats, Region, Signal, SignalSet, SpawnOptions,
};
use mockall::mock;

mock! {
    pub Os {}
    impl Os for Os {
        fn pid(&self) -> Pid;
        fn parent_pid(&self) -> Pid;
        fn now(&self) -> Instant;
        fn sleep_until(&mut self, deadline: Instant);
        fn spawn(&mut self, opts: SpawnOptions, entry: Entry<MockOs>) -> io::Result<Pid>;
        fn spawn_exec(&mut self, spec: &forkd_os::ExecSpec) -> io::Result<Pid>;
        fn try_reap(&mut self) -> io::Result<Option<(Pid, ExitStatus)>>;
        fn kill(&mut self, target: KillTarget, signal: Signal) -> io::Result<()>;
        fn wait_gone(&mut self, pid: Pid, deadline: Instant) -> io::Result<bool>;
        fn detach(&mut self, launcher: Entry<MockOs>) -> io::Result<()>;
        fn close_inherited(&mut self, keep: &[Fd]);
        fn setsid(&mut self) -> io::Result<()>;
        fn set_umask(&mut self, umask: u32) -> u32;
        fn chdir_root(&mut self) -> io::Result<()>;
        fn redirect_stdio_to_null(&mut self) -> io::Result<()>;
        fn set_niceness(&mut self, niceness: i32) -> io::Result<()>;
        fn set_parent_death_signal(&mut self, signal: Signal) -> io::Result<()>;
        fn install_signals(&mut self, signals: &[Signal]) -> io::Result<Fd>;
        fn take_signals(&mut self) -> io::Result<SignalSet>;
        fn listen(&mut self, addr: &Address, opts: ListenOptions) -> io::Result<Fd>;
        fn accept(&mut self, listener: Fd) -> io::Result<Fd>;
        fn connect(&mut self, addr: &Address) -> io::Result<Fd>;
        fn socket_pair(&mut self) -> io::Result<(Fd, Fd)>;
        fn pipe(&mut self) -> io::Result<(Fd, Fd)>;
        fn read(&mut self, fd: Fd, buf: &mut [u8]) -> io::Result<usize>;
        fn write(&mut self, fd: Fd, buf: &[u8]) -> io::Result<usize>;
        fn close(&mut self, fd: Fd);
        fn poll(&mut self, fds: &mut [PollFd], deadline: Option<Instant>) -> io::Result<usize>;
        fn shm_create(&mut self, len: usize) -> io::Result<Region>;
        unsafe fn shm_unmap(&mut self, region: Region);
        fn shm_keep_from_children(&mut self, region: &Region) -> io::Result<()>;
        fn shm_discard(&mut self, region: &Region) -> io::Result<()>;
        fn lock_pid_file(&mut self, path: &Path) -> Result<Fd, PidFileError>;
        fn rewrite_pid_file(&mut self, lock: Fd, pid: Pid) -> io::Result<()>;
        fn remove_file(&mut self, path: &Path) -> io::Result<()>;
        fn file_exists(&self, path: &Path) -> bool;
        fn file_kind(&self, path: &Path) -> Option<FileKind>;
        fn read_private_file(&mut self, path: &Path, limit: usize) -> io::Result<Option<Vec<u8>>>;
        fn write_private_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
        fn env_var(&self, name: &str) -> Option<std::ffi::OsString>;
        fn remove_env(&mut self, name: &str);
        fn take_inherited(&mut self, fd: Fd) -> io::Result<Fd>;
        fn send_datagram(&mut self, to: &std::ffi::OsStr, data: &[u8]) -> io::Result<()>;
        fn uid(&self) -> u32;
        fn peer(&mut self, fd: Fd) -> io::Result<Peer>;
        fn random_bytes(&mut self, buf: &mut [u8]) -> io::Result<()>;
        fn process_stats(&mut self, pid: Pid) -> io::Result<ProcessStats>;
        fn resident_memory(&mut self, pid: Pid) -> io::Result<u64>;
    }
}
