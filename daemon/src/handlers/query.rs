//! Read-only requests: list, status, daemon status, subscribe.

use mdl_protocol::{JobId, Response};

use super::{no_such_job, HandlerResult, Services, Subscription};
use crate::scheduler::Scheduler;

/// Every job.
pub async fn list(services: &Services) -> HandlerResult {
    services
        .call(|s| Ok(Response::Jobs(s.all_job_infos())))
        .await
}

/// One job.
pub async fn status(services: &Services, id: JobId) -> HandlerResult {
    services.call(move |s| job_status(s, id)).await
}

/// One job, on the scheduler's state.
pub fn job_status(scheduler: &mut Scheduler, id: JobId) -> HandlerResult {
    let job = scheduler.job(id)?.ok_or_else(|| no_such_job(id))?;
    Ok(Response::Job(scheduler.job_info(&job)))
}

/// The daemon's own status.
pub async fn daemon_status(services: &Services) -> HandlerResult {
    services
        .call(|s| Ok(Response::Daemon(s.daemon_info())))
        .await
}

/// Subscribe first, then take the snapshot, so no event falls between the two (a subscriber
/// may see an event twice, never miss one).
pub async fn subscribe(services: &Services) -> Result<Subscription, mdl_protocol::ErrorReply> {
    let events = services.scheduler.subscribe();
    let snapshot = services.call(|s| Ok(s.all_job_infos())).await?;
    Ok(Subscription { snapshot, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::scheduler;

    #[test]
    fn status_of_an_unknown_job_says_how_to_list_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let err = job_status(&mut s, 42).unwrap_err();
        assert!(err.message.contains("mdlctl ls"), "{}", err.message);
        assert_eq!(s.daemon_info().queued, 0);
        assert!(s.all_job_infos().is_empty());
    }
}
