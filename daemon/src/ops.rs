//! The operator's commands beside `status`'s table: the colour of a state
//! on a terminal, and `events`, a live tail of the event stream in the
//! manner of `journalctl -f`.

use std::io::{IsTerminal, Write};

use forkd_os::Address;
use serde_json::Value;

use crate::ConnectOptions;

/// Whether standard output gets colour: a terminal, and `NO_COLOR` unset
/// or empty (<https://no-color.org>).
pub(crate) fn colour_stdout() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_colour && std::io::stdout().is_terminal()
}

/// `cell` (the padded text of `state`) in the state's colour.
pub(crate) fn paint_state(state: &str, cell: &str) -> String {
    let code = match state {
        "looping" => "32",
        "paused" => "33",
        "spinup" | "spindown" => "36",
        "failed" => "1;31",
        "exited" => "31",
        _ => "2",
    };
    // Only the word is painted, so the padding after it stays plain.
    let pad = &cell[state.len().min(cell.len())..];
    format!("\x1b[{code}m{state}\x1b[0m{pad}")
}

/// `events`: subscribes and prints each event as it comes, until the
/// daemon closes the stream (0), or drops this subscriber for not keeping
/// up, or the connection fails (1).
pub(crate) fn events(address: &Address, options: &ConnectOptions, json: bool) -> u8 {
    let client = match crate::cli::connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let events = match client.subscribe() {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let stdout = std::io::stdout();
    for event in events {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let dropped = event["type"] == "stream.dropped";
        let line = if json { event.to_string() } else { render_event(&event) };
        let mut out = stdout.lock();
        // A closed pipe (`forkd events | head`) ends the tail quietly.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return 0;
        }
        if dropped {
            // The tail missed events: a script must not take it for a
            // daemon that stopped.
            eprintln!("error: the daemon dropped this subscriber: it did not keep up with the events");
            return 1;
        }
    }
    0
}

/// One event as a line: its time since the daemon started, its type,
/// whom it is about and what it says.
pub(crate) fn render_event(event: &Value) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    // The stream's own notices (`stream.dropped`) carry no time.
    let time = match event["time"].as_f64() {
        Some(t) => format!("{t:>10.3}s"),
        None => format!("{:>11}", "-"),
    };
    let mut line = format!("{time}  {kind:<18}");
    if let Some(w) = event["worker"].as_str() {
        line.push_str(&format!("  {w}/{}", event["instance"]));
    }
    if let Some(w) = event["reload"].as_str() {
        line.push_str(&format!("  {w}"));
    }
    if let Some(s) = event["signal"].as_str() {
        line.push_str(&format!("  {s}"));
    }
    if let Some(n) = event["name"].as_str() {
        line.push_str(&format!("  {n}"));
    }
    let data = &event["data"];
    let detail = match (data.get("code"), data.get("signal"), data.get("reason")) {
        (Some(c), _, Some(r)) => format!("exit {c} ({})", r.as_str().unwrap_or("")),
        (_, Some(s), Some(r)) => format!("{} ({})", s.as_str().unwrap_or(""), r.as_str().unwrap_or("")),
        _ if data.is_null() => String::new(),
        _ => data.to_string(),
    };
    if !detail.is_empty() {
        line.push_str("  ");
        line.push_str(&detail);
    }
    if let Some(r) = event["reason"].as_str() {
        line.push_str(&format!("  {r}"));
    }
    line
}

/// `upgrade`: asks for `daemon.upgrade` and says what came of it: the old
/// and new pids, or why the old master serves on (exit 1).
pub(crate) fn upgrade(address: &Address, options: &ConnectOptions) -> u8 {
    let mut client = match crate::cli::connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A master killed while it ran the call closes the connection as a
    // drained one does: sent again, it would start a second upgrade.
    client.set_retry(false);
    match client.call("daemon.upgrade", Value::Null) {
        Ok(v) => {
            println!(
                "upgraded: pid {} -> {} (version {})",
                v["previous"],
                v["pid"],
                v["version"].as_str().unwrap_or("?")
            );
            0
        }
        Err(e) => {
            crate::cli::call_failed(address, &e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_lines() {
        let exit = json!({"type": "worker.exited", "seq": 3, "time": 1.5, "worker": "copy", "instance": 0,
            "data": {"signal": "SIGKILL", "reason": "signal"}});
        assert_eq!(render_event(&exit), "     1.500s  worker.exited       copy/0  SIGKILL (signal)");
        let sig = json!({"type": "signal", "seq": 1, "time": 0.25, "signal": "SIGUSR1"});
        assert_eq!(render_event(&sig), "     0.250s  signal              SIGUSR1");
    }

    #[test]
    fn a_coloured_table_aligns_as_the_plain_one() {
        let info = json!({"description": "d", "pid": 1, "version": "0", "uptime": 1.0, "address": "x"});
        let w = |name: &str, state: &str| {
            json!({"name": name, "instance": 0, "pid": 5, "state": state, "looptime": 1.0, "loops": 2,
                "restarts": 0, "last_exit": null})
        };
        let workers = json!([w("a", "looping"), w("bb", "paused"), w("c", "failed")]);
        let plain = crate::cli::render_status(&info, &workers, false);
        let coloured = crate::cli::render_status(&info, &workers, true);
        assert!(coloured.contains("\x1b[32mlooping\x1b[0m"), "{coloured}");
        let stripped = coloured.replace("\x1b[0m", "").replace("\x1b[32m", "").replace("\x1b[33m", "");
        assert_eq!(stripped.replace("\x1b[1;31m", ""), plain);
    }
}
