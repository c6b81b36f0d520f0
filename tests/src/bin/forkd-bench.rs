//! `forkd-bench`: the benchmarks of forkd against real daemon processes.
//! Run it through `cargo xtask bench [--quick]`, which builds it in release
//! mode; `docs/benchmarks.md` explains every figure.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
