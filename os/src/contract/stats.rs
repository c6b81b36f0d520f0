//! `process_stats` and `resident_memory`: what a process uses, for the
//! daemon's metrics.

use std::path::Path;

use crate::{Os, Pid, PollFd, Ready, Signal, SpawnOptions};

use super::{reap_n, wait_ready, write_all};

/// The stats of this process and of a live child are plausible (some
/// memory, a descriptor or more under a positive limit, a start time after
/// 2020 and not after the child's), and those of a reaped child are an
/// error.
pub fn process_stats_of_self_and_a_child<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let me = os.pid();
    let own = os.process_stats(me).expect("stats of this process");
    assert!(own.rss_bytes >= 4096, "resident memory of at least a page: {own:?}");
    assert!(own.open_fds >= 1 && own.max_fds >= own.open_fds, "descriptors under their limit: {own:?}");
    assert!(own.start_time_seconds > 1_577_836_800.0, "started after 2020: {own:?}");
    assert!(own.cpu_seconds >= 0.0, "no negative CPU time: {own:?}");
    let (here, there) = os.socket_pair().unwrap();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                // Our copy of the parent's end closed, its close ends us.
                os.close(here);
                write_all(os, there, b"up");
                let mut fds = [PollFd::new(there, Ready::READ)];
                let _ = os.poll(&mut fds, None);
                0
            }),
        )
        .unwrap();
    os.close(there);
    wait_ready(os, here, Ready::READ);
    let theirs = os.process_stats(child).expect("stats of a live child");
    assert!(theirs.rss_bytes >= 4096, "the child's memory: {theirs:?}");
    assert!(theirs.start_time_seconds >= own.start_time_seconds, "the child started after us");
    let rss = os.resident_memory(child).expect("resident memory of a live child");
    assert!(rss >= 4096, "the child's resident memory: {rss}");
    os.close(here);
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped.len(), 1);
    assert!(os.process_stats(child).is_err(), "a reaped child has no stats");
    assert!(os.resident_memory(child).is_err(), "nor memory");
    assert!(os.process_stats(Pid(i32::MAX)).is_err(), "no such process");
}

/// `trim_memory`: after many small blocks are freed, trimming leaves the
/// process with no more resident memory than before, and working.
pub fn trim_memory_gives_back_what_was_freed<O: Os>(os: &mut O, _dir: &Path) {
    let me = os.pid();
    let mut blocks: Vec<Box<[u8; 64]>> = (0..65_536).map(|i| Box::new([(i % 256) as u8; 64])).collect();
    // The last eighth kept, so the heap's top stays in use: what is freed
    // lies inside it, where only a trim can give it back.
    let kept = blocks.split_off(blocks.len() / 8 * 7);
    drop(blocks);
    let before = os.resident_memory(me).expect("resident memory");
    os.trim_memory();
    let after = os.resident_memory(me).expect("resident memory");
    assert!(after <= before, "trimming grew the process: {before} -> {after}");
    let first = 65_536 / 8 * 7;
    assert!(kept.iter().enumerate().all(|(i, b)| b[63] == ((first + i) % 256) as u8), "the kept blocks are intact");
}
