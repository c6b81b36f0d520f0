//! The console: the daemon binary's command line, as the seed's default
//! console has it (`-d` to daemonize, `-f` for the foreground, `-v` for
//! debug logs, `-s` for a hard start), with a flag for each configuration
//! parameter, and the control subcommands (`status`, `stop`, `call`,
//! `describe`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use forkd_core::daemon::Config;
use forkd_os::Address;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Print the usage (no argument, or `-h`).
    Help,
    /// Run the daemon.
    Run {
        daemon: bool,
        verbose: bool,
    },
    /// `status`; with `--json`, the info and workers as JSON.
    Status {
        json: bool,
    },
    /// `events`: a live tail of the event stream; `--json`, raw lines.
    Events {
        json: bool,
    },
    Stop,
    /// `reload [NAME]`: a rolling reload of one worker, or of every one.
    Reload {
        name: Option<String>,
    },
    /// `upgrade`: the master executes its binary again and hands over.
    Upgrade,
    Call {
        method: String,
        params: Vec<String>,
    },
    /// Print the daemon's OpenRPC document, or with `--text` its methods.
    Describe {
        text: bool,
    },
    /// Print this help of a subcommand (`describe -h`).
    Usage(String),
}

fn command(config: &Config) -> Command {
    let d = config;
    Command::new("daemon")
        .about(d.description.clone())
        .disable_help_flag(true)
        .disable_help_subcommand(true)
        .args(run_args())
        .args(socket_args(d))
        .args(access_args(d))
        .subcommand(
            Command::new("status")
                .about("Show the daemon's info and a table of its workers")
                .arg(json_flag("Print the info and the workers as JSON"))
                .arg(help_arg()),
        )
        .subcommand(
            Command::new("events")
                .about(
                    "Follow the daemon's events as they happen, until it stops (exit 1 if dropped for not keeping up)",
                )
                .arg(json_flag("Print each event as one line of JSON"))
                .arg(help_arg()),
        )
        .subcommand(Command::new("stop").about("Ask the daemon to stop, and wait until it is gone").arg(help_arg()))
        .subcommand(
            Command::new("reload")
                .about(
                    "Reload a worker's instances (every worker's, without NAME) one batch at a time, each new one \
                     ready before an old one stops; print what was replaced (exit 1 if the reload failed)",
                )
                .arg(help_arg())
                .arg(Arg::new("name").value_name("NAME").help("The worker to reload; every worker without it")),
        )
        .subcommand(
            Command::new("upgrade")
                .about("Upgrade the master in place: run its binary as now on disk, and wait until it has taken over")
                .arg(help_arg()),
        )
        .subcommand(
            Command::new("call")
                .about("Call a method: call METHOD [JSON params | key=value ... | values ...]; no params sends none")
                .after_help("Options may come anywhere; put `--` before params that begin with a dash.")
                .arg(help_arg())
                .arg(
                    Arg::new("method")
                        .required_unless_present("help")
                        .value_name("METHOD")
                        .help("The method to call, e.g. daemon.info or my.echo"),
                )
                .arg(Arg::new("params").num_args(0..).value_name("PARAMS").help(
                    "The params: one JSON array or object, or key=value pairs (by name), or plain values (by \
                     position); values are JSON if they parse as JSON, text otherwise",
                )),
        )
        .subcommand(
            Command::new("describe")
                .about("Print the daemon's OpenRPC document (rpc.discover), or its methods with --text")
                .arg(help_arg())
                .arg(
                    Arg::new("text")
                        .long("text")
                        .action(ArgAction::SetTrue)
                        .help("Print a readable list of the methods instead of the JSON document"),
                ),
        )
}

/// `-h` of a subcommand (the root's own help flag is disabled, so each
/// subcommand has its own).
fn help_arg() -> Arg {
    Arg::new("help").short('h').long("help").action(ArgAction::SetTrue).help("Show this help")
}

