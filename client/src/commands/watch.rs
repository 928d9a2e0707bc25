//! `mdlctl watch [ID...]`: follow the daemon's events live. Progress bars on a terminal, plain
//! lines otherwise, one JSON object per event with --json (NDJSON). Ends when the daemon ends
//! the stream, or, with ids, when all those jobs have finished (or been removed).

use std::collections::HashMap;

use anyhow::{Context, Result};
use mdl_protocol::{Client, Event, JobId};

use super::Ctx;
use crate::cli::WatchArgs;
use crate::output::{emit, event_job, event_job_id, event_json, live::Live};

/// Run `watch`.
pub async fn run(ctx: &Ctx, args: WatchArgs) -> Result<()> {
    let filter = args.ids;
    let mut stream = ctx
        .connect()
        .await?
        .subscribe()
        .await
        .context("subscribing to events")?;
    let mut control: Option<Client> = None;
    let mut live = (!ctx.json).then(|| Live::new(true));
    // Whether each job seen is finished, to know when the watched ones are all done.
    let mut finished: HashMap<JobId, bool> = HashMap::new();
    let mut checked_ids = false;

    while let Some(event) = stream.next().await.context("reading events")? {
        let events = match event {
            Event::Lagged { missed } => {
                // Missed events: show the lag, then a fresh listing as a new snapshot.
                let client = match &mut control {
                    Some(client) => client,
                    None => control.insert(ctx.connect().await?),
                };
                vec![
                    Event::Lagged { missed },
                    Event::Snapshot(client.list().await?),
                ]
            }
            event => vec![event],
        };
        for event in events.into_iter().filter_map(|e| only(&filter, e)) {
            track(&mut finished, &event);
            if ctx.json {
                emit(event_json(&event)?)?;
            } else if let Some(live) = live.as_mut() {
                match &event {
                    Event::Snapshot(jobs) => live.snapshot(jobs)?,
                    event => live.event(event)?,
                }
            }
        }
        if filter.is_empty() {
            continue;
        }
        if !checked_ids {
            // Ids the first snapshot did not list: `status` turns an unknown one into the
            // daemon's error; a job added in the meantime is simply tracked.
            checked_ids = true;
            let unseen: Vec<JobId> = filter
                .iter()
                .copied()
                .filter(|id| !finished.contains_key(id))
                .collect();
            for id in unseen {
                let client = match &mut control {
                    Some(client) => client,
                    None => control.insert(ctx.connect().await?),
                };
                let job = client
                    .status(id)
                    .await
                    .with_context(|| format!("status of job {id}"))?;
                finished.insert(job.id, job.state.is_finished());
            }
        }
        if filter.iter().all(|id| finished.get(id) == Some(&true)) {
            break;
        }
    }
    Ok(())
}

/// The event as seen through the id filter (all events when it is empty): snapshots keep only
/// the watched jobs, events about other jobs are dropped.
fn only(filter: &[JobId], event: Event) -> Option<Event> {
    if filter.is_empty() {
        return Some(event);
    }
    match event {
        Event::Snapshot(jobs) => Some(Event::Snapshot(
            jobs.into_iter()
                .filter(|job| filter.contains(&job.id))
                .collect(),
        )),
        event => match event_job_id(&event) {
            Some(id) if !filter.contains(&id) => None,
            _ => Some(event),
        },
    }
}

/// Record which jobs are finished; a removed job counts as finished.
fn track(finished: &mut HashMap<JobId, bool>, event: &Event) {
    match event {
        Event::Snapshot(jobs) => {
            finished.extend(jobs.iter().map(|job| (job.id, job.state.is_finished())));
        }
        Event::Removed(id) => {
            finished.insert(*id, true);
        }
        event => {
            if let Some(job) = event_job(event) {
                finished.insert(job.id, job.state.is_finished());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::job;
    use mdl_protocol::JobState;

    #[test]
    fn filter_keeps_watched_jobs_and_global_events() {
        let filter = [2];
        let snap = only(
            &filter,
            Event::Snapshot(vec![job(1, JobState::Queued), job(2, JobState::Running)]),
        );
        let Some(Event::Snapshot(jobs)) = snap else {
            panic!()
        };
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [2]);
        assert!(only(&filter, Event::Started(job(1, JobState::Running))).is_none());
        assert!(only(&filter, Event::Removed(2)).is_some());
        assert!(only(&filter, Event::Heartbeat { unix_ms: 1 }).is_some());
        assert!(only(&[], Event::Started(job(1, JobState::Running))).is_some());
    }

    #[test]
    fn tracking_finished_jobs() {
        let mut finished = HashMap::new();
        track(
            &mut finished,
            &Event::Snapshot(vec![job(1, JobState::Running), job(2, JobState::Queued)]),
        );
        track(
            &mut finished,
            &Event::Completed(job(1, JobState::Completed)),
        );
        track(&mut finished, &Event::Removed(2));
        assert_eq!(finished.get(&1), Some(&true));
        assert_eq!(finished.get(&2), Some(&true));
    }
}
