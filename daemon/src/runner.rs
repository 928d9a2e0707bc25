//! Runs one job: resolves its source into files (once), then fetches, verifies and installs
//! each file that is not complete yet. A runner owns no shared state: it reports file updates
//! and its outcome to the scheduler as messages, and progress on the event broadcast.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdl_protocol::{ErrorInfo, ErrorKind, Event, FileState, JobId, Progress};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::engine::finalize::{self, file_stamp, link_file, Expected};
use crate::engine::limit::RateLimiter;
use crate::engine::names::{self, safe_join};
use crate::engine::{
    CheckpointSink, Engine, FetchError, FetchObserver, FetchSpec, HashPlan, ResponseInfo,
};
use crate::job::{part_path, FileCheckpoint, FileRecord, JobRecord};
use crate::sources::{self, Credentials};

/// What a runner tells the scheduler.
#[derive(Debug)]
pub enum RunnerMessage {
    /// The source was resolved into these files.
    Resolved {
        /// The job.
        job: JobId,
        /// Its files.
        files: Vec<FileRecord>,
        /// The resolved revision, if any.
        revision: Option<String>,
    },
    /// A file record changed; `durable` asks the store to flush (checkpoints, completions).
    File {
        /// The job.
        job: JobId,
        /// The file's index.
        index: u32,
        /// The new record.
        record: Box<FileRecord>,
        /// Flush the store after writing it.
        durable: bool,
    },
    /// Which other job's verified file (with other bytes) is already at this final path?
    OwnerOf {
        /// The asking job.
        job: JobId,
        /// The final path it is about to install.
        path: PathBuf,
        /// The sha256 of the bytes it verified.
        sha256: String,
        /// The answer: the other job, if any.
        reply: tokio::sync::oneshot::Sender<Option<JobId>>,
    },
    /// Where is a verified, unchanged copy of a file with this sha256? (dedupe)
    FindBySha256 {
        /// The sha256, lowercase hex.
        sha256: String,
        /// The answer: the path of an intact completed file, if any.
        reply: tokio::sync::oneshot::Sender<Option<PathBuf>>,
    },
    /// The runner stopped.
    Finished {
        /// The job.
        job: JobId,
        /// How it ended.
        outcome: RunOutcome,
    },
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// Every file is verified and in place.
    Completed,
    /// Stopped by the scheduler (pause, cancel, shutdown); bytes are checkpointed.
    Interrupted,
    /// Failed; `NoSpace` makes the scheduler pause the job instead.
    Failed(ErrorInfo),
}

/// Live byte counters of a running job's files, read by the scheduler for listings.
#[derive(Debug, Default)]
pub struct LiveBytes {
    files: Mutex<Vec<u64>>,
}