/// How the daemon runs: help, -d, -f, -v, -s.
fn run_args() -> Vec<Arg> {
    vec![
        Arg::new("help").short('h').long("help").action(ArgAction::SetTrue).help("Show this help"),
        Arg::new("daemon")
                .short('d')
                .long("daemon")
                .action(ArgAction::SetTrue)
                .conflicts_with("foreground")
                .help("Run as a daemon: detach, and return once it is ready"),
        Arg::new("foreground")
                .short('f')
                .long("foreground")
                .action(ArgAction::SetTrue)
                .help("Run in the foreground, attached to the terminal (use this under systemd)"),
        Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue).help("Log debug messages"),
        Arg::new("hardstart")
                .short('s')
                .long("hardstart")
                .action(ArgAction::SetTrue)
                .help("Hard start (the original's flag): accepted, and changes nothing, as a stale socket or pid file never blocks a start"),
    ]
}

/// The control socket and its bounds, the pid file, the log file.
fn socket_args(d: &Config) -> Vec<Arg> {
    vec![
        Arg::new("socket")
            .long("socket")
            .global(true)
            .value_name("ADDRESS")
            .help(format!("Control socket: unix://PATH or tcp://IP:PORT [default: {}]", d.address)),
        Arg::new("pidfile")
            .long("pidfile")
            .global(true)
            .value_name("PATH")
            .help(format!("Pid file [default: {}]", d.pid_file.display())),
        Arg::new("socket-mode").long("socket-mode").value_name("OCTAL").help(format!(
            "Permission bits of a unix control socket, e.g. 660 with --allow-gid [default: {:o}]",
            d.socket_mode
        )),
        Arg::new("socket-buffer")
            .long("socket-buffer")
            .value_name("BYTES")
            .value_parser(clap::value_parser!(u32).range(1..=16 << 20))
            .help(format!("Bytes read from a connection at a time [default: {}]", d.socket_buffer)),
        Arg::new("socket-timeout")
            .long("socket-timeout")
            .value_name("SECONDS")
            .value_parser(clap::value_parser!(u32).range(1..))
            .help(format!("Close a connection idle this long [default: {}]", d.idle_timeout.as_secs())),
        Arg::new("max-connections")
            .long("max-connections")
            .value_name("N")
            .value_parser(clap::value_parser!(u32).range(1..=65536))
            .help(format!("Connections served at once [default: {}]", d.max_connections)),
        Arg::new("max-request")
            .long("max-request")
            .value_name("BYTES")
            .value_parser(clap::value_parser!(u32).range(64..))
            .help(format!("Largest request accepted [default: {}]", d.max_request)),
        Arg::new("niceness")
            .long("niceness")
            .value_name("N")
            .allow_negative_numbers(true)
            .value_parser(clap::value_parser!(i32).range(-20..=19))
            .help(format!(
                "Niceness of the daemon [default: {}]",
                d.niceness.map(|n| n.to_string()).unwrap_or_else(|| "unchanged".into())
            )),
    ]
}

