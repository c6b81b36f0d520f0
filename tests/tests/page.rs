//! The status page in a real headless Chromium, driven over the DevTools
//! protocol by `tests/cdp/status_page.py`: on a tcp daemon with a token it
//! asks for the token, finds the workers, pauses one with a click (seen
//! without a reload), sees a worker killed from outside restart, fits a
//! phone's screen, and logs no error. The daemon then confirms that the
//! click went through the API.

use std::net::TcpListener;
use std::process::Command;

use forkd_os::Address;
use forkd_tests::{Daemon, TempDir};
use serde_json::Value;

#[test]
fn the_page_pauses_a_worker_and_shows_a_restart_live_in_chromium() {
    let dir = TempDir::new("page-chromium");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let env = [("POOL_SIZE", "2"), ("POOL_WORKERS", "1"), ("POOL_LOOPTIME_MS", "200")];
    let d = Daemon::start_at(&dir, "pool-daemon", &address, &[], &env);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cdp/status_page.py");
    // FORKD_SCREENSHOTS=docs keeps the screenshots (the README's).
    let out_dir = std::env::var("FORKD_SCREENSHOTS").unwrap_or_else(|_| dir.path().display().to_string());
    let out = Command::new("python3")
        .args([script, &format!("http://127.0.0.1:{port}/"), &d.token(), "w0", "idle", &out_dir])
        .output()
        .expect("run python3 (with websocket-client; .ci/run installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the page test failed:\n{said}\ndaemon log:\n{}", d.log());
    assert!(std::path::Path::new(&out_dir).join("status-page.png").exists());

    let list = d.call("worker.list", Value::Null).unwrap();
    let find = |name: &str| list.as_array().unwrap().iter().find(|w| w["name"] == name && w["instance"] == 0).unwrap();
    assert_eq!(find("w0")["state"], "paused", "the click paused w0 through the API");
    let idle0 = find("idle");
    assert_eq!(idle0["restarts"], 1, "the worker killed from outside was restarted");
}
