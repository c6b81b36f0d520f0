//! Fuzz target `channel`: see `forkd_core::fuzzing::channel`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forkd_core::fuzzing::channel(data));