/// Who may use the control socket, the bounds on what they ask, the log
/// file.
fn access_args(d: &Config) -> Vec<Arg> {
    vec![
        Arg::new("token").long("token").global(true).value_name("TOKEN").help(format!(
            "status/stop/call on tcp: the token (visible in ps: prefer {} or --token-file)",
            crate::client::TOKEN_ENV
        )),
        Arg::new("token-file").long("token-file").global(true).value_name("PATH").help(format!(
            "tcp: where the daemon writes its token and status/stop/call read it [default: {}]",
            d.token_path().display()
        )),
        Arg::new("no-token")
            .long("no-token")
            .action(ArgAction::SetTrue)
            .help("tcp: serve without a token (loopback only; logged as a warning)"),
        Arg::new("allow-host")
            .long("allow-host")
            .value_name("NAME")
            .action(ArgAction::Append)
            .help("Accept this HTTP Host name besides loopback names and IP addresses (repeatable)"),
        Arg::new("allow-origin")
            .long("allow-origin")
            .value_name("ORIGIN")
            .action(ArgAction::Append)
            .help("Serve browser requests from scheme://host[:port] (repeatable) [default: none]"),
        Arg::new("allow-uid")
            .long("allow-uid")
            .value_name("UID")
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(u32).range(0..u32::MAX as i64))
            .help("unix socket: let this user connect besides the daemon's own and root (repeatable)"),
        Arg::new("allow-gid")
            .long("allow-gid")
            .value_name("GID")
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(u32).range(0..u32::MAX as i64))
            .help("unix socket: let users of this primary group connect (repeatable)"),
        Arg::new("max-batch")
            .long("max-batch")
            .value_name("N")
            .value_parser(clap::value_parser!(u32).range(1..))
            .help(format!("Most calls in a batch or system.multicall [default: {}]", d.max_batch)),
        Arg::new("request-timeout")
            .long("request-timeout")
            .value_name("SECONDS")
            .value_parser(clap::value_parser!(u32).range(1..))
            .help(format!(
                "A request must arrive whole this soon after its first byte [default: {}]",
                d.request_timeout.as_secs()
            )),
        Arg::new("max-workers")
            .long("max-workers")
            .value_name("N")
            .value_parser(clap::value_parser!(u32).range(1..))
            .help(format!("Most worker processes at once [default: {}]", d.max_workers)),
        Arg::new("log-file")
            .long("log-file")
            .value_name("PATH")
            .help("With -d, log to this file (reopened on SIGUSR1) [default: no log]"),
    ]
}

fn json_flag(help: &'static str) -> Arg {
    Arg::new("json").long("json").action(ArgAction::SetTrue).help(help)
}

/// The usage text, as `-h` prints it.
pub fn usage(config: &Config) -> String {
    command(config).render_help().to_string()
}

/// The usage text with the binary's own name in its `Usage:` line.
pub(crate) fn usage_named(config: &Config, argv0: Option<&str>) -> String {
    let name = argv0.and_then(|a| std::path::Path::new(a).file_name()).and_then(|n| n.to_str());
    match name {
        Some(name) => command(config).bin_name(name).render_help().to_string(),
        None => usage(config),
    }
}

/// The parsed command line.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) action: Action,
    /// The configuration with the flags applied.
    pub(crate) config: Config,
    /// `--log-file`.
    pub(crate) log_file: Option<PathBuf>,
    /// `--token`, for the control subcommands.
    pub(crate) token: Option<String>,
}

/// The parsed command line: the action, and the config with its flags
/// applied. Relative paths are resolved against `cwd`.
pub(crate) fn parse(config: &Config, args: &[String], cwd: &std::path::Path) -> Result<Parsed, String> {
    let matches = command(config).try_get_matches_from(args).map_err(|e| e.render().to_string())?;
    let mut config = config.clone();
    // Shaped like clap's own errors, which the caller prints as they are.
    apply(&matches, &mut config).map_err(|e| format!("error: {e}\n"))?;
    config.address = config.address.resolve(cwd);
    config.pid_file = cwd.join(&config.pid_file);
    config.token_file = config.token_file.map(|p| cwd.join(p));
    let log_file = matches.get_one::<String>("log-file").map(|p| cwd.join(p));
    let token = match matches.get_one::<String>("token") {
        Some(t) if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err("error: invalid token: expected the content of the token file, without spaces\n".into())
        }
        t => t.cloned(),
    };
    let action = match matches.subcommand() {
        Some((sub, m)) if m.get_flag("help") => {
            let mut root = command(&config);
            let name = args.first().and_then(|a| std::path::Path::new(a).file_name()).and_then(|n| n.to_str());
            if let Some(name) = name {
                root = root.bin_name(name);
            }
            root.build();
            let help = root.find_subcommand_mut(sub).map(|c| c.render_help().to_string());
            Action::Usage(help.unwrap_or_default())
        }
        Some(("status", m)) => Action::Status { json: m.get_flag("json") },
        Some(("events", m)) => Action::Events { json: m.get_flag("json") },
        Some(("stop", _)) => Action::Stop,
        Some(("reload", m)) => Action::Reload { name: m.get_one::<String>("name").cloned() },
        Some(("upgrade", _)) => Action::Upgrade,
        Some(("describe", m)) => Action::Describe { text: m.get_flag("text") },
        Some(("call", m)) => Action::Call {
            method: m.get_one::<String>("method").cloned().unwrap_or_default(),
            params: m.get_many::<String>("params").map(|v| v.cloned().collect()).unwrap_or_default(),
        },
        _ => {
            let daemon = matches.get_flag("daemon");
            let foreground = matches.get_flag("foreground");
            if matches.get_flag("help") || (!daemon && !foreground) {
                Action::Help
            } else {
                Action::Run { daemon, verbose: matches.get_flag("verbose") }
            }
        }
    };
    Ok(Parsed { action, config, log_file, token })
}

