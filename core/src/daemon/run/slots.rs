//! The shared memory of the workers' channels: the table of their hot
//! words (see `worker::channel::Table`), made at the first spawn, with
//! which of its slots are free; and the arenas their regions are carved
//! from.

use super::*;
use crate::worker::{Slot, Table};
use forkd_os::Region;

/// The table, once made, and its free slots.
#[derive(Default)]
pub(super) struct Slots {
    table: Option<Table>,
    /// Slots given back, taken again first, so the pages in use stay few.
    free: Vec<usize>,
    /// The first slot never handed out.
    next: usize,
}

impl Slots {
    /// How many slots a daemon of at most `max_workers` processes needs:
    /// twice that, since an instance being stopped keeps its slot until it
    /// is reaped while its successor runs, and some to spare.
    pub(super) fn capacity(max_workers: usize) -> usize {
        max_workers.saturating_mul(2).saturating_add(16).min(1 << 20)
    }

    /// A free slot, and its index to give back; the table is made first if
    /// there is none yet.
    pub(super) fn take<O: Os>(&mut self, os: &mut O, capacity: usize) -> io::Result<(usize, Slot)> {
        let table = match &mut self.table {
            Some(table) => table,
            None => self.table.insert(Table::new(os.shm_create(Table::bytes(capacity))?)),
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.next < table.capacity() => {
                self.next += 1;
                self.next - 1
            }
            None => {
                let n = table.capacity();
                return Err(io::Error::other(format!("all {n} slots of the workers' table are taken")));
            }
        };
        Ok((index, table.slot(index)))
    }

    /// Gives slot `index` back, its worker reaped: no process writes to it
    /// any more.
    pub(super) fn give_back(&mut self, index: usize) {
        self.free.push(index);
    }

    /// Unmaps the table, once no worker is left.
    pub(super) fn release<O: Os>(&mut self, os: &mut O) {
        if let Some(table) = self.table.take() {
            // Safety: no link is left, and the links held the only other
            // handles (their channels' slots).
            unsafe { os.shm_unmap(table.into_region()) };
        }
    }
}

/// The bytes between two workers' regions in an arena: [`REGION_SIZE`]
/// rounded up to whole pages (of 4 or 16 KiB), so that each region can be
/// discarded on its own.
const REGION_STRIDE: usize = 16 * 1024;
const _: () = assert!(REGION_SIZE <= REGION_STRIDE);

/// Regions per arena: 1 MiB of address space, resident only where used.
const ARENA_REGIONS: usize = 64;

/// Where a worker's region lies: which arena, which place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RegionAt {
    arena: usize,
    place: usize,
}

/// The workers' regions, carved out of a few large mappings (arenas)
/// rather than mapped one by one. A fork walks every mapping of its
/// parent, and the kernel takes out the ones kept from children one by
/// one: with a thousand mappings, forking the thousandth worker cost more
/// than all the rest of its start. An arena is made when the others are
/// full, and is inherited by the workers forked after it, which so map
/// the regions of their siblings too (as they map the table). A region is
/// discarded (zeroed and freed for every process) when its worker is
/// reaped, and handed out again.
#[derive(Default)]
pub(super) struct Regions {
    arenas: Vec<Region>,
    free: Vec<RegionAt>,
}

impl Regions {
    /// A fresh (zeroed) region for a worker, and where it lies.
    pub(super) fn take<O: Os>(&mut self, os: &mut O) -> io::Result<(RegionAt, Region)> {
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                let arena = os.shm_create(ARENA_REGIONS * REGION_STRIDE)?;
                self.arenas.push(arena);
                let n = self.arenas.len() - 1;
                // Handed out from the lowest place: popped last, pushed first.
                self.free.extend((1..ARENA_REGIONS).rev().map(|place| RegionAt { arena: n, place }));
                RegionAt { arena: n, place: 0 }
            }
        };
        Ok((at, self.region(at)))
    }

    fn region(&self, at: RegionAt) -> Region {
        let words = REGION_STRIDE / 8;
        self.arenas[at.arena].slice(at.place * words, words)
    }

    /// Takes back the region at `at`, its worker reaped (or never
    /// started): it is zeroed for its next worker. One that cannot be
    /// zeroed is never handed out again.
    pub(super) fn give_back<O: Os>(&mut self, os: &mut O, at: RegionAt) {
        match os.shm_discard(&self.region(at)) {
            Ok(()) => self.free.push(at),
            Err(e) => log::warn!("a worker's region cannot be zeroed for the next: {e}"),
        }
    }

    /// Unmaps every arena, once no worker is left.
    pub(super) fn release<O: Os>(&mut self, os: &mut O) {
        self.free.clear();
        for arena in self.arenas.drain(..) {
            // Safety: no link is left, and the links held the only other
            // handles (their channels' regions).
            unsafe { os.shm_unmap(arena) };
        }
    }
}
