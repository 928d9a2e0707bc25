//! Requests that change jobs or limits: pause, resume, cancel, priority, remove, concurrency,
//! bandwidth.

use mdl_protocol::{
    BandwidthLimitRequest, ErrorKind, ErrorReply, Event, JobId, JobState, RemoveRequest, Response,
    Target,
};

use super::{no_such_job, query, HandlerResult};
use crate::job::{self, part_path, JobRecord};
use crate::scheduler::{Scheduler, StopReason, META_BANDWIDTH, META_MAX_CONCURRENT};
use crate::store::{Store, StoreError};

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidRequest, message)
}

fn load(scheduler: &Scheduler, id: JobId) -> Result<JobRecord, ErrorReply> {
    scheduler.store.get_job(id)?.ok_or_else(|| no_such_job(id))
}

fn targets(
    scheduler: &Scheduler,
    target: Target,
    wanted: &[JobState],
) -> Result<Vec<JobRecord>, ErrorReply> {
    match target {
        Target::Job(id) => Ok(vec![load(scheduler, id)?]),
        Target::All => Ok(scheduler
            .store
            .all_jobs()?
            .into_iter()
            .filter(|j| wanted.contains(&j.state))
            .collect()),
    }
}

/// Hold jobs, keeping their bytes. A running job checkpoints and stops.
pub async fn pause(scheduler: &mut Scheduler, target: Target) -> HandlerResult {
    for mut job in targets(
        scheduler,
        target,
        &[JobState::Queued, JobState::Running, JobState::Verifying],
    )? {
        if let Some(running) = scheduler.running.get_mut(&job.id) {
            running.stop = Some(StopReason::Pause);
            running.cancel.cancel();
            continue;
        }
        match job.state {
            JobState::Queued => {
                job.state = JobState::Paused;
                scheduler.store.put_job(&job)?;
                let _ = scheduler
                    .events
                    .send(Event::Paused(scheduler.job_info(&job)));
            }
            JobState::Paused => {}
            state => {
                return Err(invalid(format!(
                    "job {} is {}; only queued or running jobs can be paused",
                    job.id,
                    state.as_str()
                )))
            }
        }
    }
    scheduler.store.flush().await?;
    Ok(Response::Ok)
}

/// Let held (or failed) jobs run again; they keep the bytes they have.
pub async fn resume(scheduler: &mut Scheduler, target: Target) -> HandlerResult {
    for mut job in targets(scheduler, target, &[JobState::Paused])? {
        match job.state {
            JobState::Paused | JobState::Failed => {
                if let Some(running) = scheduler.running.get_mut(&job.id) {
                    // Paused while still checkpointing: let it finish as queued instead.
                    running.stop = Some(StopReason::Shutdown);
                }
                job.state = JobState::Queued;
                job.error = None;
                job.finished_ms = None;
                scheduler.store.put_job(&job)?;
                let _ = scheduler
                    .events
                    .send(Event::Resumed(scheduler.job_info(&job)));
            }
            JobState::Queued | JobState::Running | JobState::Verifying => {}
            state => {
                return Err(invalid(format!(
                    "job {} is {}; it cannot be resumed",
                    job.id,
                    state.as_str()
                )))
            }
        }
    }
    scheduler.store.flush().await?;
    Ok(Response::Ok)
}

/// Stop a job for good and delete its partial files.
pub async fn cancel(scheduler: &mut Scheduler, id: JobId) -> HandlerResult {
    let mut job = load(scheduler, id)?;
    if let Some(running) = scheduler.running.get_mut(&id) {
        running.stop = Some(StopReason::Cancel);
        running.cancel.cancel();
        return Ok(Response::Ok);
    }
    if job.state.is_finished() {
        return Err(invalid(format!(
            "job {id} is already {}",
            job.state.as_str()
        )));
    }
    job.state = JobState::Cancelled;
    job.finished_ms = Some(job::now_ms());
    remove_partial_files(&scheduler.store, &job)?;
    scheduler.store.put_job(&job)?;
    scheduler.store.flush().await?;
    let _ = scheduler
        .events
        .send(Event::Cancelled(scheduler.job_info(&job)));
    Ok(Response::Ok)
}

