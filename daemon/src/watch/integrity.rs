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

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// A watched file: its job and its index in the job.
type Key = (JobId, u32);

/// How many watched files are in each state (what `Request::Health` reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    intact: u64,
    missing: u64,
    modified: u64,
}

impl Counts {
    fn slot(&mut self, state: FileState) -> &mut u64 {
        match state {
            FileState::Missing => &mut self.missing,
            FileState::Modified => &mut self.modified,
            _ => &mut self.intact,
        }
    }

    fn add(&mut self, state: FileState) {
        *self.slot(state) += 1;
    }

    fn sub(&mut self, state: FileState) {
        let slot = self.slot(state);
        *slot = slot.saturating_sub(1);
    }

    /// Report them to the scheduler (inside a scheduler call).
    fn report(self, s: &mut crate::scheduler::Scheduler) {
        s.report_watch(|w| {
            w.files_intact = self.intact;
            w.files_missing = self.missing;
            w.files_modified = self.modified;
        });
    }
}

/// What [`mark`] did: the marks made, the jobs whose files were marked damaged, and the
/// counts it reported (none when it reached no scheduler).
#[derive(Default)]
struct Marked {
    marks: Vec<(Key, FileState)>,
    damaged: Vec<JobId>,
    reported: Option<Counts>,
}

/// Mark what `observed` shows, judged on the scheduler's current record of the file, and
/// report the counts `counts` become (`was` holds the state the index knows for each key).
async fn mark(
    services: &Services,
    observed: Vec<(Key, Observed)>,
    was: HashMap<Key, FileState>,
    mut counts: Counts,
) -> Marked {
    if observed.is_empty() {
        return Marked::default();
    }
    let result = services
        .call(move |s| {
            let mut marked = Vec::new();
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
                    if let Some(old) = was.get(&(job, index)) {
                        counts.sub(*old);
                        counts.add(state);
                    }
                    marked.push(((job, index), state));
                    if state != FileState::Completed && !damaged.contains(&job) {
                        damaged.push(job);
                    }
                }
            }
            // In the same call as the marks: a client that saw the marks' events sees them
            // counted too.
            counts.report(s);
            Ok(Marked {
                marks: marked,
                damaged,
                reported: Some(counts),
            })
        })
        .await;
    result.unwrap_or_else(|e| {
        tracing::debug!("integrity: {}", e.message);
        Default::default()
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

/// Completed files gathered by one scheduler call of a full pass.
const PAGE_FILES: usize = 512;

/// One path that shows a watched file (the file itself or one of its links).
#[derive(Debug, Clone, Copy)]
struct Shown {
    key: Key,
    /// The slot of its directory in [`Index::dirs`].
    dir: u32,
}

/// The watched files, kept light: a store of 100k completed files costs a few MiB here, not
/// a copy of every record. Paths are kept as 64-bit hashes (a collision costs one extra look
/// at a file, never a wrong mark: every mark is judged on the scheduler's record); the
/// records themselves are read from the scheduler when a change is about them.
#[derive(Default)]
struct Index {
    /// Every watched path, by its hash.
    by_path: HashMap<u64, Shown>,
    /// Every watched file and the state it has.
    files: HashMap<Key, FileState>,
    /// The directories holding watched paths, with how many each holds; freed slots are
    /// `None` and reused.
    dirs: Vec<Option<(PathBuf, u32)>>,
    dir_slots: HashMap<PathBuf, u32>,
    free_slots: Vec<u32>,
    counts: Counts,
}

/// The hash a path is kept under.
fn path_hash(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}

impl Index {
    /// Add (or replace) a watched file and every path that shows it.
    fn insert(&mut self, file: &WatchedFile) {
        let key = (file.job, file.index);
        if let Some(old) = self.files.insert(key, file.state) {
            self.counts.sub(old);
        }
        self.counts.add(file.state);
        for path in std::iter::once(&file.path).chain(&file.links) {
            let Some(parent) = path.parent() else {
                continue;
            };
            let dir = self.dir_slot(parent);
            if let Some(old) = self.by_path.insert(path_hash(path), Shown { key, dir }) {
                self.release_dir(old.dir);
            }
        }
    }

    fn dir_slot(&mut self, dir: &Path) -> u32 {
        if let Some(&slot) = self.dir_slots.get(dir) {
            if let Some((_, n)) = &mut self.dirs[slot as usize] {
                *n += 1;
            }
            return slot;
        }
        let entry = Some((dir.to_path_buf(), 1));
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.dirs[slot as usize] = entry;
                slot
            }
            None => {
                self.dirs.push(entry);
                (self.dirs.len() - 1) as u32
            }
        };
        self.dir_slots.insert(dir.to_path_buf(), slot);
        slot
    }

    fn release_dir(&mut self, slot: u32) {
        let Some(Some((dir, n))) = self.dirs.get_mut(slot as usize) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.dir_slots.remove(dir.as_path());
            self.dirs[slot as usize] = None;
            self.free_slots.push(slot);
        }
    }

    /// Forget every file of these jobs.
    fn remove_jobs(&mut self, jobs: &HashSet<JobId>) {
        let mut released = Vec::new();
        self.by_path.retain(|_, shown| {
            let keep = !jobs.contains(&shown.key.0);
            if !keep {
                released.push(shown.dir);
            }
            keep
        });
        for slot in released {
            self.release_dir(slot);
        }
        let counts = &mut self.counts;
        self.files.retain(|key, state| {
            let keep = !jobs.contains(&key.0);
            if !keep {
                counts.sub(*state);
            }
            keep
        });
    }

    /// The state a mark gave a file.
    fn set_state(&mut self, key: Key, state: FileState) {
        if let Some(old) = self.files.get_mut(&key) {
            self.counts.sub(*old);
            self.counts.add(state);
            *old = state;
        }
    }

    /// The states the index knows for these files (what a mark changes them from).
    fn states_of<'a>(&self, keys: impl Iterator<Item = &'a Key>) -> HashMap<Key, FileState> {
        keys.filter_map(|k| self.files.get(k).map(|s| (*k, *s)))
            .collect()
    }

    /// The directories holding a watched path.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.dir_slots.keys().cloned().collect()
    }

    /// The files a change is about: the paths themselves, or everything below a directory
    /// that was removed or renamed.
    fn affected(&self, change: &Change, out: &mut HashMap<Key, bool>) {
        for path in &change.paths {
            if let Some(shown) = self.by_path.get(&path_hash(path)) {
                *out.entry(shown.key).or_default() |= change.written;
                continue;
            }
            let below: HashSet<u32> = self
                .dir_slots
                .iter()
                .filter(|(dir, _)| dir.starts_with(path))
                .map(|(_, slot)| *slot)
                .collect();
            if below.is_empty() {
                continue;
            }
            for shown in self.by_path.values() {
                if below.contains(&shown.dir) {
                    out.entry(shown.key).or_default();
                }
            }
        }
    }
}