fn apply(m: &ArgMatches, c: &mut Config) -> Result<(), String> {
    if let Some(s) = m.get_one::<String>("socket") {
        c.address = s.parse::<Address>().map_err(|e| e.to_string())?;
    }
    if let Some(p) = m.get_one::<String>("pidfile") {
        if p.is_empty() {
            return Err("invalid pid file: empty path".into());
        }
        c.pid_file = PathBuf::from(p);
    }
    if let Some(mode) = m.get_one::<String>("socket-mode") {
        c.socket_mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| format!("invalid socket mode {mode:?}: expected octal permission bits, at most 777"))?;
    }
    if let Some(n) = m.get_one::<u32>("socket-buffer") {
        c.socket_buffer = *n as usize;
    }
    if let Some(n) = m.get_one::<u32>("socket-timeout") {
        c.idle_timeout = Duration::from_secs(u64::from(*n));
    }
    if let Some(n) = m.get_one::<u32>("max-connections") {
        c.max_connections = *n as usize;
    }
    if let Some(n) = m.get_one::<u32>("max-request") {
        c.max_request = *n as usize;
    }
    if let Some(n) = m.get_one::<i32>("niceness") {
        c.niceness = Some(*n);
    }
    if let Some(p) = m.get_one::<String>("token-file") {
        if p.is_empty() {
            return Err("invalid token file: empty path".into());
        }
        c.token_file = Some(PathBuf::from(p));
    }
    if m.get_flag("no-token") {
        c.tcp_without_token = true;
    }
    for h in m.get_many::<String>("allow-host").into_iter().flatten() {
        c.allowed_hosts.push(crate::validate::host(h)?);
    }
    for o in m.get_many::<String>("allow-origin").into_iter().flatten() {
        c.allowed_origins.push(crate::validate::origin(o)?);
    }
    c.allowed_uids.extend(m.get_many::<u32>("allow-uid").into_iter().flatten());
    c.allowed_gids.extend(m.get_many::<u32>("allow-gid").into_iter().flatten());
    if let Some(n) = m.get_one::<u32>("max-batch") {
        c.max_batch = *n as usize;
    }
    if let Some(n) = m.get_one::<u32>("request-timeout") {
        c.request_timeout = Duration::from_secs(u64::from(*n));
    }
    if let Some(n) = m.get_one::<u32>("max-workers") {
        c.max_workers = *n as usize;
    }
    // `-s` (the seed's hard start) asks for what every start does anyway:
    // a stale socket file or pid file never blocks a start, and a live one
    // is never displaced.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("echo-daemon").chain(a.iter().copied()).map(String::from).collect()
    }

    fn run(a: &[&str]) -> Result<(Action, Config, Option<PathBuf>), String> {
        parsed(a).map(|p| (p.action, p.config, p.log_file))
    }

    fn parsed(a: &[&str]) -> Result<Parsed, String> {
        parse(&Config::new("Echo Daemon"), &args(a), std::path::Path::new("/srv"))
    }

    #[test]
    fn usage_text() {
        insta::assert_snapshot!(usage(&Config::new("Echo Daemon")));
    }

    #[test]
    fn no_argument_or_h_is_help() {
        assert_eq!(run(&[]).unwrap().0, Action::Help);
        assert_eq!(run(&["-h"]).unwrap().0, Action::Help);
        assert_eq!(run(&["-v"]).unwrap().0, Action::Help);
    }

    #[test]
    fn options_are_taken_anywhere_and_each_subcommand_has_its_help() {
        let p = parsed(&["call", "my.echo", "message=hi", "--socket", "unix:///run/x.sock"]).unwrap();
        assert_eq!(p.action, Action::Call { method: "my.echo".into(), params: vec!["message=hi".into()] });
        assert_eq!(p.config.address, Address::Unix("/run/x.sock".into()));
        let p = parsed(&["call", "--socket", "unix:///run/y.sock", "daemon.info"]).unwrap();
        assert_eq!(p.action, Action::Call { method: "daemon.info".into(), params: vec![] });
        assert_eq!(p.config.address, Address::Unix("/run/y.sock".into()));
        let p = parsed(&["call", "math.neg", "--", "-5"]).unwrap();
        assert_eq!(p.action, Action::Call { method: "math.neg".into(), params: vec!["-5".into()] });
        for sub in ["status", "stop", "call", "describe"] {
            match parsed(&[sub, "--help"]).unwrap().action {
                Action::Usage(text) => assert!(text.contains(&format!(" {sub} [OPTIONS]")), "{text}"),
                other => panic!("{sub} --help gave {other:?}"),
            }
        }
    }

    #[test]
    fn flags_override_the_configuration_and_paths_resolve() {
        let (action, c, log) = run(&[
            "-f",
            "-v",
            "--socket",
            "unix://x.sock",
            "--pidfile",
            "x.pid",
            "--max-connections",
            "64",
            "--log-file",
            "l",
        ])
        .unwrap();
        assert_eq!(action, Action::Run { daemon: false, verbose: true });
        assert_eq!(c.address, Address::Unix("/srv/x.sock".into()));
        assert_eq!(c.pid_file, PathBuf::from("/srv/x.pid"));
        assert_eq!(c.max_connections, 64);
        assert_eq!(log, Some(PathBuf::from("/srv/l")));
        let (_, c, _) = run(&["-f", "--socket-mode", "0660"]).unwrap();
        assert_eq!(c.socket_mode, 0o660);
        let e = run(&["-f", "--socket-mode", "999"]).unwrap_err();
        assert!(e.contains("invalid socket mode"), "{e}");
    }

    #[test]
    fn invalid_values_are_clear_errors() {
        let e = run(&["-f", "--socket", "udp://x"]).unwrap_err();
        assert!(e.contains("invalid address \"udp://x\""), "{e}");
        let e = run(&["-f", "--max-connections", "0"]).unwrap_err();
        assert!(e.contains("--max-connections"), "{e}");
        assert!(run(&["-d", "-f"]).is_err(), "-d and -f conflict");
    }

    #[test]
    fn control_subcommands() {
        assert_eq!(run(&["status"]).unwrap().0, Action::Status { json: false });
        assert_eq!(run(&["status", "--json"]).unwrap().0, Action::Status { json: true });
        assert_eq!(run(&["events", "--json"]).unwrap().0, Action::Events { json: true });
        let (action, c, _) = run(&["stop", "--socket", "tcp://127.0.0.1:1"]).unwrap();
        assert_eq!((action, c.address), (Action::Stop, "tcp://127.0.0.1:1".parse().unwrap()));
        assert_eq!(
            run(&["--socket", "tcp://127.0.0.1:1", "call", "my.echo", "message=hi"]).unwrap().0,
            Action::Call { method: "my.echo".into(), params: vec!["message=hi".into()] }
        );
        assert_eq!(run(&["describe"]).unwrap().0, Action::Describe { text: false });
        assert_eq!(run(&["describe", "--text"]).unwrap().0, Action::Describe { text: true });
        match run(&["describe", "--help"]).unwrap().0 {
            Action::Usage(help) => assert!(help.contains("--text") && help.contains("OpenRPC"), "{help}"),
            other => panic!("describe --help is {other:?}"),
        }
    }

    #[test]
    fn security_flags_fill_the_config() {
        let (_, c, _) = run(&[
            "-f",
            "--token-file",
            "t.token",
            "--no-token",
            "--allow-host",
            "Box.Example",
            "--allow-host",
            "other",
            "--allow-origin",
            "https://admin.example:8443",
            "--allow-uid",
            "1001",
            "--allow-uid",
            "0",
            "--allow-gid",
            "100",
            "--max-batch",
            "10",
            "--request-timeout",
            "3",
            "--max-workers",
            "8",
        ])
        .unwrap();
        assert_eq!(c.token_file, Some(PathBuf::from("/srv/t.token")), "resolved like the pid file");
        assert!(c.tcp_without_token);
        assert_eq!(c.allowed_hosts, ["box.example", "other"]);
        assert_eq!(c.allowed_origins, ["https://admin.example:8443"]);
        assert_eq!((&c.allowed_uids[..], &c.allowed_gids[..]), (&[1001, 0][..], &[100][..]));
        assert_eq!((c.max_batch, c.request_timeout, c.max_workers), (10, Duration::from_secs(3), 8));
        let (_, d, _) = run(&["-f"]).unwrap();
        assert_eq!(
            d,
            Config { address: d.address.clone(), pid_file: d.pid_file.clone(), ..Config::new("Echo Daemon") }
        );
        assert!(!d.tcp_without_token, "a token by default");
    }

    #[test]
    fn invalid_security_flags_are_clear_errors() {
        for (a, expect) in [
            (&["-f", "--token-file", ""][..], "invalid token file: empty path"),
            (&["-f", "--allow-host", "box:80"], "invalid allowed host \"box:80\""),
            (&["-f", "--allow-origin", "https://x/"], "invalid allowed origin \"https://x/\""),
            (&["-f", "--allow-uid", "-1"], "'-1'"),
            (&["-f", "--allow-uid", "4294967295"], "--allow-uid"),
            (&["-f", "--allow-gid", "staff"], "--allow-gid"),
            (&["-f", "--max-batch", "0"], "--max-batch"),
            (&["-f", "--request-timeout", "0"], "--request-timeout"),
            (&["-f", "--max-workers", "0"], "--max-workers"),
            (&["-f", "--no-token=yes"], "--no-token"),
            (&["status", "--token", ""], "invalid token"),
            (&["status", "--token", "a b"], "invalid token"),
        ] {
            let e = run(a).unwrap_err();
            assert!(e.contains(expect), "{a:?}: {e}");
            assert!(e.starts_with("error: ") && e.ends_with('\n'), "{a:?}: {e:?}");
        }
    }

    #[test]
    fn token_options_are_global_and_the_token_file_defaults_beside_the_pid_file() {
        let p = parsed(&["call", "my.echo", "--token", "abc", "message=hi"]).unwrap();
        assert_eq!(p.token.as_deref(), Some("abc"));
        assert_eq!(p.action, Action::Call { method: "my.echo".into(), params: vec!["message=hi".into()] });
        assert_eq!(p.config.token_path(), PathBuf::from("/srv/daemon.token"));
        let p = parsed(&["--token-file", "x.token", "status"]).unwrap();
        assert_eq!(
            (p.action, p.config.token_path(), p.token),
            (Action::Status { json: false }, PathBuf::from("/srv/x.token"), None)
        );
        let p = parsed(&["stop", "--pidfile", "run/e.pid"]).unwrap();
        assert_eq!(p.config.token_path(), PathBuf::from("/srv/run/e.token"));
    }
}
