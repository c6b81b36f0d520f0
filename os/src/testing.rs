//! Test scaffolding shared by the workspace's tests (behind the `testing`
//! feature, which production builds never enable).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory of a test's own under the system's temporary directory,
/// removed with everything in it when dropped. Parallel-safe: its name has
/// the test process's pid and a counter.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `TMP/forkd-test-PID-N-NAME`.
    pub fn new(name: &str) -> TempDir {
        TempDir::with_prefix("forkd-test", name).expect("create the test directory")
    }

    /// `TMP/PREFIX-PID-N-NAME`: the pid first, so that a sweep can tell the
    /// directories of processes that died before they cleaned up.
    pub fn with_prefix(prefix: &str, name: &str) -> std::io::Result<TempDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path in the directory.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
