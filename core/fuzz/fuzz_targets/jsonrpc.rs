//! Fuzz target `jsonrpc`: see `forkd_core::fuzzing::jsonrpc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forkd_core::fuzzing::jsonrpc(data));
