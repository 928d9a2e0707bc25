//! The last step of a file: compare digests and size with what was expected, then make the
//! file durable and rename it into place. Only a verified file ever reaches its final path; a
//! file that fails verification is deleted.

use std::io;
use std::path::Path;

use mdl_protocol::ErrorKind;

use super::{Digests, FetchError};

/// What a file must be.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Its sha256 (hex, any case).
    pub sha256: Option<String>,
    /// Its md5 (hex, any case).
    pub md5: Option<String>,
    /// Its git blob sha1 (hex, any case).
    pub git_sha1: Option<String>,
}

/// Check `digests` against `expected`; the error names the file, both values and what happens
/// next.
pub fn verify(name: &str, digests: &Digests, expected: &Expected) -> Result<(), FetchError> {
    if let Some(size) = expected.size {
        if size != digests.len {
            return Err(integrity(format!(
                "{name}: size mismatch: expected {size} bytes, got {}",
                digests.len
            )));
        }
    }
    let checks = [
        (
            "sha256",
            expected.sha256.as_deref(),
            Some(digests.sha256.as_str()),
        ),
        ("md5", expected.md5.as_deref(), digests.md5.as_deref()),
        (
            "git sha1",
            expected.git_sha1.as_deref(),
            digests.git_sha1.as_deref(),
        ),
    ];
    for (algo, want, got) in checks {
        if let (Some(want), Some(got)) = (want, got) {
            if !want.eq_ignore_ascii_case(got) {
                return Err(integrity(format!(
                    "{name}: {algo} mismatch: expected {}, got {got}; the corrupt download was deleted",
                    want.to_ascii_lowercase()
                )));
            }
        }
    }
    Ok(())
}

fn integrity(message: String) -> FetchError {
    FetchError::failed(ErrorKind::Integrity, message)
}

/// Move a verified partial file to its final path atomically, creating parent directories,
/// and make the rename durable.
pub fn install(part: &Path, dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir_all_durable(parent)?;
    }
    std::fs::rename(part, dest)?;
    super::sidecar::remove(part);
    match dest.parent() {
        Some(parent) => DIR_SYNCS.sync(parent),
        None => Ok(()),
    }
}

/// Directory fsyncs, batched per directory (group commit): a caller whose rename happened
/// while another caller's fsync of the same directory was already running waits for it to end
/// and then runs (or joins) the next one; the renames of every file that finished meanwhile
/// become durable with that single fsync. A caller returns only after an fsync that started
/// after its rename has succeeded.
static DIR_SYNCS: DirSyncs = DirSyncs::new();

struct DirSyncs {
    dirs: std::sync::Mutex<Vec<(std::path::PathBuf, DirSync)>>,
    changed: std::sync::Condvar,
}

#[derive(Default, Clone, Copy)]
struct DirSync {
    /// Renames registered so far (a sequence number per caller).
    requested: u64,
    /// Every rename up to this number is durable.
    done: u64,
    /// An fsync is running.
    running: bool,
    /// Callers inside [`DirSyncs::sync`] for this directory.
    inside: u32,
}

impl DirSyncs {
    const fn new() -> DirSyncs {
        DirSyncs {
            dirs: std::sync::Mutex::new(Vec::new()),
            changed: std::sync::Condvar::new(),
        }
    }

    fn sync(&self, dir: &Path) -> io::Result<()> {
        fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
            m.lock().unwrap_or_else(|p| p.into_inner())
        }
        let mut dirs = lock(&self.dirs);
        let slot = |dirs: &mut Vec<(std::path::PathBuf, DirSync)>| -> usize {
            match dirs.iter().position(|(d, _)| d == dir) {
                Some(i) => i,
                None => {
                    dirs.push((dir.to_path_buf(), DirSync::default()));
                    dirs.len() - 1
                }
            }
        };
        let i = slot(&mut dirs);
        dirs[i].1.requested += 1;
        dirs[i].1.inside += 1;
        let mine = dirs[i].1.requested;
        let result = loop {
            let i = slot(&mut dirs);
            let state = dirs[i].1;
            if state.done >= mine {
                break Ok(());
            }
            if state.running {
                dirs = self.changed.wait(dirs).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead the next fsync: it covers every rename registered before it starts.
            let covers = state.requested;
            dirs[i].1.running = true;
            drop(dirs);
            let result = sync_dir(Some(dir));
            dirs = lock(&self.dirs);
            let i = slot(&mut dirs);
            dirs[i].1.running = false;
            if result.is_ok() {
                dirs[i].1.done = dirs[i].1.done.max(covers);
            }
            self.changed.notify_all();
            // On an error each waiter tries again itself (and gets its own error).
            if result.is_err() {
                break result;
            }
        };
        // Forget a directory nobody is inside for (keeps the list short).
        let i = slot(&mut dirs);
        dirs[i].1.inside -= 1;
        if dirs[i].1.inside == 0 {
            dirs.swap_remove(i);
        }
        result
    }
}

