//! What the benchmarks ask of the kernel directly: CPU placement, the
//! descriptor limit, memory from `/proc/PID/smaps_rollup`, process trees,
//! signals. Only `libc` and `/proc`: nothing here may start a thread or
//! block.

use std::io;

/// Which CPUs the daemon and the clients run on.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// The daemon's CPU, and the client's for latency figures.
    pub daemon: usize,
    /// The clients' CPU for throughput, and the bench's own while it polls
    /// a daemon: another core when there is one.
    pub other: usize,
}

impl Cpus {
    pub fn detect() -> Cpus {
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Cpus { daemon: 0, other: if online > 1 { 1 } else { 0 } }
    }

    /// Client and daemon on one core: latency figures.
    pub fn same(&self) -> String {
        format!("daemon+client cpu{}", self.daemon)
    }

    /// Client threads on another core: throughput figures.
    pub fn split(&self) -> String {
        format!("daemon cpu{}, clients cpu{}", self.daemon, self.other)
    }

    /// The bench polls or signals from another core.
    pub fn watched(&self) -> String {
        format!("daemon cpu{}, bench cpu{}", self.daemon, self.other)
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // Safety: cpu_set_t is plain data; CPU_ZERO and CPU_SET write within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (or, in a child before exec, the process) to
/// `cpu`. Async-signal-safe: one system call.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    let set = cpu_set(cpu);
    // Safety: `set` is a valid cpu_set_t of the size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open descriptors to `want` (and the hard limit
/// too when allowed); returns the soft limit now in force. Children inherit
/// it, so the daemons get it too.
pub fn raise_nofile(want: u64) -> u64 {
    // Safety: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let soft = libc::rlimit { rlim_cur: lim.rlim_max.min(want), rlim_max: lim.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
        lim.rlim_cur
    }
}

/// A process's memory, in kB: resident, proportional (shared pages divided
/// among their sharers) and unique (private pages only).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss: f64,
    pub pss: f64,
    pub uss: f64,
}

/// Reads `/proc/PID/smaps_rollup`.
pub fn smaps_rollup(pid: i32) -> Result<Mem, String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let mut mem = Mem::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else { continue };
        let Ok(kb) = value.parse::<f64>() else { continue };
        match key {
            "Rss:" => mem.rss = kb,
            "Pss:" => mem.pss = kb,
            "Private_Clean:" | "Private_Dirty:" | "Private_Hugetlb:" => mem.uss += kb,
            _ => {}
        }
    }
    if mem.rss == 0.0 {
        return Err(format!("{path}: no Rss line"));
    }
    Ok(mem)
}

/// Whether a process is alive; a zombie counts as gone.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The children of a process, from each of its threads' `children` file.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// A process's descendants, children first.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut next = 0;
    out.extend(children(pid));
    // Bounded: a pid appears at most once, and there are at most pid_max.
    while next < out.len() && out.len() < 1 << 20 {
        let more = children(out[next]);
        out.extend(more.into_iter().filter(|p| *p != pid));
        next += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Sends `sig` to `pid` (a negative pid is a process group).
pub fn signal(pid: i32, sig: i32) -> bool {
    if pid == 0 || pid == -1 {
        return false;
    }
    // Safety: kill has no memory effects.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Kills a process and all its descendants: stops it first, so that it
/// cannot fork a child that the sweep would miss.
pub fn kill_tree(pid: i32) {
    if pid <= 1 {
        return;
    }
    signal(pid, libc::SIGSTOP);
    let below = descendants(pid);
    for p in &below {
        signal(*p, libc::SIGSTOP);
    }
    for p in below.iter().chain([pid].iter()) {
        signal(*p, libc::SIGKILL);
    }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // Safety: gettid has no memory effects.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// How long a thread has run on a CPU, in ns, from its `schedstat`.
pub fn cpu_ns(pid: i32, tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU seconds spent busy by the whole machine (every CPU, every process,
/// the kernel's interrupts included), from `/proc/stat`.
pub fn machine_busy() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal ...: steal is the
    // hypervisor running someone else, not this machine being busy.
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    // Safety: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy / hz
}

/// CPU seconds spent by the bench and by every child it has reaped
/// (which includes what those had reaped: a master's workers).
pub fn own_busy() -> f64 {
    let secs = |who| {
        // Safety: getrusage fills a local struct.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut r) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(r.ru_utime) + t(r.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// A line about the machine: CPUs, model, kernel.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    Machine { cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), model, kernel }
}

/// Pins every thread of another process to `cpu`: what it forks from now
/// on inherits the placement.
pub fn pin_process(pid: i32, cpu: usize) -> io::Result<()> {
    let set = cpu_set(cpu);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else { continue };
        // Safety: `set` is a valid cpu_set_t of the size given.
        let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        // A thread that has just exited is no longer there to pin.
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
