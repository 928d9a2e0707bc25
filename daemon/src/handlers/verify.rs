//! `verify`: re-hash finished files and queue the damaged ones again.
//!
//! Three steps, so that the file system (hashing may read gigabytes; a hung network mount may
//! not answer at all) never holds up the scheduler:
//! 1. [`plan`], on the scheduler's state, from the store alone: the completed files to check
//!    (by job, or every completed job), with the paths the request names;
//! 2. [`check`], on a blocking thread: which of them lie under those paths, then size, sha256
//!    (and md5 when that is all we know); a damaged file's leftover partial is deleted here,
//!    before its job can run again;
//! 3. [`apply`], on the scheduler's state: each damaged or missing file goes back to pending
//!    with an empty checkpoint, and its job back to the queue; a file marked `missing` or
//!    `modified` that hashes as verified after all (touched, or its snapshot link re-made) is
//!    `completed` again with its new time stamp. Replies `Jobs` with the jobs queued again.

use std::path::{Path, PathBuf};

use mdl_protocol::{ErrorKind, ErrorReply, FileState, JobId, JobState, Response, VerifyRequest};

use super::{no_such_job, HandlerResult, Services};
use crate::engine::finalize::{self, file_stamp, link_file};
use crate::engine::writer::{hash_file, HashPlan};
use crate::job;
use crate::scheduler::Scheduler;

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
    /// Links that must show it (a hub cache's snapshot entries); re-made when gone.
    pub links: Vec<PathBuf>,
    /// Its state now (`completed`, or `missing` / `modified` as the watcher marked it).
    pub state: FileState,
    /// The partial file a new download of it would write (deleted when it is damaged).
    pub partial: PathBuf,
}

/// What [`plan`] found: the candidates, and the paths the request limits them to.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every completed file of the jobs the request names.
    pub checks: Vec<Check>,
    /// Only files under these paths count (none: every candidate).
    pub roots: Vec<PathBuf>,
}

