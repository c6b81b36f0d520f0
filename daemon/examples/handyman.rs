//! The seed's handyman: a worker that copies files, and that answers
//! messages the daemon sends it on behalf of RPC methods.
//!
//! ```sh
//! mkdir -p inbox outbox
//! cargo run -p forkd --example handyman -- -f -v --socket unix://handyman.sock
//! echo hello > inbox/a.txt              # copied to outbox/ within a loop
//! cargo run -p forkd --example handyman -- --socket unix://handyman.sock call handyman.stats
//! cargo run -p forkd --example handyman -- --socket unix://handyman.sock call handyman.changename name=bob
//! ```
//!
//! Each loop, the worker copies the files of `inbox/` that are new or
//! changed into `outbox/` (both in the directory the daemon starts in).

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use forkd::{json, BoxError, Builder, Context, Ctl, Method, ParamType, Restart, Value, Worker, WorkerOptions};
use serde::Deserialize;

/// Copies new files from one directory to another, every loop.
struct Handyman {
    name: String,
    inbox: PathBuf,
    outbox: PathBuf,
    copied: u64,
}

impl Handyman {
    /// Copies the files of the inbox that the outbox lacks, or holds in
    /// another size; how many it copied. Every I/O error goes up with `?`.
    fn copy_new_files(&mut self) -> io::Result<u64> {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.inbox)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let target = self.outbox.join(entry.file_name());
            let fresh = match std::fs::metadata(&target) {
                Ok(meta) => meta.len() != entry.metadata()?.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            if fresh {
                std::fs::copy(entry.path(), &target)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Worker for Handyman {
    /// Runs once in the worker's process, before the loop: an `Err` here
    /// ends the process (and `worker.status` shows why).
    fn spinup(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        std::fs::create_dir_all(&self.outbox)?;
        log::info!(target: ctx.target(), "{} copies {} to {}", self.name, self.inbox.display(), self.outbox.display());
        Ok(())
    }

    /// The loop body, every looptime. `?` hands any error to forkd, which
    /// logs it and records it as the worker's last error; the loop goes
    /// on.
    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        let n = self.copy_new_files()?;
        if n > 0 {
            self.copied += n;
            log::info!(target: ctx.target(), "{} copied {n} file(s), {} in all", self.name, self.copied);
        }
        Ok(())
    }

    /// Answers what the daemon sends it (see the methods below). The
    /// answer, or the error, goes back to the RPC client.
    fn on_message(&mut self, _ctx: &mut Context<'_>, msg: Value) -> Result<Value, BoxError> {
        if let Some(new) = msg.get("changename").and_then(Value::as_str) {
            let old = std::mem::replace(&mut self.name, new.to_string());
            return Ok(json!({ "old": old, "new": new }));
        }
        if msg.get("stats").is_some() {
            return Ok(json!({ "name": self.name, "copied": self.copied }));
        }
        Err(format!("unknown message {msg}").into())
    }
}

/// The params of `handyman.changename`.
#[derive(Deserialize)]
struct ChangeName {
    name: String,
}

fn main() -> ExitCode {
    // A detached daemon (`-d`) moves to `/`: make the paths absolute now.
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let (inbox, outbox) = (here.join("inbox"), here.join("outbox"));

    Builder::new("Handyman Daemon")
        .socket("unix://handyman.sock")
        // The closure makes a fresh worker before each fork (the first,
        // and each restart), so it clones what the worker owns.
        .worker(
            WorkerOptions::new("handyman").looptime(Duration::from_millis(500)).restart(Restart::Always),
            move || Handyman { name: "handyman".into(), inbox: inbox.clone(), outbox: outbox.clone(), copied: 0 },
        )
        // A method that reaches the worker: `message_worker` sends the
        // message over the worker's channel and answers the call later,
        // with the worker's reply. `defers` says so (`system.multicall`
        // refuses such a method, as it cannot wait).
        .method(
            Method::typed("handyman.changename", |ctl: &mut Ctl, p: ChangeName| {
                ctl.message_worker("handyman", json!({ "changename": p.name }))
            })
            .defers()
            .help("Rename the handyman; answers with its old and new names.")
            .param(ParamType::String, "name")
            .returns(ParamType::Struct),
        )
        .method(
            Method::new("handyman.stats", |ctl: &mut Ctl, _args| {
                ctl.message_worker("handyman", json!({ "stats": {} }))
            })
            .defers()
            .help("The handyman's name and how many files it copied.")
            .returns(ParamType::Struct),
        )
        .run()
}
