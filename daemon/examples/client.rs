//! A client program: calls a running daemon's methods with `forkd::Client`.
//!
//! ```sh
//! cargo run -p forkd --example echo -- -f                # in one terminal, on tcp://127.0.0.1:10042
//! cargo run -p forkd --example client -- hello 3         # in the same directory
//! ```
//!
//! It calls `daemon.info`, then the echo example's `my.echo` with the
//! message and `my.repeat` with the message and the count. On tcp the
//! daemon wants a token: like the daemon binary's own `call`, the client
//! takes `FORKD_TOKEN` if it is set, else reads the token file that the
//! daemon wrote beside its pid file (`daemon.pid` → `daemon.token`), which
//! only the daemon's user may read.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, Command};
use forkd::{json, Address, Client, ClientError, ConnectOptions};

fn command() -> Command {
    Command::new("client")
        .about("Calls the echo example's methods")
        .arg(
            Arg::new("socket")
                .long("socket")
                .value_name("ADDRESS")
                .default_value("tcp://127.0.0.1:10042")
                .help("The daemon's socket"),
        )
        .arg(
            Arg::new("pidfile")
                .long("pidfile")
                .value_name("PATH")
                .default_value("daemon.pid")
                .help("The daemon's pid file"),
        )
        .arg(Arg::new("message").value_name("MESSAGE").required(true).help("What to echo"))
        .arg(
            Arg::new("times")
                .value_name("TIMES")
                .value_parser(clap::value_parser!(u32))
                .default_value("2")
                .help("How many repeats"),
        )
}

fn run() -> Result<(), Box<dyn Error>> {
    let matches = command().get_matches();
    let address: Address = matches.get_one::<String>("socket").expect("has a default").parse()?;
    let pid_file = PathBuf::from(matches.get_one::<String>("pidfile").expect("has a default"));
    let message = matches.get_one::<String>("message").expect("required");
    let times = *matches.get_one::<u32>("times").expect("has a default");

    // The timeout bounds connecting and each answer. The token file is
    // only read on tcp, and only if FORKD_TOKEN is not set.
    let options = ConnectOptions::new(Duration::from_secs(5)).token_file(pid_file.with_extension("token"));
    let mut client = Client::connect_with(&address, &options)?;

    // `()` sends no params.
    let info = client.call("daemon.info", ())?;
    println!("daemon: {} (pid {})", info["description"], info["pid"]);
    // Params by name, as any `Serialize` value...
    let echoed = client.call("my.echo", json!({ "message": message }))?;
    println!("my.echo: {echoed}");
    // ... or by position.
    let repeated = client.call("my.repeat", (message, times))?;
    println!("my.repeat: {repeated}");

    // An error answer is `ClientError::Rpc`, with the daemon's code and
    // message: here the param has the wrong type.
    match client.call("my.echo", json!({ "message": 42 })) {
        Err(ClientError::Rpc(e)) => println!("my.echo 42: error {}: {}", e.code, e.message),
        other => return Err(format!("my.echo 42 should fail, got {other:?}").into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}