/// The integrity watcher's state: the index, the directory watches, and what it reports.
struct Watcher {
    services: Services,
    disk: DiskWatcher,
    index: Index,
    poll_interval: Duration,
    /// Counts as last reported to the scheduler.
    reported: Option<Counts>,
    /// Files (re)read into the index within [`FRESH`], and when: a "bytes were written" event
    /// about them may be the daemon's own writes before it verified them, delivered late by
    /// the debouncer (their size and time stamp are still compared).
    fresh: HashMap<Key, tokio::time::Instant>,
}

/// How long a file that just joined the index ignores "written" events (see
/// [`Watcher::fresh`]): twice the debounce.
const FRESH: Duration = Duration::from_millis(2 * DEBOUNCE.as_millis() as u64);

impl Watcher {
    /// Watch the index's directories (a directory no longer needed is let go).
    async fn watch_dirs(&mut self) {
        let failed = self.disk.set_dirs(&self.index.dirs());
        for dir in &failed {
            tracing::debug!(dir = %dir.display(), "cannot watch (gone?)");
        }
        let mode = self.disk.mode().to_string();
        let poll_interval_ms = self.poll_interval.as_millis() as u64;
        let _ = self
            .services
            .call(move |s| {
                s.report_watch(|w| {
                    w.mode = mode;
                    w.poll_interval_ms = poll_interval_ms;
                });
                Ok(())
            })
            .await;
    }

