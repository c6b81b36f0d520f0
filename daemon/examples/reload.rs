//! A custom listener: SIGHUP re-reads a configuration file and applies it.
//!
//! ```sh
//! echo Hello > greeting.conf
//! cargo run -p forkd --example reload -- -f -v --socket unix://reload.sock
//! cargo run -p forkd --example reload -- --socket unix://reload.sock call greet name=Ada   # "Hello, Ada!"
//! echo Bonjour > greeting.conf
//! kill -HUP "$(cat daemon.pid)"
//! cargo run -p forkd --example reload -- --socket unix://reload.sock call greet name=Ada   # "Bonjour, Ada!"
//! ```
//!
//! The configuration is one line, the greeting, in `greeting.conf` in the
//! directory the daemon starts in. SIGHUP's default listener reloads the
//! workers by rolling replacement (`worker.reload`); this daemon has none,
//! so its listener is subscribed under that default's name
//! (`forkd::defaults::RELOAD_ON_HUP`) and replaces it. Subscribed under a
//! name of its own, it would run beside the default instead.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use forkd::{defaults, Builder, Ctl, Event, Method, ParamType, Signal, Topic};

/// The largest configuration file read: bound what a reload may cost.
const MAX_CONFIG: u64 = 4096;

/// The greeting in `path`: its first line, trimmed.
fn read_greeting(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG).read_to_string(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(format!("{}: no greeting in it", path.display())),
    }
}

fn main() -> ExitCode {
    // A detached daemon moves to `/`: resolve the path now.
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let path = here.join("greeting.conf");
    // A missing or empty file at start leaves the default greeting.
    let greeting = Rc::new(RefCell::new(read_greeting(&path).unwrap_or_else(|_| "Hello".to_string())));
    let current = Rc::clone(&greeting);

    Builder::new("Reload Daemon")
        .socket("unix://reload.sock")
        .method(
            Method::new("greet", move |_ctl: &mut Ctl, args| {
                format!("{}, {}!", current.borrow(), args.get_str("name").unwrap_or_default())
            })
            .help("Greet someone with the configured greeting.")
            .param(ParamType::String, "name")
            .returns(ParamType::String),
        )
        // Listeners run on the daemon's loop, never in a signal handler:
        // reading a small file here is fine. A bad file keeps the old
        // greeting, and the daemon runs on.
        .on_named(Topic::Signal(Signal::Hup), defaults::RELOAD_ON_HUP, move |_ctl: &mut Ctl, _event: &Event| {
            match read_greeting(&path) {
                Ok(new) => {
                    log::info!("reloaded {}: greeting {new:?}", path.display());
                    *greeting.borrow_mut() = new;
                }
                Err(e) => log::warn!("reload failed, keeping {:?}: {e}", greeting.borrow()),
            }
        })
        .run()
}
