//! `status` on a real daemon: an aligned table, plain when piped and in
//! colour on a terminal unless `NO_COLOR`, and JSON with `--json`.

use std::process::Command;

use forkd_tests::{bin, Daemon, TempDir, DEADLINE};
use serde_json::Value;

fn pool(dir: &TempDir) -> Daemon {
    Daemon::start(dir, "pool-daemon", &[], &[("POOL_SIZE", "2"), ("POOL_LOOPTIME_MS", "100")])
}

#[test]
fn piped_status_is_a_plain_aligned_table_and_json_with_the_flag() {
    let dir = TempDir::new("status-piped");
    let d = pool(&dir);
    let out = d.control("pool-daemon", &["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no colour when piped: {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("NAME"), "{text}");
    let column = |line: &str, word: &str| line.find(word);
    let state_at = column(lines[1], "STATE").unwrap();
    for row in &lines[2..] {
        assert!(row.starts_with("idle"), "{text}");
        assert!(row[state_at..].starts_with(char::is_alphabetic), "the STATE column is aligned:\n{text}");
    }

    let out = d.control("pool-daemon", &["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(json["daemon"]["pid"], d.pid());
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(2), "{json}");
}

#[test]
fn on_a_terminal_states_are_coloured_unless_no_color() {
    let dir = TempDir::new("status-tty");
    let d = pool(&dir);
    forkd_tests::wait_until("both looping", DEADLINE, || {
        let list = d.call("worker.list", Value::Null).unwrap();
        list.as_array().unwrap().iter().all(|w| w["state"] == "looping")
    });
    let session = |no_color: bool| {
        let mut cmd = Command::new(bin("pool-daemon"));
        cmd.args(["--socket", &d.socket.to_string(), "status"]).env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let mut p = rexpect::session::spawn_command(cmd, Some(DEADLINE.as_millis() as u64)).expect("spawn under a pty");
        p.exp_eof().expect("status ends")
    };
    let coloured = session(false);
    assert!(coloured.contains("\x1b[32mlooping\x1b[0m"), "{coloured:?}");
    let plain = session(true);
    assert!(plain.contains("looping") && !plain.contains('\x1b'), "{plain:?}");
}
