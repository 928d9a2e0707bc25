//! The scheduler: the one owner of mutable state.
//!
//! It owns the [`Store`] and the set of running jobs. Connections send it [`Command`]s through
//! a [`SchedulerHandle`] (each with a oneshot for the reply); runners send it
//! [`RunnerMessage`]s. After every message it starts queued jobs, in queue order, while fewer
//! than `max_concurrent` run. Events go out on a broadcast channel that is for observation
//! only: it may lag and drop, and nothing waits for it.

use std::collections::HashMap;
use std::sync::Arc;

use mdl_protocol::{ErrorKind, ErrorReply, Event, JobId, JobInfo, JobState, Request, Response};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::handlers;
use crate::job::{self, FileRecord, JobRecord};
use crate::runner::{self, LiveBytes, RunOutcome, RunnerContext, RunnerMessage};
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// A request for the scheduler, with the channel for its reply.
pub enum Command {
    /// A client request (everything but subscribe and shutdown).
    Request(Box<Request>, oneshot::Sender<Response>),
    /// A snapshot of all jobs, for a new subscriber.
    Snapshot(oneshot::Sender<Vec<JobInfo>>),
    /// Run a closure on the scheduler's state: the short, state-touching steps of requests
    /// whose slow part (network, hashing) runs in the caller's task (see
    /// [`handlers::outside`]).
    With(Box<dyn FnOnce(&mut Scheduler) + Send>),
}

/// A cloneable handle to the scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl SchedulerHandle {
    /// Send a request and wait for the reply. Requests with slow work (a Civitai search,
    /// re-hashing for verify) run it here, in the caller's task, not in the scheduler's.
    pub async fn request(&self, request: Request) -> Response {
        match handlers::outside(self, request).await {
            Ok(response) => response,
            Err(request) => self.request_direct(request).await,
        }
    }

    /// Send a request straight to the scheduler task and wait for the reply.
    pub async fn request_direct(&self, request: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Request(Box::new(request), reply))
            .await
            .is_err()
        {
            return shutting_down();
        }
        rx.await.unwrap_or_else(|_| shutting_down())
    }

    /// Run `f` on the scheduler's state (in its task) and return its result; `None` when the
    /// scheduler has stopped. Keep `f` short: it holds up every other request.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Scheduler) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn FnOnce(&mut Scheduler) + Send> = Box::new(move |scheduler| {
            let _ = reply.send(f(scheduler));
        });
        self.tx.send(Command::With(job)).await.ok()?;
        rx.await.ok()
    }

    /// All jobs, for a subscriber's first event.
    pub async fn snapshot(&self) -> Option<Vec<JobInfo>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Subscribe to events (observation only).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

fn shutting_down() -> Response {
    Response::Error(ErrorReply::new(
        ErrorKind::Unreachable,
        "the daemon is shutting down",
    ))
}

/// Why the scheduler stopped a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user paused it.
    Pause,
    /// The user cancelled it.
    Cancel,
    /// The daemon is shutting down; it stays queued.
    Shutdown,
}

/// A job that is running now.
pub struct Running {
    /// Fires to stop the runner.
    pub cancel: CancellationToken,
    /// Why it was stopped, once it was.
    pub stop: Option<StopReason>,
    /// Live byte counters.
    pub live: Arc<LiveBytes>,
    /// The job's bandwidth limit (changeable while it runs).
    pub limit: Arc<crate::engine::limit::RateLimiter>,
}

/// The scheduler's state. Handlers in [`crate::handlers`] work on it directly.
pub struct Scheduler {
    /// The durable state.
    pub store: Store,
    /// The settings (with runtime changes applied).
    pub settings: Settings,
    /// Jobs running now.
    pub running: HashMap<JobId, Running>,
    /// Event broadcast (observation only).
    pub events: broadcast::Sender<Event>,
    /// How many jobs may run at once.
    pub max_concurrent: u32,
    /// The global bandwidth limit.
    pub bandwidth_limit: Option<u64>,
    /// What runners share.
    pub runner_ctx: RunnerContext,
    /// When the daemon started.
    pub started: std::time::Instant,
    /// Cancelled to stop the whole daemon (by a shutdown request).
    pub shutdown: CancellationToken,
    /// Records were written that must be flushed before the loop waits again.
    pub flush_pending: bool,
    /// Events to send once the records they describe are flushed.
    pub pending_events: Vec<Event>,
}

/// Key of the persisted concurrency limit.
pub const META_MAX_CONCURRENT: &str = "max_concurrent";
/// Key of the persisted global bandwidth limit.
pub const META_BANDWIDTH: &str = "bandwidth_limit";

