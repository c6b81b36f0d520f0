//! forkd-harness: deterministic whole-daemon simulation.
