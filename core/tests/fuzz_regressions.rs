//! Replays the fuzz targets' saved inputs on the stable toolchain.
//!
//! `cargo xtask fuzz` needs nightly and cargo-fuzz, and a bug it finds is
//! only fixed for good once its input runs on every `cargo xtask test`. So
//! each target here runs every file of `core/fuzz/regressions/<target>/`
//! (the crashes found so far, minimised) and `core/fuzz/seeds/<target>/`
//! through the same function the fuzzer calls (`forkd_core::fuzzing`),
//! and fails naming the file that panics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use forkd_core::fuzzing;

/// The files of `core/fuzz/<kind>/<target>/`, sorted; none if it is
/// missing. Dot files (`.gitkeep`) are not inputs.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Runs every saved input of `target` through `run`.
fn check(target: &str, run: fn(&[u8])) {
    let files: Vec<PathBuf> = ["regressions", "seeds"].iter().flat_map(|kind| inputs(kind, target)).collect();
    assert!(!files.is_empty(), "no saved inputs for fuzz target {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            catch_unwind(AssertUnwindSafe(|| run(&data))).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "fuzz target {target} panics on {} of {} inputs: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = fuzzing::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["conn", "jsonrpc", "xmlrpc", "http_head", "channel"], "a target without its test below");
}

#[test]
fn conn_inputs() {
    check("conn", fuzzing::conn);
}

#[test]
fn jsonrpc_inputs() {
    check("jsonrpc", fuzzing::jsonrpc);
}

#[test]
fn xmlrpc_inputs() {
    check("xmlrpc", fuzzing::xmlrpc);
}

#[test]
fn http_head_inputs() {
    check("http_head", fuzzing::http_head);
}

#[test]
fn channel_inputs() {
    check("channel", fuzzing::channel);
}
