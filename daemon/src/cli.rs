//! What a forkd daemon binary does with its command line: run the daemon,
//! print the usage, or act as its own control client.
//!
//! Exit codes: 0 done; 1 the daemon failed to start or a call failed;
//! 2 the command line or the configuration is invalid; 3 no daemon answers.

use std::time::Duration;

use forkd_core::daemon::Config;
use forkd_os::real::RealOs;
use forkd_os::{Address, Os, Pid};
use serde_json::{Map, Value};

use crate::builder::Builder;
use crate::client::{Client, ClientError, ConnectOptions};
use crate::console::{self, Action};
use crate::logger::{self, Target};
use crate::serve::{self, Mode};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits for the daemon's process to go.
const STOP_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn main(builder: Builder, args: &[String]) -> u8 {
    if !builder.errors.is_empty() {
        for e in &builder.errors {
            eprintln!("error: {e}");
        }
        return 2;
    }
    // A new master resolves relative paths where the first one started.
    let cwd = match crate::upgrade::start_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: current directory: {e}");
            return 2;
        }
    };
    let console::Parsed { action, config, log_file: log_flag, token } =
        match console::parse(&builder.daemon.config, args, &cwd) {
            Ok(parsed) => parsed,
            Err(message) => {
                eprint!("{message}");
                return 2;
            }
        };
    match action {
        Action::Help => {
            print!("{}", console::usage_named(&builder.daemon.config, args.first().map(String::as_str)));
            0
        }
        Action::Status { json } => status(&config.address, &connect_options(&config, token), json),
        Action::Events { json } => crate::ops::events(&config.address, &connect_options(&config, token), json),
        Action::Stop => stop(&config.address, &connect_options(&config, token)),
        Action::Reload { name } => reload(&config.address, &connect_options(&config, token), name.as_deref()),
        Action::Upgrade => {
            // The answer comes once the new master serves or failed.
            let wait = config.upgrade_timeout + CALL_TIMEOUT;
            crate::ops::upgrade(&config.address, &connect_options(&config, token).timeout(wait))
        }
        Action::Call { method, params } => call(&config.address, &connect_options(&config, token), &method, &params),
        Action::Describe { text } => crate::describe::describe(&config.address, &connect_options(&config, token), text),
        Action::Usage(help) => {
            print!("{help}");
            0
        }
        Action::Run { daemon, verbose } => {
            let log_file = log_flag.or_else(|| builder.log_file.as_ref().map(|p| cwd.join(p)));
            let mut builder = builder;
            builder.daemon.config = config;
            run(builder, daemon, verbose, log_file)
        }
    }
}

fn run(mut builder: Builder, daemon: bool, verbose: bool, log_file: Option<std::path::PathBuf>) -> u8 {
    let mode = if daemon { Mode::Detached } else { Mode::Foreground };
    let target = match (daemon, log_file) {
        (true, Some(path)) => Target::File(path),
        (true, None) => Target::Nowhere,
        (false, _) => Target::Stderr,
    };
    // Before the fork, so that a refused log file is said on the terminal
    // and the launcher exits 1.
    if let Err(e) = logger::init(target, verbose) {
        eprintln!("error: {e}");
        return 1;
    }
    builder.daemon.reopen_log = Some(logger::reopen);
    let (code, message) = serve::exit_code(&serve::serve_real(builder.daemon, mode));
    if let Some(message) = message {
        eprint!("{message}");
    }
    code
}

/// How the control subcommands connect: with `--token`, else
/// `FORKD_TOKEN`, else the token file the daemon wrote (`--token-file`, or
/// the one next to the pid file).
fn connect_options(config: &Config, token: Option<String>) -> ConnectOptions {
    let options = ConnectOptions::new(CALL_TIMEOUT).token_file(config.token_path());
    match token {
        Some(t) => options.token(t),
        None => options,
    }
}