    /// Look at `files` on disk (on a blocking thread) and mark those that are not as their
    /// records say; returns the jobs marked damaged.
    async fn check(&mut self, files: Vec<(WatchedFile, bool)>) -> Vec<JobId> {
        if files.is_empty() {
            return Vec::new();
        }
        let looked = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .filter_map(|(file, written)| {
                    let seen = observe(&file, written);
                    // As its record says already: nothing to mark, no scheduler call.
                    let as_recorded = judge(&seen, file.stamp).0 == file.state;
                    (!as_recorded || written).then_some(((file.job, file.index), seen))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let was = self.index.states_of(looked.iter().map(|(key, _)| key));
        let marked = mark(&self.services, looked, was, self.index.counts).await;
        for (key, state) in marked.marks {
            self.index.set_state(key, state);
        }
        if marked.reported.is_some() {
            self.reported = marked.reported;
        }
        marked.damaged
    }

    /// Tell the scheduler the counts, if they changed.
    async fn report(&mut self) {
        let counts = self.index.counts;
        if self.reported == Some(counts) {
            return;
        }
        self.reported = Some(counts);
        let _ = self
            .services
            .call(move |s| {
                counts.report(s);
                Ok(())
            })
            .await;
    }

    /// Read every completed file from the scheduler, a page at a time, into a new index;
    /// each page is watched and looked at before the next is read (`all`: every file, as at
    /// the start; else only the files the old index did not have). Returns how many files
    /// were looked at and the jobs marked damaged.
    async fn full_pass(&mut self, all: bool) -> (usize, Vec<JobId>) {
        let old = std::mem::take(&mut self.index);
        let (mut looked, mut damaged) = (0, Vec::new());
        let mut after = None;
        let mut pages = 0usize;
        loop {
            let page = self
                .services
                .call(move |s| Ok(s.completed_files_after(after, PAGE_FILES)?))
                .await;
            let (files, next) = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("integrity: cannot list the completed files: {}", e.message);
                    break;
                }
            };
            for file in &files {
                self.index.insert(file);
            }
            self.watch_dirs().await;
            let new: Vec<(WatchedFile, bool)> = files
                .into_iter()
                .filter(|f| all || !old.files.contains_key(&(f.job, f.index)))
                .map(|f| (f, false))
                .collect();
            looked += new.len();
            damaged.extend(self.check(new).await);
            pages += 1;
            if pages.is_multiple_of(TRIM_EVERY_PAGES) {
                // What the pages read so far left free in the heap goes back now, not at the
                // end of the pass: the peak stays near what the pass holds (bench/README.md,
                // "Memory with 100k jobs").
                crate::memory::release_free_memory_soon();
            }
            match next {
                Some(id) => after = Some(id),
                None => break,
            }
        }
        if self.index.dirs.is_empty() {
            // Nothing watched: still say how (the mode with no directory).
            self.watch_dirs().await;
        }
        self.report().await;
        (looked, damaged)
    }

    /// Read these jobs' files again (they completed, were queued again, removed...): a
    /// file new to the index is looked at once (it may have changed between its completion
    /// and its directory being watched).
    async fn refresh_jobs(&mut self, jobs: HashSet<JobId>) -> Vec<JobId> {
        let ids: Vec<JobId> = jobs.iter().copied().collect();
        let files = self
            .services
            .call(move |s| {
                let mut files = Vec::new();
                for id in ids {
                    files.extend(s.watched_files_of(id)?);
                }
                Ok(files)
            })
            .await;
        let files = match files {
            Ok(files) => files,
            Err(e) => {
                tracing::debug!("integrity: {}", e.message);
                return Vec::new();
            }
        };
        let before: HashSet<Key> = self
            .index
            .files
            .keys()
            .filter(|k| jobs.contains(&k.0))
            .copied()
            .collect();
        self.index.remove_jobs(&jobs);
        for file in &files {
            self.index.insert(file);
        }
        self.watch_dirs().await;
        let new: Vec<(WatchedFile, bool)> = files
            .into_iter()
            .filter(|f| !before.contains(&(f.job, f.index)))
            .map(|f| (f, false))
            .collect();
        let now = tokio::time::Instant::now();
        self.fresh
            .retain(|_, since| now.duration_since(*since) < FRESH);
        for key in self.index.files.keys().filter(|k| jobs.contains(&k.0)) {
            self.fresh.insert(*key, now);
        }
        let damaged = self.check(new).await;
        self.report().await;
        damaged
    }

