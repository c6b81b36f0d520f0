//! forkd-core: the daemon logic, generic over the `Os` trait.
pub mod daemon;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod planted;
pub mod rpc;
pub mod supervisor;
pub mod worker;
