//! The integrity watcher: every completed file (a plain destination, or a hub cache's blob and
//! its snapshot links) is watched; one that is deleted, truncated or rewritten is marked
//! `missing` or `modified` within a second or two, with a `FileChanged` event. A read (a loader
//! mapping the file) raises no event we count. At start, every completed file is checked in
//! the background for existence, size and modification time.
//!
//! What counts, per file (see [`judge`]): gone (or a link gone) is `missing`; a size or
//! modification time other than at verification, or bytes written to it, is `modified`;
//! exactly as verified again (moved back) is `completed`. The decision is taken on the
//! scheduler's current record, so a file the daemon itself just replaced is never reported.
//!
//! With `repair = "auto"`, each marked job is verified at once: re-hashed, and what is
//! damaged is queued again (`handlers::verify`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mdl_protocol::{Event, FileState, JobId, VerifyRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::disk::{Change, DiskWatcher};
use crate::engine::finalize::file_stamp;
use crate::handlers::{verify, Services};
use crate::scheduler::WatchedFile;
use crate::settings::{RepairMode, Settings};

/// Time that gathers a burst of file-system events into one check.
const DEBOUNCE: Duration = Duration::from_millis(400);

/// What is on disk for one watched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The file exists (following links).
    pub exists: bool,
    /// A link that should show it and does not.
    pub missing_link: Option<PathBuf>,
    /// Its size and modification time.
    pub stamp: Option<(u64, i64)>,
    /// Bytes were written to it since the last look.
    pub written: bool,
}

/// Look at one file on disk (blocking: a stat per path).
pub fn observe(file: &WatchedFile, written: bool) -> Observed {
    let exists = std::fs::metadata(&file.path).is_ok_and(|m| m.is_file());
    let missing_link = file
        .links
        .iter()
        .find(|l| std::fs::metadata(l).is_err())
        .cloned();
    Observed {
        exists,
        missing_link,
        stamp: file_stamp(&file.path),
        written,
    }
}

/// The state a file should have given what is on disk and its verified stamp, with a note.
pub fn judge(observed: &Observed, verified: Option<(u64, i64)>) -> (FileState, Option<String>) {
    if !observed.exists {
        return (
            FileState::Missing,
            Some("deleted; `mdlctl verify` fetches it again".into()),
        );
    }
    if let Some(link) = &observed.missing_link {
        return (
            FileState::Missing,
            Some(format!(
                "{} is gone; `mdlctl verify` makes it again",
                link.display()
            )),
        );
    }
    let note = match (observed.stamp, verified) {
        (Some((size, _)), Some((was, _))) if size != was => {
            format!("size changed from {was} to {size} bytes")
        }
        (Some(now), Some(was)) if now != was => "modified since it was verified".into(),
        _ if observed.written => "written to since it was verified".into(),
        _ => return (FileState::Completed, None),
    };
    (
        FileState::Modified,
        Some(format!("{note}; `mdlctl verify` re-hashes it")),
    )
}

/// Mark what `observed` shows, judged on the scheduler's current record of the file. Returns
/// the jobs whose files were marked damaged.
async fn mark(services: &Services, observed: Vec<((JobId, u32), Observed)>) -> Vec<JobId> {
    let result = services
        .call(move |s| {
            let mut damaged = Vec::new();
            for ((job, index), seen) in observed {
                let Some(file) = s.watched_file(job, index)? else {
                    continue;
                };
                let (state, note) = judge(&seen, file.stamp);
                // "Completed" only undoes an earlier mark: the file is exactly as verified.
                if state == FileState::Completed && file.state == FileState::Completed {
                    continue;
                }
                let stamp = if state == FileState::Completed {
                    file.stamp
                } else {
                    seen.stamp
                };
                if s.mark_file(job, index, state, note.clone(), stamp)? {
                    tracing::warn!(job, file = %file.path.display(), state = state.as_str(), "{}", note.unwrap_or_default());
                    if state != FileState::Completed && !damaged.contains(&job) {
                        damaged.push(job);
                    }
                }
            }
            Ok(damaged)
        })
        .await;
    result.unwrap_or_else(|e| {
        tracing::debug!("integrity: {}", e.message);
        Vec::new()
    })
}

/// Verify (re-hash, queue what is damaged) the jobs, when `repair = "auto"`.
fn repair(services: &Services, jobs: Vec<JobId>) {
    if jobs.is_empty() || services.settings.get().repair != RepairMode::Auto {
        return;
    }
    let services = services.clone();
    tokio::spawn(async move {
        let request = VerifyRequest {
            ids: jobs,
            paths: Vec::new(),
        };
        match verify::run(&services, request).await {
            Ok(_) => tracing::info!("repair: damaged files queued again"),
            Err(e) => tracing::warn!("repair failed: {}", e.message),
        }
    });
}

/// The watched files, by every path that shows them.
#[derive(Default)]
struct Index {
    files: HashMap<(JobId, u32), WatchedFile>,
    by_path: HashMap<PathBuf, (JobId, u32)>,
}

impl Index {
    fn new(files: Vec<WatchedFile>) -> Index {
        let mut index = Index::default();
        for file in files {
            let key = (file.job, file.index);
            for path in std::iter::once(&file.path).chain(&file.links) {
                index.by_path.insert(path.clone(), key);
            }
            index.files.insert(key, file);
        }
        index
    }

