//! `verify`: re-hash finished files and queue the damaged ones again.
//!
//! Three steps, so that hashing (which may read gigabytes) never holds up the scheduler:
//! 1. [`plan`], on the scheduler's state: the completed files to check (by job, by path, or
//!    every completed job);
//! 2. [`check`], on a blocking thread: size, sha256 (and md5 when that is all we know);
//! 3. [`apply`], on the scheduler's state: each damaged or missing file goes back to pending
//!    with an empty checkpoint, and its job back to the queue. Replies `Jobs` with the jobs
//!    queued again.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::Md5;
use mdl_protocol::{
    ErrorKind, ErrorReply, Event, FileState, JobId, JobState, Response, VerifyRequest,
};
use sha2::{Digest, Sha256};

use super::{no_such_job, HandlerResult};
use crate::job::{part_path, FileCheckpoint};
use crate::scheduler::{Scheduler, SchedulerHandle};

/// One finished file to check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The job.
    pub job: JobId,
    /// The file's index.
    pub index: u32,
    /// Where it should be.
    pub path: PathBuf,
    /// The sha256 it had when verified (or was expected to have).
    pub sha256: Option<String>,
    /// The expected md5, used when no sha256 is known.
    pub md5: Option<String>,
    /// The size it had.
    pub size: Option<u64>,
}

/// Run a verify request: plan on the scheduler, hash on a blocking thread, apply on the
/// scheduler.
pub async fn run(handle: &SchedulerHandle, request: VerifyRequest) -> Response {
    let result = async {
        let checks = handle
            .with(move |s| plan(s, &request))
            .await
            .ok_or_else(stopped)??;
        let damaged = tokio::task::spawn_blocking(move || {
            checks
                .into_iter()
                .filter(|c| !check(c))
                .collect::<Vec<Check>>()
        })
        .await
        .map_err(|e| ErrorReply::new(ErrorKind::Other, format!("verify failed: {e}")))?;
        handle
            .with(move |s| apply(s, damaged))
            .await
            .ok_or_else(stopped)?
    }
    .await;
    result.unwrap_or_else(Response::Error)
}

fn stopped() -> ErrorReply {
    ErrorReply::new(ErrorKind::Unreachable, "the daemon is shutting down")
}

/// The completed files the request covers.
pub fn plan(scheduler: &mut Scheduler, request: &VerifyRequest) -> Result<Vec<Check>, ErrorReply> {
    let jobs = if request.ids.is_empty() {
        scheduler.store.all_jobs()?
    } else {
        let mut jobs = Vec::new();
        for id in &request.ids {
            jobs.push(
                scheduler
                    .store
                    .get_job(*id)?
                    .ok_or_else(|| no_such_job(*id))?,
            );
        }
        jobs
    };
    let roots: Vec<PathBuf> = request.paths.iter().map(PathBuf::from).collect();
    let mut checks = Vec::new();
    for job in jobs {
        if scheduler.running.contains_key(&job.id) || job.state != JobState::Completed {
            continue;
        }
        for (index, file) in scheduler.store.files(job.id)?.into_iter().enumerate() {
            let Some(rel) = file.rel_path.as_deref() else {
                continue;
            };
            if file.state != FileState::Completed {
                continue;
            }
            let path = job.dest_dir.join(rel);
            if !roots.is_empty() && !roots.iter().any(|r| under(&path, r)) {
                continue;
            }
            checks.push(Check {
                job: job.id,
                index: index as u32,
                path,
                sha256: file.verified_sha256.clone().or(file.sha256.clone()),
                md5: file.md5.clone(),
                size: file.size,
            });
        }
    }
    if !roots.is_empty() && checks.is_empty() {
        return Err(ErrorReply::new(
            ErrorKind::NotFound,
            format!(
                "no finished download under {}",
                request
                    .paths
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(checks)
}

/// `path` is `root` or below it (comparing canonical forms when both exist).
fn under(path: &Path, root: &Path) -> bool {
    if path.starts_with(root) {
        return true;
    }
    match (std::fs::canonicalize(path), std::fs::canonicalize(root)) {
        (Ok(p), Ok(r)) => p.starts_with(r),
        _ => false,
    }
}

/// True when the file is present with the recorded size and digest.
pub fn check(c: &Check) -> bool {
    let Ok(meta) = std::fs::metadata(&c.path) else {
        return false;
    };
    if !meta.is_file() || c.size.is_some_and(|s| s != meta.len()) {
        return false;
    }
    match hash_file(&c.path) {
        Ok((sha256, md5)) => match (&c.sha256, &c.md5) {
            (Some(want), _) => want.eq_ignore_ascii_case(&sha256),
            (None, Some(want)) => want.eq_ignore_ascii_case(&md5),
            (None, None) => true,
        },
        Err(_) => false,
    }
}

/// The sha256 and md5 of a file (lowercase hex).
pub fn hash_file(path: &Path) -> std::io::Result<(String, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Ok((hex::encode(sha.finalize()), hex::encode(md5.finalize())))
}

/// Put the damaged files back to pending and their jobs back in the queue.
pub fn apply(scheduler: &mut Scheduler, damaged: Vec<Check>) -> HandlerResult {
    let mut requeued = Vec::new();
    for check in damaged {
        if scheduler.running.contains_key(&check.job) {
            continue;
        }
        let Some(mut job) = scheduler.store.get_job(check.job)? else {
            continue;
        };
        let mut files = scheduler.store.files(job.id)?;
        let Some(file) = files.get_mut(check.index as usize) else {
            continue;
        };
        if file.state != FileState::Completed {
            continue;
        }
        tracing::warn!(job = job.id, file = %check.path.display(), "damaged or missing; queued again");
        file.state = FileState::Pending;
        file.checkpoint = FileCheckpoint::default();
        file.verified_sha256 = None;
        file.verified_stamp = None;
        file.note = Some("damaged or missing at verify; fetched again".to_string());
        let _ = std::fs::remove_file(part_path(&job.dest_dir, job.id, check.index));
        scheduler.store.put_file(job.id, check.index, file)?;
        if job.state != JobState::Queued {
            job.state = JobState::Queued;
            job.error = None;
            job.finished_ms = None;
            scheduler.store.put_job(&job)?;
        }
        if !requeued.contains(&job.id) {
            requeued.push(job.id);
        }
    }
    scheduler.store.flush_blocking()?;
    let mut infos = Vec::new();
    for id in requeued {
        if let Some(job) = scheduler.store.get_job(id)? {
            let info = scheduler.job_info(&job);
            let _ = scheduler.events.send(Event::Queued(info.clone()));
            infos.push(info);
        }
    }
    // The scheduler starts them after this command, like after any other.
    Ok(Response::Jobs(infos))
}
