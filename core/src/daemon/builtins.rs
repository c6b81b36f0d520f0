//! The built-in `daemon.*` and `worker.*` methods, one function each. They
//! act through [`Ctl`] alone, as a user's methods do.

use serde_json::{json, Map, Value};

use super::control::{codes, Ctl, InstanceView};
use crate::rpc::{Method, ParamType, Registry, Reply, RpcError};
use crate::worker::Command;

/// Adds the built-in methods to `registry`.
pub fn register_builtins(registry: &mut Registry<Ctl>) {
    let methods: Vec<Method<Ctl>> = vec![
        daemon_info(),
        daemon_shutdown(),
        worker_list(),
        worker_status(),
        pause_resume(
            "worker.pause",
            Command::Pause,
            "Pause a worker (every worker without a name); answer once it has acknowledged.",
        ),
        pause_resume(
            "worker.resume",
            Command::Resume,
            "Resume a paused worker (every worker without a name); answer once it has acknowledged.",
        ),
        worker_restart(),
        worker_scale(),
        worker_send(),
        super::observe::daemon_metrics(),
        super::observe::daemon_overview(),
    ];
    for m in methods {
        registry.add(m).expect("built-in method names are unique");
    }
}

fn value(v: Value) -> Reply {
    Reply::Value(v)
}

fn daemon_info() -> Method<Ctl> {
    Method::new("daemon.info", |ctl: &mut Ctl, _| {
        value(json!({
            "pid": ctl.info.pid.0,
            "version": env!("CARGO_PKG_VERSION"),
            "description": ctl.info.description,
            "uptime": ctl.now.saturating_duration_since(ctl.info.started).as_secs_f64(),
            "address": ctl.info.address,
            "workers": ctl.sup.instances().iter().filter(|i| i.state.pid().is_some()).count(),
        }))
    })
    .description("Tell the daemon's pid, version, uptime in seconds, address and number of worker processes.")
    .returns(ParamType::Struct)
}

fn daemon_shutdown() -> Method<Ctl> {
    Method::new("daemon.shutdown", |ctl: &mut Ctl, _| {
        ctl.stop("daemon.shutdown");
        value(Value::Bool(true))
    })
    .description("Stop the daemon gracefully: answer, finish requests in flight, stop the workers, exit.")
    .returns(ParamType::Boolean)
}

fn worker_list() -> Method<Ctl> {
    Method::new("worker.list", |ctl: &mut Ctl, _| {
        let all: Vec<Value> = (0..ctl.sup.instances().len())
            .filter(|&id| ctl.sup.instances_of(ctl.sup.instance(id).worker).any(|i| i == id))
            .map(|id| ctl.instance_json(id))
            .collect();
        value(Value::Array(all))
    })
    .description(
        "List every worker process: name, instance, pid, state, looptime, forever, loops, restarts, last_exit, \
         last_error.",
    )
    .returns(ParamType::Array)
}

fn worker_status() -> Method<Ctl> {
    Method::new("worker.status", |ctl: &mut Ctl, args| {
        let name = args.get_str("name");
        match ctl.targets(name) {
            Ok((ids, true)) => {
                let mut map = Map::new();
                for id in ids {
                    let n = ctl.instance_key(id);
                    map.insert(n, Value::String(ctl.state_name(id).to_string()));
                }
                value(Value::Object(map))
            }
            Ok((ids, false)) => match ids.first() {
                Some(&id) if ids.len() == 1 => value(ctl.instance_json(id)),
                _ => value(Value::Array(ids.iter().map(|&id| ctl.instance_json(id)).collect())),
            },
            Err(e) => Reply::Error(e),
        }
    })
    .description("Tell a worker's status; without a name, the state of every worker by name.")
    .returns(ParamType::Struct)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Struct)
}

fn worker_restart() -> Method<Ctl> {
    Method::new("worker.restart", |ctl: &mut Ctl, args| {
        let name = args.get_str("name").unwrap_or_default().to_string();
        match ctl.worker(&name) {
            Ok(w) => {
                let now = ctl.now;
                let ids: Vec<usize> = ctl.sup.instances_of(w).collect();
                for id in ids {
                    ctl.sup.restart(id, now);
                }
                value(Value::Bool(true))
            }
            Err(e) => Reply::Error(e),
        }
    })
    .description("Restart a worker: stop its processes and start new ones.")
    .param(ParamType::String, "name")
    .returns(ParamType::Boolean)
}

fn worker_scale() -> Method<Ctl> {
    Method::new("worker.scale", |ctl: &mut Ctl, args| {
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
    .description("Resize a worker's pool to the given number of instances.")
    .param(ParamType::String, "name")
    .param(ParamType::Int, "instances")
    .returns(ParamType::Int)
}

fn worker_send() -> Method<Ctl> {
    Method::new("worker.send", |ctl: &mut Ctl, args| {
        let name = args.get_str("name").unwrap_or_default().to_string();
        let message = args.get("message").cloned().unwrap_or(Value::Null);
        ctl.message_worker(&name, message)
    })
    .defers()
    .description("Send a custom message to a worker and answer with its reply.")
    .param(ParamType::String, "name")
    .param(ParamType::Any, "message")
    .returns(ParamType::Any)
}

fn pause_resume(name: &'static str, command: Command, help: &'static str) -> Method<Ctl> {
    let cmd2 = command.clone();
    Method::new(name, move |ctl: &mut Ctl, args| {
        let target = args.get_str("name").map(str::to_string);
        match ctl.targets(target.as_deref()) {
            Ok((ids, by_name)) => ctl.command(ids, cmd2.clone(), by_name),
            Err(e) => Reply::Error(e),
        }
    })
    .defers()
    .description(help)
    .returns(ParamType::Struct)
    .signature()
    .param(ParamType::String, "name")
    .returns(ParamType::Boolean)
}
