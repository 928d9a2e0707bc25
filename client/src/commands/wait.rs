//! `mdlctl wait ID...`: follow jobs until every one has finished, then exit 0 when all
//! completed, else with the first failure's code (a cancelled job exits 1).
//!
//! It subscribes to events and starts from the snapshot the daemon sends first. When the
//! subscription falls behind (`Lagged`), it re-reads the unfinished jobs with `status`.

use std::collections::HashMap;

use anyhow::{Context, Result};
use mdl_protocol::{Client, ErrorKind, Event, JobId, JobInfo, JobState};

use super::Ctx;
use crate::cli::WaitArgs;
use crate::exit::Failure;
use crate::output::{emit_json, event_job, event_job_id, live::Live};

/// Run `wait`.
pub async fn run(ctx: &Ctx, args: WaitArgs) -> Result<()> {
    let mut live = (!ctx.json).then(|| Live::new(false));
    let jobs = wait_for(ctx, &args.ids, live.as_mut()).await?;
    drop(live);
    if ctx.json {
        emit_json(&jobs)?;
    }
    outcome(&jobs)
}

/// Wait until every job in `ids` has finished, showing events on `live`; returns the final
/// jobs in the order of `ids` (without repeats).
pub async fn wait_for(ctx: &Ctx, ids: &[JobId], live: Option<&mut Live>) -> Result<Vec<JobInfo>> {
    let mut waiter = Waiter::new(ctx, ids, live);
    let mut stream = ctx
        .connect()
        .await?
        .subscribe()
        .await
        .context("subscribing to events")?;
    loop {
        let Some(event) = stream.next().await.context("reading events")? else {
            return Err(waiter.stream_ended());
        };
        if !waiter.apply(&event).await? {
            continue;
        }
        waiter.ask_about_unlisted().await?;
        if waiter.all_settled() {
            return Ok(waiter.finish());
        }
    }
}

/// What `wait_for` knows about the jobs it waits for.
struct Waiter<'a> {
    ctx: &'a Ctx,
    /// The ids, in the caller's order, without repeats.
    order: Vec<JobId>,
    /// The latest known state of each.
    jobs: HashMap<JobId, JobInfo>,
    /// A second connection for `status`, opened when first needed.
    control: Option<Client>,
    live: Option<&'a mut Live>,
}

impl<'a> Waiter<'a> {
    fn new(ctx: &'a Ctx, ids: &[JobId], live: Option<&'a mut Live>) -> Self {
        let mut order: Vec<JobId> = Vec::with_capacity(ids.len());
        for id in ids {
            if !order.contains(id) {
                order.push(*id);
            }
        }
        Waiter {
            ctx,
            order,
            jobs: HashMap::new(),
            control: None,
            live,
        }
    }

    /// Take in one event; false when it is about none of our jobs (nothing changed).
    async fn apply(&mut self, event: &Event) -> Result<bool> {
        match event {
            Event::Snapshot(all) => {
                let seen: Vec<JobInfo> = all
                    .iter()
                    .filter(|job| self.order.contains(&job.id))
                    .cloned()
                    .collect();
                self.show_snapshot(&seen)?;
                self.jobs.extend(seen.into_iter().map(|job| (job.id, job)));
            }
            Event::Lagged { .. } => {
                // Events were dropped: ask again about every job not known to be finished.
                let stale = self.unsettled();
                let fresh = status_of(self.ctx, &mut self.control, &stale).await?;
                self.show_snapshot(&fresh)?;
                self.jobs.extend(fresh.into_iter().map(|job| (job.id, job)));
            }
            Event::Removed(id) if self.order.contains(id) => {
                // Forgotten before it finished: `status` reports why (usually "no such job").
                let fresh = status_of(self.ctx, &mut self.control, &[*id])
                    .await
                    .with_context(|| format!("job {id} was removed while waiting for it"))?;
                self.jobs.extend(fresh.into_iter().map(|job| (job.id, job)));
            }
            event => {
                let Some(id) = event_job_id(event).filter(|id| self.order.contains(id)) else {
                    return Ok(false);
                };
                if let Some(live) = self.live.as_deref_mut() {
                    live.event(event)?;
                }
                if let Some(job) = event_job(event) {
                    self.jobs.insert(id, job.clone());
                } else if let (Event::Progress(p), Some(job)) = (event, self.jobs.get_mut(&id)) {
                    job.bytes_done = p.job_bytes_done;
                }
            }
        }
        Ok(true)
    }

    /// Jobs the snapshot did not list (added since, or unknown): ask, which also turns an
    /// unknown id into the daemon's error.
    async fn ask_about_unlisted(&mut self) -> Result<()> {
        let missing: Vec<JobId> = self
            .order
            .iter()
            .copied()
            .filter(|id| !self.jobs.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let fresh = status_of(self.ctx, &mut self.control, &missing).await?;
            self.show_snapshot(&fresh)?;
            self.jobs.extend(fresh.into_iter().map(|job| (job.id, job)));
        }
        Ok(())
    }

