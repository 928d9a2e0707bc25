//! Read-only requests: list, status, daemon status.

use mdl_protocol::{DaemonInfo, JobId, JobState, Response, PROTOCOL_VERSION};

use super::{no_such_job, HandlerResult};
use crate::scheduler::Scheduler;

/// Every job.
pub fn list(scheduler: &Scheduler) -> Response {
    Response::Jobs(scheduler.all_job_infos())
}

/// One job.
pub fn status(scheduler: &Scheduler, id: JobId) -> HandlerResult {
    let job = scheduler
        .store
        .get_job(id)?
        .ok_or_else(|| no_such_job(id))?;
    Ok(Response::Job(scheduler.job_info(&job)))
}

/// The daemon's own status.
pub fn daemon_status(scheduler: &Scheduler) -> Response {
    Response::Daemon(daemon_info(scheduler))
}

/// The daemon's own status as a value.
pub fn daemon_info(scheduler: &Scheduler) -> DaemonInfo {
    let queued = scheduler
        .store
        .all_jobs()
        .map(|jobs| jobs.iter().filter(|j| j.state == JobState::Queued).count())
        .unwrap_or(0);
    DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        socket: scheduler.settings.socket.display().to_string(),
        data_dir: scheduler.settings.data_dir.display().to_string(),
        max_concurrent: scheduler.max_concurrent,
        bandwidth_limit: scheduler.bandwidth_limit,
        running: scheduler.running.len() as u32,
        queued: queued as u32,
        uptime_ms: scheduler.started.elapsed().as_millis() as u64,
    }
}
