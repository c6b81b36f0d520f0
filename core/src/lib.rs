//! forkd-core: the daemon logic, generic over the `Os` trait.
//!
//! Everything a forkd daemon decides lives here; everything it does to the
//! world goes through [`forkd_os::Os`]. This crate never makes a system
//! call, reads a clock or looks at the environment: time comes in as an
//! argument, and the next deadline goes out as a return value. The same
//! code therefore runs against the kernel (`RealOs`) and inside the
//! deterministic simulation (`SimOs`).
//!
//! - [`daemon`]: the event loop that ties the parts together, and the
//!   context ([`daemon::Ctl`]) that methods and listeners act through;
//! - [`supervisor`]: the worker instances' state machine, restarts and
//!   stops;
//! - [`worker`]: the [`worker::Worker`] trait users implement, the loop a
//!   worker process runs, and its shared-memory channel to the daemon;
//! - [`rpc`]: JSON-RPC 2.0 and XML-RPC, from bytes in to bytes out;
//! - [`event`]: the event bus that signals and daemon happenings go through.
//!
//! Most users depend on the `forkd` crate, which builds a daemon from these
//! parts and gives it a command line.
#![deny(missing_docs)]

pub mod daemon;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "testing")]
pub mod planted;
/// Without the `testing` feature the same module is private: no bug can
/// be planted (`active` is a constant false without the `planted`
/// feature), each site is dead code the compiler removes, and nothing of
/// it is public.
#[cfg(not(feature = "testing"))]
#[allow(dead_code)]
mod planted;
pub mod rpc;
pub mod supervisor;
pub mod worker;
