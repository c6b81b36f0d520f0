//! A pool of workers, resized at run time.
//!
//! ```sh
//! cargo run -p forkd --example pool -- -f -v --socket unix://pool.sock
//! cargo run -p forkd --example pool -- --socket unix://pool.sock call worker.scale name=crunchers instances=4
//! cargo run -p forkd --example pool -- --socket unix://pool.sock call pool.live
//! cargo run -p forkd --example pool -- --socket unix://pool.sock call worker.status name=crunchers
//! ```
//!
//! `WorkerOptions::instances` installs one worker as several processes,
//! numbered from 0; the built-in `worker.scale` starts or stops instances
//! to reach a new size. A listener on the worker events keeps count of the
//! instances that run, which `pool.live` answers.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use forkd::{BoxError, Builder, Context, Ctl, Event, Method, ParamType, Topic, Worker, WorkerEventKind, WorkerOptions};

/// One instance of the pool: each knows its number.
struct Cruncher {
    sum: u64,
}

impl Worker for Cruncher {
    fn spinup(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        log::info!(target: ctx.target(), "cruncher {} up", ctx.instance());
        Ok(())
    }

    fn work(&mut self, ctx: &mut Context<'_>) -> Result<(), BoxError> {
        // Some work that depends on which instance this is.
        self.sum = self.sum.wrapping_add(u64::from(ctx.instance()) + 1);
        Ok(())
    }

    fn spindown(&mut self, ctx: &mut Context<'_>) {
        log::info!(target: ctx.target(), "cruncher {} down after {} loops", ctx.instance(), ctx.loops());
    }
}

fn main() -> ExitCode {
    // Listeners and methods run on the daemon's loop, one at a time, so
    // they can share state through an `Rc` (nothing here is `Send`).
    let live = Rc::new(Cell::new(0u32));
    let seen = Rc::clone(&live);

    Builder::new("Pool Daemon")
        .socket("unix://pool.sock")
        .worker(WorkerOptions::new("crunchers").instances(2).looptime(Duration::from_millis(500)), || Cruncher {
            sum: 0,
        })
        // Every worker event goes to `Topic::Worker`: count the instances
        // whose process runs.
        .on(Topic::Worker, move |_ctl: &mut Ctl, event: &Event| {
            if let Event::Worker { name, instance, event, .. } = event {
                match event {
                    WorkerEventKind::Started | WorkerEventKind::Restarted => seen.set(seen.get() + 1),
                    WorkerEventKind::Exited => seen.set(seen.get().saturating_sub(1)),
                    _ => return,
                }
                log::info!("{name}/{instance} {event:?}: {} running", seen.get());
            }
        })
        .method(
            Method::new("pool.live", move |_ctl: &mut Ctl, _args| forkd::json!(live.get()))
                .help("How many crunchers run now.")
                .returns(ParamType::Int),
        )
        .run()
}
