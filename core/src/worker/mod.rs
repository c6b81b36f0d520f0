//! Workers: user code that runs in a loop in a process of its own, forked
//! from the daemon and steered by it.
//!
//! This is the seed's worker model (comodojo/daemon's `AbstractWorker`):
//! `spinup` once, then the loop body every `looptime`, then `spindown`; the
//! daemon can pause, resume and stop the worker and send it custom messages
//! that it answers. What changes is the plumbing. The seed polls a SHMOP
//! segment; here each worker has a lock-free [`channel`] in an anonymous
//! shared region for the data, and a socket pair for wake-ups, so that a
//! command reaches an idle worker at once and the daemon learns of the reply
//! at once, with no one polling with sleeps.
//!
//! - [`Worker`] is what users implement; [`Context`] is what they see.
//! - [`channel`] is the shared-memory layout and its protocol; the daemon's
//!   loop (its worker links, not the supervisor, which is pure) reads and
//!   writes it with [`Channel`]'s "daemon side" methods.
//! - [`process`] is the worker process's entry, [`run_worker`], generic over
//!   the `Os`: it never calls the kernel itself.
//! - `checks` (with the `testing` feature) is a scenario written once and run both in the simulation
//!   and against the kernel.
//!
//! A worker must never be able to take the daemon down: everything the
//! daemon reads from a channel is validated, and nothing the worker does to
//! its region can make the daemon panic.

pub mod channel;
#[cfg(feature = "testing")]
pub mod checks;
mod context;
pub mod process;

use serde_json::Value;

pub use channel::{Channel, ChannelError, Command, PendingCommand, Reply, Slot, Table, WorkerState, REGION_SIZE};
pub use context::{Context, WorkerEvent};
pub use process::{
    run_worker, WorkerProcess, EXIT_OK, EXIT_OS_ERROR, EXIT_PANIC, EXIT_SPINUP_FAILED, HEARTBEAT_INTERVAL,
};

/// The error a worker's calls return: any error, boxed, so that `?` works
/// on an I/O error, a parse error or a `String` alike. Its message is what
/// `worker.status` reports as the last error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A worker's behaviour: what its process does in each of its states.
///
/// A worker is moved into its own process when the daemon forks it, so it
/// must be `Send + 'static` and own all it uses. Each call gets a
/// [`Context`] for the worker's name, loop count, events and a way to talk
/// back to the daemon. A panic in any call ends the process (exit code 70)
/// with `panic: MESSAGE` as its last error.
///
/// ```
/// use forkd_core::worker::{BoxError, Context, Worker};
///
/// /// Counts the entries of a directory, every loop.
/// struct Lister;
///
/// impl Worker for Lister {
///     fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
///         let n = std::fs::read_dir(std::env::temp_dir())?.count();
///         log::debug!(target: ctx.target(), "{n} entries");
///         Ok(())
///     }
/// }
/// ```
pub trait Worker: Send + 'static {
    /// Runs once before the loop. An `Err` is recorded as the last error and
    /// the process exits with code 1 without looping and without
    /// `spindown`: clean up before failing.
    fn spinup(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// The loop body (the seed's `loop()`), run every looptime. An `Err` is
    /// recorded as the last error and logged; the loop goes on.
    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError>;

    /// Runs once when the worker stops gracefully: a stop command, SIGTERM
    /// or SIGINT, or the daemon gone. Not after a failed spinup or a panic.
    fn spindown(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// Answers a custom message from the daemon; the result is the reply
    /// (an `Err` reaches the caller as its message).
    fn on_message(&mut self, ctx: &mut Context<'_>, msg: Value) -> Result<Value, BoxError> {
        let _ = (ctx, msg);
        Err("no handler for custom messages".into())
    }
}