pub(crate) fn connect(address: &Address, options: &ConnectOptions) -> Result<Client, u8> {
    Client::connect_with(address, options).map_err(|e| match &e {
        // The socket file is there, but its mode keeps this user out: a
        // daemon runs, and this user may not control it.
        ClientError::Io(_, io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("error: {e}: this user may not use the daemon's socket (see SECURITY.md)");
            1
        }
        ClientError::Io(..) | ClientError::Closed(_) => {
            eprintln!("error: not running: {e}");
            3
        }
        _ => {
            eprintln!("error: {e}");
            1
        }
    })
}

/// Says what a failed call means. A daemon that closes a unix connection
/// before answering anything may have refused this user (its log says
/// so), which is worth saying.
pub(crate) fn call_failed(address: &Address, e: &ClientError) {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    let unanswered = match e {
        ClientError::Closed(_) => true,
        ClientError::Io(_, io) => matches!(io.kind(), BrokenPipe | ConnectionReset),
        _ => false,
    };
    if unanswered && matches!(address, Address::Unix(_)) {
        eprintln!(
            "error: {e}: the daemon closed the connection unanswered; it admits only its own user, root \
             and the users and groups it allows (see SECURITY.md)"
        );
    } else {
        eprintln!("error: {e}");
    }
}

fn status(address: &Address, options: &ConnectOptions, json: bool) -> u8 {
    let mut client = match connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (info, workers) = match (client.call("daemon.info", Value::Null), client.call("worker.list", Value::Null)) {
        (Ok(i), Ok(w)) => (i, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if json {
        println!("{}", serde_json::json!({ "daemon": info, "workers": workers }));
    } else {
        print!("{}", render_status(&info, &workers, crate::ops::colour_stdout()));
    }
    0
}

/// The `status` text: the daemon's line, then a table of its workers.
pub(crate) fn render_status(info: &Value, workers: &Value, colour: bool) -> String {
    let mut out = format!(
        "{} (pid {}, version {}, up {:.1} s) on {}\n",
        info["description"].as_str().unwrap_or("daemon"),
        info["pid"],
        info["version"].as_str().unwrap_or("?"),
        info["uptime"].as_f64().unwrap_or(0.0),
        info["address"].as_str().unwrap_or("?"),
    );
    let rows: Vec<[String; 8]> = workers
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    let last_exit = match &w["last_exit"] {
                        Value::Object(m) => m
                            .get("code")
                            .map(|c| format!("exit {c}"))
                            .or_else(|| m.get("signal").and_then(Value::as_str).map(str::to_string))
                            .unwrap_or_default(),
                        _ => "-".into(),
                    };
                    [
                        w["name"].as_str().unwrap_or("").to_string(),
                        w["instance"].to_string(),
                        if w["pid"].is_null() { "-".into() } else { w["pid"].to_string() },
                        w["state"].as_str().unwrap_or("").to_string(),
                        format!("{}s", w["looptime"]),
                        w["loops"].to_string(),
                        w["restarts"].to_string(),
                        last_exit,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        out.push_str("no workers\n");
        return out;
    }
    let header = ["NAME", "INSTANCE", "PID", "STATE", "LOOPTIME", "LOOPS", "RESTARTS", "LAST EXIT"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cell = format!("{c:<w$}", w = widths[i]);
                // The state column, padded first so that colour codes do
                // not count towards its width.
                if i == 3 && colour && !std::ptr::eq(r, &header) {
                    crate::ops::paint_state(c, &cell)
                } else {
                    cell
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn stop(address: &Address, options: &ConnectOptions) -> u8 {
    let mut client = match connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let pid = match client.call("daemon.info", Value::Null) {
        Ok(info) => info["pid"].as_i64().unwrap_or(0) as i32,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match client.call("daemon.shutdown", Value::Null) {
        Ok(_) | Err(ClientError::Closed(_)) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    // Wait until the process is gone, with a deadline: the daemon's own stop
    // is bounded by its stop timeout.
    if pid > 0 {
        let mut os = match RealOs::new() {
            Ok(os) => os,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let deadline = os.now() + STOP_WAIT;
        match os.wait_gone(Pid(pid), deadline) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("error: daemon (pid {pid}) still running after {} s", STOP_WAIT.as_secs());
                return 1;
            }
            Err(e) => {
                eprintln!("error: wait for pid {pid}: {e}");
                return 1;
            }
        }
    }
    println!("stopped (pid {pid})");
    0
}

/// How long `reload` waits for its answer: a reload waits for each new
/// instance to be ready, up to its worker's reload timeout.
const RELOAD_WAIT: Duration = Duration::from_secs(600);

/// `reload [NAME]`: `worker.reload`, then one line per replaced instance.
fn reload(address: &Address, options: &ConnectOptions, name: Option<&str>) -> u8 {
    let mut client = match connect(address, &options.clone().timeout(RELOAD_WAIT)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Sent again after a master was killed while it ran it, a reload would
    // run twice.
    client.set_retry(false);
    let params = name.map_or(Value::Null, |n| serde_json::json!({ "name": n }));
    match client.call("worker.reload", params) {
        Ok(v) => {
            let replaced = v.as_array().cloned().unwrap_or_default();
            for r in &replaced {
                println!(
                    "{}/{}: pid {} -> {}",
                    r["name"].as_str().unwrap_or("?"),
                    r["instance"],
                    r["old_pid"],
                    r["new_pid"]
                );
            }
            println!("reloaded: {} instance(s) replaced", replaced.len());
            0
        }
        Err(e) => {
            call_failed(address, &e);
            1
        }
    }
}

fn call(address: &Address, options: &ConnectOptions, method: &str, args: &[String]) -> u8 {
    let params = match parse_params(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut client = match connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(method, params) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Err(e) => {
            call_failed(address, &e);
            1
        }
    }
}

/// `call` params: nothing; one JSON array or object; `key=value` pairs (an
/// object); or plain values (an array). A value that parses as JSON is
/// taken as JSON, anything else as a string.
pub(crate) fn parse_params(args: &[String]) -> Result<Value, String> {
    let value = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string()));
    match args {
        [] => Ok(Value::Null),
        [one] if one.starts_with('{') || one.starts_with('[') => {
            serde_json::from_str(one).map_err(|e| format!("invalid JSON params: {e}"))
        }
        _ if args.iter().all(|a| a.contains('=')) => {
            let mut map = Map::new();
            for a in args {
                let (k, v) = a.split_once('=').unwrap();
                if k.is_empty() {
                    return Err(format!("invalid param {a:?}: empty name"));
                }
                map.insert(k.to_string(), value(v));
            }
            Ok(Value::Object(map))
        }
        _ if args.iter().any(|a| a.contains('=')) => {
            Err("params are either all key=value or all plain values".to_string())
        }
        _ => Ok(Value::Array(args.iter().map(|a| value(a)).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn call_params() {
        let s = |a: &[&str]| parse_params(&a.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), Ok(Value::Null));
        assert_eq!(s(&["{\"message\":\"hi\"}"]), Ok(json!({"message": "hi"})));
        assert_eq!(s(&["message=hi", "n=3"]), Ok(json!({"message": "hi", "n": 3})));
        assert_eq!(s(&["hi", "3"]), Ok(json!(["hi", 3])));
        assert!(s(&["a=1", "b"]).is_err());
        assert!(s(&["{oops"]).is_err());
    }

    #[test]
    fn status_table() {
        let info = json!({"description": "Copy Daemon", "pid": 42, "version": "0.1.0", "uptime": 1.5, "address": "unix:///d.sock"});
        let workers = json!([{"name": "handyman", "instance": 0, "pid": 43, "state": "looping", "looptime": 10.0,
            "loops": 3, "restarts": 1, "last_exit": {"signal": "SIGKILL"}}]);
        insta::assert_snapshot!(render_status(&info, &workers, false));
    }
}
