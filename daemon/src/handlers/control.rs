//! Requests that change jobs or limits: pause, resume, cancel, priority, remove, concurrency,
//! bandwidth.
//!
//! Each reply is sent once the change is durable. Pausing or cancelling a running job waits
//! for its runner to checkpoint and for the new state to be flushed.

use mdl_protocol::{
    BandwidthLimitRequest, ErrorReply, Event, JobId, JobState, RemoveRequest, Response, Target,
};

use super::{invalid, no_such_job, HandlerResult, Services};
use crate::engine::finalize::Cleanup;
use crate::job::JobRecord;
use crate::scheduler::{Scheduler, StopReason, StopWaiter};

fn load(scheduler: &Scheduler, id: JobId) -> Result<JobRecord, ErrorReply> {
    scheduler.job(id)?.ok_or_else(|| no_such_job(id))
}

fn targets(
    scheduler: &Scheduler,
    target: Target,
    wanted: &[JobState],
) -> Result<Vec<JobRecord>, ErrorReply> {
    match target {
        Target::Job(id) => Ok(vec![load(scheduler, id)?]),
        Target::All => Ok(scheduler
            .jobs()?
            .into_iter()
            .filter(|j| wanted.contains(&j.state))
            .collect()),
    }
}

/// Wait until every stopped job's final state is durable.
async fn stopped(waiters: Vec<StopWaiter>) -> HandlerResult {
    for waiter in waiters {
        // An error means the scheduler went away (shutdown): the job stays as it was saved.
        let _ = waiter.await;
    }
    Ok(Response::Ok)
}

/// Hold jobs, keeping their bytes. A running job checkpoints and stops first.
pub async fn pause(services: &Services, target: Target) -> HandlerResult {
    let waiters = services.call(move |s| pause_jobs(s, target)).await?;
    stopped(waiters).await
}