    /// The files a batch of disk changes is about, looked at and marked. A "written" event
    /// about a file of a job in `pending` (its events not handled yet) or that was just read
    /// into the index may be the daemon's own writes: only its size and time stamp count.
    async fn on_changes(&mut self, batch: Vec<Change>, pending: &HashSet<JobId>) -> Vec<JobId> {
        let mut affected = HashMap::new();
        for change in &batch {
            self.index.affected(change, &mut affected);
        }
        if affected.is_empty() {
            return Vec::new();
        }
        let now = tokio::time::Instant::now();
        self.fresh
            .retain(|_, since| now.duration_since(*since) < FRESH);
        let keys: Vec<(Key, bool)> = affected
            .into_iter()
            .map(|(key, written)| {
                let own = self.fresh.contains_key(&key) || pending.contains(&key.0);
                (key, written && !own)
            })
            .collect();
        let files = self
            .services
            .call(move |s| {
                let mut files = Vec::new();
                for ((job, index), written) in keys {
                    files.extend(s.watched_file(job, index)?.map(|f| (f, written)));
                }
                Ok(files)
            })
            .await
            .unwrap_or_default();
        self.check(files).await
    }
}

/// What a scheduler event means for the watched files.
enum Touched {
    /// Nothing.
    Nothing,
    /// This job's files may have changed.
    Job(JobId),
    /// Anything may have changed (events were lost): read everything again.
    Everything,
    /// The daemon stops.
    End,
}

fn touched(event: Result<Event, tokio::sync::broadcast::error::RecvError>) -> Touched {
    match event {
        Ok(
            Event::Progress(_)
            | Event::Heartbeat { .. }
            | Event::FileChanged(_)
            | Event::Verifying { .. },
        ) => Touched::Nothing,
        Ok(Event::End) | Err(tokio::sync::broadcast::error::RecvError::Closed) => Touched::End,
        Ok(
            Event::Queued(info)
            | Event::Started(info)
            | Event::Completed(info)
            | Event::Failed(info)
            | Event::Paused(info)
            | Event::Resumed(info)
            | Event::Cancelled(info)
            | Event::Updated(info),
        ) => Touched::Job(info.id),
        Ok(Event::Removed(id)) => Touched::Job(id),
        Ok(_) | Err(_) => Touched::Everything,
    }
}

/// A pass over the completed files hands free memory back every this many pages.
const TRIM_EVERY_PAGES: usize = 8;

/// How long job events gather before the watched set is read again.
const REFRESH_DELAY: Duration = Duration::from_millis(200);

