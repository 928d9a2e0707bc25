//! Locks shared with `huggingface_hub`, so that it and mdl can download into one cache at the
//! same time.
//!
//! `huggingface_hub` (`file_download.py`, `WeakFileLock` around `_download_to_tmp_and_move`)
//! takes `<cache>/.locks/<repo folder>/<etag>.lock` while it writes a blob and its snapshot
//! link: a `filelock.FileLock`, which on Unix is `flock(LOCK_EX)` on that file, created with
//! mode 0664 (group-writable, for shared caches) and never deleted, so every waiter locks the
//! same inode. mdl takes the same lock, the same way ([`std::fs::File::lock`] is `flock` on
//! Unix), around moving a verified blob into place and making its links; after locking, it
//! checks that the path still names the inode it locked (as filelock does), in case a tool
//! replaced the lock file.
//!
//! Directories and files are created with the process umask applied (a `umask 002` daemon on
//! a setgid, group-owned cache shares it with the group, as `huggingface_hub` does).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct CacheLock {
    file: File,
    path: PathBuf,
}

impl CacheLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// `<root>/.locks/<folder>/<etag>.lock`, `huggingface_hub`'s lock of one blob.
pub fn blob_lock_path(root: &Path, folder: &str, etag: &str) -> PathBuf {
    root.join(".locks")
        .join(folder)
        .join(format!("{etag}.lock"))
}

/// Take the exclusive lock at `path` (blocking until whoever holds it lets go), creating the
/// file (mode 0664 less the umask) and its directories.
pub fn lock(path: &Path) -> io::Result<CacheLock> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    loop {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o664);
        let file = options.open(path)?;
        file.lock()?;
        if same_file(&file, path) {
            return Ok(CacheLock {
                file,
                path: path.to_path_buf(),
            });
        }
        // The file was replaced while we waited: lock the one that is there now.
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The content `huggingface_hub` writes into `CACHEDIR.TAG` (the Cache Directory Tagging
/// Standard: backup tools skip the directory).
pub const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by huggingface_hub.\n\
# For information about cache directory tags, see:\n\
#\thttps://bford.info/cachedir/\n";

/// Write `<root>/CACHEDIR.TAG` unless it exists (as `huggingface_hub` does on every
/// download); failures are ignored, as there.
pub fn tag_cache_dir(root: &Path) {
    let tag = root.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = std::fs::create_dir_all(root);
        let _ = std::fs::write(tag, CACHEDIR_TAG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = blob_lock_path(dir.path(), "models--a--b", "abc");
        let held = lock(&path).unwrap();
        assert!(path.is_file());
        let (tx, rx) = std::sync::mpsc::channel();
        let other = path.clone();
        let waiter = std::thread::spawn(move || {
            let _second = lock(&other).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        // The lock file stays (waiters share its inode).
        assert!(path.is_file());
    }
}
