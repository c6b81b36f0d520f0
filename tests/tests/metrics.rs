//! `GET /metrics` on real daemons: after kills, a manual restart and a
//! pause, Prometheus's own `promtool check metrics` accepts the
//! exposition, and its values say what happened (restarts counted by
//! reason, states right, memory plausible); OpenMetrics when asked for;
//! on tcp the token is wanted, as for the API.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use forkd_os::Address;
use forkd_tests::{run, wait_until, Daemon, TempDir, DEADLINE};
use serde_json::{json, Value};

/// `GET path` on a unix daemon with extra header lines: (head, body).
fn get(d: &Daemon, path: &str, extra: &str) -> (String, String) {
    let Address::Unix(socket) = &d.socket else { panic!("a unix daemon") };
    let mut s = UnixStream::connect(socket).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_string(), body.to_string())
}

/// The value of the sample `name{labels}` (labels as written, in order).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package; .ci/run installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

fn list(d: &Daemon) -> Vec<Value> {
    d.call("worker.list", Value::Null).unwrap().as_array().unwrap().clone()
}

fn entry(d: &Daemon, name: &str, instance: u64) -> Value {
    list(d).into_iter().find(|w| w["name"] == name && w["instance"] == instance).expect("the instance is listed")
}

#[test]
fn a_scrape_after_kills_and_restarts_parses_and_tells_what_happened() {
    let dir = TempDir::new("metrics-scrape");
    let env = [("POOL_SIZE", "2"), ("POOL_WORKERS", "1"), ("POOL_LOOPTIME_MS", "100")];
    let d = Daemon::start(&dir, "pool-daemon", &[], &env);
    wait_until("every worker looping", DEADLINE, || list(&d).iter().all(|w| w["state"] == "looping"));

    // idle/0 killed from outside, w0 restarted by hand, idle/1 paused.
    let victim = entry(&d, "idle", 0)["pid"].as_i64().unwrap() as i32;
    // Safety: kill the daemon's worker process.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until("idle/0 restarted", DEADLINE, || {
        let w = entry(&d, "idle", 0);
        w["restarts"] == 1 && w["state"] == "looping"
    });
    d.call("worker.restart", json!({"name": "w0"})).unwrap();
    wait_until("w0 restarted", DEADLINE, || {
        let w = entry(&d, "w0", 0);
        w["restarts"] == 1 && w["state"] == "looping"
    });
    let before = list(&d);
    assert!(d.call("no.such.method", Value::Null).is_err());

    let (head, text) = get(&d, "/metrics", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    promtool_accepts(&text);

    let idle0 = r#"worker="idle",instance="0""#;
    let w0 = r#"worker="w0",instance="0""#;
    assert_eq!(value(&text, &format!("forkd_worker_restarts_total{{{idle0},reason=\"signal\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("forkd_worker_restarts_total{{{idle0},reason=\"exit\"}}")), Some(0.0));
    assert_eq!(value(&text, &format!("forkd_worker_restarts_total{{{w0},reason=\"manual\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("forkd_worker_last_exit_code{{{idle0}}}")), Some(137.0), "128 + SIGKILL");
    for w in &before {
        let labels = format!("worker=\"{}\",instance=\"{}\"", w["name"].as_str().unwrap(), w["instance"]);
        assert_eq!(value(&text, &format!("forkd_worker_up{{{labels}}}")), Some(1.0), "{labels}");
        assert_eq!(value(&text, &format!("forkd_worker_state{{{labels},state=\"looping\"}}")), Some(1.0));
        assert_eq!(value(&text, &format!("forkd_worker_state{{{labels},state=\"paused\"}}")), Some(0.0));
        let rss = value(&text, &format!("forkd_worker_resident_memory_bytes{{{labels}}}")).expect("memory");
        assert!((100e3..1e9).contains(&rss), "{labels}: {rss} bytes resident");
        let loops = value(&text, &format!("forkd_worker_loops_total{{{labels}}}")).unwrap();
        assert!(loops >= w["loops"].as_f64().unwrap(), "loops only grow within one process");
    }
    let rss = value(&text, "process_resident_memory_bytes").unwrap();
    assert!((100e3..1e9).contains(&rss), "the master's {rss} bytes resident");
    let fds = value(&text, "process_open_fds").unwrap();
    assert!(fds >= 3.0 && fds <= value(&text, "process_max_fds").unwrap(), "{fds} descriptors open");
    assert!(value(&text, "process_start_time_seconds").unwrap() > 1.5e9);
    assert_eq!(value(&text, r#"forkd_rpc_requests_total{method="other",outcome="error"}"#), Some(1.0));
    assert!(value(&text, r#"forkd_rpc_requests_total{method="worker.list",outcome="ok"}"#).unwrap() >= 4.0);
    let calls = value(&text, r#"forkd_rpc_request_duration_seconds_count{method="worker.list"}"#).unwrap();
    assert_eq!(
        value(&text, r#"forkd_rpc_request_duration_seconds_bucket{method="worker.list",le="+Inf"}"#),
        Some(calls)
    );
    assert!(value(&text, "forkd_connections_accepted_total").unwrap() >= 5.0);
    assert!(text.contains(&format!("forkd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));

    // Paused: its state series says so.
    d.call("worker.pause", json!({"name": "w0"})).unwrap();
    let (_, text) = get(&d, "/metrics", "");
    assert_eq!(value(&text, &format!("forkd_worker_state{{{w0},state=\"paused\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("forkd_worker_state{{{w0},state=\"looping\"}}")), Some(0.0));

    // OpenMetrics when the scraper asks for it.
    let (head, om) = get(&d, "/metrics", "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n");
    assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE forkd_worker_restarts counter\n"), "the family without _total");
}

#[test]
fn on_tcp_metrics_and_events_want_the_token_and_the_page_does_not() {
    let dir = TempDir::new("metrics-tcp");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, "echo-daemon", &address, &[], &[]);
    let bearer = format!("Authorization: Bearer {}", d.token());
    let status = |path: &str, auth: Option<&str>| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"];
        if let Some(a) = auth {
            args.extend(["-H", a]);
        }
        args.push(&url);
        String::from_utf8(run("curl", &args).stdout).unwrap()
    };
    assert_eq!(status("/metrics", None), "401");
    assert_eq!(status("/events", None), "401");
    assert_eq!(status("/metrics", Some(&bearer)), "200");
    assert_eq!(status("/", None), "200", "the page carries no data");
    assert_eq!(status("/health", None), "200");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = run("curl", ["-s", "--max-time", "2", "-H", &bearer, "-H", "Origin: http://evil.example", &url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("origin not allowed"), "no cross-origin reads");
}
