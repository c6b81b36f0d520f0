//! Slots: the words of a channel that the daemon reads on every turn, kept
//! apart from the rest of it, and the table that packs the slots of all
//! workers into one region.
//!
//! A page the daemon reads stays resident in it. The daemon reads each
//! worker's state, loop count, heartbeat and counters on every turn; if
//! they lay in the worker's own region, a thousand idle workers would keep
//! a thousand pages (two, with the counters of the mailboxes) resident in
//! the daemon. In the table they take sixteen words each, 128 bytes: a
//! thousand fit in 32 pages. The rest of a channel (the mailboxes, the last
//! error's text, the event ring) is touched only when there is something
//! in it.

use std::sync::atomic::Ordering;

use forkd_os::Region;

use super::layout::SLOT_WORDS;

/// A channel's hot words: 16 words of a region from `base`.
#[derive(Clone, Debug)]
pub struct Slot {
    region: Region,
    base: usize,
}

impl Slot {
    /// The slot at the start of a channel's own region.
    pub(super) fn within(region: &Region) -> Slot {
        Slot { region: region.clone(), base: 0 }
    }

    pub(super) fn load(&self, word: usize, order: Ordering) -> u64 {
        self.region.load(self.base + word, order)
    }

    pub(super) fn store(&self, word: usize, value: u64, order: Ordering) {
        self.region.store(self.base + word, value, order)
    }
}

/// The slots of many channels, in one region that the daemon creates
/// before it forks its first worker, so that every worker maps it.
///
/// Each slot has one channel at a time: the daemon hands a free one to each
/// worker it spawns, and takes it back once that worker is reaped, when no
/// process can write to it any more. Every worker maps every slot, since
/// they are one mapping; a worker is a fork of its daemon, and the daemon
/// checks whatever it reads there, as it does on the rest of a channel.
#[derive(Clone, Debug)]
pub struct Table {
    region: Region,
}

impl Table {
    /// The bytes of shared memory a table of `capacity` slots needs.
    pub const fn bytes(capacity: usize) -> usize {
        capacity * SLOT_WORDS * 8
    }

    /// A table on a region as `Os::shm_create` makes it, zeroed.
    pub fn new(region: Region) -> Table {
        Table { region }
    }

    /// How many slots the table holds.
    pub fn capacity(&self) -> usize {
        self.region.len() / (SLOT_WORDS * 8)
    }

    /// Slot `index`.
    ///
    /// # Panics
    /// If `index` is not below [`capacity`](Table::capacity).
    pub fn slot(&self, index: usize) -> Slot {
        assert!(index < self.capacity(), "slot {index} of a table of {}", self.capacity());
        Slot { region: self.region.clone(), base: index * SLOT_WORDS }
    }

    /// The region back, to unmap it.
    pub fn into_region(self) -> Region {
        self.region
    }
}