/// Run the integrity watcher until `shutdown`.
pub async fn run(
    services: Services,
    settings: watch::Receiver<Arc<Settings>>,
    shutdown: CancellationToken,
) {
    let start = settings.borrow().clone();
    let (disk, mut changes) = DiskWatcher::new(DEBOUNCE, start.poll_interval, start.force_poll);
    let mut bus = services.scheduler.subscribe();
    let mut watcher = Watcher {
        services: services.clone(),
        disk,
        index: Index::default(),
        poll_interval: start.poll_interval,
        reported: None,
        fresh: HashMap::new(),
    };

    // The start-up check: every completed file, in the background (the socket is already up).
    let (count, damaged) = watcher.full_pass(true).await;
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
    crate::memory::startup_done();
    repair(&services, damaged);

    let mut dirty: HashSet<JobId> = HashSet::new();
    let mut everything = false;
    // When the gathered job events are handled: a deadline, so a stream of other events
    // (progress) cannot postpone it.
    let mut refresh_at: Option<tokio::time::Instant> = None;
    loop {
        if refresh_at.is_none() && (everything || !dirty.is_empty()) {
            refresh_at = Some(tokio::time::Instant::now() + REFRESH_DELAY);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(batch) = changes.recv() => {
                let damaged = watcher.on_changes(batch, &dirty).await;
                repair(&services, damaged);
            }
            event = bus.recv() => match touched(event) {
                Touched::Nothing => {}
                Touched::Job(id) => { dirty.insert(id); }
                Touched::Everything => everything = true,
                Touched::End => break,
            },
            _ = tokio::time::sleep_until(refresh_at.unwrap_or_else(tokio::time::Instant::now)), if refresh_at.is_some() => {
                refresh_at = None;
                let damaged = if std::mem::take(&mut everything) {
                    dirty.clear();
                    watcher.full_pass(false).await.1
                } else {
                    watcher.refresh_jobs(std::mem::take(&mut dirty)).await
                };
                repair(&services, damaged);
            }
        }
    }
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

    fn watched(
        job: JobId,
        index: u32,
        path: &str,
        links: &[&str],
        state: FileState,
    ) -> WatchedFile {
        WatchedFile {
            job,
            index,
            path: path.into(),
            links: links.iter().map(PathBuf::from).collect(),
            stamp: Some((1, 1)),
            state,
        }
    }

    fn change(paths: &[&str], written: bool) -> Change {
        Change {
            paths: paths.iter().map(PathBuf::from).collect(),
            written,
        }
    }

    fn affected(index: &Index, paths: &[&str], written: bool) -> Vec<(Key, bool)> {
        let mut out = HashMap::new();
        index.affected(&change(paths, written), &mut out);
        let mut out: Vec<_> = out.into_iter().collect();
        out.sort();
        out
    }

    #[test]
    fn the_index_finds_a_file_by_its_path_its_links_and_a_removed_directory_above_it() {
        let mut index = Index::default();
        index.insert(&watched(1, 0, "/d/a.bin", &[], FileState::Completed));
        index.insert(&watched(
            2,
            0,
            "/c/blobs/x",
            &["/c/snapshots/r/sub/m.gguf"],
            FileState::Completed,
        ));
        index.insert(&watched(2, 1, "/c/blobs/y", &[], FileState::Missing));
        assert_eq!(affected(&index, &["/d/a.bin"], true), [((1, 0), true)]);
        assert_eq!(
            affected(&index, &["/c/snapshots/r/sub/m.gguf"], false),
            [((2, 0), false)]
        );
        // A directory removed above a link: the file it shows.
        assert_eq!(
            affected(&index, &["/c/snapshots"], false),
            [((2, 0), false)]
        );
        assert_eq!(
            affected(&index, &["/c"], false),
            [((2, 0), false), ((2, 1), false)]
        );
        assert!(affected(&index, &["/d/other.bin", "/e"], true).is_empty());
        let dirs: Vec<PathBuf> = index.dirs().into_iter().collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/c/blobs"),
                "/c/snapshots/r/sub".into(),
                "/d".into()
            ]
        );
        assert_eq!(
            index.counts,
            Counts {
                intact: 2,
                missing: 1,
                modified: 0
            }
        );
    }

    #[test]
    fn removing_a_job_forgets_its_paths_lets_go_of_empty_directories_and_keeps_counts() {
        let mut index = Index::default();
        index.insert(&watched(1, 0, "/d/a.bin", &[], FileState::Completed));
        index.insert(&watched(1, 1, "/e/b.bin", &[], FileState::Modified));
        index.insert(&watched(2, 0, "/d/c.bin", &[], FileState::Completed));
        // The same file read again replaces it, not adds it.
        index.insert(&watched(2, 0, "/d/c.bin", &[], FileState::Completed));
        assert_eq!(index.counts.intact, 2);
        index.remove_jobs(&HashSet::from([1]));
        assert!(affected(&index, &["/d/a.bin", "/e/b.bin"], true).is_empty());
        assert_eq!(affected(&index, &["/d/c.bin"], false), [((2, 0), false)]);
        assert_eq!(
            index.dirs().into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/d")]
        );
        assert_eq!(
            index.counts,
            Counts {
                intact: 1,
                missing: 0,
                modified: 0
            }
        );
        index.set_state((2, 0), FileState::Missing);
        assert_eq!((index.counts.intact, index.counts.missing), (0, 1));
        // A freed directory slot is reused.
        index.insert(&watched(3, 0, "/f/z.bin", &[], FileState::Completed));
        assert_eq!(index.dirs.len(), 2);
        index.remove_jobs(&HashSet::from([2, 3]));
        assert!(index.dirs().is_empty() && index.by_path.is_empty() && index.files.is_empty());
        assert_eq!(index.counts, Counts::default());
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