impl LiveBytes {
    /// The bytes received per file.
    pub fn snapshot(&self) -> Vec<u64> {
        self.files.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn set(&self, index: usize, bytes: u64) {
        if let Ok(mut files) = self.files.lock() {
            if files.len() <= index {
                files.resize(index + 1, 0);
            }
            files[index] = bytes;
        }
    }
}

/// What every runner shares.
#[derive(Clone)]
pub struct RunnerContext {
    /// The HTTP engine.
    pub engine: Engine,
    /// Messages to the scheduler.
    pub scheduler: mpsc::UnboundedSender<RunnerMessage>,
    /// Observation-only events.
    pub events: broadcast::Sender<Event>,
    /// The least time between progress events.
    pub progress_interval: Duration,
}

/// Run `job` until it completes, fails, or `cancel` fires; reports the outcome to the scheduler.
pub async fn run_job(
    ctx: RunnerContext,
    job: JobRecord,
    files: Vec<FileRecord>,
    cancel: CancellationToken,
    live: Arc<LiveBytes>,
    limit: Arc<RateLimiter>,
) {
    let id = job.id;
    // The job's own view of the engine: its proxies, or the offline client.
    let job_ctx = ctx.engine.for_job(&job).map(|engine| RunnerContext {
        engine,
        ..ctx.clone()
    });
    let result = match &job_ctx {
        Ok(ctx) => run(ctx, job, files, &cancel, &live, &limit)
            .await
            .map_err(|e| through_proxy(e, ctx.engine.proxy())),
        Err(e) => Err(FetchError::failed(e.kind(), e.to_string())),
    };
    let outcome = match result {
        Ok(()) => RunOutcome::Completed,
        Err(FetchError::Interrupted) => RunOutcome::Interrupted,
        Err(FetchError::Failed { kind, message, .. }) => {
            RunOutcome::Failed(ErrorInfo { kind, message })
        }
    };
    let _ = ctx
        .scheduler
        .send(RunnerMessage::Finished { job: id, outcome });
}

/// A network or auth failure of a job that uses a proxy says so (credentials redacted): the
/// proxy may be what failed.
fn through_proxy(error: FetchError, proxy: &crate::engine::proxy::ProxyConfig) -> FetchError {
    match error {
        FetchError::Failed {
            kind: kind @ (ErrorKind::Network | ErrorKind::Auth | ErrorKind::RateLimited),
            message,
            status,
        } if !proxy.is_direct() => FetchError::Failed {
            kind,
            message: format!(
                "{message} (proxy settings of this job: {})",
                proxy.describe()
            ),
            status,
        },
        other => other,
    }
}

async fn run(
    ctx: &RunnerContext,
    mut job: JobRecord,
    mut files: Vec<FileRecord>,
    cancel: &CancellationToken,
    live: &Arc<LiveBytes>,
    limit: &Arc<RateLimiter>,
) -> Result<(), FetchError> {
    finalize::create_dir_all_durable(&job.dest_dir).map_err(|e| {
        FetchError::failed(
            ErrorKind::Other,
            format!("cannot create {}: {e}", job.dest_dir.display()),
        )
    })?;
    // Worked out once per run: the token file is read once, not once per request.
    let credentials = sources::credentials(&job, &ctx.engine.settings());
    if !job.resolved {
        let resolved = sources::resolve(&ctx.engine, &job, &credentials).await?;
        files = resolved.files;
        job.resolved_revision = resolved.revision.clone();
        let _ = ctx.scheduler.send(RunnerMessage::Resolved {
            job: job.id,
            files: files.clone(),
            revision: resolved.revision,
        });
    }
    link_present_files(&job, &files)?;
    let total_known: Option<u64> = files.iter().map(|f| f.known_size()).sum();
    let done_before: u64 = files
        .iter()
        .filter(|f| f.state == FileState::Completed)
        .map(|f| f.known_size().unwrap_or(0))
        .sum();
    // Several files in flight at once (a repository of small files), each under the engine's
    // per-host connection cap. A file holds its receiving slot until its last byte arrives,
    // not through its last sync, hash tail and install (measured: two thirds of a small
    // file's time): as many again may be settling, so their buffers stay bounded.
    let in_flight = ctx.engine.settings().files_in_flight.max(1);
    let run = JobRun {
        ctx,
        job: &job,
        credentials: &credentials,
        // Stops the job's other files when one fails for good.
        cancel: cancel.child_token(),
        live,
        progress: Arc::new(JobProgress::new(total_known, done_before)),
        limit,
        receiving: Arc::new(tokio::sync::Semaphore::new(in_flight)),
    };
    if ctx.engine.offline() {
        return run_offline(&run, files).await;
    }
    let installed = files.clone();
    let mut queue = files
        .into_iter()
        .enumerate()
        .filter(|(_, f)| f.state != FileState::Completed);
    let mut running = futures::stream::FuturesUnordered::new();
    let mut failure: Option<FetchError> = None;
    loop {
        while failure.is_none() && running.len() < 2 * in_flight {
            let Some((index, file)) = queue.next() else {
                break;
            };
            running.push(fetch_one(&run, index as u32, file));
        }
        match futures::StreamExt::next(&mut running).await {
            None => break,
            Some(Ok(())) => {}
            Some(Err(err)) => {
                // The first real failure wins; the interruptions it causes in the others don't.
                if failure.is_none()
                    && !(matches!(err, FetchError::Interrupted) && run.cancel.is_cancelled())
                {
                    failure = Some(err);
                    run.cancel.cancel();
                }
            }
        }
    }
    if cancel.is_cancelled() {
        return Err(FetchError::Interrupted);
    }
    if let Some(err) = failure {
        return Err(err);
    }
    sources::install(&job, &installed)
}

/// An offline run: every file not yet in place comes from a local file (a hub cache's blob,
/// as a `file://` URL) or from a completed download with the same sha256; nothing is fetched.
/// What is in neither fails the job with a list of everything missing.
async fn run_offline(run: &JobRun<'_>, files: Vec<FileRecord>) -> Result<(), FetchError> {
    let mut missing = Vec::new();
    let installed = files.clone();
    for (index, file) in files.into_iter().enumerate() {
        if file.state == FileState::Completed {
            continue;
        }
        if run.cancel.is_cancelled() {
            return Err(FetchError::Interrupted);
        }
        let shown = file
            .source_path
            .clone()
            .or_else(|| file.rel_path.clone())
            .unwrap_or_else(|| crate::job::redact_url(&file.url));
        if !offline_one(run, index as u32, file).await? {
            missing.push(shown);
        }
    }
    if missing.is_empty() {
        return sources::install(run.job, &installed);
    }
    const SHOWN: usize = 20;
    let mut list = missing[..missing.len().min(SHOWN)].join(", ");
    if missing.len() > SHOWN {
        list.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    Err(FetchError::failed(
        ErrorKind::NotFound,
        format!(
            "offline: {} file(s) of {} are neither in the local cache nor in a completed download: {list}; run without --offline (and without MDL_OFFLINE / HF_HUB_OFFLINE) to download them",
            missing.len(),
            crate::job::redact_url(&run.job.source)
        ),
    ))
}

/// Put one file in place offline; `Ok(false)` when no local copy exists.
async fn offline_one(run: &JobRun<'_>, index: u32, file: FileRecord) -> Result<bool, FetchError> {
    let part = part_path(&run.job.dest_dir, run.job.id, index);
    let observer = Arc::new(FileObserver {
        ctx: run.ctx.clone(),
        job: run.job.id,
        index,
        dest_dir: run.job.dest_dir.clone(),
        record: Mutex::new(file.clone()),
        live: run.live.clone(),
        progress: run.progress.clone(),
        last_event: Mutex::new(None),
        early_owner: Mutex::new(None),
        receiving: Mutex::new(None),
    });
    let local = url::Url::parse(&file.url)
        .ok()
        .filter(|u| u.scheme() == "file")
        .and_then(|u| u.to_file_path().ok())
        .filter(|p| p.is_file());
    let digests = match local {
        Some(source) => {
            let (part_copy, hashes) = (
                part.clone(),
                HashPlan {
                    md5: file.md5.is_some(),
                    git_sha1_len: file.git_sha1.as_ref().and(file.size),
                },
            );
            let hashed = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_file(&part_copy);
                // A snapshot entry is a symlink: link the file it points at, not the link.
                let source = std::fs::canonicalize(&source)?;
                if std::fs::hard_link(&source, &part_copy).is_err() {
                    std::fs::copy(&source, &part_copy)?;
                }
                crate::engine::writer::hash_file(&part_copy, hashes)
            })
            .await
            .map_err(|e| FetchError::failed(ErrorKind::Other, e.to_string()))?;
            let digests =
                hashed.map_err(|e| crate::engine::io_failure("cannot copy the cached file", e))?;
            let mut record = observer.record();
            record.endpoint = Some("local cache (offline)".into());
            observer.replace(record, false);
            digests
        }
        None => match reuse_local_copy(run.ctx, &file, &part).await {
            Some(digests) => digests,
            None => return Ok(false),
        },
    };
    finish_file(run, index, &observer, &part, digests).await?;
    Ok(true)
}

