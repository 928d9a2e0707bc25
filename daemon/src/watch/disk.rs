//! One way to watch directories for every watcher of the daemon: `notify`'s native backend
//! (inotify, FSEvents, ReadDirectoryChangesW) behind `notify-debouncer-full`, and `notify`'s
//! `PollWatcher` for directories where events do not arrive: network file systems (NFS, SMB /
//! CIFS, 9p, FUSE, AFS, Ceph; detected with `statfs` on Linux), directories the native
//! backend refuses (e.g. out of inotify watches), or everywhere with `watch_mode = "poll"`.
//! Polling rescans each directory every `watch_poll_secs` (default 10 s).
//!
//! Directories are watched non-recursively; callers name each directory they care about.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache,
};
use tokio::sync::mpsc;

/// A change seen on disk: the paths it is about and whether bytes were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The paths (files, or directories for a directory's own events).
    pub paths: Vec<PathBuf>,
    /// Bytes were written (a modify of the data, or a close after writing); a rename, a
    /// create or a removal is not a write.
    pub written: bool,
}

/// How a directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// File-system events.
    Notify,
    /// Rescanned at the poll interval.
    Poll,
}

/// Watches a set of directories and sends [`Change`]s, debounced.
pub struct DiskWatcher {
    native: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    poll: Option<Debouncer<PollWatcher, NoCache>>,
    dirs: BTreeMap<PathBuf, Backend>,
    tx: mpsc::UnboundedSender<Vec<Change>>,
    debounce: Duration,
    poll_interval: Duration,
    force_poll: bool,
}

/// Which events count: a read (open, close without writing, access) never does, so a loader
/// that maps a model is not reported.
pub fn is_change(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether an event means bytes were written.
fn is_write(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

impl DiskWatcher {
    /// A watcher with no directories yet, and the receiver of its changes. `debounce`
    /// gathers a burst of events into one batch; `poll_interval` is for polled directories.
    pub fn new(
        debounce: Duration,
        poll_interval: Duration,
        force_poll: bool,
    ) -> (DiskWatcher, mpsc::UnboundedReceiver<Vec<Change>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = DiskWatcher {
            native: None,
            poll: None,
            dirs: BTreeMap::new(),
            tx,
            debounce,
            poll_interval,
            force_poll,
        };
        (watcher, rx)
    }

    fn handler(&self) -> impl FnMut(DebounceEventResult) + Send + 'static {
        let tx = self.tx.clone();
        move |result: DebounceEventResult| match result {
            Ok(events) => {
                let changes: Vec<Change> = events
                    .into_iter()
                    .filter(|e| is_change(&e.event.kind))
                    .map(|e| Change {
                        written: is_write(&e.event.kind),
                        paths: e.event.paths.clone(),
                    })
                    .collect();
                if !changes.is_empty() {
                    let _ = tx.send(changes);
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::debug!("file watcher: {e}");
                }
            }
        }
    }

    fn watch_native(&mut self, dir: &Path) -> notify::Result<()> {
        if self.native.is_none() {
            let handler = self.handler();
            self.native = Some(
                new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
                    self.debounce,
                    None,
                    handler,
                    RecommendedCache::new(),
                    notify::Config::default(),
                )?,
            );
        }
        let native = self.native.as_mut().expect("created above");
        native.watch(dir, RecursiveMode::NonRecursive)
    }

    fn watch_polled(&mut self, dir: &Path) -> notify::Result<()> {
        if self.poll.is_none() {
            let handler = self.handler();
            let config = notify::Config::default()
                .with_poll_interval(self.poll_interval)
                .with_compare_contents(false);
            // The poll watcher reports at most once per interval: a short debounce suffices.
            let debounce = self.debounce.min(self.poll_interval);
            self.poll = Some(new_debouncer_opt::<_, PollWatcher, NoCache>(
                debounce, None, handler, NoCache, config,
            )?);
        }
        let poll = self.poll.as_mut().expect("created above");
        poll.watch(dir, RecursiveMode::NonRecursive)
    }

    /// Start watching `dir` (it must exist), natively where events arrive, else by polling.
    pub fn watch(&mut self, dir: &Path) -> notify::Result<Backend> {
        if let Some(backend) = self.dirs.get(dir) {
            return Ok(*backend);
        }
        let backend = if self.force_poll || is_network_fs(dir) {
            self.watch_polled(dir)?;
            Backend::Poll
        } else {
            match self.watch_native(dir) {
                Ok(()) => Backend::Notify,
                Err(e) => {
                    tracing::info!(dir = %dir.display(), "file-system events unavailable ({e}); polling every {:?}", self.poll_interval);
                    self.watch_polled(dir)?;
                    Backend::Poll
                }
            }
        };
        self.dirs.insert(dir.to_path_buf(), backend);
        Ok(backend)
    }

    /// Stop watching `dir`.
    pub fn unwatch(&mut self, dir: &Path) {
        let result = match self.dirs.remove(dir) {
            Some(Backend::Notify) => self.native.as_mut().map(|w| w.unwatch(dir)),
            Some(Backend::Poll) => self.poll.as_mut().map(|w| w.unwatch(dir)),
            None => None,
        };
        if let Some(Err(e)) = result {
            tracing::debug!(dir = %dir.display(), "unwatch: {e}");
        }
    }

    /// Watch exactly `dirs` (those that exist): start the new ones, stop the others. Returns
    /// the directories that could not be watched.
    pub fn set_dirs(&mut self, dirs: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        let gone: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            self.unwatch(&dir);
        }
        let mut failed = Vec::new();
        for dir in dirs {
            if !self.dirs.contains_key(dir) && self.watch(dir).is_err() {
                failed.push(dir.clone());
            }
        }
        failed
    }

    /// Whether `dir` is watched now.
    pub fn is_watched(&self, dir: &Path) -> bool {
        self.dirs.contains_key(dir)
    }

    /// `notify`, `poll`, `notify+poll`, or `notify` when nothing is watched yet.
    pub fn mode(&self) -> &'static str {
        let native = self.dirs.values().any(|b| *b == Backend::Notify);
        let poll = self.dirs.values().any(|b| *b == Backend::Poll);
        match (native, poll) {
            (true, true) => "notify+poll",
            (false, true) => "poll",
            _ if self.force_poll => "poll",
            _ => "notify",
        }
    }
}

