//! Fuzz target `http_head`: see `forkd_core::fuzzing::http_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forkd_core::fuzzing::http_head(data));