/// Make the links of files that were complete before this run (a blob already in the cache
/// shows up in a new snapshot); fetched files get theirs as they are installed.
fn link_present_files(job: &JobRecord, files: &[FileRecord]) -> Result<(), FetchError> {
    for file in files.iter().filter(|f| f.state == FileState::Completed) {
        let Some(rel) = &file.rel_path else { continue };
        let target = safe_join(&job.dest_dir, rel)?;
        for link in &file.links {
            let link_path = safe_join(&job.dest_dir, link)?;
            link_file(&target, &link_path).map_err(|e| {
                crate::engine::io_failure(&format!("cannot link {}", link_path.display()), e)
            })?;
        }
    }
    Ok(())
}

/// What the files of one running job share.
struct JobRun<'a> {
    ctx: &'a RunnerContext,
    job: &'a JobRecord,
    credentials: &'a Credentials,
    cancel: CancellationToken,
    live: &'a Arc<LiveBytes>,
    progress: Arc<JobProgress>,
    limit: &'a Arc<RateLimiter>,
    /// One permit per file receiving bytes (`files_in_flight` of them).
    receiving: Arc<tokio::sync::Semaphore>,
}

/// Byte accounting across a job's files, for progress events.
struct JobProgress {
    total: Option<u64>,
    done_files: AtomicU64,
    started: Instant,
    started_bytes: AtomicU64,
}