/// Delete the partial files of a job's unfinished files.
pub fn remove_partial_files(store: &Store, job: &JobRecord) -> Result<(), StoreError> {
    let count = store.files(job.id)?.len().max(1) as u32;
    for index in 0..count {
        let _ = std::fs::remove_file(part_path(&job.dest_dir, job.id, index));
    }
    Ok(())
}

/// Change a job's priority (it keeps its FIFO position among equals).
pub async fn set_priority(scheduler: &mut Scheduler, id: JobId, priority: i32) -> HandlerResult {
    let mut job = load(scheduler, id)?;
    job.priority = priority;
    scheduler.store.put_job(&job)?;
    scheduler.store.flush().await?;
    let info = scheduler.job_info(&job);
    let _ = scheduler.events.send(Event::Updated(info.clone()));
    Ok(Response::Job(info))
}

/// Forget finished jobs, optionally deleting the files of completed ones.
pub async fn remove(scheduler: &mut Scheduler, request: RemoveRequest) -> HandlerResult {
    let jobs = if request.ids.is_empty() {
        scheduler
            .store
            .all_jobs()?
            .into_iter()
            .filter(|j| j.state.is_finished())
            .collect()
    } else {
        let mut jobs = Vec::new();
        for id in &request.ids {
            let job = load(scheduler, *id)?;
            if !job.state.is_finished() {
                return Err(invalid(format!(
                    "job {id} is {}; cancel it before removing it",
                    job.state.as_str()
                )));
            }
            jobs.push(job);
        }
        jobs
    };
    for job in jobs {
        if request.delete_files && job.state == JobState::Completed {
            for file in scheduler.store.files(job.id)? {
                if let Some(rel) = &file.rel_path {
                    let _ = std::fs::remove_file(job.dest_dir.join(rel));
                }
            }
        }
        remove_partial_files(&scheduler.store, &job)?;
        scheduler.store.delete_job(&job)?;
        let _ = scheduler.events.send(Event::Removed(job.id));
    }
    scheduler.store.flush().await?;
    Ok(Response::Ok)
}

/// Change how many jobs run at once (kept across restarts).
pub async fn set_concurrency(scheduler: &mut Scheduler, max: u32) -> HandlerResult {
    if max == 0 {
        return Err(invalid(
            "the concurrency limit must be at least 1 (pause jobs to stop them)",
        ));
    }
    scheduler.max_concurrent = max;
    scheduler.store.put_meta(META_MAX_CONCURRENT, &max)?;
    scheduler.store.flush().await?;
    Ok(Response::Daemon(query::daemon_info(scheduler)))
}

/// Set or clear a bandwidth limit (kept across restarts).
pub async fn set_bandwidth_limit(
    scheduler: &mut Scheduler,
    request: BandwidthLimitRequest,
) -> HandlerResult {
    if request.bytes_per_second == Some(0) {
        return Err(invalid(
            "a bandwidth limit must be above 0 (use `off` to remove it)",
        ));
    }
    match request.job {
        None => {
            scheduler.bandwidth_limit = request.bytes_per_second;
            scheduler
                .runner_ctx
                .engine
                .global_limit()
                .set_rate(request.bytes_per_second);
            scheduler
                .store
                .put_meta(META_BANDWIDTH, &request.bytes_per_second)?;
        }
        Some(id) => {
            let mut job = load(scheduler, id)?;
            job.bandwidth_limit = request.bytes_per_second;
            scheduler.store.put_job(&job)?;
            if let Some(running) = scheduler.running.get(&id) {
                running.limit.set_rate(request.bytes_per_second);
            }
        }
    }
    scheduler.store.flush().await?;
    Ok(Response::Daemon(query::daemon_info(scheduler)))
}
