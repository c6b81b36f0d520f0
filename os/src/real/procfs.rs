//! What a process uses, read from `/proc`: `stat` for CPU time, resident
//! memory and start time, `fd/` for its descriptors, `limits` for their
//! limit. Only this process and its children are asked about, which the
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
    let open_fds = fs::read_dir(format!("{dir}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let max_fds = max_open_files(&fs::read_to_string(format!("{dir}/limits")).unwrap_or_default());
    Ok(ProcessStats { rss_bytes, cpu_seconds, open_fds, max_fds, start_time_seconds })
}

/// Process `pid`'s resident memory, from `statm` (its second field, in
/// pages).
pub(super) fn resident(pid: Pid) -> io::Result<u64> {
    use std::io::{Read, Write};
    // Many workers are read per scrape: nothing allocated.
    let mut path = [0u8; 32];
    let mut cursor = &mut path[..];
    write!(cursor, "/proc/{}/statm", pid.0)?;
    let len = 32 - cursor.len();
    let path = std::str::from_utf8(&path[..len]).map_err(|_| bad("statm path"))?;
    let mut buf = [0u8; 128];
    let n = fs::File::open(path)?.read(&mut buf)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| bad("statm"))?;
    let pages: u64 = text.split_whitespace().nth(1).and_then(|f| f.parse().ok()).ok_or_else(|| bad("statm"))?;
    Ok(pages * page_size())
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
