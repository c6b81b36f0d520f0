//! The built-in `daemon.*` and `worker.*` methods, one function each. They
//! act through [`Ctl`] alone, as a user's methods do.

use serde_json::{json, Value};

use super::control::{codes, Ctl, InstanceView, JoinKind};
use crate::rpc::{Method, ParamType, Registry, Reply, RpcError};
use crate::worker::Command;

/// Adds the built-in methods to `registry`.
pub fn register_builtins(registry: &mut Registry<Ctl>) {
    let methods: Vec<Method<Ctl>> = vec![
        daemon_info(),
        daemon_shutdown(),
        daemon_upgrade(),
        worker_list(),
        worker_status(),
        pause_resume(
            "worker.pause",
            Command::Pause,
            "Pause a worker's instances (every worker's, without a name); answer once they have acknowledged: an \
             array of {name, instance, ok} (and error, if one could not act) by name then instance.",
        ),
        pause_resume(
            "worker.resume",
            Command::Resume,
            "Resume a worker's instances (every worker's, without a name); answer once they have acknowledged: an \
             array of {name, instance, ok} (and error, if one could not act) by name then instance.",
        ),
        worker_restart(),
        worker_scale(),
        worker_send(),
        super::reload::worker_reload(),
        super::observe::daemon_metrics(),
        super::observe::daemon_overview(),
    ];
    for m in methods {
        registry.add(m).expect("built-in method names are unique");
    }
}

/// What forkd's own error code `code` means: its line in the code table
/// that `rpc.discover` publishes.
fn meaning(code: i64) -> &'static str {
    crate::rpc::codes::TABLE.iter().find(|(_, c, _)| *c == code).map_or("", |(_, _, message)| message)
}

/// `m`, declaring that it may answer the errors of `codes` (forkd's own).
pub fn with_errors(mut m: Method<Ctl>, codes: &[i64]) -> Method<Ctl> {
    for code in codes {
        m = m.error(*code, meaning(*code));
    }
    m
}

/// The errors a method answers that reaches a worker through
/// the worker commands (`worker.pause`, `worker.resume`) or [`Ctl::message_worker`].
pub const WORKER_ERRORS: &[i64] =
    &[codes::UNKNOWN_WORKER, codes::WORKER_NOT_RUNNING, codes::WORKER_ERROR, codes::STOPPING];

fn value(v: Value) -> Reply {
    Reply::Value(v)
}

fn daemon_info() -> Method<Ctl> {
    Method::new("daemon.info", |ctl: &mut Ctl, _| {
        value(json!({
            "pid": ctl.info.pid.0,
            "version": ctl.info.version,
            "forkd": env!("CARGO_PKG_VERSION"),
            "description": ctl.info.description,
            "uptime": ctl.now.saturating_duration_since(ctl.info.started).as_secs_f64(),
            "address": ctl.info.address,
            "workers": ctl.sup.instances().iter().filter(|i| i.state.pid().is_some()).count(),
        }))
    })
    .help(
        "Tell the daemon's pid, version (its own), forkd's version, description, uptime in seconds, address and \
         number of worker processes.",
    )
    .returns(ParamType::Struct)
}

fn daemon_shutdown() -> Method<Ctl> {
    Method::new("daemon.shutdown", |ctl: &mut Ctl, _| {
        ctl.stop("daemon.shutdown");
        value(Value::Bool(true))
    })
    .help("Stop the daemon gracefully: answer, finish requests in flight, stop the workers, exit.")
    .returns(ParamType::Boolean)
}

fn daemon_upgrade() -> Method<Ctl> {
    let m = Method::new("daemon.upgrade", |ctl: &mut Ctl, _| {
        let id = ctl.defer();
        ctl.upgrade(Some(id));
        Reply::Deferred(id)
    })
    .help(
        "Upgrade the master in place: execute its binary again (as now on disk), hand it the socket, and answer \
         once the new master serves with {pid, version}; the old master then finishes what is in flight and exits.",
    )
    .returns(ParamType::Struct);
    with_errors(m, &[codes::UPGRADE_FAILED, codes::STOPPING])
}

fn worker_list() -> Method<Ctl> {
    Method::new("worker.list", |ctl: &mut Ctl, _| {
        let mut ids: Vec<usize> = (0..ctl.sup.instances().len())
            .filter(|&id| ctl.sup.instances_of(ctl.sup.instance(id).worker).any(|i| i == id))
            .collect();
        ids.sort_by_key(|&id| ctl.instance_order(id));
        value(Value::Array(ids.into_iter().map(|id| ctl.instance_json(id)).collect()))
    })
    .help(
        "List every worker process: name, instance, pid, state, looptime, uptime, restart, loops, restarts, \
         last_exit, last_error.",
    )
    .returns(ParamType::Array)
}

