//! Fuzz target `conn`: see `forkd_core::fuzzing::conn`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forkd_core::fuzzing::conn(data));
