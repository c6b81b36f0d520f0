//! Parts of a shared region: a slice is the same memory, and a discarded
//! part reads as zeros in every process that maps it.

use std::path::Path;
use std::sync::atomic::Ordering::{Acquire, Release};

use crate::{ExitStatus, Os, Ready, Signal, SpawnOptions};

use super::{reap_n, wait_ready, write_all};

/// A part of a region written by a child and then discarded by the parent
/// reads as zeros in both, while the part beside it keeps its data.
pub fn a_discarded_part_of_a_region_is_zero_everywhere<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let whole = os.shm_create(4 * 16384).unwrap();
    let (first, second) = (whole.slice(0, 2048), whole.slice(2048, 2048));
    let (here, there) = os.socket_pair().unwrap();
    let (child_first, child_second) = (first.clone(), second.clone());
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                child_first.store(0, 7, Release);
                child_first.store(2047, 8, Release);
                child_second.store(0, 9, Release);
                write_all(os, there, b"w");
                // The parent's byte says it has discarded the first part.
                wait_ready(os, there, Ready::READ);
                let zeroed = child_first.load(0, Acquire) == 0 && child_first.load(2047, Acquire) == 0;
                i32::from(!(zeroed && child_second.load(0, Acquire) == 9))
            }),
        )
        .unwrap();
    wait_ready(os, here, Ready::READ);
    assert_eq!((first.load(0, Acquire), first.load(2047, Acquire)), (7, 8), "the child's writes are seen");
    os.shm_discard(&first).expect("discard a page-aligned part");
    assert_eq!((first.load(0, Acquire), first.load(2047, Acquire)), (0, 0), "the discarded part reads as zeros");
    assert_eq!(second.load(0, Acquire), 9, "the part beside it keeps its data");
    write_all(os, here, b"d");
    let reaped = reap_n(os, sig, 1);
    assert_eq!(reaped, vec![(child, ExitStatus::Exited(0))], "the child saw zeros too, and its other part intact");
    os.close(here);
    os.close(there);
    drop((first, second));
    // Safety: the slices are dropped, the child's went with it.
    unsafe { os.shm_unmap(whole) };
}
