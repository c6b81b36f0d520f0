//! The file model: what a path holds, how links resolve, and the helpers a
//! test or harness uses to set up files and users the daemon must meet.

use std::io;
use std::path::{Path, PathBuf};

use super::state::State;
use super::trace::TraceEvent;
use super::{Faults, SimOs};
use crate::{Fd, FileKind, Pid};

/// What a path of the simulated file system holds. Hard links are not
/// modelled: every file has one name.
pub(super) enum FileNode {
    Regular { content: Vec<u8>, lock: Option<u64>, uid: u32, mode: u32 },
    Socket { mode: u32 },
    Symlink { target: PathBuf },
}

impl FileNode {
    /// What taking this as a pid file meets, by the real arm's rules in
    /// its order: a refusal, or whether it is locked (and the pid it
    /// names). A stale file of ours that others may read is made 0600.
    pub(super) fn judge_pid_file(&mut self, uid: u32) -> Result<Option<Option<i32>>, crate::PidFileError> {
        use crate::PidFileError;
        match self {
            FileNode::Symlink { .. } => Err(PidFileError::Unsafe("is a symbolic link".into())),
            FileNode::Socket { .. } => Err(PidFileError::Io(io::Error::from_raw_os_error(libc::ENXIO))),
            FileNode::Regular { uid: owner, .. } if *owner != uid => {
                Err(PidFileError::Unsafe(format!("owned by uid {owner}, not this daemon's user ({uid})")))
            }
            FileNode::Regular { content, lock, mode, .. } => {
                if *mode & 0o077 != 0 {
                    *mode = 0o600;
                }
                Ok(lock.map(|_| std::str::from_utf8(content).ok().and_then(|s| s.trim().parse::<i32>().ok())))
            }
        }
    }

    /// The content of a file that must be private to `uid`, or why not,
    /// as `Os::read_private_file` says it.
    pub(super) fn read_private(&self, uid: u32, limit: usize) -> io::Result<Vec<u8>> {
        let denied = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        match self {
            FileNode::Symlink { .. } => denied("is a symbolic link".into()),
            FileNode::Socket { .. } => denied("not a regular file".into()),
            FileNode::Regular { uid: owner, .. } if *owner != uid => {
                denied(format!("owned by uid {owner}, not this daemon's user ({uid})"))
            }
            FileNode::Regular { mode, .. } if mode & 0o077 != 0 => {
                denied(format!("readable or writable by others (mode {mode:04o})"))
            }
            FileNode::Regular { content, .. } if content.len() > limit => {
                Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")))
            }
            FileNode::Regular { content, .. } => Ok(content.clone()),
        }
    }

    pub(super) fn kind(&self) -> FileKind {
        match self {
            FileNode::Regular { .. } => FileKind::Regular,
            FileNode::Socket { .. } => FileKind::Socket,
            FileNode::Symlink { .. } => FileKind::Symlink,
        }
    }
}

impl State {
    /// `path` with its symbolic links followed, as a kernel call that
    /// follows them sees it; `ELOOP` past a depth of 40, as on Linux.
    pub(super) fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let mut path = path.to_path_buf();
        for _ in 0..40 {
            match self.files.get(&path) {
                Some(FileNode::Symlink { target }) => {
                    path = match path.parent() {
                        Some(dir) => dir.join(target),
                        None => target.clone(),
                    };
                }
                _ => return Ok(path),
            }
        }
        Err(io::Error::from_raw_os_error(libc::ELOOP))
    }
}

/// Helpers for tests and harnesses: they act on the world directly, not
/// through an `Os` call a real process could make, to set up what a
/// scenario needs (another user's file, a process of another user).
impl SimOs {
    /// Puts a regular file at `path`, owned by `uid`, with permission bits
    /// `mode` and `content`, replacing whatever was there: what another
    /// user or a careless tool may have left for the daemon to find.
    pub fn plant_file(&mut self, path: &Path, uid: u32, mode: u32, content: &[u8]) {
        let me = self.pid.0;
        let mut st = self.enter();
        let node = FileNode::Regular { content: content.to_vec(), lock: None, uid, mode: mode & 0o7777 };
        st.files.insert(path.to_path_buf(), node);
        st.record(me, TraceEvent::PlantFile { path: path.to_path_buf(), uid, mode });
    }

    /// Puts a symbolic link to `target` at `path`, replacing whatever was
    /// there. The world follows it where the kernel would (`connect`) and
    /// refuses it where `O_NOFOLLOW` would.
    pub fn plant_symlink(&mut self, path: &Path, target: &Path) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.files.insert(path.to_path_buf(), FileNode::Symlink { target: target.to_path_buf() });
        st.record(me, TraceEvent::PlantSymlink { path: path.to_path_buf(), target: target.to_path_buf() });
    }

    /// Sets the permission bits of the regular file or socket at `path`
    /// (`chmod`, which follows no link here); `false` if there is none.
    pub fn set_file_mode(&mut self, path: &Path, mode: u32) -> bool {
        let mut st = self.enter();
        match st.files.get_mut(path) {
            Some(FileNode::Regular { mode: m, .. } | FileNode::Socket { mode: m }) => {
                *m = mode & 0o7777;
                true
            }
            _ => false,
        }
    }

    /// The permission bits of what is at `path` (`lstat`: a link's own are
    /// 0777), for tests.
    pub fn file_mode(&self, path: &Path) -> Option<u32> {
        self.shared.lock().files.get(path).map(|node| match node {
            FileNode::Regular { mode, .. } | FileNode::Socket { mode } => *mode,
            FileNode::Symlink { .. } => 0o777,
        })
    }

    /// Makes the calling process run as user `uid` from now on; the
    /// children it spawns afterwards inherit it. A harness client calls it
    /// to connect "as another user": the daemon's `peer` then tells that
    /// uid.
    pub fn set_uid(&mut self, uid: u32) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).uid = uid;
        st.record(me, TraceEvent::SetUid(uid));
    }

    /// As [`SimOs::set_uid`], for the process's group.
    pub fn set_gid(&mut self, gid: u32) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.proc(me).gid = gid;
        st.record(me, TraceEvent::SetGid(gid));
    }

    /// The content of a simulated file, for tests.
    pub fn file_content(&self, path: &Path) -> Option<Vec<u8>> {
        match self.shared.lock().files.get(path) {
            Some(FileNode::Regular { content, .. }) => Some(content.clone()),
            _ => None,
        }
    }

    /// Regions this process maps now, for leak checks.
    pub fn mapped_regions(&self) -> Vec<u64> {
        self.shared.lock().procs[&self.pid.0].regions.iter().copied().collect()
    }

    /// Descriptors this process holds now, for leak checks.
    pub fn open_fds(&self) -> Vec<Fd> {
        self.shared.lock().procs[&self.pid.0].fds.keys().map(|f| Fd(*f)).collect()
    }

    /// Pids of the live processes of the world, for leak checks.
    pub fn live_processes(&self) -> Vec<Pid> {
        self.shared.lock().procs.values().filter(|p| p.alive()).map(|p| p.pid).collect()
    }

    /// Changes the world's fault rates from now on: a harness turns faults
    /// off once its chaos phase is over, so that liveness is checked in a
    /// world that lets progress happen (TigerBeetle's VOPR does the same).
    pub fn set_faults(&mut self, faults: Faults) {
        let me = self.pid.0;
        let mut st = self.enter();
        st.config.faults = faults;
        st.record(me, TraceEvent::Faults(faults));
    }

    /// A number from the world's seeded generator, for simulated workloads.
    pub fn random(&mut self, below: u64) -> u64 {
        let mut st = self.enter();
        st.below(below)
    }
}
