//! The real operating system, on nix and signal-hook.
