//! What the real-kernel tests of forkd-os share.

pub use forkd_os::testing::TempDir;
