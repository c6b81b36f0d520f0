//! Random bytes for secrets, from the kernel's generator (`getrandom(2)`).
//!
//! Nothing here may fall back to a weaker source: a token drawn from a
//! predictable generator would be no token. `getrandom` blocks only until
//! the kernel's pool is first initialised, early at boot.

use std::io;

pub(super) fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // Safety: `rest` is valid for `rest.len()` bytes of writing. The
        // macro retries EINTR; a short read (possible past 256 bytes) loops.
        let n = syscall!(getrandom(rest.as_mut_ptr().cast(), rest.len(), 0))?;
        filled += n as usize;
    }
    Ok(())
}
