//! Seqlocks on a shared region: one writer, readers that retry.
//!
//! A block of words is guarded by a version word. The writer makes the
//! version odd, fences, writes the fields with relaxed stores, then makes the
//! version even again with a release store. A reader loads the version with
//! acquire, copies the fields with relaxed loads, fences, and loads the
//! version again: if it is odd, or changed, the copy may be torn and the
//! reader tries again.
//!
//! Readers never wait for a writer: the writer lives in another process that
//! may be descheduled mid-write, or may have died there and left the version
//! odd forever. So a read retries a bounded number of times, then reports
//! [`ChannelError::Torn`] and lets its caller try again on its next turn (or
//! notice that the writer is dead). Writers never wait either: each block
//! has one writer, so there is nobody to wait for.

use std::sync::atomic::{fence, Ordering};

use forkd_os::Region;

use super::ChannelError;

/// Tries a read this many times before calling it torn.
pub const READ_RETRIES: u32 = 64;

/// Writes a block: `fill` stores its fields with relaxed stores.
pub fn write<R>(region: &Region, ver: usize, fill: impl FnOnce(&Region) -> R) -> R {
    // A version left odd by a writer that died mid-write stays odd while we
    // write, and becomes even after: readers only ever see a complete block.
    let odd = region.load(ver, Ordering::Relaxed) | 1;
    region.store(ver, odd, Ordering::Relaxed);
    fence(Ordering::Release);
    let r = fill(region);
    region.store(ver, odd.wrapping_add(1), Ordering::Release);
    r
}

/// Reads a block: `copy` loads its fields with relaxed loads and must cope
/// with any value (it runs on data that may be torn, and is validated only
/// once the version says it is not).
pub fn read<T>(region: &Region, ver: usize, mut copy: impl FnMut(&Region) -> T) -> Result<T, ChannelError> {
    for _ in 0..READ_RETRIES {
        let before = region.load(ver, Ordering::Acquire);
        if before & 1 == 0 {
            let value = copy(region);
            fence(Ordering::Acquire);
            if region.load(ver, Ordering::Relaxed) == before {
                return Ok(value);
            }
        }
        std::hint::spin_loop();
    }
    Err(ChannelError::Torn)
}
