//! Read-only requests: list, status, daemon status, subscribe.

use std::collections::HashSet;
use std::sync::Arc;

use mdl_protocol::{ErrorReply, JobId, JobInfo, Response};

use super::{no_such_job, HandlerResult, Services, Subscription};
use crate::scheduler::Scheduler;

/// How many finished jobs one page of a listing holds: one short scheduler call each, so
/// other requests go on between pages, and the daemon holds one page at a time.
pub const PAGE_LEN: usize = 1000;

/// A listing of every job, read page by page: the runnable jobs in run order first, then the
/// others by id. A job that finishes while the listing runs is listed once; one added
/// meanwhile may be left out.
pub struct JobPages {
    services: Services,
    /// The runnable jobs' ids when the listing began (listed in the first page).
    skip: Arc<HashSet<JobId>>,
    /// Where the next page starts; `None` before the first page.
    next: Option<Option<JobId>>,
    /// Jobs listed so far.
    listed: usize,
    done: bool,
}

impl JobPages {
    /// The next page, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<Vec<JobInfo>>, ErrorReply> {
        if self.done {
            return Ok(None);
        }
        let Some(after) = self.next else {
            let (page, skip) = self.services.call(|s| Ok(s.queued_job_infos())).await?;
            self.skip = Arc::new(skip);
            self.next = Some(None);
            self.listed = page.len();
            return Ok(Some(page));
        };
        let skip = self.skip.clone();
        let (page, next) = self
            .services
            .call(move |s| Ok(s.job_infos_after(after, PAGE_LEN, &skip)?))
            .await?;
        self.listed += page.len();
        match next {
            Some(id) => self.next = Some(Some(id)),
            None => {
                self.done = true;
                // A long listing's pages are gone: give their memory back.
                if self.listed > PAGE_LEN {
                    crate::memory::release_free_memory_soon();
                }
            }
        }
        Ok(Some(page))
    }
}

/// Every job, as pages.
pub fn list(services: &Services) -> JobPages {
    JobPages {
        services: services.clone(),
        skip: Default::default(),
        next: None,
        listed: 0,
        done: false,
    }
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
