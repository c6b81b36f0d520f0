//! The contract's checks of a master's upgrade: executing a program with
//! the descriptors and environment it is handed, and the pid file
//! rewritten through the lock a new master inherits.

use super::*;
use crate::{ExecSpec, Pid};

/// The program gets exactly the descriptor handed over, under its new
/// number, `LISTEN_PID` set to its own pid, the variables set and not the
/// ones unset, and its arguments; its exit is reaped like any child's.
pub fn spawn_exec_hands_over_descriptors_and_environment<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let program = os.install_reporter(dir);
    let (r, w) = os.pipe().unwrap();
    let spec = ExecSpec {
        program,
        args: vec!["hello".into()],
        env_set: vec![("FORKD_CONTRACT".into(), "set".into())],
        env_unset: vec!["HOME".into()],
        fds: vec![(w, 5)],
        listen_pid: true,
    };
    let child = os.spawn_exec(&spec).unwrap();
    os.close(w);
    let line = String::from_utf8(read_to_end(os, r)).unwrap();
    assert_eq!(line, format!("{child} set hello unset\n"), "what the program was handed");
    os.close(r);
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(3))]);
    os.close(sig);
}

/// A path nothing can be executed from still forks: the child exits 127,
/// and what was handed to it is closed with it.
pub fn spawn_exec_of_nothing_exits_127<O: Os>(os: &mut O, dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (r, w) = os.pipe().unwrap();
    let spec = ExecSpec { program: dir.join("no-such-program"), fds: vec![(w, 4)], ..ExecSpec::default() };
    let child = os.spawn_exec(&spec).unwrap();
    os.close(w);
    assert!(read_to_end(os, r).is_empty(), "the child wrote nothing");
    os.close(r);
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(127))]);
    os.close(sig);
}

/// `rewrite_pid_file` makes the locked file name another pid, and a
/// shorter pid written after a longer one leaves nothing of it behind.
pub fn pid_file_rewritten_through_its_lock<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let path = dir.join("rewrite.pid");
    let lock = os.lock_pid_file(&path).unwrap();
    let me = os.pid();
    assert_eq!(os.content_of(&path), Some(format!("{me}\n").into_bytes()));
    // Any pid, a running one here so that the refusal below is `Locked`.
    let named = os.parent_pid();
    os.rewrite_pid_file(lock, named).unwrap();
    assert_eq!(os.content_of(&path), Some(format!("{named}\n").into_bytes()), "the file names the new pid");
    os.rewrite_pid_file(lock, Pid(me.0)).unwrap();
    assert_eq!(os.content_of(&path), Some(format!("{me}\n").into_bytes()), "rewritten shorter, nothing is left over");
    os.close(lock);
    os.remove_file(&path).unwrap();
}

/// `remove_env`: a variable removed is gone for the process and for the
/// children it spawns afterwards. Both suites run with `PATH` set.
pub fn remove_env_drops_a_variable_for_the_process_and_its_children<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[crate::Signal::Chld]).unwrap();
    assert!(os.env_var("PATH").is_some(), "the suite runs with PATH set");
    os.remove_env("PATH");
    assert_eq!(os.env_var("PATH"), None, "removed for the process");
    let child = os
        .spawn(crate::SpawnOptions::default(), Box::new(|os: &mut O| i32::from(os.env_var("PATH").is_some())))
        .unwrap();
    let reaped = super::reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, crate::ExitStatus::Exited(0))], "and for a child spawned afterwards");
}