/// Pause on the scheduler's state: queued jobs at once, running ones through their runner.
pub fn pause_jobs(
    scheduler: &mut Scheduler,
    target: Target,
) -> Result<Vec<StopWaiter>, ErrorReply> {
    let mut waiters = Vec::new();
    for job in targets(
        scheduler,
        target,
        &[JobState::Queued, JobState::Running, JobState::Verifying],
    )? {
        if let Some(waiter) = scheduler.stop(job.id, StopReason::Pause) {
            waiters.push(waiter);
            continue;
        }
        match job.state {
            JobState::Queued => {
                scheduler.transition(job, JobState::Paused, Event::Paused)?;
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
    Ok(waiters)
}

/// Let held (or failed) jobs run again; they keep the bytes they have.
pub fn resume(scheduler: &mut Scheduler, target: Target) -> HandlerResult {
    for job in targets(scheduler, target, &[JobState::Paused])? {
        match job.state {
            JobState::Paused | JobState::Failed => {
                // Paused while still checkpointing: let it end queued instead.
                let _ = scheduler.stop(job.id, StopReason::Requeue);
                scheduler.transition(job, JobState::Queued, Event::Resumed)?;
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
    Ok(Response::Ok)
}

/// Stop a job for good and delete its partial files.
pub async fn cancel(services: &Services, id: JobId) -> HandlerResult {
    let waiter = services.call(move |s| cancel_job(s, id)).await?;
    stopped(waiter.into_iter().collect()).await
}

/// Cancel on the scheduler's state: a job that is not running at once, a running one through
/// its runner.
pub fn cancel_job(scheduler: &mut Scheduler, id: JobId) -> Result<Option<StopWaiter>, ErrorReply> {
    let job = load(scheduler, id)?;
    if let Some(waiter) = scheduler.stop(id, StopReason::Cancel) {
        return Ok(Some(waiter));
    }
    if job.state.is_finished() {
        return Err(invalid(format!(
            "job {id} is already {}",
            job.state.as_str()
        )));
    }
    scheduler.transition(job, JobState::Cancelled, Event::Cancelled)?;
    Ok(None)
}

/// Change a job's priority (it keeps its FIFO position among equals).
pub fn set_priority(scheduler: &mut Scheduler, id: JobId, priority: i32) -> HandlerResult {
    let job = load(scheduler, id)?;
    Ok(Response::Job(scheduler.set_priority(job, priority)?))
}

/// Forget finished jobs, optionally deleting the files of completed ones; the files are
/// deleted on a blocking thread before the reply, never in the scheduler's task.
pub async fn remove(services: &Services, request: RemoveRequest) -> HandlerResult {
    let cleanups = services.call(move |s| remove_jobs(s, request)).await?;
    tokio::task::spawn_blocking(move || cleanups.into_iter().for_each(Cleanup::run))
        .await
        .map_err(|e| {
            mdl_protocol::ErrorReply::new(mdl_protocol::ErrorKind::Other, e.to_string())
        })?;
    Ok(Response::Ok)
}

/// Forget finished jobs on the scheduler's state; returns what to delete.
pub fn remove_jobs(
    scheduler: &mut Scheduler,
    request: RemoveRequest,
) -> Result<Vec<Cleanup>, ErrorReply> {
    let jobs = if request.ids.is_empty() {
        scheduler
            .jobs()?
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
    let mut cleanups = Vec::new();
    for job in jobs {
        cleanups.push(scheduler.remove(&job, request.delete_files)?);
    }
    Ok(cleanups)
}

/// Change how many jobs run at once (kept across restarts).
pub fn set_concurrency(scheduler: &mut Scheduler, max: u32) -> HandlerResult {
    if max == 0 {
        return Err(invalid(
            "the concurrency limit must be at least 1 (pause jobs to stop them)",
        ));
    }
    scheduler.set_concurrency(max)?;
    Ok(Response::Daemon(scheduler.daemon_info()))
}

/// Set or clear a bandwidth limit (kept across restarts).
pub fn set_bandwidth_limit(
    scheduler: &mut Scheduler,
    request: BandwidthLimitRequest,
) -> HandlerResult {
    if request.bytes_per_second == Some(0) {
        return Err(invalid(
            "a bandwidth limit must be above 0 (use `off` to remove it)",
        ));
    }
    let job = match request.job {
        Some(id) => Some(load(scheduler, id)?),
        None => None,
    };
    scheduler.set_bandwidth_limit(job, request.bytes_per_second)?;
    Ok(Response::Daemon(scheduler.daemon_info()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::add::{add_checked, check};
    use crate::scheduler::testing::scheduler;
    use mdl_protocol::{AddRequest, ErrorKind};

    fn queue(scheduler: &mut Scheduler, dir: &std::path::Path, name: &str) -> JobId {
        let request = AddRequest {
            source: format!("http://127.0.0.1:9/{name}"),
            dest: Some(dir.display().to_string()),
            ..Default::default()
        };
        let settings = scheduler_settings(dir);
        let checked = check(&settings, &settings.engine.sources, request).unwrap();
        match add_checked(scheduler, checked, &Default::default()).unwrap() {
            Response::Added(reply) => reply.job.id,
            other => panic!("{other:?}"),
        }
    }

    fn scheduler_settings(dir: &std::path::Path) -> crate::Settings {
        crate::Settings::new(dir.join("s"), dir.join("d"))
    }

    fn state(scheduler: &Scheduler, id: JobId) -> JobState {
        scheduler.job(id).unwrap().unwrap().state
    }

    #[test]
    fn pause_resume_cancel_a_queued_job() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let id = queue(&mut s, dir.path(), "a.bin");
        assert!(pause_jobs(&mut s, Target::Job(id)).unwrap().is_empty());
        assert_eq!(state(&s, id), JobState::Paused);
        assert_eq!(resume(&mut s, Target::All).unwrap(), Response::Ok);
        assert_eq!(state(&s, id), JobState::Queued);
        assert!(cancel_job(&mut s, id).unwrap().is_none());
        assert_eq!(state(&s, id), JobState::Cancelled);
        let again = cancel_job(&mut s, id).unwrap_err();
        assert!(
            again.message.contains("already cancelled"),
            "{}",
            again.message
        );
        let unknown = cancel_job(&mut s, 999).unwrap_err();
        assert_eq!(unknown.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn priority_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let id = queue(&mut s, dir.path(), "a.bin");
        match set_priority(&mut s, id, 7).unwrap() {
            Response::Job(info) => assert_eq!(info.priority, 7),
            other => panic!("{other:?}"),
        }
        let refused = remove_jobs(
            &mut s,
            RemoveRequest {
                ids: vec![id],
                delete_files: false,
            },
        )
        .unwrap_err();
        assert!(
            refused.message.contains("cancel it before"),
            "{}",
            refused.message
        );
        cancel_job(&mut s, id).unwrap();
        let all = RemoveRequest {
            ids: vec![],
            delete_files: false,
        };
        assert_eq!(remove_jobs(&mut s, all).unwrap().len(), 1);
        assert!(s.job(id).unwrap().is_none());
    }

    #[test]
    fn limits_refuse_zero_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        assert!(set_concurrency(&mut s, 0).is_err());
        match set_concurrency(&mut s, 5).unwrap() {
            Response::Daemon(info) => assert_eq!(info.max_concurrent, 5),
            other => panic!("{other:?}"),
        }
        let zero = BandwidthLimitRequest {
            job: None,
            bytes_per_second: Some(0),
        };
        assert!(set_bandwidth_limit(&mut s, zero).is_err());
        let limit = BandwidthLimitRequest {
            job: None,
            bytes_per_second: Some(1000),
        };
        match set_bandwidth_limit(&mut s, limit).unwrap() {
            Response::Daemon(info) => assert_eq!(info.bandwidth_limit, Some(1000)),
            other => panic!("{other:?}"),
        }
    }
}
