//! What a check needs done to the world that no `Os` call does: a mode,
//! a symlink, a file written by hand. Implemented for both arms.

use super::*;
use crate::real::RealOs;
use crate::sim::SimOs;

/// What a check does to the file system behind the `Os`'s back, and what
/// it looks at that no `Os` call tells. Panics on failure: it only serves
/// checks.
pub trait Tamper {
    /// The permission bits of what is at `path` (not following a link).
    fn mode_of(&self, path: &Path) -> Option<u32>;
    /// Sets the permission bits of a regular file.
    fn chmod(&mut self, path: &Path, mode: u32);
    /// Makes a symbolic link at `link` pointing to `target`.
    fn symlink(&mut self, target: &Path, link: &Path);
    /// Writes a plain file of this process's user, as any tool would.
    fn write_file(&mut self, path: &Path, data: &[u8]);
    /// What a regular file holds, read without any check.
    fn content_of(&self, path: &Path) -> Option<Vec<u8>>;
    /// Puts in `dir` a program that writes one line to its descriptor 5:
    /// its `LISTEN_PID`, its `FORKD_CONTRACT`, its first argument and
    /// `unset` or the value of `HOME` (which the check unsets), and exits 3.
    /// Returns its path.
    fn install_reporter(&mut self, dir: &Path) -> std::path::PathBuf;
}

/// The reporter's script on the kernel.
const REPORTER: &str =
    "#!/bin/sh\nprintf '%s %s %s %s\\n' \"$LISTEN_PID\" \"$FORKD_CONTRACT\" \"$1\" \"${HOME-unset}\" >&5\nexit 3\n";

impl Tamper for RealOs {
    fn mode_of(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        Some(std::fs::symlink_metadata(path).ok()?.permissions().mode() & 0o7777)
    }

    fn chmod(&mut self, path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn symlink(&mut self, target: &Path, link: &Path) {
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }

    fn write_file(&mut self, path: &Path, data: &[u8]) {
        std::fs::write(path, data).expect("write file");
    }

    fn content_of(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    fn install_reporter(&mut self, dir: &Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("reporter.sh");
        std::fs::write(&path, REPORTER).expect("write the reporter");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod the reporter");
        path
    }
}

impl Tamper for SimOs {
    fn mode_of(&self, path: &Path) -> Option<u32> {
        self.file_mode(path)
    }

    fn chmod(&mut self, path: &Path, mode: u32) {
        assert!(self.set_file_mode(path, mode), "chmod {}: no such file", path.display());
    }

    fn symlink(&mut self, target: &Path, link: &Path) {
        assert!(!self.file_exists(link), "symlink {}: file exists", link.display());
        self.plant_symlink(link, target);
    }

    fn write_file(&mut self, path: &Path, data: &[u8]) {
        let uid = self.uid();
        self.plant_file(path, uid, 0o644, data);
    }

    fn content_of(&self, path: &Path) -> Option<Vec<u8>> {
        self.file_content(path)
    }

    fn install_reporter(&mut self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("reporter.sh");
        let program: crate::sim::Program = std::sync::Arc::new(|args: Vec<std::ffi::OsString>| {
            Box::new(move |os: &mut SimOs| {
                let var = |os: &SimOs, name: &str| os.env_var(name).map(|v| v.to_string_lossy().into_owned());
                let line = format!(
                    "{} {} {} {}\n",
                    var(os, "LISTEN_PID").unwrap_or_default(),
                    var(os, "FORKD_CONTRACT").unwrap_or_default(),
                    args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default(),
                    var(os, "HOME").unwrap_or_else(|| "unset".into()),
                );
                write_all(os, Fd(5), line.as_bytes());
                3
            })
        });
        self.install_program(&path, program);
        path
    }
}