impl Scheduler {
    /// Open the store and prepare; call [`Scheduler::spawn`] to run it.
    pub fn new(
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Scheduler, mpsc::UnboundedReceiver<RunnerMessage>)> {
        let store = Store::open(&settings.store_dir()).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the store in {}: {e}",
                settings.store_dir().display()
            )
        })?;
        let (events, _) = broadcast::channel(1024);
        let (runner_tx, runner_rx) = mpsc::unbounded_channel();
        let engine = crate::engine::Engine::new(settings.engine.clone())?;
        let max_concurrent = store
            .get_meta::<u32>(META_MAX_CONCURRENT)?
            .unwrap_or(settings.max_concurrent);
        let bandwidth_limit = store.get_meta::<Option<u64>>(META_BANDWIDTH)?.flatten();
        engine.global_limit().set_rate(bandwidth_limit);
        let runner_ctx = RunnerContext {
            engine,
            scheduler: runner_tx,
            events: events.clone(),
            progress_interval: settings.progress_interval,
        };
        Ok((
            Scheduler {
                store,
                settings,
                running: HashMap::new(),
                events,
                max_concurrent,
                bandwidth_limit,
                runner_ctx,
                started: std::time::Instant::now(),
                shutdown,
                flush_pending: false,
                pending_events: Vec::new(),
            },
            runner_rx,
        ))
    }

    /// Start the scheduler task; it ends after `shutdown` fires and running jobs checkpointed.
    pub fn spawn(
        mut self,
        mut runner_rx: mpsc::UnboundedReceiver<RunnerMessage>,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Command>(256);
        let handle = SchedulerHandle {
            tx,
            events: self.events.clone(),
        };
        let task = tokio::spawn(async move {
            self.schedule();
            loop {
                tokio::select! {
                    biased;
                    Some(message) = runner_rx.recv() => self.on_runner(message).await,
                    command = rx.recv() => match command {
                        Some(Command::Request(request, reply)) => {
                            let response = handlers::dispatch(&mut self, *request).await;
                            let _ = reply.send(response);
                        }
                        Some(Command::Snapshot(reply)) => {
                            let _ = reply.send(self.all_job_infos());
                        }
                        Some(Command::With(f)) => f(&mut self),
                        None => break,
                    },
                    _ = self.shutdown.cancelled() => break,
                }
                // Take every runner message that is already waiting, then flush once for all.
                for _ in 0..256 {
                    match runner_rx.try_recv() {
                        Ok(message) => self.on_runner(message).await,
                        Err(_) => break,
                    }
                }
                self.flush_if_pending().await;
                self.schedule();
            }
            self.stop_all(&mut runner_rx).await;
        });
        (handle, task)
    }

    /// Stop every runner, let them checkpoint (bounded by the shutdown grace), flush the store.
    async fn stop_all(&mut self, runner_rx: &mut mpsc::UnboundedReceiver<RunnerMessage>) {
        for running in self.running.values_mut() {
            running.stop = Some(StopReason::Shutdown);
            running.cancel.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_grace;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, runner_rx.recv()).await {
                Ok(Some(message)) => self.on_runner(message).await,
                _ => break,
            }
        }
        // Checkpoints sent by writer threads after their runner finished.
        while let Ok(message) = runner_rx.try_recv() {
            self.on_runner(message).await;
        }
        self.flush_pending = true;
        self.flush_if_pending().await;
        let _ = self.events.send(Event::End);
    }

    /// Make the checkpoints and records written since the last flush durable.
    async fn flush_if_pending(&mut self) {
        if std::mem::take(&mut self.flush_pending) {
            if let Err(e) = self.store.flush().await {
                tracing::error!("cannot flush the store: {e}");
            }
        }
        // Events about state changes go out only once those changes are durable.
        for event in std::mem::take(&mut self.pending_events) {
            let _ = self.events.send(event);
        }
    }

    /// Start queued jobs while slots are free.
    pub fn schedule(&mut self) {
        if self.shutdown.is_cancelled() || self.running.len() as u32 >= self.max_concurrent {
            return;
        }
        let order = match self.store.queue_order() {
            Ok(order) => order,
            Err(e) => {
                tracing::error!("cannot read the queue: {e}");
                return;
            }
        };
        for id in order {
            if self.running.len() as u32 >= self.max_concurrent {
                break;
            }
            if self.running.contains_key(&id) {
                continue;
            }
            if let Err(e) = self.start(id) {
                tracing::error!(job = id, "cannot start job: {e}");
            }
        }
    }

    fn start(&mut self, id: JobId) -> Result<(), StoreError> {
        let Some(mut job) = self.store.get_job(id)? else {
            return Ok(());
        };
        let files = self.store.files(id)?;
        job.state = JobState::Running;
        job.error = None;
        self.store.put_job(&job)?;
        let cancel = self.shutdown.child_token();
        let live = Arc::new(LiveBytes::default());
        let limit = Arc::new(crate::engine::limit::RateLimiter::new(job.bandwidth_limit));
        self.running.insert(
            id,
            Running {
                cancel: cancel.clone(),
                stop: None,
                live: live.clone(),
                limit: limit.clone(),
            },
        );
        let _ = self
            .events
            .send(Event::Started(job::job_info(&job, &files, &[])));
        tracing::info!(job = id, source = %job::redact_url(&job.source), "starting");
        let ctx = self.runner_ctx.clone();
        // The runner's copy gets the hub's stored token; the job record keeps none.
        let kind = handlers::tokens::job_kind(&job);
        handlers::tokens::fill(&self.store, kind, &mut job.token);
        tokio::spawn(runner::run_job(ctx, job, files, cancel, live, limit));
        Ok(())
    }

    async fn on_runner(&mut self, message: RunnerMessage) {
        if let Err(e) = self.apply_runner(message).await {
            tracing::error!("store error: {e}");
        }
    }

    async fn apply_runner(&mut self, message: RunnerMessage) -> Result<(), StoreError> {
        match message {
            RunnerMessage::Resolved {
                job,
                files,
                revision,
            } => {
                let Some(mut record) = self.store.get_job(job)? else {
                    return Ok(());
                };
                for (i, file) in files.iter().enumerate() {
                    self.store.put_file(job, i as u32, file)?;
                }
                record.resolved = true;
                record.file_count = files.len() as u32;
                if revision.is_some() {
                    record.revision = revision;
                }
                self.store.put_job(&record)?;
                self.flush_pending = true;
                let _ = self
                    .events
                    .send(Event::Updated(job::job_info(&record, &files, &[])));
            }
            RunnerMessage::File {
                job,
                index,
                record,
                durable,
            } => {
                // A late checkpoint of a job that was removed meanwhile must not resurrect it.
                if self.store.get_job(job)?.is_none() {
                    return Ok(());
                }
                self.store.put_file(job, index, &record)?;
                // Group commit: one flush for every checkpoint that arrived together.
                self.flush_pending |= durable;
            }
            RunnerMessage::FindBySha256 { sha256, reply } => {
                let _ = reply.send(self.find_verified(&sha256)?);
            }
            RunnerMessage::Finished { job, outcome } => {
                let stop = self.running.remove(&job).and_then(|r| r.stop);
                self.finish(job, outcome, stop).await?;
            }
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        id: JobId,
        outcome: RunOutcome,
        stop: Option<StopReason>,
    ) -> Result<(), StoreError> {
        let Some(mut job) = self.store.get_job(id)? else {
            return Ok(());
        };
        let (state, event): (JobState, fn(JobInfo) -> Event) = match (&outcome, stop) {
            (RunOutcome::Completed, _) => (JobState::Completed, Event::Completed),
            (_, Some(StopReason::Cancel)) => (JobState::Cancelled, Event::Cancelled),
            (_, Some(StopReason::Pause)) => (JobState::Paused, Event::Paused),
            (RunOutcome::Interrupted, _) => (JobState::Queued, Event::Updated),
            (RunOutcome::Failed(error), _) if error.kind == ErrorKind::NoSpace => {
                job.error = Some(error.clone());
                (JobState::Paused, Event::Paused)
            }
            (RunOutcome::Failed(error), _) => {
                job.error = Some(error.clone());
                (JobState::Failed, Event::Failed)
            }
        };
        job.state = state;
        if state.is_finished() {
            job.finished_ms = Some(job::now_ms());
        }
        if state == JobState::Cancelled {
            handlers::control::remove_partial_files(&self.store, &job)?;
        }
        if let RunOutcome::Failed(error) = &outcome {
            tracing::warn!(job = id, kind = error.kind.as_str(), "{}", error.message);
        } else {
            tracing::info!(job = id, state = state.as_str(), "job stopped");
        }
        self.store.put_job(&job)?;
        let files = self.store.files(id)?;
        // Group commit: the event goes out once the state is durable (see flush_if_pending).
        self.flush_pending = true;
        self.pending_events
            .push(event(job::job_info(&job, &files, &[])));
        Ok(())
    }

    /// A completed file with this sha256 that is still exactly as it was verified (same size
    /// and modification time), from any job and any source.
    pub fn find_verified(&self, sha256: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
        for (id, index) in self.store.files_with_sha256(sha256) {
            let (Some(job), Some(file)) =
                (self.store.get_job(id)?, self.store.get_file(id, index)?)
            else {
                continue;
            };
            if job.state != JobState::Completed || file.verified_sha256.as_deref() != Some(sha256) {
                continue;
            }
            let Some(rel) = &file.rel_path else { continue };
            let path = job.dest_dir.join(rel);
            let stamp = runner::file_stamp(&path);
            if stamp.is_some() && stamp == file.verified_stamp {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// The wire view of one job, with live byte counts if it runs.
    pub fn job_info(&self, job: &JobRecord) -> JobInfo {
        let files: Vec<FileRecord> = self.store.files(job.id).unwrap_or_default();
        let live = self
            .running
            .get(&job.id)
            .map(|r| r.live.snapshot())
            .unwrap_or_default();
        job::job_info(job, &files, &live)
    }

    /// Every job: runnable ones in run order, then the others by id.
    pub fn all_job_infos(&self) -> Vec<JobInfo> {
        let jobs = self.store.all_jobs().unwrap_or_default();
        let order = self.store.queue_order().unwrap_or_default();
        let position: HashMap<JobId, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut jobs: Vec<&JobRecord> = jobs.iter().collect();
        jobs.sort_by_key(|j| (position.get(&j.id).copied().unwrap_or(usize::MAX), j.id));
        jobs.into_iter().map(|j| self.job_info(j)).collect()
    }
}
