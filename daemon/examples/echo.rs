//! The seed's echo daemon, plus a method whose params arrive as a struct.
//!
//! ```sh
//! cargo run -p forkd --example echo -- -f -v --socket unix://echo.sock
//! cargo run -p forkd --example echo -- --socket unix://echo.sock call my.echo message=hi
//! cargo run -p forkd --example echo -- --socket unix://echo.sock call my.repeat message=hi times=3
//! ```
//!
//! `Builder::run` makes the binary its own console: `-f` serves in the
//! foreground, `-d` detaches, `status`, `stop` and `call` talk to a running
//! daemon (`--help` says the rest).

use std::process::ExitCode;

use forkd::{Builder, Ctl, Method, ParamType, RpcError};
use serde::Deserialize;

/// The params of `my.repeat`: serde fills the struct from the call's
/// params, by name (`{"message": "hi", "times": 3}`) or by position
/// (`["hi", 3]`), in the order the method declares them.
#[derive(Deserialize)]
struct Repeat {
    message: String,
    times: u32,
}

/// The most copies `my.repeat` makes: a client must not make the daemon
/// build an answer of any size it likes.
const MAX_TIMES: u32 = 100;

fn main() -> ExitCode {
    Builder::new("Echo Daemon")
        // The seed's port; `--socket` on the command line overrides it.
        .socket("tcp://127.0.0.1:10042")
        // The seed's method: the handler reads its argument by name. The
        // declared signature is checked before it runs, so `message` is
        // there and is a string.
        .method(
            Method::new("my.echo", |_ctl: &mut Ctl, args| args.get("message").cloned().unwrap_or_default())
                .help("I'm here to reply your data")
                .param(ParamType::String, "message")
                .returns(ParamType::String),
        )
        // A typed method: the handler takes its params as a struct and
        // returns a `Result`, whose `Ok` is serialized into the answer and
        // whose `Err` is the error the client gets. Introspection
        // (`system.methodSignature`) sees the declared params.
        .method(
            Method::typed("my.repeat", |_ctl: &mut Ctl, p: Repeat| -> Result<String, RpcError> {
                if p.times > MAX_TIMES {
                    return Err(RpcError::invalid_params(format!("times: at most {MAX_TIMES}")));
                }
                Ok(vec![p.message; p.times as usize].join(" "))
            })
            .help("Repeat a message, separated by spaces.")
            .param(ParamType::String, "message")
            .param(ParamType::Int, "times")
            .returns(ParamType::String),
        )
        .run()
}
