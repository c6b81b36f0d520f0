//! `daemon.metrics`: the daemon's state in Prometheus's text exposition
//! format 0.0.4, or in OpenMetrics 1.0 when the scraper asks for it.
//!
//! Nothing is kept for the metrics' sake but the few counts of
//! [`Stats`](super::stats::Stats): the rest is read from what the daemon
//! knows anyway (the supervisor's instances, their channels) at scrape
//! time, so a scrape cannot disagree with `worker.list`, and a retired
//! instance's series go with it. Memory, CPU and descriptors are read by
//! the loop through the `Os` just before the method runs.
//!
//! The names follow Prometheus's conventions: base units, `_total` on
//! counters, the standard `process_*` metrics for the master, a
//! `forkd_build_info` gauge. Restarts are a counter (PM2's exporters made
//! them a gauge), start times are timestamps (not uptimes), and the state
//! is one series per state name, 1 for the current one.

use std::fmt::Write;

use super::control::Ctl;
use super::stats::{ExitReason, LATENCY_BUCKETS};

/// Every state an instance may be reported in, one series each.
const STATES: [&str; 7] = ["spinup", "looping", "paused", "spindown", "exited", "stopped", "failed"];

/// The exposition being written, in one of the two formats.
struct Out {
    text: String,
    openmetrics: bool,
}

impl Out {
    /// Starts a family. `name` is the sample name without `_total`;
    /// counters get the suffix their format wants.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let family = match (kind, self.openmetrics) {
            ("counter", false) => format!("{name}_total"),
            _ => name.to_string(),
        };
        let _ = writeln!(self.text, "# HELP {family} {help}");
        let _ = writeln!(self.text, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        write_number(&mut self.text, value);
        self.text.push('\n');
    }
}

impl Out {
    /// A sample of one instance: `prefix` is its labels, written once for
    /// all its series; `extra` one more label (state, reason).
    fn instance_sample(&mut self, name: &str, prefix: &str, extra: Option<(&str, &str)>, value: f64) {
        self.text.push_str(name);
        self.text.push('{');
        self.text.push_str(prefix);
        if let Some((k, v)) = extra {
            for part in [",", k, "=\"", v, "\""] {
                self.text.push_str(part);
            }
        }
        self.text.push_str("} ");
        write_number(&mut self.text, value);
        self.text.push('\n');
    }
}

/// A label value with backslash, quote and newline escaped.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// A sample's value as the exposition formats want it: integers without a
/// fraction, infinities as `+Inf`/`-Inf`.
fn write_number(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Most samples are small integers; formatting them by hand keeps
        // a scrape of many workers short.
        let mut n = v.abs() as u64;
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0.0 {
            out.push('-');
        }
        out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
    } else {
        let _ = write!(out, "{v}");
    }
}

fn number(v: f64) -> String {
    let mut s = String::new();
    write_number(&mut s, v);
    s
}

/// The whole exposition.
pub(crate) fn render(ctl: &Ctl, openmetrics: bool) -> String {
    let mut out = Out { text: String::with_capacity(4096 + 1200 * ctl.sup.instances().len()), openmetrics };
    out.family("forkd_build_info", "gauge", "The forkd version this daemon runs.");
    out.sample("forkd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    process(&mut out, ctl);
    workers(&mut out, ctl);
    rpc(&mut out, ctl);
    connections(&mut out, ctl);
    super::user_metrics::render(&mut out.text, &ctl.user_metrics);
    if openmetrics {
        out.text.push_str("# EOF\n");
    }
    out.text
}

/// The master's standard `process_*` metrics.
fn process(out: &mut Out, ctl: &Ctl) {
    let Some(p) = ctl.procs.get(&ctl.info.pid) else { return };
    out.family("process_cpu_seconds", "counter", "User and system CPU time spent by the master, in seconds.");
    out.sample("process_cpu_seconds_total", &[], p.cpu_seconds);
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory of the master, in bytes.", p.rss_bytes as f64),
        ("process_open_fds", "Descriptors the master has open.", p.open_fds as f64),
        ("process_max_fds", "The master's limit on open descriptors.", p.max_fds as f64),
        ("process_start_time_seconds", "When the master started, in seconds since the epoch.", p.start_time_seconds),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }
}