/// True for file systems whose changes made elsewhere raise no local events.
#[cfg(target_os = "linux")]
pub fn is_network_fs(dir: &Path) -> bool {
    const NETWORK: [i64; 11] = [
        0x6969,      // NFS
        0x517b,      // SMB
        0xfe53_4d42, // SMB2
        0xff53_4d42, // CIFS
        0x0102_1997, // 9p (v9fs)
        0x6573_5546, // FUSE (sshfs, rclone, ...)
        0x5346_414f, // AFS
        0x00c3_6400, // Ceph
        0x7375_7245, // Coda
        0x0bd0_0bd0, // Lustre
        0x4750_4653, // GPFS
    ];
    match rustix::fs::statfs(dir) {
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        Ok(stat) => NETWORK.contains(&(stat.f_type as i64)),
        Err(_) => false,
    }
}

/// True for file systems whose changes made elsewhere raise no local events (not detected on
/// this platform: `watch_mode = "poll"` forces polling).
#[cfg(not(target_os = "linux"))]
pub fn is_network_fs(_dir: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};

    #[test]
    fn reads_are_not_changes_and_writes_are() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_write(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(!is_write(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[tokio::test]
    async fn a_write_in_a_watched_directory_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let (mut watcher, mut rx) =
            DiskWatcher::new(Duration::from_millis(100), Duration::from_secs(1), false);
        assert!(watcher
            .set_dirs(&[dir.path().to_path_buf()].into())
            .is_empty());
        assert!(watcher.is_watched(dir.path()));
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(changes
            .iter()
            .any(|c| c.paths.iter().any(|p| p.ends_with("f"))));
    }

    #[tokio::test]
    async fn removing_a_file_that_was_there_arrives() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        let (mut watcher, mut rx) =
            DiskWatcher::new(Duration::from_millis(100), Duration::from_secs(1), false);
        assert!(watcher.set_dirs(&BTreeSet::new()).is_empty());
        assert!(watcher
            .set_dirs(&[dir.path().to_path_buf()].into())
            .is_empty());
        std::fs::remove_file(dir.path().join("old")).unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(changes
            .iter()
            .any(|c| c.paths.iter().any(|p| p.ends_with("old"))));
    }

    #[tokio::test]
    async fn polling_sees_a_new_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut watcher, mut rx) =
            DiskWatcher::new(Duration::from_millis(100), Duration::from_millis(200), true);
        assert_eq!(watcher.watch(dir.path()).unwrap(), Backend::Poll);
        assert_eq!(watcher.mode(), "poll");
        std::fs::write(dir.path().join("g"), b"x").unwrap();
        let changes = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(changes
            .iter()
            .any(|c| c.paths.iter().any(|p| p.ends_with("g"))));
    }
}
