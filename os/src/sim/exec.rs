//! `Os::spawn_exec` in a world: a child that runs an installed program
//! with only the descriptors it was handed and an environment of its own;
//! and `Os::rewrite_pid_file`, through which a master hands its pid file
//! over. Also what a process's environment and shared regions are made of
//! (`env_var`, `remove_env`, `shm_create`, `shm_discard`), which an exec
//! starts afresh.
//!
//! A world has no binaries: a program is an entry installed at a path
//! ([`SimOs::install_program`]), made afresh from its arguments at each
//! exec, as a real exec starts the program from its first instruction.
//! What the kernel does at exec is modelled: the child keeps only the
//! descriptors handed over (every other one is close-on-exec), no shared
//! region, no signal handler, the parent's group, user and umask; a path
//! with nothing installed makes it exit 127, as the real arm's child does
//! when `execve` fails.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;

use super::files::FileNode;
use super::net::Object;
use super::process::Proc;
use super::sched::start_thread;
use super::trace::TraceEvent;
use super::{Program, SimOs};
use crate::{Entry, ExecSpec, Fd, Pid};

/// What the real arm's child exits with when the program cannot run.
const EXEC_FAILED: i32 = 127;

impl SimOs {
    /// Installs `program` at `path`: what a later `spawn_exec` of `path`
    /// runs, in any process of the world. Installing again replaces it, as
    /// a new build replaces a binary on disk.
    pub fn install_program(&mut self, path: &Path, program: Program) {
        self.shared.lock().programs.insert(path.to_path_buf(), program);
    }

    pub(super) fn exec(&mut self, spec: &ExecSpec) -> io::Result<Pid> {
        let me = self.pid.0;
        let mut st = self.enter();
        st.fork_fault(me)?;
        let pid = Pid(st.next_pid);
        st.next_pid += 1;
        let parent = &st.procs[&me];
        let mut child = Proc::new(pid, Pid(me), parent.pgid);
        child.niceness = parent.niceness;
        child.uid = parent.uid;
        child.gid = parent.gid;
        child.umask = parent.umask;
        child.console = parent.console;
        let mut env: BTreeMap<String, OsString> = parent.env.clone().unwrap_or_else(|| st.config.env.clone());
        for name in &spec.env_unset {
            env.remove(name);
        }
        for (name, value) in &spec.env_set {
            env.insert(name.clone(), value.clone());
        }
        if spec.listen_pid {
            env.insert("LISTEN_PID".into(), pid.0.to_string().into());
        }
        child.env = Some(env);
        let mut handed = Vec::new();
        for (from, to) in &spec.fds {
            match parent.fds.get(&from.0) {
                Some(id) => handed.push((*to, *id)),
                None => return Err(io::Error::from_raw_os_error(libc::EBADF)),
            }
        }
        for (to, id) in handed {
            st.objects.get_mut(&id).expect("a descriptor's object exists").1 += 1;
            if let Some(old) = child.fds.insert(to, id) {
                st.objects.get_mut(&old).expect("a descriptor's object exists").1 -= 1;
            }
        }
        st.procs.insert(pid.0, child);
        st.record(me, TraceEvent::Exec { child: pid, program: spec.program.clone() });
        let entry: Entry<SimOs> = match st.programs.get(&spec.program) {
            Some(program) => program(spec.args.clone()),
            None => Box::new(|_| EXEC_FAILED),
        };
        start_thread(&self.shared, &mut st, pid, entry);
        Ok(pid)
    }

    /// `Os::rewrite_pid_file`: what the lock's file says, if the file at
    /// its path is still the locked one.
    pub(super) fn rewrite_pid(&mut self, lock: Fd, pid: Pid) -> io::Result<()> {
        let me = self.pid.0;
        let mut st = self.enter();
        let path = match st.object_of(me, lock).and_then(|id| st.objects.get(&id)) {
            Some((Object::PidLock { path }, _)) => path.clone(),
            _ => return Err(io::Error::from_raw_os_error(libc::EBADF)),
        };
        // The lock is on the open file: a file removed or replaced since
        // is not written through it, as an unlinked inode is not seen.
        let id = st.object_of(me, lock);
        if let Some(FileNode::Regular { content, lock: held, .. }) = st.files.get_mut(&path) {
            if *held == id {
                *content = format!("{pid}\n").into_bytes();
            }
        }
        st.record(me, TraceEvent::PidRewrite { pid });
        Ok(())
    }
}

impl SimOs {
    /// `env_var`: the process's own environment, or the world's.
    pub(super) fn env_of_self(&self, name: &str) -> Option<OsString> {
        let st = self.shared.lock();
        match &st.procs[&self.pid.0].env {
            Some(env) => env.get(name).cloned(),
            None => st.config.env.get(name).cloned(),
        }
    }

    /// `remove_env`: the process gets an environment of its own (the
    /// world's, copied) without `name`.
    pub(super) fn remove_env_of_self(&mut self, name: &str) {
        let me = self.pid.0;
        let mut st = self.shared.lock();
        let world = st.config.env.clone();
        st.proc(me).env.get_or_insert(world).remove(name);
    }

    /// `shm_create`: a zeroed buffer of words, mapped by this process.
    pub(super) fn create_region(&mut self, len: usize) -> io::Result<crate::Region> {
        let me = self.pid.0;
        let mut st = self.enter();
        let rate = st.config.faults.shm_fails;
        if st.fault(rate) {
            st.record(me, TraceEvent::ShmFault);
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let words = len.div_ceil(8).max(1);
        let buf: std::sync::Arc<[std::sync::atomic::AtomicU64]> =
            (0..words).map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        let id = st.next_region;
        st.next_region += 1;
        st.regions.insert(id, std::collections::BTreeSet::from([me]));
        st.proc(me).regions.insert(id);
        st.record(me, TraceEvent::ShmCreate { len, region: id });
        Ok(crate::Region::from_buffer(buf, id))
    }

    /// `shm_discard`: zeroes the words of a region this process maps.
    pub(super) fn discard(&mut self, region: &crate::Region) -> std::io::Result<()> {
        let me = self.pid.0;
        if !self.enter().procs[&me].regions.contains(&region.id()) {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL)); // not mapped
        }
        for w in 0..region.len() / 8 {
            region.store(w, 0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}
