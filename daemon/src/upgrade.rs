//! The facade's part of a master's upgrade in place: what the running
//! binary will execute (resolved once, at start), and, in a new master,
//! taking what the old one handed over.
//!
//! The program is the path the binary was started as, made absolute at
//! start: `argv[0]` joined to the directory it was started in when it
//! names a path, else found on `PATH` as the shell found it. Not
//! `/proc/self/exe`, which resolves to the running inode: after a new build
//! is installed over the old one, that is the old, deleted file. Only when
//! `argv[0]` cannot be found is `/proc/self/exe`'s link text used, without
//! its ` (deleted)` tail. Symbolic links are not resolved either, so that
//! an install that switches a link is followed.
//!
//! The arguments are the original ones, `-d` included: a new master finds
//! `FORKD_UPGRADE` in its environment and, so told, serves as detached
//! without forking again (it stays in its predecessor's session and
//! cgroup, and the pid file is rewritten for it). It parses relative paths
//! against the directory the first master was started in
//! (`FORKD_UPGRADE_CWD`), not the `/` a detached master moved to.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use forkd_core::daemon::{parse_upgrade_env, parse_upgrade_state, HandOver, UpgradeCommand, UPGRADE_ENV};
use forkd_os::{Fd, Os, PollFd, Ready};

/// The directory relative paths of the command line are resolved against
/// in a new master.
pub(crate) const CWD_ENV: &str = "FORKD_UPGRADE_CWD";

/// The directory this process resolves relative paths against: the one
/// its first master was started in, for a new master; else its own.
pub(crate) fn start_dir() -> io::Result<PathBuf> {
    match std::env::var_os(CWD_ENV).filter(|_| std::env::var_os(UPGRADE_ENV).is_some()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => std::env::current_dir(),
    }
}

/// The most the handover pipe may hold.
const MAX_STATE: usize = 4096;

/// What this process will execute to upgrade: itself as started, with
/// its arguments. `None` when its path cannot be found.
pub(crate) fn command(cwd: &Path) -> Option<UpgradeCommand> {
    let mut argv = std::env::args_os();
    let argv0 = PathBuf::from(argv.next()?);
    let program = resolve(&argv0, cwd, std::env::var_os("PATH")).or_else(proc_self_exe)?;
    Some(UpgradeCommand {
        program,
        args: argv.collect(),
        env_set: vec![(CWD_ENV.to_string(), cwd.as_os_str().to_owned())],
    })
}

/// `argv0` as an absolute path: joined to `cwd` when it names a path,
/// else the first executable of that name on `path`.
fn resolve(argv0: &Path, cwd: &Path, path: Option<OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if argv0.as_os_str().is_empty() {
        return None;
    }
    if argv0.components().count() > 1 || argv0.is_absolute() {
        let plain: PathBuf = argv0.components().filter(|c| *c != std::path::Component::CurDir).collect();
        return Some(cwd.join(plain));
    }
    std::env::split_paths(&path?).map(|dir| cwd.join(dir).join(argv0)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The running binary's path as the kernel tells it, without the tail it
/// gets once the file was replaced.
fn proc_self_exe() -> Option<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe").ok()?;
    let text = link.to_str()?;
    Some(PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text)))
}

/// In a new master: takes the readiness pipe, the pid lock and the
/// handover pipe that `FORKD_UPGRADE` names, and reads the latter to its
/// end. `Ok(None)` in a master that was started, not executed by another.
pub(crate) fn handed_over<O: Os>(os: &mut O) -> io::Result<Option<HandOver>> {
    let Some(value) = os.env_var(UPGRADE_ENV) else { return Ok(None) };
    // Taken: no worker, and nothing a worker starts, may take it for its own.
    os.remove_env(UPGRADE_ENV);
    os.remove_env(CWD_ENV);
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{UPGRADE_ENV}: expected READY,LOCK,STATE"));
    let (ready, lock, state) = value.to_str().and_then(parse_upgrade_env).ok_or_else(bad)?;
    let ready = os.take_inherited(ready)?;
    let lock = os.take_inherited(lock)?;
    let state = os.take_inherited(state)?;
    let text = read_to_end(os, state);
    os.close(state);
    Ok(Some(parse_upgrade_state(&String::from_utf8_lossy(&text?), ready, lock)))
}

/// Reads `fd` to its end (at most `MAX_STATE` bytes), waiting for data.
fn read_to_end<O: Os>(os: &mut O, fd: Fd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match os.read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) if out.len() + n > MAX_STATE => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the handover says too much"))
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(fd, Ready::READ)];
                os.poll(&mut fds, None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_argv0_made_absolute_or_found_on_path() {
        let cwd = Path::new("/srv/app");
        assert_eq!(resolve(Path::new("./bin/d"), cwd, None), Some(PathBuf::from("/srv/app/bin/d")));
        assert_eq!(resolve(Path::new("/usr/bin/d"), cwd, None), Some(PathBuf::from("/usr/bin/d")));
        assert_eq!(resolve(Path::new(""), cwd, None), None);
        // On PATH: the first executable of that name.
        let sh = resolve(Path::new("sh"), cwd, Some("/nonexistent:/bin:/usr/bin".into())).unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{sh:?}");
        assert_eq!(resolve(Path::new("no-such-binary-here"), cwd, Some("/bin".into())), None);
    }
}