impl JobProgress {
    fn new(total: Option<u64>, done: u64) -> Self {
        JobProgress {
            total,
            done_files: AtomicU64::new(done),
            started: Instant::now(),
            started_bytes: AtomicU64::new(u64::MAX),
        }
    }
}

async fn fetch_one(run: &JobRun<'_>, index: u32, mut file: FileRecord) -> Result<(), FetchError> {
    let JobRun { ctx, job, live, .. } = *run;
    let (cancel, progress) = (&run.cancel, &run.progress);
    let receiving = tokio::select! {
        permit = run.receiving.clone().acquire_owned() => permit.ok(),
        () = cancel.cancelled() => return Err(FetchError::Interrupted),
    };
    file.state = FileState::Downloading;
    let part = part_path(&job.dest_dir, job.id, index);
    let observer = Arc::new(FileObserver {
        ctx: ctx.clone(),
        job: job.id,
        index,
        dest_dir: job.dest_dir.clone(),
        record: Mutex::new(file.clone()),
        live: live.clone(),
        progress: progress.clone(),
        last_event: Mutex::new(None),
        early_owner: Mutex::new(None),
        receiving: Mutex::new(receiving),
    });
    // Not flushed on its own: a file lost in "downloading" resumes like a queued one, and the
    // next durable write (its first checkpoint of bytes, or its completion) carries it.
    observer.send(false);
    let started = Instant::now();
    // A verified copy of the same bytes elsewhere makes the download unnecessary. (Asked
    // before any request goes out: a reused file costs the server nothing.)
    let reused = reuse_local_copy(ctx, &file, &part).await;
    let dedupe_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Some(digests) = reused {
        observer.release_receiving();
        let mut record = observer.record();
        record.endpoint = Some("local copy".into());
        observer.replace(record, false);
        return finish_file(run, index, &observer, &part, digests).await;
    }
    let fetched = download(run, &file, &part, &observer, cancel).await;
    // Given back by its last byte already, unless the download failed.
    observer.release_receiving();
    let digests = fetched?;
    let fetched_ms = started.elapsed().as_secs_f64() * 1e3;
    let finished = finish_file(run, index, &observer, &part, digests).await;
    // Where a file's time goes (the repository case is latency-bound): `mdld -v` shows it.
    tracing::debug!(
        job = job.id,
        file = index,
        dedupe_ms,
        fetch_ms = fetched_ms - dedupe_ms,
        finish_ms = started.elapsed().as_secs_f64() * 1e3 - fetched_ms,
        "file timings"
    );
    finished
}

