//! Shared memory regions, read and written only through atomics.
//!
//! A `Region` is a handle on memory that a process and the children it spawns
//! after creating it all see. The real implementation is an anonymous shared
//! mapping (`MAP_SHARED | MAP_ANONYMOUS`): it has no name, so it cannot outlive
//! the last process that maps it, whatever kills them. The simulated one is a
//! buffer of atomic words kept alive by the simulated processes that map it.
//!
//! Both are accessed the same way, through a base pointer to atomic words, so
//! the code that lays out a channel on a region is one code for both worlds.
//! A `Region` never unmaps itself on drop: unmapping is an `Os` call
//! (`Os::shm_unmap`), because a forked child must not tear down the parent's
//! view and the simulation must see every unmap to check for leaks. That
//! call is `unsafe`: a `Region` is `Clone`, and nothing stops a clone from
//! being used after another handle was unmapped, so the caller promises
//! that none is. The simulated buffer would survive such a use; a real
//! mapping would not.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// A mapped shared region. Cloning it copies the handle, not the memory.
#[derive(Clone)]
pub struct Region {
    base: *const AtomicU64,
    words: usize,
    id: u64,
    /// Keeps the simulated buffer alive; `None` for a real mapping.
    _owner: Option<Arc<[AtomicU64]>>,
}

// Safety: the memory behind `base` is only ever accessed through atomics, and
// stays mapped until `Os::shm_unmap`, whose caller promises that no handle
// (clones included) is used afterwards.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("id", &self.id).field("len", &self.len()).finish()
    }
}

impl Region {
    /// A region over a real mapping of `words` 8-byte words at `base`.
    ///
    /// # Safety
    /// `base` must point to `words * 8` bytes of mapped, 8-aligned memory
    /// that stays mapped while any handle to it is used.
    pub unsafe fn from_raw(base: *mut u8, words: usize, id: u64) -> Region {
        Region { base: base as *const AtomicU64, words, id, _owner: None }
    }

    /// A region over a simulated buffer.
    pub fn from_buffer(buf: Arc<[AtomicU64]>, id: u64) -> Region {
        Region { base: buf.as_ptr(), words: buf.len(), id, _owner: Some(buf) }
    }

    /// The `words` words of this region from word `first`, as a region of
    /// their own: the same memory, seen through a narrower handle (one
    /// worker's part of a mapping shared by many). It has the identifier of
    /// the whole, and is never unmapped on its own.
    ///
    /// # Panics
    /// If the part does not lie within the region.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use forkd_os::Region;
    ///
    /// let whole = Region::from_buffer((0..8).map(|_| AtomicU64::new(0)).collect(), 1);
    /// let part = whole.slice(4, 2);
    /// part.store(1, 9, Ordering::Relaxed);
    /// assert_eq!((part.len(), whole.load(5, Ordering::Relaxed)), (16, 9));
    /// ```
    pub fn slice(&self, first: usize, words: usize) -> Region {
        assert!(
            first.checked_add(words).is_some_and(|end| end <= self.words),
            "words {first}..+{words} outside a region of {} words",
            self.words
        );
        // Safety: in bounds, as just checked.
        let base = unsafe { self.base.add(first) };
        Region { base, words, id: self.id, _owner: self._owner.clone() }
    }

    /// An identifier unique among the regions of one world (the real one uses
    /// the mapping's address).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.words * 8
    }

    /// Whether the region has no word at all.
    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// The first byte of the region, for callers that hand it to the kernel.
    /// Reads and writes through it must be atomic, as the other processes
    /// sharing the region may be using it at the same time.
    pub fn as_ptr(&self) -> *const u8 {
        self.base as *const u8
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.words, "word {index} outside a region of {} words", self.words);
        // Safety: in bounds, and mapped for as long as `self` is used.
        unsafe { &*self.base.add(index) }
    }

    fn byte(&self, offset: usize) -> &AtomicU8 {
        assert!(offset < self.len(), "byte {offset} outside a region of {} bytes", self.len());
        // Safety: as `word`; an AtomicU8 has alignment 1.
        unsafe { &*(self.base as *const AtomicU8).add(offset) }
    }

    /// Loads word `index` (counted in 8-byte words, not bytes).
    ///
    /// # Panics
    /// If `index` is outside the region: a programmer error.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use forkd_os::Region;
    ///
    /// let buf: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
    /// let region = Region::from_buffer(buf, 1);
    /// region.store(2, 42, Ordering::Release);
    /// assert_eq!(region.fetch_add(2, 1, Ordering::AcqRel), 42);
    /// assert_eq!(region.load(2, Ordering::Acquire), 43);
    /// assert_eq!(region.compare_exchange(2, 43, 7), Ok(43));
    /// assert_eq!(region.compare_exchange(2, 43, 8), Err(7));
    /// assert_eq!(region.len(), 32);
    /// ```
    pub fn load(&self, index: usize, order: Ordering) -> u64 {
        self.word(index).load(order)
    }

    /// Stores `value` in word `index`.
    ///
    /// # Panics
    /// If `index` is outside the region.
    pub fn store(&self, index: usize, value: u64, order: Ordering) {
        self.word(index).store(value, order)
    }

    /// Adds `value` to word `index`, wrapping on overflow, and returns the
    /// previous value.
    ///
    /// # Panics
    /// If `index` is outside the region.
    pub fn fetch_add(&self, index: usize, value: u64, order: Ordering) -> u64 {
        self.word(index).fetch_add(value, order)
    }

    /// Sets word `index` to `new` if it holds `current` (acquire-release on
    /// success, acquire on failure): `Ok` with the previous value if it did,
    /// `Err` with the value found if it did not.
    ///
    /// # Panics
    /// If `index` is outside the region.
    pub fn compare_exchange(&self, index: usize, current: u64, new: u64) -> Result<u64, u64> {
        self.word(index).compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Copies bytes out of the region with relaxed atomic loads; callers
    /// order them with a version word (a seqlock).
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(offset + i).load(Ordering::Relaxed);
        }
    }

    /// Copies bytes into the region with relaxed atomic stores.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.byte(offset + i).store(*b, Ordering::Relaxed);
        }
    }
}
