//! Anonymous shared mappings, the memory behind a [`Region`].
//!
//! A `MAP_SHARED | MAP_ANONYMOUS` mapping has no name in any file system, so
//! it cannot outlive the last process that maps it, however they all die; the
//! children forked after it is made see the same pages. The kernel hands the
//! pages out zeroed.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{self, MapFlags, ProtFlags};

use crate::real::sys::retry;
use crate::Region;

pub(super) fn create(len: usize) -> io::Result<Region> {
    let len = mapping_len(len, page_size()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("shared region of {len} bytes is too large"))
    })?;
    // Safety: a new anonymous mapping at an address the kernel picks
    // overlaps nothing of ours.
    let base = retry(|| unsafe {
        mman::mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED)
    })?;
    let base = base.as_ptr().cast::<u8>();
    // Safety: the mapping is `len` bytes, page-aligned (so 8-aligned), and
    // stays mapped until `unmap`.
    Ok(unsafe { Region::from_raw(base, len.get() / 8, base as u64) })
}

/// # Safety
/// As `Os::shm_unmap`: no other handle to the region is used afterwards.
pub(super) unsafe fn unmap(region: Region) {
    let Some(base) = NonNull::new(region.as_ptr().cast_mut().cast()) else {
        return;
    };
    // Safety: the region describes a whole mapping `create` made, and the
    // caller promises that no handle to it is used again.
    let unmapped = retry(|| unsafe { mman::munmap(base, region.len()) });
    debug_assert!(unmapped.is_ok(), "munmap {region:?}: {unmapped:?}");
}

/// Keeps the mapping out of the children forked from now on
/// (`MADV_DONTFORK`).
pub(super) fn keep_from_children(region: &Region) -> io::Result<()> {
    // Safety: advice on a whole mapping `create` made; it changes no data.
    let r = unsafe { libc::madvise(region.as_ptr().cast_mut().cast(), region.len(), libc::MADV_DONTFORK) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Punches a hole in the shared memory behind `region` (`MADV_REMOVE`):
/// every mapping reads zeros there, and its pages are freed.
pub(super) fn discard(region: &Region) -> io::Result<()> {
    let page = page_size();
    let start = region.as_ptr() as usize;
    if start % page != 0 || region.len() % page != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("discard {region:?}: not on page boundaries")));
    }
    // Safety: advice on pages of a mapping `create` made; the data it
    // drops reads as zeros afterwards, which every reader of a region
    // must expect of memory another process may write.
    let r = unsafe { libc::madvise(region.as_ptr().cast_mut().cast(), region.len(), libc::MADV_REMOVE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn page_size() -> usize {
    // Safety: sysconf only reads a value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `len` rounded up to whole pages, at least one: whole pages are what the
/// kernel maps anyway, and a page size is a multiple of the 8-byte word.
fn mapping_len(len: usize, page: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(len.max(1).checked_next_multiple_of(page)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_up_to_whole_pages() {
        let len = |n| mapping_len(n, 4096).map(NonZeroUsize::get);
        assert_eq!(len(0), Some(4096));
        assert_eq!(len(1), Some(4096));
        assert_eq!(len(4096), Some(4096));
        assert_eq!(len(4097), Some(8192));
        assert_eq!(len(usize::MAX), None);
    }
}
