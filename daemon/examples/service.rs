//! A service with its own command line that embeds a forkd daemon.
//!
//! ```sh
//! cargo run -p forkd --example service -- --greeting Hi serve --socket unix://service.sock --pidfile service.pid
//! cargo run -p forkd --example service -- ctl --socket unix://service.sock call service.hello name=Ada
//! cargo run -p forkd --example service -- ctl --socket unix://service.sock stop
//! ```
//!
//! The program parses its own flags with clap, then either serves the
//! daemon from code (`serve`: `Builder::build` and `Daemon::serve`, with
//! `Result`s all the way) or hands the rest of its command line to forkd's
//! console (`ctl ...`: `Builder::run_from`, for `status`, `stop`, `call`,
//! `-d` and the rest).

use std::error::Error;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use forkd::{Builder, Ctl, Event, Method, ParamType, Topic};

/// The command line: the service's own flags, and its subcommands.
fn command() -> Command {
    Command::new("service")
        .about("A service that embeds a forkd daemon")
        .subcommand_required(true)
        .arg(
            Arg::new("greeting")
                .long("greeting")
                .value_name("TEXT")
                .default_value("Hello")
                .help("What service.hello says"),
        )
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue).help("Log debug lines too"))
        .subcommand(
            Command::new("serve")
                .about("Serve in the foreground until SIGTERM or `ctl stop`")
                .arg(
                    Arg::new("socket")
                        .long("socket")
                        .value_name("ADDRESS")
                        .default_value(SOCKET)
                        .help("The control socket"),
                )
                .arg(
                    Arg::new("pidfile")
                        .long("pidfile")
                        .value_name("PATH")
                        .default_value("service.pid")
                        .help("The pid file"),
                )
                .arg(Arg::new("detach").long("detach").action(ArgAction::SetTrue).help("Detach and serve")),
        )
        .subcommand(
            Command::new("ctl")
                .about("forkd's console: status, stop, call METHOD PARAMS ... (`ctl --help`)")
                .disable_help_flag(true)
                .arg(Arg::new("args").num_args(0..).trailing_var_arg(true).allow_hyphen_values(true)),
        )
}

/// Where the daemon listens unless told otherwise.
const SOCKET: &str = "unix://service.sock";

/// The daemon, the same for serving it and for controlling it.
fn daemon(greeting: String) -> Builder {
    Builder::new("Embedded Service")
        .socket(SOCKET)
        .method(
            Method::new("service.hello", move |_ctl: &mut Ctl, args| {
                format!("{greeting}, {}!", args.get_str("name").unwrap_or_default())
            })
            .help("Greet someone.")
            .param(ParamType::String, "name")
            .returns(ParamType::String),
        )
        // Ready: the socket listens and the pid file is locked.
        .on(Topic::DaemonStart, |ctl: &mut Ctl, _: &Event| log::info!("serving on {}", ctl.info().address))
}

/// `serve`: build the daemon from code and serve it. Every error is a
/// `std::error::Error` that says what went wrong.
fn serve(builder: Builder, args: &ArgMatches) -> Result<(), Box<dyn Error>> {
    let socket = args.get_one::<String>("socket").expect("has a default");
    let pid_file = args.get_one::<String>("pidfile").expect("has a default");
    let daemon = builder.socket(socket).pid_file(pid_file).build()?;
    let stopped = if args.get_flag("detach") { daemon.serve_detached()? } else { daemon.serve()? };
    log::info!("stopped: {}", stopped.reason);
    // A daemon that stopped because something failed (a worker restarted
    // too often) says so: the service exits 1 then.
    match stopped.failure {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    // `build` leaves logging to the program: install a logger first.
    let level = if matches.get_flag("verbose") { log::LevelFilter::Debug } else { log::LevelFilter::Info };
    if log::set_logger(&STDERR).is_ok() {
        log::set_max_level(level);
    }
    let builder = daemon(matches.get_one::<String>("greeting").expect("has a default").clone());
    match matches.subcommand() {
        Some(("serve", args)) => match serve(builder, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("service: {e}");
                ExitCode::FAILURE
            }
        },
        Some(("ctl", args)) => {
            let rest = args.get_many::<String>("args").into_iter().flatten().cloned();
            builder.run_from(std::iter::once("service ctl".to_string()).chain(rest))
        }
        _ => unreachable!("clap requires a subcommand"),
    }
}

/// A minimal logger to stderr; a real service would use its own.
struct Stderr;

static STDERR: Stderr = Stderr;

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("[{}] {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}
