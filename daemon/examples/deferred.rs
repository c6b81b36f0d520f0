//! A method that answers later: when a worker has done something.
//!
//! ```sh
//! cargo run -p forkd --example deferred -- -f -v --socket unix://deferred.sock
//! cargo run -p forkd --example deferred -- --socket unix://deferred.sock call batch.next
//! ```
//!
//! The `batcher` worker finishes a batch every looptime and tells the
//! daemon with `Context::send`, which the daemon publishes as a worker
//! event. `batch.next` does not answer at once: it takes a `DeferId` with
//! `ctl.defer()`, and the listener of the worker events completes every
//! waiting call with `ctl.complete` when the next batch is done. The
//! daemon's loop never blocks meanwhile: other calls are served.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use forkd::{
    codes, json, BoxError, Builder, Context, Ctl, DeferId, Event, Method, ParamType, Reply, RpcError, Topic, Worker,
    WorkerEventKind, WorkerOptions,
};

/// The most calls that may wait at once: each holds a connection's answer.
const MAX_WAITING: usize = 1000;

/// Finishes one batch per loop.
struct Batcher {
    done: u64,
}

impl Worker for Batcher {
    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        self.done += 1;
        // The data becomes `Event::Worker { event: Data, data: Some(..) }`
        // in the daemon. `send` fails only if the daemon has not taken the
        // earlier events yet: `?` records that as the loop's error.
        ctx.send(json!({ "batch": self.done, "instance": ctx.instance() }))?;
        log::debug!(target: ctx.target(), "batch {} done", self.done);
        Ok(())
    }
}

fn main() -> ExitCode {
    // The calls waiting for the next batch. The method and the listener
    // both run on the daemon's loop, so an `Rc<RefCell<..>>` shares them.
    let waiting: Rc<RefCell<Vec<DeferId>>> = Rc::default();
    let waiters = Rc::clone(&waiting);

    Builder::new("Deferred Daemon")
        .socket("unix://deferred.sock")
        .worker(WorkerOptions::new("batcher").looptime(Duration::from_millis(500)), || Batcher { done: 0 })
        .method(
            Method::new("batch.next", move |ctl: &mut Ctl, _args| {
                let mut waiting = waiters.borrow_mut();
                if waiting.len() >= MAX_WAITING {
                    return Reply::Error(RpcError::new(codes::LIMIT, "too many calls wait for the next batch"));
                }
                let id = ctl.defer();
                waiting.push(id);
                Reply::Deferred(id)
            })
            // It answers `Reply::Deferred`: `system.multicall` must refuse it.
            .defers()
            .help("Wait for the next batch, and answer its number.")
            .returns(ParamType::Struct),
        )
        .on(Topic::Worker, move |ctl: &mut Ctl, event: &Event| {
            let Event::Worker { name, event, data, .. } = event else { return };
            if name != "batcher" {
                return;
            }
            let answer = match (event, data) {
                (WorkerEventKind::Data, Some(data)) => Ok(data.clone()),
                // A worker that exits sends no more batches for now: tell
                // the waiting clients rather than keep them waiting.
                (WorkerEventKind::Exited, _) => Err(RpcError::new(codes::WORKER_NOT_RUNNING, "the batcher exited")),
                _ => return,
            };
            for id in waiting.borrow_mut().drain(..) {
                ctl.complete(id, answer.clone());
            }
        })
        .run()
}