    fn show_snapshot(&mut self, jobs: &[JobInfo]) -> Result<()> {
        if let Some(live) = self.live.as_deref_mut() {
            live.snapshot(jobs)?;
        }
        Ok(())
    }

    /// Our jobs not known to be settled, in order.
    fn unsettled(&self) -> Vec<JobId> {
        self.order
            .iter()
            .copied()
            .filter(|id| !self.jobs.get(id).is_some_and(settled))
            .collect()
    }

    /// Every job is known and settled.
    fn all_settled(&self) -> bool {
        self.order.iter().all(|id| settled(&self.jobs[id]))
    }

    /// The error for an event stream that ended before every job settled.
    fn stream_ended(&self) -> anyhow::Error {
        let pending: Vec<String> = self.unsettled().iter().map(|id| id.to_string()).collect();
        Failure::new(
            ErrorKind::Unreachable,
            format!(
                "the daemon ended the event stream before job(s) {} finished (did it shut down?)",
                pending.join(", ")
            ),
        )
        .into()
    }

    /// Close the live display and hand back the final jobs in order.
    fn finish(mut self) -> Vec<JobInfo> {
        if let Some(live) = self.live.take() {
            live.finish();
        }
        let mut jobs = std::mem::take(&mut self.jobs);
        self.order.iter().filter_map(|id| jobs.remove(id)).collect()
    }
}

/// The current state of `ids`, over the control connection (opened on first use).
async fn status_of(ctx: &Ctx, control: &mut Option<Client>, ids: &[JobId]) -> Result<Vec<JobInfo>> {
    let mut fresh = Vec::with_capacity(ids.len());
    for id in ids {
        let client = match control {
            Some(client) => client,
            None => control.insert(ctx.connect().await?),
        };
        fresh.push(
            client
                .status(*id)
                .await
                .with_context(|| format!("status of job {id}"))?,
        );
    }
    Ok(fresh)
}

/// A job `wait` stops waiting for: finished, or held by the daemon for a reason the user must
/// act on (a full disk), which would otherwise keep `wait` waiting forever.
fn settled(job: &JobInfo) -> bool {
    job.state.is_finished() || (job.state == JobState::Paused && job.error.is_some())
}

/// The exit status for finished jobs: `Ok` when all completed, else the first failure (a
/// failed job's own error kind, [`ErrorKind::Other`] for a cancelled one).
pub fn outcome(jobs: &[JobInfo]) -> Result<()> {
    for job in jobs {
        match job.state {
            JobState::Failed => {
                let (kind, message) = match &job.error {
                    Some(error) => (error.kind, error.message.as_str()),
                    None => (ErrorKind::Other, "no reason given"),
                };
                return Err(Failure::new(kind, format!("job {} failed: {message}", job.id)).into());
            }
            JobState::Cancelled => {
                return Err(Failure::new(
                    ErrorKind::Other,
                    format!("job {} was cancelled", job.id),
                )
                .into());
            }
            JobState::Paused => {
                if let Some(error) = &job.error {
                    return Err(Failure::new(
                        error.kind,
                        format!(
                            "job {} is paused: {}; it keeps its bytes: fix the cause and run `mdlctl resume {}`",
                            job.id, error.message, job.id
                        ),
                    )
                    .into());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{code_for_error, OTHER};
    const INTEGRITY: u8 = 7;
    use crate::output::tests::job;
    use mdl_protocol::ErrorInfo;

    #[test]
    fn a_job_paused_for_no_space_ends_the_wait_with_exit_8() {
        let mut held = job(4, JobState::Paused);
        assert!(!settled(&held), "a job the user paused is still waited for");
        held.error = Some(ErrorInfo {
            kind: ErrorKind::NoSpace,
            message: "no space left".into(),
        });
        assert!(settled(&held));
        let err = outcome(&[held]).unwrap_err();
        assert_eq!(code_for_error(&err), 8);
        assert!(err.to_string().contains("mdlctl resume 4"), "{err}");
    }

    #[test]
    fn outcome_uses_the_first_failure() {
        assert!(outcome(&[job(1, JobState::Completed)]).is_ok());
        let mut failed = job(2, JobState::Failed);
        failed.error = Some(ErrorInfo {
            kind: ErrorKind::Integrity,
            message: "size mismatch".into(),
        });
        let err = outcome(&[
            job(1, JobState::Completed),
            failed,
            job(3, JobState::Cancelled),
        ])
        .unwrap_err();
        assert_eq!(code_for_error(&err), INTEGRITY);
        assert_eq!(err.to_string(), "job 2 failed: size mismatch");
        let err = outcome(&[job(3, JobState::Cancelled)]).unwrap_err();
        assert_eq!(code_for_error(&err), OTHER);
    }
}
