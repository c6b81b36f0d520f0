//! forkd-core: the daemon logic, generic over the `Os` trait.
#![deny(missing_docs)]

// Being rewritten: the supervisor and the daemon's entry (daemon/mod.rs,
// config.rs, builtins.rs) get their docs with that work; the rest of the
// crate is held to `missing_docs` now.
#[allow(missing_docs)]
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
#[allow(missing_docs)]
pub mod supervisor;
pub mod worker;