/// The instances of every worker: one label set per instance.
fn workers(out: &mut Out, ctl: &Ctl) {
    let ids: Vec<usize> =
        (0..ctl.sup.instances().len()).filter(|&id| !ctl.sup.instance(id).state.is_retired()).collect();
    let prefixes: Vec<String> = ids
        .iter()
        .map(|&id| {
            let inst = ctl.sup.instance(id);
            format!("worker=\"{}\",instance=\"{}\"", escape(&ctl.sup.specs()[inst.worker].name), inst.index)
        })
        .collect();
    let each = |out: &mut Out, name: &str, value: &dyn Fn(usize) -> Option<f64>| {
        for (&id, prefix) in ids.iter().zip(&prefixes) {
            if let Some(v) = value(id) {
                out.instance_sample(name, prefix, None, v);
            }
        }
    };
    out.family("forkd_worker_up", "gauge", "Whether the instance has a running process.");
    each(out, "forkd_worker_up", &|id| Some(f64::from(u8::from(ctl.sup.instance(id).state.pid().is_some()))));
    out.family("forkd_worker_state", "gauge", "The instance's state: 1 for the current one.");
    for (&id, prefix) in ids.iter().zip(&prefixes) {
        let current = ctl.state_name(id);
        for state in STATES {
            let v = f64::from(u8::from(state == current));
            out.instance_sample("forkd_worker_state", prefix, Some(("state", state)), v);
        }
    }
    out.family("forkd_worker_restarts", "counter", "Restarts of the instance, by why its process ended.");
    for (&id, prefix) in ids.iter().zip(&prefixes) {
        for why in ExitReason::RESTARTS {
            let v = ctl.stats.restarts.get(&(id, why)).copied().unwrap_or(0) as f64;
            out.instance_sample("forkd_worker_restarts_total", prefix, Some(("reason", why.name())), v);
        }
    }
    out.family("forkd_worker_loops", "counter", "Iterations the instance's current process has run.");
    each(out, "forkd_worker_loops_total", &|id| Some(ctl.views[id].loops as f64));
    let stats = |id: usize| ctl.sup.instance(id).state.pid().and_then(|pid| ctl.procs.get(&pid));
    out.family("forkd_worker_start_time_seconds", "gauge", "When the instance's process started, since the epoch.");
    each(out, "forkd_worker_start_time_seconds", &|id| stats(id).map(|p| p.start_time_seconds));
    out.family("forkd_worker_resident_memory_bytes", "gauge", "Resident memory of the instance's process.");
    each(out, "forkd_worker_resident_memory_bytes", &|id| stats(id).map(|p| p.rss_bytes as f64));
    out.family("forkd_worker_last_exit_code", "gauge", "How the last process ended: its code, or 128 + its signal.");
    each(out, "forkd_worker_last_exit_code", &|id| {
        ctl.sup.instance(id).last_exit.map(|e| match e {
            forkd_os::ExitStatus::Exited(code) => f64::from(code),
            forkd_os::ExitStatus::Signaled(n) => f64::from(128 + n),
        })
    });
}

/// Calls by method and outcome, and their dispatch times.
fn rpc(out: &mut Out, ctl: &Ctl) {
    out.family("forkd_rpc_requests", "counter", "RPC calls by method (other for unknown ones) and outcome.");
    for ((method, outcome), n) in &ctl.stats.rpc_calls {
        out.sample("forkd_rpc_requests_total", &[("method", method), ("outcome", outcome)], *n as f64);
    }
    out.family("forkd_rpc_request_duration_seconds", "histogram", "How long calls took to dispatch, by method.");
    for (method, h) in &ctl.stats.rpc_latency {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            let le = number(*bound);
            out.sample(
                "forkd_rpc_request_duration_seconds_bucket",
                &[("method", method), ("le", &le)],
                cumulative as f64,
            );
        }
        let inf = [("method", method.as_str()), ("le", "+Inf")];
        out.sample("forkd_rpc_request_duration_seconds_bucket", &inf, h.count as f64);
        out.sample("forkd_rpc_request_duration_seconds_sum", &[("method", method)], h.sum);
        out.sample("forkd_rpc_request_duration_seconds_count", &[("method", method)], h.count as f64);
    }
}

/// Connections and the event stream.
fn connections(out: &mut Out, ctl: &Ctl) {
    let s = &ctl.stats;
    out.family("forkd_connections_open", "gauge", "Connections open on the control socket.");
    out.sample("forkd_connections_open", &[], s.connections_open as f64);
    let counters = [
        ("forkd_connections_accepted", "Connections accepted on the control socket.", s.connections_accepted),
        ("forkd_connections_refused", "Connections refused at accept (peer not allowed).", s.connections_refused),
        ("forkd_events", "Events published on the event stream.", s.events),
        ("forkd_event_subscribers_dropped", "Event subscribers dropped for not keeping up.", s.subscribers_dropped),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        out.sample(&format!("{name}_total"), &[], value as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_the_exposition_wants() {
        for (v, text) in [
            (0.0, "0"),
            (137.0, "137"),
            (-3.0, "-3"),
            (0.25, "0.25"),
            (f64::INFINITY, "+Inf"),
            (1e20, "100000000000000000000"),
        ] {
            assert_eq!(number(v), text, "{v}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
