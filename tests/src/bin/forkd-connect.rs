//! A minimal user of `forkd::Client::connect`, for tests that must give a
//! client its environment (`FORKD_TOKEN`) without touching their own:
//! `forkd-connect ADDRESS METHOD [JSON-PARAMS]` prints the result as JSON,
//! or the error on stderr with exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use forkd::Client;
use forkd_os::Address;
use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, method, rest @ ..] = args.as_slice() else {
        eprintln!("usage: forkd-connect ADDRESS METHOD [JSON-PARAMS]");
        return ExitCode::from(2);
    };
    let address: Address = match address.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let params = match rest.first().map(|p| serde_json::from_str(p)) {
        None => Value::Null,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("error: params: {e}");
            return ExitCode::from(2);
        }
    };
    match Client::connect(&address, Duration::from_secs(10)).and_then(|mut c| c.call(method, params)) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
