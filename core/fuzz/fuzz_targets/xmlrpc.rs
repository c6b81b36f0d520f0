//! Fuzz target `xmlrpc`: see `forkd_core::fuzzing::xmlrpc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forkd_core::fuzzing::xmlrpc(data));