/// Make `link` show the file at `target`: a relative symlink where the platform allows, else a
/// hard link, else a copy. An existing entry at `link` is replaced.
pub fn link_file(target: &Path, link: &Path) -> std::io::Result<()> {
    if let Some(parent) = link.parent() {
        create_dir_all_durable(parent)?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(_) => std::fs::remove_file(link)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    #[cfg(unix)]
    {
        if let Some(relative) =
            super::names::relative_path(link.parent().unwrap_or(Path::new("/")), target)
        {
            if std::os::unix::fs::symlink(&relative, link).is_ok() {
                return Ok(());
            }
        }
    }
    if std::fs::hard_link(target, link).is_ok() {
        return Ok(());
    }
    std::fs::copy(target, link).map(|_| ())
}

/// Size and modification time (seconds) of a file, to notice later changes.
pub fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((meta.len(), modified))
}

/// The sub-second part (nanoseconds) of a file's modification time.
pub fn file_mtime_nanos(path: &Path) -> Option<u32> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .subsec_nanos(),
    )
}

/// How [`place_copy`] put a file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// A reflink (`FICLONE`): shares blocks copy-on-write, costs no space or time.
    Reflink,
    /// A hard link (only when the settings allow it): one inode for both paths.
    HardLink,
    /// A full copy.
    Copy,
}

/// Put a copy of `source` at `dest` (replacing it): a reflink where the filesystem has one,
/// else a hard link if `hard_links` allows it, else a copy; a clone or copy is fsynced.
pub fn place_copy(source: &Path, dest: &Path, hard_links: bool) -> io::Result<CopyKind> {
    let _ = std::fs::remove_file(dest);
    if reflink(source, dest).is_ok() {
        std::fs::File::open(dest)?.sync_all()?;
        return Ok(CopyKind::Reflink);
    }
    let _ = std::fs::remove_file(dest);
    if hard_links && std::fs::hard_link(source, dest).is_ok() {
        return Ok(CopyKind::HardLink);
    }
    std::fs::copy(source, dest)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dest)?
        .sync_all()?;
    Ok(CopyKind::Copy)
}

#[cfg(target_os = "linux")]
fn reflink(source: &Path, dest: &Path) -> io::Result<()> {
    let src = std::fs::File::open(source)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    rustix::fs::ioctl_ficlone(&dst, &src).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn reflink(_source: &Path, _dest: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Create `dir` and its missing parents, and fsync each new directory's parent so that the
/// new entries survive a power cut.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(Some(parent.unwrap_or(Path::new("."))))?;
    }
    Ok(())
}

/// Delete one partial file and its sidecar.
pub fn remove_partial(part: &Path) {
    let _ = std::fs::remove_file(part);
    super::sidecar::remove(part);
}

/// Files to delete once a change is saved, run off the scheduler's task: deleting on a hung
/// network file system must never freeze every request.
#[derive(Debug, Default)]
pub struct Cleanup {
    files: Vec<std::path::PathBuf>,
    partials: Vec<std::path::PathBuf>,
}

impl Cleanup {
    /// The partial files (and their sidecars) of a job's first `count` files (at least one).
    pub fn partials(dest_dir: &Path, job: mdl_protocol::JobId, count: u32) -> Self {
        Cleanup {
            files: Vec::new(),
            partials: (0..count.max(1))
                .map(|index| crate::job::part_path(dest_dir, job, index))
                .collect(),
        }
    }

    /// Also delete this finished file.
    pub fn with_file(mut self, path: std::path::PathBuf) -> Self {
        self.files.push(path);
        self
    }

    /// Delete everything (blocking; missing files are fine).
    pub fn run(self) {
        for path in self.files {
            let _ = std::fs::remove_file(path);
        }
        for part in self.partials {
            let _ = std::fs::remove_file(&part);
            super::sidecar::remove(&part);
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn sync_dir(_dir: Option<&Path>) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests() -> Digests {
        Digests {
            len: 3,
            sha256: "ab".into(),
            md5: Some("cd".into()),
            git_sha1: None,
        }
    }

    #[test]
    fn matching_digests_pass_any_case() {
        let expected = Expected {
            size: Some(3),
            sha256: Some("AB".into()),
            md5: Some("cd".into()),
            git_sha1: Some("ff".into()),
        };
        verify("f", &digests(), &expected).unwrap();
    }

    #[test]
    fn mismatches_are_integrity_errors_naming_both_values() {
        let err = verify(
            "f",
            &digests(),
            &Expected {
                sha256: Some("00".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity);
        assert!(err.to_string().contains("expected 00, got ab"), "{err}");
        let err = verify(
            "f",
            &digests(),
            &Expected {
                size: Some(4),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");
    }

    #[test]
    fn directory_syncs_are_shared_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let part = d.join(format!("{i}.part"));
                    std::fs::write(&part, b"x").unwrap();
                    install(&part, &d.join(format!("{i}.bin"))).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for i in 0..16 {
            assert!(dir.path().join(format!("{i}.bin")).exists());
        }
        let left = DIR_SYNCS.dirs.lock().unwrap();
        assert!(
            left.iter().all(|(d, _)| d != dir.path()),
            "no state is kept for a directory nobody waits on"
        );
    }

    #[test]
    fn a_failing_directory_sync_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DIR_SYNCS.sync(&dir.path().join("missing")).is_err());
        let left = DIR_SYNCS.dirs.lock().unwrap();
        assert!(left.iter().all(|(d, _)| !d.starts_with(dir.path())));
    }
}