impl Plan {
    /// On a blocking thread: keep the candidates under the request's paths (comparing
    /// canonical forms), hash them, and delete the partial files of the damaged ones. Returns
    /// (intact, damaged), or `NotFound` when the request named paths with nothing under them.
    pub fn check(self) -> Result<(Vec<Check>, Vec<Check>), ErrorReply> {
        let roots = self.roots;
        let checks: Vec<Check> = self
            .checks
            .into_iter()
            .filter(|c| roots.is_empty() || roots.iter().any(|r| under(&c.path, r)))
            .collect();
        if !roots.is_empty() && checks.is_empty() {
            return Err(ErrorReply::new(
                ErrorKind::NotFound,
                format!(
                    "no finished download under {}",
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let (intact, damaged): (Vec<Check>, Vec<Check>) = checks.into_iter().partition(check);
        for c in &damaged {
            finalize::remove_partial(&c.partial);
        }
        Ok((intact, damaged))
    }
}

/// Run a verify request: plan on the scheduler, hash on a blocking thread, apply on the
/// scheduler.
pub async fn run(services: &Services, request: VerifyRequest) -> HandlerResult {
    let plan = services.call(move |s| plan(s, &request)).await?;
    let (intact, damaged) = tokio::task::spawn_blocking(move || plan.check())
        .await
        .map_err(|e| ErrorReply::new(ErrorKind::Other, format!("verify failed: {e}")))??;
    // Marked by the watcher, yet exactly as verified: completed again, with today's stamp.
    let restored: Vec<(Check, Option<(u64, i64)>)> = intact
        .into_iter()
        .filter(|c| c.state != FileState::Completed)
        .map(|c| {
            let stamp = file_stamp(&c.path);
            (c, stamp)
        })
        .collect();
    services
        .call(move |s| {
            for (c, stamp) in restored {
                s.mark_file(c.job, c.index, FileState::Completed, None, stamp)?;
            }
            apply(s, damaged)
        })
        .await
}

/// The completed files of the jobs the request covers, read from the store only (no file
/// system access: [`Plan::check`] does that off the scheduler).
pub fn plan(scheduler: &mut Scheduler, request: &VerifyRequest) -> Result<Plan, ErrorReply> {
    let jobs = if request.ids.is_empty() {
        scheduler.jobs()?
    } else {
        let mut jobs = Vec::new();
        for id in &request.ids {
            jobs.push(scheduler.job(*id)?.ok_or_else(|| no_such_job(*id))?);
        }
        jobs
    };
    let roots: Vec<PathBuf> = request.paths.iter().map(PathBuf::from).collect();
    let mut checks = Vec::new();
    for job in jobs {
        if scheduler.is_running(job.id) || job.state != JobState::Completed {
            continue;
        }
        for (index, file) in scheduler.files(job.id)?.into_iter().enumerate() {
            let Some(rel) = file.rel_path.as_deref() else {
                continue;
            };
            if !matches!(
                file.state,
                FileState::Completed | FileState::Missing | FileState::Modified
            ) {
                continue;
            }
            let path = job.dest_dir.join(rel);
            checks.push(Check {
                job: job.id,
                index: index as u32,
                path,
                sha256: file.verified_sha256.clone().or(file.sha256.clone()),
                md5: file.md5.clone(),
                size: file.size,
                links: file.links.iter().map(|l| job.dest_dir.join(l)).collect(),
                state: file.state,
                partial: job::part_path(&job.dest_dir, job.id, index as u32),
            });
        }
    }
    Ok(Plan { checks, roots })
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

/// True when the file is present with the recorded size and digest (its links, re-made where
/// gone, show it).
pub fn check(c: &Check) -> bool {
    if !check_file(c) {
        return false;
    }
    c.links.iter().all(|link| {
        let shows_it = match (std::fs::canonicalize(link), std::fs::canonicalize(&c.path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        shows_it || link_file(&c.path, link).is_ok()
    })
}

/// True when the file itself is present with the recorded size and digest.
fn check_file(c: &Check) -> bool {
    let Ok(meta) = std::fs::metadata(&c.path) else {
        return false;
    };
    if !meta.is_file() || c.size.is_some_and(|s| s != meta.len()) {
        return false;
    }
    let plan = HashPlan {
        md5: c.sha256.is_none() && c.md5.is_some(),
        git_sha1_len: None,
    };
    match hash_file(&c.path, plan) {
        Ok(digests) => match (&c.sha256, &c.md5) {
            (Some(want), _) => want.eq_ignore_ascii_case(&digests.sha256),
            (None, Some(want)) => digests
                .md5
                .is_some_and(|md5| want.eq_ignore_ascii_case(&md5)),
            (None, None) => true,
        },
        Err(_) => false,
    }
}

/// Put the damaged files back to pending and their jobs back in the queue.
pub fn apply(scheduler: &mut Scheduler, damaged: Vec<Check>) -> HandlerResult {
    let mut requeued = Vec::new();
    for check in damaged {
        let note = "damaged or missing at verify; fetched again";
        if !scheduler.requeue_file(check.job, check.index, note)? {
            continue;
        }
        tracing::warn!(job = check.job, file = %check.path.display(), "damaged or missing; queued again");
        if !requeued.contains(&check.job) {
            requeued.push(check.job);
        }
    }
    let mut infos = Vec::new();
    for id in requeued {
        infos.extend(scheduler.announce_queued(id)?);
    }
    // The scheduler starts them after this call, like after any other.
    Ok(Response::Jobs(infos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::scheduler;

    #[test]
    fn verify_of_a_path_with_no_download_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let everything = VerifyRequest {
            ids: vec![],
            paths: vec![],
        };
        assert!(plan(&mut s, &everything).unwrap().checks.is_empty());
        let request = VerifyRequest {
            ids: vec![],
            paths: vec![dir.path().join("nothing").display().to_string()],
        };
        let planned = plan(&mut s, &request).unwrap();
        assert_eq!(planned.roots.len(), 1);
        assert_eq!(planned.check().unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(
            apply(&mut s, Vec::new()).unwrap(),
            Response::Jobs(Vec::new())
        );
    }

    #[test]
    fn check_compares_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let mut c = Check {
            job: 1,
            index: 0,
            path: path.clone(),
            sha256: Some(sha.into()),
            md5: None,
            size: Some(5),
            links: vec![dir.path().join("snapshot/f")],
            state: FileState::Completed,
            partial: dir.path().join(".mdl-1-0.part"),
        };
        assert!(check(&c));
        assert_eq!(
            std::fs::read(dir.path().join("snapshot/f")).unwrap(),
            b"hello"
        );
        std::fs::remove_file(dir.path().join("snapshot/f")).unwrap();
        assert!(check(&c), "a missing link is re-made");
        assert!(dir.path().join("snapshot/f").exists());
        c.size = Some(6);
        assert!(!check(&c));
        c.size = Some(5);
        c.sha256 = None;
        c.md5 = Some("5d41402abc4b2a76b9719d911017c592".into());
        assert!(check(&c));
        std::fs::write(&path, b"hellO").unwrap();
        assert!(!check(&c));
    }
}