    /// The directories holding a watched path.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.by_path
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect()
    }

    /// The files a change is about: the paths themselves, or everything below a directory
    /// that was removed or renamed.
    fn affected(&self, change: &Change, out: &mut HashMap<(JobId, u32), bool>) {
        for path in &change.paths {
            if let Some(key) = self.by_path.get(path) {
                *out.entry(*key).or_default() |= change.written;
                continue;
            }
            for (watched, key) in &self.by_path {
                if watched.starts_with(path) {
                    out.entry(*key).or_default();
                }
            }
        }
    }
}

/// Run the integrity watcher until `shutdown`.
pub async fn run(
    services: Services,
    settings: watch::Receiver<Arc<Settings>>,
    shutdown: CancellationToken,
) {
    let start = settings.borrow().clone();
    let (mut disk, mut changes) = DiskWatcher::new(DEBOUNCE, start.poll_interval, start.force_poll);
    let mut bus = services.scheduler.subscribe();

    // The start-up check: every completed file, in the background (the socket is already up).
    let mut index = refresh(&services, &mut disk, start.poll_interval).await;
    let files: Vec<WatchedFile> = index.files.values().cloned().collect();
    let looked = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|f| ((f.job, f.index), observe(f, false)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let count = looked.len();
    let damaged = mark(&services, looked).await;
    tracing::info!(
        files = count,
        damaged_jobs = damaged.len(),
        "start-up check of completed files done"
    );
    let _ = services
        .call(|s| {
            s.report_watch(|w| w.startup_check_done = true);
            Ok(())
        })
        .await;
    repair(&services, damaged);

    let mut stale = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(batch) = changes.recv() => {
                let mut affected = HashMap::new();
                for change in &batch {
                    index.affected(change, &mut affected);
                }
                if affected.is_empty() {
                    continue;
                }
                let files: Vec<(WatchedFile, bool)> = affected
                    .into_iter()
                    .filter_map(|(key, written)| index.files.get(&key).map(|f| (f.clone(), written)))
                    .collect();
                let looked = tokio::task::spawn_blocking(move || {
                    files.iter().map(|(f, w)| ((f.job, f.index), observe(f, *w))).collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let damaged = mark(&services, looked).await;
                repair(&services, damaged);
            }
            event = bus.recv() => match event {
                Ok(Event::Progress(_) | Event::Heartbeat { .. } | Event::FileChanged(_) | Event::Verifying { .. }) => {}
                Ok(Event::End) => break,
                // A job completed, was removed, queued again...: the set of files changed.
                Ok(_) | Err(_) => stale = true,
            },
            _ = tokio::time::sleep(Duration::from_millis(200)), if stale => {
                stale = false;
                let next = refresh(&services, &mut disk, start.poll_interval).await;
                // A file may have changed between its completion and its directory being
                // watched: look once at every file that is new to the index.
                let new: Vec<WatchedFile> = next
                    .files
                    .iter()
                    .filter(|(key, _)| !index.files.contains_key(key))
                    .map(|(_, f)| f.clone())
                    .collect();
                index = next;
                if !new.is_empty() {
                    let looked = tokio::task::spawn_blocking(move || {
                        new.iter().map(|f| ((f.job, f.index), observe(f, false))).collect::<Vec<_>>()
                    })
                    .await
                    .unwrap_or_default();
                    let damaged = mark(&services, looked).await;
                    repair(&services, damaged);
                }
            }
        }
    }
}

/// Read the set of completed files from the scheduler and watch their directories.
async fn refresh(services: &Services, disk: &mut DiskWatcher, poll_interval: Duration) -> Index {
    let files = services
        .call(|s| Ok(s.completed_files()?))
        .await
        .unwrap_or_default();
    let index = Index::new(files);
    let failed = disk.set_dirs(&index.dirs());
    for dir in &failed {
        tracing::debug!(dir = %dir.display(), "cannot watch (gone?)");
    }
    let mode = disk.mode().to_string();
    let _ = services
        .call(move |s| {
            s.report_watch(|w| {
                w.mode = mode;
                w.poll_interval_ms = poll_interval.as_millis() as u64;
            });
            Ok(())
        })
        .await;
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(exists: bool, stamp: Option<(u64, i64)>, written: bool) -> Observed {
        Observed {
            exists,
            missing_link: None,
            stamp,
            written,
        }
    }

    #[test]
    fn judge_tells_missing_modified_and_intact_apart() {
        let was = Some((10, 100));
        assert_eq!(judge(&seen(false, None, false), was).0, FileState::Missing);
        let (state, note) = judge(&seen(true, Some((0, 101)), false), was);
        assert_eq!(state, FileState::Modified);
        assert!(note.unwrap().contains("from 10 to 0"));
        assert_eq!(
            judge(&seen(true, Some((10, 101)), false), was).0,
            FileState::Modified
        );
        assert_eq!(
            judge(&seen(true, was, true), was).0,
            FileState::Modified,
            "written within the same second"
        );
        assert_eq!(judge(&seen(true, was, false), was).0, FileState::Completed);
        let mut link_gone = seen(true, was, false);
        link_gone.missing_link = Some("/c/snapshots/x/f".into());
        assert_eq!(judge(&link_gone, was).0, FileState::Missing);
    }
}
