//! The built-in methods an operator's tools read: `daemon.metrics` (what
//! `GET /metrics` answers) and `daemon.overview` (what the status page
//! shows: the daemon, its workers with their memory, the history ring).

use serde_json::{json, Value};

use super::control::Ctl;
use super::stats::HISTORY_SLOT;
use crate::rpc::{Method, ParamType, Reply, RpcError};

/// `daemon.metrics(format)`: the Prometheus exposition as a string.
pub(super) fn daemon_metrics() -> Method<Ctl> {
    Method::new(crate::rpc::METRICS, |ctl: &mut Ctl, args| {
        let openmetrics = match args.get_str("format") {
            None | Some("text") => false,
            Some("openmetrics") => true,
            Some(other) => {
                return Reply::Error(RpcError::invalid_params(format!(
                    "format {other:?}: text (Prometheus 0.0.4) or openmetrics"
                )))
            }
        };
        Reply::Value(Value::String(super::metrics::render(ctl, openmetrics)))
    })
    .help("Tell the daemon's metrics in Prometheus's text format (format: text, or openmetrics).")
    .returns(ParamType::String)
    .signature()
    .param(ParamType::String, "format")
    .returns(ParamType::String)
}

/// `daemon.overview`: the daemon, every instance (with its resident
/// memory), and the last minutes from the history ring.
pub(super) fn daemon_overview() -> Method<Ctl> {
    Method::new(OVERVIEW, |ctl: &mut Ctl, _| {
        let workers: Vec<Value> = (0..ctl.sup.instances().len())
            .filter(|&id| !ctl.sup.instance(id).state.is_retired())
            .map(|id| {
                let mut v = ctl.instance_json(id);
                let stats = ctl.sup.instance(id).state.pid().and_then(|p| ctl.procs.get(&p));
                v["memory"] = stats.map(|s| s.rss_bytes).into();
                v["started"] = stats.map(|s| s.start_time_seconds).into();
                let spec = &ctl.sup.specs()[ctl.sup.instance(id).worker];
                v["pool"] = spec.instances.into();
                v
            })
            .collect();
        let slot = HISTORY_SLOT.as_secs();
        let history: Vec<Value> = ctl
            .stats
            .history
            .iter()
            .map(|s| json!({ "t": s.index * slot, "rpc": s.rpc_calls, "restarts": s.restarts, "exits": s.exits }))
            .collect();
        Reply::Value(json!({
            "pid": ctl.info.pid.0,
            "version": env!("CARGO_PKG_VERSION"),
            "description": ctl.info.description,
            "uptime": ctl.now.saturating_duration_since(ctl.info.started).as_secs_f64(),
            "address": ctl.info.address,
            "memory": ctl.procs.get(&ctl.info.pid).map(|s| s.rss_bytes),
            "events": ctl.stats.events,
            "workers": workers,
            "history": { "slot": slot, "slots": history },
        }))
    })
    .help(
        "Tell the daemon (pid, version, description, uptime, address, memory), every worker instance with its \
         memory and start time (seconds since the epoch), and the last minutes' RPC calls and restarts.",
    )
    .returns(ParamType::Struct)
}

/// The name of the overview method; the loop reads the processes'
/// resources before it runs, as before a scrape.
pub const OVERVIEW: &str = "daemon.overview";