fn worker_status() -> Method<Ctl> {
    Method::new("worker.status", |ctl: &mut Ctl, args| match ctl.targets(args.get_str("name")) {
        Ok((mut ids, _)) => {
            ids.sort_by_key(|&id| ctl.instance_order(id));
            value(Value::Array(ids.into_iter().map(|id| ctl.instance_json(id)).collect()))
        }
        Err(e) => Reply::Error(e),
    })
    .help(
        "Tell the status of a worker's instances (of every worker's, without a name): an array of entries with \
         name, instance, pid, state, looptime, uptime, restart, loops, restarts, last_exit and last_error, by name \
         then instance.",
    )
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Array)
    .error(codes::UNKNOWN_WORKER, meaning(codes::UNKNOWN_WORKER))
}

fn worker_restart() -> Method<Ctl> {
    Method::new("worker.restart", |ctl: &mut Ctl, args| {
        if ctl.is_stopping() {
            return Reply::Error(RpcError::new(codes::STOPPING, "the daemon is stopping"));
        }
        let reloading = (0..ctl.sup.specs().len())
            .filter(|&w| args.get_str("name").is_none_or(|n| ctl.sup.specs()[w].name == n))
            .find_map(|w| ctl.refuse_if_reloading(w).err());
        if let Some(e) = reloading {
            return Reply::Error(e);
        }
        match ctl.targets(args.get_str("name")) {
            Ok((mut ids, _)) => {
                let now = ctl.now;
                ids.sort_by_key(|&id| ctl.instance_order(id));
                let mut entries = Vec::new();
                for id in ids {
                    ctl.sup.restart(id, now);
                    let (name, instance) = ctl.instance_order(id);
                    entries.push(json!({ "name": name, "instance": instance, "ok": true }));
                }
                value(Value::Array(entries))
            }
            Err(e) => Reply::Error(e),
        }
    })
    .help(
        "Restart a worker's instances (every worker's, without a name): stop their processes and start new ones. \
         Answers an array of {name, instance, ok} by name then instance.",
    )
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Array)
    .error(codes::UNKNOWN_WORKER, meaning(codes::UNKNOWN_WORKER))
    .error(codes::STOPPING, meaning(codes::STOPPING))
    .error(codes::RELOADING, meaning(codes::RELOADING))
}

fn worker_scale() -> Method<Ctl> {
    let m = Method::new("worker.scale", |ctl: &mut Ctl, args| {
        let name = args.get_str("name").unwrap_or_default().to_string();
        let n = args.get_i64("instances").unwrap_or(-1);
        if !(0..=i64::try_from(ctl.max_workers).unwrap_or(i64::MAX)).contains(&n) {
            let max = ctl.max_workers;
            return Reply::Error(RpcError::invalid_params(format!("param 'instances' must be between 0 and {max}")));
        }
        if ctl.is_stopping() {
            return Reply::Error(RpcError::new(codes::STOPPING, "the daemon is stopping"));
        }
        match ctl.worker(&name) {
            Ok(w) if ctl.refuse_if_reloading(w).is_err() => Reply::Error(ctl.refuse_if_reloading(w).unwrap_err()),
            Ok(w) if ctl.sup.processes_after_scale(w, n as u32) > ctl.max_workers => {
                let total = ctl.sup.processes_after_scale(w, n as u32);
                Reply::Error(RpcError::new(
                    codes::TOO_MANY_WORKERS,
                    format!(
                        "scaling {name} to {n} would make {total} worker processes (stopping ones included): \
                         at most {}",
                        ctl.max_workers
                    ),
                ))
            }
            Ok(w) => {
                let now = ctl.now;
                ctl.sup.scale(w, n as u32, now);
                ctl.views.resize(ctl.sup.instances().len(), InstanceView::default());
                value(json!(n))
            }
            Err(e) => Reply::Error(e),
        }
    })
    .help("Resize a worker's pool to the given number of instances.")
    .param(ParamType::String, "name")
    .param(ParamType::Int, "instances")
    .returns(ParamType::Int);
    with_errors(m, &[codes::UNKNOWN_WORKER, codes::STOPPING, codes::TOO_MANY_WORKERS, codes::RELOADING])
}

fn worker_send() -> Method<Ctl> {
    let m = Method::new("worker.send", |ctl: &mut Ctl, args| {
        let name = args.get_str("name").unwrap_or_default().to_string();
        let message = args.get("message").cloned().unwrap_or(Value::Null);
        ctl.message_worker(&name, message)
    })
    .defers()
    .help("Send a custom message to a worker and answer with its reply.")
    .param(ParamType::String, "name")
    .param(ParamType::Any, "message")
    .returns(ParamType::Any);
    with_errors(m, WORKER_ERRORS)
}

fn pause_resume(name: &'static str, command: Command, help: &'static str) -> Method<Ctl> {
    let m = Method::new(name, move |ctl: &mut Ctl, args| {
        let target = args.get_str("name").map(str::to_string);
        match ctl.targets(target.as_deref()) {
            Ok((ids, every)) => {
                ctl.command(ids, command.clone(), if every { JoinKind::Every } else { JoinKind::Named })
            }
            Err(e) => Reply::Error(e),
        }
    })
    .defers()
    .help(help)
    .returns(ParamType::Array)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Array);
    with_errors(m, WORKER_ERRORS)
}
