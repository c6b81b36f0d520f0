//! What a process uses, read from `/proc`: `stat` for CPU time, resident
//! memory and start time, `fd/` for its descriptors, `limits` for their
//! limit, `statm` for the resident memory of workers at each scrape.
//! Only this process and its children are asked about, which the
//! daemon's user may always read.

use std::fs;
use std::io;

use crate::{Pid, ProcessStats};

/// The figures of process `pid`.
pub(super) fn stats(pid: Pid) -> io::Result<ProcessStats> {
    let dir = format!("/proc/{}", pid.0);
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    // The command name is in parentheses and may hold spaces or
    // parentheses itself: the fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| bad("stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime is 14, stime 15,
    // starttime 22, rss 24 in proc(5)'s numbering.
    let field =
        |n: usize| -> io::Result<u64> { fields.get(n - 3).and_then(|f| f.parse().ok()).ok_or_else(|| bad("stat")) };
    let ticks = sysconf(libc::_SC_CLK_TCK).max(1) as f64;
    let page = sysconf(libc::_SC_PAGESIZE).max(1) as u64;
    let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
    let start_time_seconds = boot_time()? + field(22)? as f64 / ticks;
    let rss_bytes = field(24)? * page;
    let open_fds = open_descriptors(&format!("{dir}/fd"));
    let max_fds = max_open_files(&fs::read_to_string(format!("{dir}/limits")).unwrap_or_default());
    Ok(ProcessStats { rss_bytes, cpu_seconds, open_fds, max_fds, start_time_seconds })
}

/// How many descriptors are open in `fd_dir` (`/proc/PID/fd`). Since
/// Linux 6.2 its size says so, in one `stat`; listing it, as older kernels
/// need, costs a dentry per descriptor, which with a thousand workers is
/// most of a scrape.
fn open_descriptors(fd_dir: &str) -> u64 {
    match fs::metadata(fd_dir) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => fs::read_dir(fd_dir).map(|d| d.count() as u64).unwrap_or(0),
    }
}

/// The `statm` files of the processes whose memory is read at each
/// scrape, kept open: reading an open one costs one `pread`, where opening
/// it again walks `/proc`'s directories each time, and a scrape reads a
/// thousand of them.
///
/// An open `statm` belongs to the process it was opened for, not to its
/// pid: once that process is reaped, reading fails with `ESRCH`, and a
/// new process under the same pid is opened afresh. The files take at most
/// a quarter of the descriptor limit; past that, a pid is read by opening
/// it. A forked child closes them all in a few calls, since the kernel
/// hands them out as runs of consecutive numbers.
#[derive(Debug, Default)]
pub(super) struct StatmFiles {
    open: std::collections::HashMap<Pid, fs::File>,
    numbers: super::FdSet,
}

impl StatmFiles {
    /// Process `pid`'s resident memory, from `statm` (its second field, in
    /// pages).
    pub(super) fn resident(&mut self, pid: Pid) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        if let Some(file) = self.open.get(&pid) {
            match file.read_at(&mut buf, 0) {
                Ok(n) if n > 0 => return parse_statm(&buf[..n]),
                // Reaped (ESRCH): the pid may name a new process now.
                _ => self.forget(pid),
            }
        }
        let file = fs::File::open(statm_path(pid, &mut [0u8; 32])?)?;
        let n = file.read_at(&mut buf, 0)?;
        let pages = parse_statm(&buf[..n])?;
        if self.open.len() < descriptor_budget() {
            use std::os::fd::AsRawFd;
            self.numbers.insert(file.as_raw_fd());
            self.open.insert(pid, file);
        }
        Ok(pages)
    }

    /// Closes the file of `pid`, reaped.
    pub(super) fn forget(&mut self, pid: Pid) {
        if let Some(file) = self.open.remove(&pid) {
            use std::os::fd::AsRawFd;
            self.numbers.remove(file.as_raw_fd());
        }
    }

    /// In a forked child: closes the parent's files, one `close_range` per
    /// run of numbers, without dropping the parent's map (which would
    /// write to every page of it, copying them).
    pub(super) fn close_in_child(&mut self) {
        for (first, last) in self.numbers.runs() {
            super::io::close_range(first, last);
        }
        std::mem::forget(std::mem::take(&mut self.open));
        std::mem::forget(std::mem::take(&mut self.numbers));
    }
}

/// `/proc/PID/statm`, written into `buf`: nothing allocated.
fn statm_path(pid: Pid, buf: &mut [u8; 32]) -> io::Result<&str> {
    use std::io::Write;
    let mut cursor = &mut buf[..];
    write!(cursor, "/proc/{}/statm", pid.0)?;
    let len = 32 - cursor.len();
    std::str::from_utf8(&buf[..len]).map_err(|_| bad("statm path"))
}

fn parse_statm(text: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(text).map_err(|_| bad("statm"))?;
    let pages: u64 = text.split_whitespace().nth(1).and_then(|f| f.parse().ok()).ok_or_else(|| bad("statm"))?;
    Ok(pages * page_size())
}

/// How many `statm` files may stay open: a quarter of the soft limit on
/// descriptors, asked once.
fn descriptor_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |l| l.0);
        usize::try_from(soft / 4).unwrap_or(usize::MAX)
    })
}

/// The page size, asked once.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| sysconf(libc::_SC_PAGESIZE).max(1) as u64)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unreadable /proc {what}"))
}

fn sysconf(name: libc::c_int) -> i64 {
    // Safety: sysconf only reads a value.
    #[allow(clippy::useless_conversion)] // c_long is i32 on 32-bit targets
    i64::from(unsafe { libc::sysconf(name) })
}

/// When the machine booted, in seconds since the epoch (`btime` of
/// `/proc/stat`, which is long to read and never changes: read once).
fn boot_time() -> io::Result<f64> {
    static BOOT: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(t) = BOOT.get() {
        return Ok(*t);
    }
    let stat = fs::read_to_string("/proc/stat")?;
    let t = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| bad("/proc/stat btime"))?;
    Ok(*BOOT.get_or_init(|| t))
}

/// The soft limit of `Max open files` in a `limits` file (0 if absent).
fn max_open_files(limits: &str) -> u64 {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_read_from_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), 1024);
        assert_eq!(max_open_files(""), 0);
    }
}
