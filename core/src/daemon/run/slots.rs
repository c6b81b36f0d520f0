//! The table of the workers' hot words (see `worker::channel::Table`):
//! made at the first spawn, and which of its slots are free.

use super::*;
use crate::worker::{Slot, Table};

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
