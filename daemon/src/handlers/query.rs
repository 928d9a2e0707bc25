//! Read-only requests: list, status, daemon status, subscribe.

use std::collections::HashSet;

use tokio::sync::mpsc;

use mdl_protocol::{EncodedJobs, ErrorKind, ErrorReply, JobId, Response};

use super::{no_such_job, HandlerResult, Services, Subscription};
use crate::scheduler::{Scheduler, SettledJobs};

/// How many finished jobs one page of a listing holds: the daemon holds a few pages at a time.
pub const PAGE_LEN: usize = 1000;

/// Pages read ahead of the one being sent: reading the next page overlaps sending this one.
const PAGES_AHEAD: usize = 2;

/// A long listing hands free memory back every this many pages.
const TRIM_EVERY_PAGES: usize = 10;

/// A listing of every job, read page by page: the runnable jobs in run order first (one
/// scheduler call, with their live bytes), then the others by id, read from the store's views
/// on a blocking thread beside the scheduler, a few pages ahead of the connection. Pages hold
/// the jobs encoded, as the store keeps them: a bincode peer gets those bytes as they are. A
/// job that finishes while the listing runs is listed once; one added meanwhile may be left
/// out.
pub struct JobPages {
    services: Services,
    state: Listing,
    /// Jobs listed so far.
    listed: usize,
}

/// Where a listing is.
enum Listing {
    /// Nothing listed yet.
    Start,
    /// The runnable jobs are listed; the others arrive from the reader.
    Settled(mpsc::Receiver<Result<EncodedJobs, ErrorReply>>),
    /// Every page was returned.
    Done,
}

impl JobPages {
    /// The next page, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<EncodedJobs>, ErrorReply> {
        let page = match &mut self.state {
            Listing::Done => return Ok(None),
            Listing::Start => {
                let (page, skip, settled) = self
                    .services
                    .call(|s| {
                        let (page, skip) = s.queued_job_infos();
                        Ok((page, skip, s.settled_jobs()))
                    })
                    .await?;
                self.state = Listing::Settled(read_ahead(settled, skip));
                EncodedJobs::from_jobs(&page)
                    .map_err(|e| ErrorReply::new(ErrorKind::Other, e.to_string()))?
            }
            Listing::Settled(pages) => match pages.recv().await {
                Some(page) => page?,
                None => {
                    self.state = Listing::Done;
                    // A long listing's pages are gone: give their memory back.
                    if self.listed > PAGE_LEN {
                        crate::memory::release_free_memory_soon();
                    }
                    return Ok(None);
                }
            },
        };
        self.listed += page.len();
        Ok(Some(page))
    }
}

/// Read the settled jobs' pages on a blocking thread beside the scheduler, [`PAGES_AHEAD`]
/// ahead of the receiver; the reader stops at the last page, at an error (sent as the last
/// item), or once the receiver is gone. (One thread: a second one, decoding what the first
/// read, measured no faster on two cores, where the allocator's one arena is shared.)
fn read_ahead(
    settled: SettledJobs,
    skip: HashSet<JobId>,
) -> mpsc::Receiver<Result<EncodedJobs, ErrorReply>> {
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut after = None;
        for pages in 1usize.. {
            if pages.is_multiple_of(TRIM_EVERY_PAGES) {
                // Give back what earlier pages left free in the heap as the listing goes, so a
                // long one does not raise the daemon's peak (it runs on this blocking thread).
                crate::memory::release_free_memory();
            }
            let (page, next) = match settled.page_after(after, PAGE_LEN, &skip) {
                Ok(read) => read,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            if tx.blocking_send(Ok(page)).is_err() {
                return;
            }
            match next {
                Some(id) => after = Some(id),
                None => return,
            }
        }
    });
    rx
}

/// Every job, as pages.
pub fn list(services: &Services) -> JobPages {
    JobPages {
        services: services.clone(),
        state: Listing::Start,
        listed: 0,
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
/// may see an event twice, never miss one). The snapshot is read page by page like a listing
/// (the daemon never holds every job's view at once); its first page is read here, so a
/// daemon that cannot answer replies with an error instead of a stream.
pub async fn subscribe(services: &Services) -> Result<Subscription, mdl_protocol::ErrorReply> {
    let events = services.scheduler.subscribe();
    let mut rest = list(services);
    let first = rest.next().await?.unwrap_or_default();
    Ok(Subscription {
        first,
        rest,
        events,
    })
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
        assert!(s.queued_job_infos().0.is_empty());
        let (settled, next) = s
            .settled_jobs()
            .page_after(None, PAGE_LEN, &HashSet::new())
            .unwrap();
        assert!(settled.is_empty() && next.is_none());
    }
}
