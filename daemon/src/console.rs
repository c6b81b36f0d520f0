//! The console: the daemon binary's command line, as the seed's default
//! console has it (`-d` to daemonize, `-f` for the foreground, `-v` for
//! debug logs, `-s` for a hard start), with a flag for each configuration
//! parameter, and the control subcommands (`status`, `stop`, `call`).

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
    Status,
    Stop,
    Call {
        method: String,
        params: Vec<String>,
    },
}

fn command(config: &Config) -> Command {
    let d = config;
    Command::new("daemon")
        .about(d.description.clone())
        .disable_help_flag(true)
        .disable_help_subcommand(true)
        .arg(Arg::new("help").short('h').long("help").action(ArgAction::SetTrue).help("Show this help"))
        .arg(
            Arg::new("daemon")
                .short('d')
                .long("daemon")
                .action(ArgAction::SetTrue)
                .conflicts_with("foreground")
                .help("Run as a daemon: detach, and return once it is ready"),
        )
        .arg(
            Arg::new("foreground")
                .short('f')
                .long("foreground")
                .action(ArgAction::SetTrue)
                .help("Run in the foreground, attached to the terminal (use this under systemd)"),
        )
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue).help("Log debug messages"))
        .arg(
            Arg::new("hardstart")
                .short('s')
                .long("hardstart")
                .action(ArgAction::SetTrue)
                .help("Remove a stale socket and pid file before starting"),
        )
        .arg(
            Arg::new("socket")
                .long("socket")
                .global(true)
                .value_name("ADDRESS")
                .help(format!("Control socket: unix://PATH or tcp://IP:PORT [default: {}]", d.address)),
        )
        .arg(
            Arg::new("pidfile")
                .long("pidfile")
                .value_name("PATH")
                .help(format!("Pid file [default: {}]", d.pid_file.display())),
        )
        .arg(
            Arg::new("socket-buffer")
                .long("socket-buffer")
                .value_name("BYTES")
                .value_parser(clap::value_parser!(u32).range(1..=16 << 20))
                .help(format!("Bytes read from a connection at a time [default: {}]", d.read_buffer)),
        )
        .arg(
            Arg::new("socket-timeout")
                .long("socket-timeout")
                .value_name("SECONDS")
                .value_parser(clap::value_parser!(u32).range(1..))
                .help(format!("Close a connection idle this long [default: {}]", d.idle_timeout.as_secs())),
        )
        .arg(
            Arg::new("max-connections")
                .long("max-connections")
                .value_name("N")
                .value_parser(clap::value_parser!(u32).range(1..=65536))
                .help(format!("Connections served at once [default: {}]", d.max_connections)),
        )
        .arg(
            Arg::new("max-request")
                .long("max-request")
                .value_name("BYTES")
                .value_parser(clap::value_parser!(u32).range(64..))
                .help(format!("Largest request accepted [default: {}]", d.max_request)),
        )
        .arg(
            Arg::new("niceness")
                .long("niceness")
                .value_name("N")
                .allow_negative_numbers(true)
                .value_parser(clap::value_parser!(i32).range(-20..=19))
                .help(format!(
                    "Niceness of the daemon [default: {}]",
                    d.niceness.map(|n| n.to_string()).unwrap_or_else(|| "unchanged".into())
                )),
        )
        .arg(
            Arg::new("log-file")
                .long("log-file")
                .value_name("PATH")
                .help("With -d, log to this file (reopened on SIGUSR1) [default: no log]"),
        )
        .subcommand(Command::new("status").about("Show the daemon's info and a table of its workers"))
        .subcommand(Command::new("stop").about("Ask the daemon to stop, and wait until it is gone"))
        .subcommand(
            Command::new("call")
                .about("Call a method: call METHOD [JSON params | key=value ...]")
                .arg(Arg::new("method").required(true).value_name("METHOD"))
                .arg(Arg::new("params").num_args(0..).value_name("PARAMS").allow_hyphen_values(true)),
        )
}

/// The usage text, as `-h` prints it.
pub fn usage(config: &Config) -> String {
    command(config).render_help().to_string()
}

/// The parsed command line: the action, and the config with its flags
/// applied. Relative paths are resolved against `cwd`.
pub(crate) fn parse(
    config: &Config,
    args: &[String],
    cwd: &std::path::Path,
) -> Result<(Action, Config, Option<PathBuf>), String> {
    let matches = command(config).try_get_matches_from(args).map_err(|e| e.render().to_string())?;
    let mut config = config.clone();
    apply(&matches, &mut config)?;
    config.address = config.address.resolve(cwd);
    config.pid_file = cwd.join(&config.pid_file);
    let log_file = matches.get_one::<String>("log-file").map(|p| cwd.join(p));
    let action = match matches.subcommand() {
        Some(("status", _)) => Action::Status,
        Some(("stop", _)) => Action::Stop,
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
    Ok((action, config, log_file))
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
    if let Some(n) = m.get_one::<u32>("socket-buffer") {
        c.read_buffer = *n as usize;
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
        assert_eq!(run(&["status"]).unwrap().0, Action::Status);
        let (action, c, _) = run(&["stop", "--socket", "tcp://127.0.0.1:1"]).unwrap();
        assert_eq!((action, c.address), (Action::Stop, "tcp://127.0.0.1:1".parse().unwrap()));
        assert_eq!(
            run(&["--socket", "tcp://127.0.0.1:1", "call", "my.echo", "message=hi"]).unwrap().0,
            Action::Call { method: "my.echo".into(), params: vec!["message=hi".into()] }
        );
    }
}