/// Fetch one file: the primary URL first, then mirrors (a mirror that keeps failing with
/// network or server errors hands over to the next one, which resumes the same partial file).
async fn download(
    run: &JobRun<'_>,
    file: &FileRecord,
    part: &Path,
    observer: &Arc<FileObserver>,
    cancel: &CancellationToken,
) -> Result<crate::engine::Digests, FetchError> {
    let urls: Vec<String> = std::iter::once(file.url.clone())
        .chain(file.fallback_urls.iter().cloned())
        .collect();
    let mut attempt = 0;
    loop {
        let url = &urls[attempt];
        let spec = FetchSpec {
            url: url.clone(),
            headers: run.credentials.for_url(url),
            part_path: part.to_path_buf(),
            expected_size: file.size,
            checkpoint: observer.record().checkpoint,
            hashes: HashPlan {
                md5: file.md5.is_some(),
                git_sha1_len: file.git_sha1.as_ref().and(file.size),
            },
            job_limit: Some(run.limit.clone()),
        };
        match run.ctx.engine.fetch(spec, observer.clone(), cancel).await {
            Ok(digests) => return Ok(digests),
            Err(FetchError::Failed {
                kind: ErrorKind::Network,
                message,
                ..
            }) if attempt + 1 < urls.len() => {
                tracing::warn!(job = run.job.id, %message, next = %crate::job::redact_url(&urls[attempt + 1]), "endpoint failed; trying the next one");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Verify a fetched (or reused) file, move it into place, make its links, and record it.
async fn finish_file(
    run: &JobRun<'_>,
    index: u32,
    observer: &Arc<FileObserver>,
    part: &Path,
    digests: crate::engine::Digests,
) -> Result<(), FetchError> {
    let JobRun { ctx, job, live, .. } = *run;
    let progress = &run.progress;
    let mut record = observer.record();
    let rel = record
        .rel_path
        .clone()
        .unwrap_or_else(|| names::choose_file_name(None, &record.url));
    let dest = safe_join(&job.dest_dir, &rel)?;
    record.rel_path = Some(rel);
    record.state = FileState::Verifying;
    observer.replace(record.clone(), false);
    let _ = ctx.events.send(Event::Verifying {
        job: job.id,
        file: dest.display().to_string(),
    });
    let expected = Expected {
        size: record.size.or(record.checkpoint.total),
        sha256: record.sha256.clone(),
        md5: record.md5.clone(),
        git_sha1: record.git_sha1.clone(),
    };
    if let Err(err) = finalize::verify(&dest.display().to_string(), &digests, &expected) {
        let _ = std::fs::remove_file(part);
        crate::engine::sidecar::remove(part);
        record.checkpoint = FileCheckpoint::default();
        record.state = FileState::Failed;
        observer.replace(record, true);
        return Err(err);
    }
    // Never replace another job's verified file with other bytes (two URLs with one name).
    let asked = Instant::now();
    let early = observer
        .early_owner
        .lock()
        .expect("early owner lock")
        .take();
    let owner = match early {
        Some(early) if early.path == dest && early.sha256 == digests.sha256 => {
            early.answer.await.ok().flatten()
        }
        _ => owner_of(ctx, job.id, &dest, &digests.sha256).await,
    };
    let owner_ms = asked.elapsed().as_secs_f64() * 1e3;
    if let Some(other) = owner {
        let _ = std::fs::remove_file(part);
        crate::engine::sidecar::remove(part);
        record.checkpoint = FileCheckpoint::default();
        record.state = FileState::Failed;
        observer.replace(record, true);
        return Err(FetchError::failed(
            ErrorKind::InvalidRequest,
            format!(
                "{} is already the verified download of job {other} with other bytes; not \
                 replacing it: save this one under another name (--name) or --dest, or remove \
                 job {other} first (`mdlctl rm {other} --delete-files`)",
                dest.display()
            ),
        ));
    }
    // The cache's own lock (huggingface_hub's per-blob lock), held until the links are made.
    let (layout, dir, rel_path) = (job.layout, job.dest_dir.clone(), rel_of(&record));
    let _lock =
        tokio::task::spawn_blocking(move || crate::layout::install_lock(layout, &dir, &rel_path))
            .await
            .map_err(|e| FetchError::failed(ErrorKind::Other, e.to_string()))?
            .map_err(|e| crate::engine::io_failure("cannot take the cache's lock", e))?;
    // On a blocking thread: the directory's fsync is shared with the other files that finish
    // at the same time (finalize batches them), and waiting for it must not hold a runtime
    // worker.
    let lock_ms = asked.elapsed().as_secs_f64() * 1e3 - owner_ms;
    let (from, to) = (part.to_path_buf(), dest.clone());
    tokio::task::spawn_blocking(move || finalize::install(&from, &to))
        .await
        .map_err(|e| FetchError::failed(ErrorKind::Other, e.to_string()))?
        .map_err(|e| {
            crate::engine::io_failure(&format!("cannot move the file to {}", dest.display()), e)
        })?;
    for link in &record.links {
        let link_path = safe_join(&job.dest_dir, link)?;
        link_file(&dest, &link_path).map_err(|e| {
            crate::engine::io_failure(&format!("cannot link {}", link_path.display()), e)
        })?;
    }
    record.state = FileState::Completed;
    record.verified_sha256 = Some(digests.sha256.clone());
    record.verified_stamp = file_stamp(&dest);
    record.verified_mtime_nanos = finalize::file_mtime_nanos(&dest);
    record.size = Some(digests.len);
    progress
        .done_files
        .fetch_add(digests.len, Ordering::Relaxed);
    live.set(index as usize, 0);
    observer.replace(record, true);
    tracing::debug!(
        job = job.id,
        owner_ms,
        lock_ms,
        install_ms = asked.elapsed().as_secs_f64() * 1e3 - owner_ms - lock_ms,
        "finish timings"
    );
    tracing::info!(job = job.id, file = %dest.display(), sha256 = %digests.sha256, "verified and installed");
    Ok(())
}

fn rel_of(record: &FileRecord) -> String {
    record.rel_path.clone().unwrap_or_default()
}

/// The other job whose verified file with other bytes is at `path`, if any.
async fn owner_of(ctx: &RunnerContext, job: JobId, path: &Path, sha256: &str) -> Option<JobId> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    ctx.scheduler
        .send(RunnerMessage::OwnerOf {
            job,
            path: path.to_path_buf(),
            sha256: sha256.to_string(),
            reply,
        })
        .ok()?;
    answer.await.ok()?
}

/// A verified copy of the same bytes (by sha256) from any earlier download, placed at `part`
/// instead of downloading it again: a reflink where the filesystem has one, a hard link only
/// when the settings allow it, else a copy (fsynced). The placed bytes are hashed again (reading
/// is far cheaper than downloading), so a copy changed since it was verified is never reused;
/// the caller verifies the digests like those of a download.
async fn reuse_local_copy(
    ctx: &RunnerContext,
    file: &FileRecord,
    part: &Path,
) -> Option<crate::engine::Digests> {
    let source = find_local_copy(ctx, file).await?;
    place_local_copy(ctx, file, part, &source).await
}

/// Where a verified, unchanged copy of the file's bytes (by its expected sha256) is, if
/// anywhere: the scheduler's answer.
async fn find_local_copy(ctx: &RunnerContext, file: &FileRecord) -> Option<PathBuf> {
    let sha256 = file.sha256.clone()?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    ctx.scheduler
        .send(RunnerMessage::FindBySha256 { sha256, reply })
        .ok()?;
    answer.await.ok()?
}

/// Put the copy at `source` in place at `part` and hash it again (see [`reuse_local_copy`]);
/// `None`, with no partial file left, when it is not the expected bytes any more.
async fn place_local_copy(
    ctx: &RunnerContext,
    file: &FileRecord,
    part: &Path,
    source: &Path,
) -> Option<crate::engine::Digests> {
    let sha256 = file.sha256.clone()?;
    let source = source.to_path_buf();
    let hard_links = ctx.engine.settings().dedupe_hard_links;
    let plan = HashPlan {
        md5: file.md5.is_some(),
        git_sha1_len: file.git_sha1.as_ref().and(file.size),
    };
    let part_path = part.to_path_buf();
    let from = source.clone();
    let placed = tokio::task::spawn_blocking(move || {
        let kind = finalize::place_copy(&from, &part_path, hard_links)?;
        let digests = crate::engine::writer::hash_file(&part_path, plan)?;
        Ok::<_, std::io::Error>((kind, digests))
    })
    .await
    .ok()?;
    let (kind, digests) = match placed {
        Ok(placed) => placed,
        Err(e) => {
            tracing::warn!(from = %source.display(), "cannot reuse the local copy: {e}");
            finalize::remove_partial(part);
            return None;
        }
    };
    let size_ok = file.size.is_none_or(|size| size == digests.len);
    if !size_ok || !digests.sha256.eq_ignore_ascii_case(&sha256) {
        tracing::warn!(from = %source.display(), %sha256, "the verified copy changed since it was verified; downloading instead");
        finalize::remove_partial(part);
        return None;
    }
    tracing::info!(from = %source.display(), %sha256, ?kind, "same bytes already downloaded and re-hashed; reusing them");
    Some(digests)
}

/// Feeds one file's fetch back into the scheduler and the event bus.
struct FileObserver {
    ctx: RunnerContext,
    job: JobId,
    index: u32,
    dest_dir: PathBuf,
    record: Mutex<FileRecord>,
    live: Arc<LiveBytes>,
    progress: Arc<JobProgress>,
    last_event: Mutex<Option<Instant>>,
    /// The owner question asked when the last byte arrived (see [`FetchObserver::received`]).
    early_owner: Mutex<Option<EarlyOwner>>,
    /// The job's receiving slot, given back when the last byte arrives.
    receiving: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

/// "Which other job's verified file is at `path`?", asked for the expected `sha256` while the
/// file is being synced; the answer holds for the file if it verifies as that sha256.
struct EarlyOwner {
    path: PathBuf,
    sha256: String,
    answer: tokio::sync::oneshot::Receiver<Option<JobId>>,
}

impl FileObserver {
    fn record(&self) -> FileRecord {
        self.record.lock().expect("file record lock").clone()
    }

    fn replace(&self, record: FileRecord, durable: bool) {
        *self.record.lock().expect("file record lock") = record;
        self.send(durable);
    }

    /// Let the job's next file start receiving; this one only settles from here.
    fn release_receiving(&self) {
        drop(self.receiving.lock().expect("receiving slot lock").take());
    }

    fn send(&self, durable: bool) {
        let record = Box::new(self.record());
        let _ = self.ctx.scheduler.send(RunnerMessage::File {
            job: self.job,
            index: self.index,
            record,
            durable,
        });
    }
}

impl CheckpointSink for FileObserver {
    fn durable(&self, checkpoint: FileCheckpoint) {
        // Validators without bytes guard nothing yet (after a reboot only durable ranges are
        // trusted, and the sidecar keeps its own validators): recorded, not flushed alone.
        let flush = checkpoint.ranges.covered() > 0;
        {
            let mut record = self.record.lock().expect("file record lock");
            record.checkpoint = checkpoint;
        }
        self.send(flush);
    }
}

impl FetchObserver for FileObserver {
    fn response(&self, info: &ResponseInfo) {
        let mut record = self.record.lock().expect("file record lock");
        if record.rel_path.is_none() {
            record.rel_path = Some(names::choose_file_name(
                info.content_disposition.as_deref(),
                &record.url,
            ));
        }
        record.endpoint = Some(info.endpoint.clone());
        record.checkpoint.total = info.total;
        record.note = info
            .no_ranges
            .then(|| "server does not support ranges: single stream, no resume".to_string());
    }

    fn progress(&self, bytes: u64) {
        self.live.set(self.index as usize, bytes);
        let now = Instant::now();
        {
            let mut last = self.last_event.lock().expect("progress lock");
            if matches!(*last, Some(t) if now.duration_since(t) < self.ctx.progress_interval) {
                return;
            }
            *last = Some(now);
        }
        let record = self.record();
        // Completed files plus every file in flight.
        let before = self.progress.done_files.load(Ordering::Relaxed);
        let job_done = before + self.live.snapshot().iter().sum::<u64>();
        let _ = self.progress.started_bytes.compare_exchange(
            u64::MAX,
            job_done,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let base = self.progress.started_bytes.load(Ordering::Relaxed);
        let elapsed = self.progress.started.elapsed().as_secs_f64();
        let speed = if elapsed > 0.2 {
            (job_done.saturating_sub(base) as f64 / elapsed) as u64
        } else {
            0
        };
        let job_total = self.progress.total.or(record.checkpoint.total);
        let eta = match (job_total, speed) {
            (Some(total), s) if s > 0 => Some(total.saturating_sub(job_done) / s),
            _ => None,
        };
        let path = match &record.rel_path {
            Some(rel) => self.dest_dir.join(rel).display().to_string(),
            None => self.dest_dir.display().to_string(),
        };
        let _ = self.ctx.events.send(Event::Progress(Progress {
            job: self.job,
            file: path,
            file_bytes_done: bytes,
            file_bytes_total: record.known_size(),
            job_bytes_done: job_done,
            job_bytes_total: job_total,
            bytes_per_second: speed,
            eta_seconds: eta,
        }));
    }

    fn retrying(&self, message: &str, delay: Duration) {
        tracing::info!(job = self.job, file = self.index, %message, ?delay, "will retry");
    }

    fn received(&self) {
        self.release_receiving();
        // Ask the scheduler now, while the file's last sync runs, instead of after it
        // (measured: a round trip of 1-5 ms a file, waiting for a store flush). Only with an
        // expected sha256: a file that verifies has exactly those bytes, so the answer is the
        // one the question after verification would get.
        let record = self.record();
        let (Some(sha256), Some(rel)) = (&record.sha256, &record.rel_path) else {
            return;
        };
        let Ok(path) = safe_join(&self.dest_dir, rel) else {
            return;
        };
        let sha256 = sha256.to_ascii_lowercase();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = self.ctx.scheduler.send(RunnerMessage::OwnerOf {
            job: self.job,
            path: path.clone(),
            sha256: sha256.clone(),
            reply,
        });
        if asked.is_ok() {
            *self.early_owner.lock().expect("early owner lock") = Some(EarlyOwner {
                path,
                sha256,
                answer,
            });
        }
    }
}
