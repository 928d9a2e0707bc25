//! The scheduler: the one owner of mutable state.
//!
//! It owns the [`Store`] and the set of running jobs, and its fields are private: handlers
//! reach it through [`SchedulerHandle::call`] and change it only through intent methods
//! ([`Scheduler::queue`], [`Scheduler::stop`], [`Scheduler::transition`], ...). Runners send it
//! [`RunnerMessage`]s. After each batch of messages it starts queued jobs, in queue order,
//! while fewer than the concurrency limit run, then *commits*: one store flush for everything
//! the batch wrote, and only then the events the batch produced and the replies to the calls
//! it ran. So a reply that reports a state change, and every event, describes durable state.
//! The flush runs beside the loop (a [`Flight`]): while it runs the scheduler goes on taking
//! messages and calls, answers runners' questions (which report no state to anyone), and
//! holds the replies and events of that time for the next commit, which starts when the flush
//! in flight has landed. One flush at a time, in order.
//! Events go out on a broadcast channel that is for observation only: it may lag and drop,
//! and nothing waits for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mdl_protocol::{
    DaemonInfo, EncodedJobs, ErrorInfo, ErrorKind, Event, FileChange, FileState, HealthInfo, JobId,
    JobInfo, JobState, Secret, PROTOCOL_VERSION,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine::limit::RateLimiter;
use crate::engine::Engine;
use crate::engine::{finalize, names};
use crate::job::{self, FileCheckpoint, FileRecord, JobRecord};
use crate::runner::{self, LiveBytes, RunOutcome, RunnerContext, RunnerMessage};
use crate::settings::{FileValues, Settings, DEFAULT_MAX_CONCURRENT};
use crate::store::{Store, StoreError};

/// Why a call to the scheduler has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The scheduler has stopped (the daemon is shutting down).
    #[error("the daemon is shutting down")]
    Stopped,
    /// The call ran, but the store could not make its changes durable.
    #[error("cannot save the change: {0}")]
    NotDurable(String),
}

/// Sends a call's result once the store is durable (or says why it is not).
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A call to run on the scheduler's state.
type Call = Box<dyn FnOnce(&mut Scheduler) -> Deliver + Send>;

/// A cloneable handle to the scheduler.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Call>,
    events: broadcast::Sender<Event>,
}

impl SchedulerHandle {
    /// Run `f` on the scheduler's state, in its task, and return its result once everything
    /// `f` wrote is durable. Keep `f` short: it holds up every other request.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Scheduler) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |scheduler| {
            let value = f(scheduler);
            Box::new(move |durable: Result<(), String>| {
                let _ = reply.send(durable.map(|()| value).map_err(CallError::NotDurable));
            })
        });
        self.tx.send(call).await.map_err(|_| CallError::Stopped)?;
        answer.await.map_err(|_| CallError::Stopped)?
    }

    /// Subscribe to events (observation only).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Why the scheduler stopped a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user paused it.
    Pause,
    /// The user cancelled it.
    Cancel,
    /// The daemon is shutting down (or the job was resumed while stopping): it stays queued.
    Requeue,
}

/// A job that is running now.
struct Running {
    /// Fires to stop the runner.
    cancel: CancellationToken,
    /// Why it was stopped, once it was.
    stop: Option<StopReason>,
    /// Live byte counters.
    live: Arc<LiveBytes>,
    /// The job's bandwidth limit (changeable while it runs).
    limit: Arc<RateLimiter>,
    /// Told once the job has stopped and its final state is durable.
    stopped: Vec<oneshot::Sender<()>>,
}

/// Resolves once a stopped job's final state is durable (see [`Scheduler::stop`]).
pub type StopWaiter = oneshot::Receiver<()>;

/// A store flush in progress, and what waits for it to land: the events and replies of the
/// batches it makes durable, and the partial files to delete after it.
struct Flight {
    flush: tokio::task::JoinHandle<Result<(), StoreError>>,
    events: Vec<Event>,
    replies: Vec<Deliver>,
    cleanups: Vec<finalize::Cleanup>,
}

/// The scheduler's state: the store, the running set and the runtime limits.
pub struct Scheduler {
    store: Store,
    settings: Arc<Settings>,
    running: HashMap<JobId, Running>,
    events: broadcast::Sender<Event>,
    max_concurrent: u32,
    bandwidth_limit: Option<u64>,
    runner_ctx: RunnerContext,
    started: std::time::Instant,
    shutdown: CancellationToken,
    /// Records were written that must be flushed before the next commit.
    flush_pending: bool,
    /// Events to send once the records they describe are flushed.
    pending_events: EventBacklog,
    /// Partial files to delete after the next commit (cancelled jobs), off this task.
    pending_cleanups: Vec<finalize::Cleanup>,
    /// Replies to send once the records their calls wrote are flushed.
    pending_replies: Vec<Deliver>,
    /// The flush in progress, if one is.
    flight: Option<Flight>,
    /// Why the store cannot write now (a full data directory), until a flush succeeds again.
    /// While it is set no job starts, running jobs are stopped, and the store is retried
    /// every [`STORE_RETRY`].
    store_write_error: Option<String>,
    /// A write failed: sled refuses every later one until the store is reopened.
    store_needs_reopen: bool,
    /// What the disk watchers report about themselves (not persisted).
    watch: WatchStatus,
}

/// What the disk watchers (drop folder, integrity, config reload) report about themselves,
/// for `Request::Health`. Observation only: nothing decides on it.
#[derive(Debug, Clone, Default)]
pub struct WatchStatus {
    /// True once every completed file was checked after the start.
    pub startup_check_done: bool,
    /// Watched files present exactly as verified (as the integrity watcher counts them).
    pub files_intact: u64,
    /// Watched files gone from disk.
    pub files_missing: u64,
    /// Watched files whose size, time stamp or bytes changed.
    pub files_modified: u64,
    /// `notify`, `poll`, `notify+poll` or `off`.
    pub mode: String,
    /// The polling interval, where polling is used.
    pub poll_interval_ms: u64,
    /// `manual` or `auto`.
    pub repair: String,
    /// The drop folder, if one is set.
    pub watch_dir: Option<String>,
    /// Why the drop folder is not watched, if it is not.
    pub watch_dir_error: Option<String>,
    /// Dropped files queued since the start.
    pub dropped_queued: u64,
    /// Dropped files refused since the start.
    pub dropped_invalid: u64,
    /// The config file, if any.
    pub config_file: Option<String>,
    /// When it was last applied (ms since the epoch).
    pub config_loaded_ms: Option<u64>,
    /// Why its last edit was refused.
    pub config_error: Option<String>,
}

/// A completed file on disk, as the integrity watcher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedFile {
    /// The job.
    pub job: JobId,
    /// The file's index in the job.
    pub index: u32,
    /// The final path (for a hub cache: the blob).
    pub path: std::path::PathBuf,
    /// The links that must show it (a hub cache's snapshot entries).
    pub links: Vec<std::path::PathBuf>,
    /// Size and modification time when it was verified.
    pub stamp: Option<(u64, i64)>,
    /// `completed`, `missing` or `modified`.
    pub state: FileState,
}

/// Key of the persisted concurrency limit.
const META_MAX_CONCURRENT: &str = "max_concurrent";
/// Key of the persisted global bandwidth limit.
const META_BANDWIDTH: &str = "bandwidth_limit";
/// A write that proves the store takes writes again after an outage.
const META_PROBE: &str = "store_probe";
/// Free space the data directory keeps for the store: no job starts below it (sled's log
/// grows in segments of a few MiB).
pub const STORE_HEADROOM: u64 = 16 * 1024 * 1024;
/// How often a store that cannot write tries again.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// Key of the stored hub tokens.
const META_HUB_TOKENS: &str = "hub_tokens";
/// Key of the hub endpoint lists set at runtime, by hub.
const META_HUB_ENDPOINTS: &str = "hub_endpoints";
/// Key of the config file's values for the runtime keys, as last applied.
const META_FILE_VALUES: &str = "config_file_values";
/// Prefix of the keys recording drop-folder files already queued.
const META_DROPPED: &str = "dropped/";

impl Scheduler {
    /// Open the store and prepare; call [`Scheduler::spawn`] to run it.
    pub fn open(
        settings: Arc<Settings>,
        engine: Engine,
        shutdown: CancellationToken,
    ) -> Result<(Scheduler, mpsc::UnboundedReceiver<RunnerMessage>), StoreError> {
        let store = Store::open(&settings.store_dir(), crate::sources::upgrade_job_record)?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (runner_tx, runner_rx) = mpsc::unbounded_channel();
        // A damaged runtime setting falls back to the default instead of stopping the daemon.
        let max_concurrent = store
            .get_meta::<u32>(META_MAX_CONCURRENT)
            .unwrap_or_else(|e| {
                tracing::error!("{e}; using the default concurrency");
                None
            })
            .unwrap_or(settings.max_concurrent);
        let bandwidth_limit = store
            .get_meta::<Option<u64>>(META_BANDWIDTH)
            .unwrap_or_else(|e| {
                tracing::error!("{e}; no bandwidth limit");
                None
            })
            .unwrap_or(settings.bandwidth_limit);
        engine.global_limit().set_rate(bandwidth_limit);
        let runner_ctx = RunnerContext {
            engine,
            scheduler: runner_tx,
            events: events.clone(),
            progress_interval: settings.progress_interval,
        };
        let from_file = settings.from_file.clone();
        let mut scheduler = Scheduler {
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
            pending_events: EventBacklog::default(),
            pending_replies: Vec::new(),
            pending_cleanups: Vec::new(),
            flight: None,
            store_write_error: None,
            store_needs_reopen: false,
            watch: WatchStatus::default(),
        };
        // A key the config file changed while the daemon was down wins over `mdlctl`'s value.
        scheduler.apply_file_values(&from_file)?;
        let base = scheduler.settings.engine.sources.clone();
        scheduler.apply_hub_endpoints(&base)?;
        Ok((scheduler, runner_rx))
    }

    /// Start the scheduler task; it ends after `shutdown` fires and running jobs checkpointed.
    pub fn spawn(
        mut self,
        mut runner_rx: mpsc::UnboundedReceiver<RunnerMessage>,
    ) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
        let (tx, mut calls) = mpsc::channel::<Call>(256);
        let handle = SchedulerHandle {
            tx,
            events: self.events.clone(),
        };
        let task = tokio::spawn(async move {
            self.schedule();
            self.commit().await;
            // A deadline, not a fresh sleep per turn: a stream of requests must not postpone
            // the store's retry forever.
            let mut store_retry = tokio::time::interval(STORE_RETRY);
            store_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    Some(message) = runner_rx.recv() => self.on_runner(message).await,
                    call = calls.recv() => match call {
                        Some(call) => self.run_call(call),
                        None => break,
                    },
                    landed = async { (&mut self.flight.as_mut().expect("guarded").flush).await },
                        if self.flight.is_some() => self.land(landed),
                    _ = self.shutdown.cancelled() => break,
                    _ = store_retry.tick(),
                        if self.store_write_error.is_some() && self.flight.is_none() => {
                        self.try_recover_store().await;
                    }
                }
                // Take what else is already waiting, then flush once for all of it.
                for _ in 0..256 {
                    match runner_rx.try_recv() {
                        Ok(message) => self.on_runner(message).await,
                        Err(_) => break,
                    }
                }
                for _ in 0..64 {
                    match calls.try_recv() {
                        Ok(call) => self.run_call(call),
                        Err(_) => break,
                    }
                }
                self.schedule();
                self.take_off();
            }
            self.stop_all(&mut runner_rx).await;
        });
        (handle, task)
    }

    fn run_call(&mut self, call: Call) {
        let deliver = call(self);
        self.pending_replies.push(deliver);
    }

    /// Stop every runner, let them checkpoint (bounded by the shutdown grace), flush the store.
    async fn stop_all(&mut self, runner_rx: &mut mpsc::UnboundedReceiver<RunnerMessage>) {
        for running in self.running.values_mut() {
            running.stop = Some(StopReason::Requeue);
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
        self.commit().await;
        // Every record written and flushed, no runner left: the next start need not check
        // every record again.
        if self.running.is_empty() && self.store_write_error.is_none() {
            if let Err(e) = self.store.mark_closed_cleanly().await {
                tracing::warn!("cannot mark the store closed cleanly: {e}");
            }
        }
        let _ = self.events.send(Event::End);
    }

    /// Make the records written since the last commit durable, then send the events and the
    /// replies that describe them; waits for a flush in flight first.
    async fn commit(&mut self) {
        self.wait_for_flight().await;
        self.take_off();
        self.wait_for_flight().await;
    }

    /// Wait for the flush in flight, if there is one, and land it.
    async fn wait_for_flight(&mut self) {
        if let Some(flight) = &mut self.flight {
            let landed = (&mut flight.flush).await;
            self.land(landed);
        }
    }

    /// Commit without waiting: unless a flush is in flight (the next one starts when it
    /// lands), start one for what the batches since the last wrote, or, if they wrote
    /// nothing, send their events and replies now.
    fn take_off(&mut self) {
        if self.flight.is_some() {
            return;
        }
        let events = self.pending_events.take();
        let replies = std::mem::take(&mut self.pending_replies);
        let cleanups = std::mem::take(&mut self.pending_cleanups);
        if std::mem::take(&mut self.flush_pending) {
            if let Err(e) = self.store.refresh_views() {
                // The views stay empty: listings read those jobs from their records.
                tracing::warn!("cannot bring the listing views up to date: {e}");
            }
            self.flight = Some(Flight {
                flush: tokio::spawn(self.store.flush_owned()),
                events,
                replies,
                cleanups,
            });
        } else {
            self.deliver(Ok(()), events, replies, cleanups);
        }
    }

    /// The flush in flight ended with `landed`: send what waited for it, then start the next.
    fn land(&mut self, landed: Result<Result<(), StoreError>, tokio::task::JoinError>) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let durable = match landed {
            Ok(Ok(())) => {
                self.store_write_error = None;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the store's flush failed: {e}")),
        };
        if let Err(e) = &durable {
            self.store_cannot_write(e.clone());
            self.store_needs_reopen = true;
        }
        self.deliver(durable, flight.events, flight.replies, flight.cleanups);
        self.take_off();
    }

    /// Send events and replies whose records are durable (or say why they are not), and start
    /// deleting the partial files that waited for them.
    fn deliver(
        &mut self,
        durable: Result<(), String>,
        events: Vec<Event>,
        replies: Vec<Deliver>,
        cleanups: Vec<finalize::Cleanup>,
    ) {
        for event in events {
            let _ = self.events.send(event);
        }
        for deliver in replies {
            deliver(durable.clone());
        }
        // Deleting files waits on the disk: never in this task.
        for cleanup in cleanups {
            tokio::task::spawn_blocking(move || cleanup.run());
        }
    }

    /// The store cannot take writes (`reason`): stop the running jobs (they keep their bytes
    /// and wait in the queue), start none, keep answering reads, and retry until it can.
    fn store_cannot_write(&mut self, reason: String) {
        if self.store_write_error.is_none() {
            tracing::error!(
                data_dir = %self.settings.data_dir.display(),
                "THE STORE CANNOT WRITE: {reason}. Running jobs are stopped and wait with \
                 their bytes; mdld retries every {} s and resumes them by itself once the data \
                 directory has {} MiB free",
                STORE_RETRY.as_secs(),
                STORE_HEADROOM / (1024 * 1024)
            );
        }
        self.store_write_error = Some(reason);
        for running in self.running.values_mut() {
            running.stop.get_or_insert(StopReason::Requeue);
            running.cancel.cancel();
        }
    }

    /// After an outage: once every runner has stopped and the data directory has room, reopen
    /// the store if a write failed (sled's error is sticky), prove a write lands, and let the
    /// queue run again.
    async fn try_recover_store(&mut self) {
        if !self.running.is_empty() || !self.store_has_headroom() {
            return;
        }
        if self.store_needs_reopen || self.store.is_detached() {
            if let Err(e) = self.store.reopen() {
                tracing::warn!("the store does not open again yet: {e}");
                return;
            }
            self.store_needs_reopen = false;
        }
        let probe = self.store.put_meta(META_PROBE, &job::now_ms());
        match probe {
            Ok(()) => match self.store.flush().await {
                Ok(()) => {
                    tracing::warn!("the store takes writes again; the queue runs again");
                    self.store_write_error = None;
                    self.resume_paused_for_space();
                    self.schedule();
                    self.commit().await;
                }
                Err(e) => {
                    self.store_needs_reopen = true;
                    self.store_write_error = Some(e.to_string());
                }
            },
            Err(e) => {
                self.store_needs_reopen = true;
                self.store_write_error = Some(e.to_string());
            }
        }
    }

    /// Queue again the jobs that the same full disk paused (their download hit "no space" while
    /// the store could not write either): the outage is over for them too.
    fn resume_paused_for_space(&mut self) {
        // One record decoded at a time: only the few paused ones are kept.
        let paused: Vec<JobRecord> = self
            .store
            .jobs_after(None)
            .filter_map(|job| {
                job.inspect_err(|e| tracing::error!("cannot read a job: {e}"))
                    .ok()
            })
            .filter(|job| {
                job.state == JobState::Paused
                    && job
                        .error
                        .as_ref()
                        .is_some_and(|e| e.kind == ErrorKind::NoSpace)
            })
            .collect();
        for job in paused {
            let id = job.id;
            match self.transition(job, JobState::Queued, Event::Resumed) {
                Ok(_) => tracing::info!(job = id, "resumed: the disk has space again"),
                Err(e) => tracing::error!(job = id, "cannot resume: {e}"),
            }
        }
    }

    /// The data directory has the free space the store needs (unknown counts as enough); when
    /// it has not, say so as the store's write error.
    fn store_has_headroom(&mut self) -> bool {
        match crate::engine::space::available_bytes(&self.settings.data_dir) {
            Some(free) if free < STORE_HEADROOM => {
                let reason = format!(
                    "no space left for the store: {} has {} KiB free, mdld needs {} MiB",
                    self.settings.data_dir.display(),
                    free / 1024,
                    STORE_HEADROOM / (1024 * 1024)
                );
                if self.store_write_error.is_none() {
                    self.store_cannot_write(reason);
                } else {
                    self.store_write_error = Some(reason);
                }
                false
            }
            _ => true,
        }
    }

    /// Start queued jobs while slots are free.
    fn schedule(&mut self) {
        if self.shutdown.is_cancelled()
            || self.running.len() as u32 >= self.max_concurrent
            || self.store_write_error.is_some()
        {
            return;
        }
        let mut checked_space = false;
        // Walk the queue index from its head, only as far as needed: the running jobs come
        // first (they keep their place), so this reads about as many entries as jobs run,
        // however long the queue is.
        for id in self.store.queue_ids() {
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!("cannot read the queue: {e}");
                    return;
                }
            };
            if self.running.len() as u32 >= self.max_concurrent {
                break;
            }
            if self.running.contains_key(&id) {
                continue;
            }
            // Before writing anything: room for the store as well as for the download.
            if !std::mem::replace(&mut checked_space, true) && !self.store_has_headroom() {
                break;
            }
            if let Err(e) = self.start(id) {
                tracing::error!(job = id, "cannot start job: {e}");
            }
        }
    }

    // ---- Intent methods: the only ways handlers change state. ----

    /// Queue a new job (or record one that is complete already, for `AlreadyComplete`): give
    /// it an id, write it with its `files`, and announce it with `event` after the commit.
    pub fn queue(
        &mut self,
        mut record: JobRecord,
        files: &[FileRecord],
        event: fn(JobInfo) -> Event,
    ) -> Result<JobInfo, StoreError> {
        let id = self.store.next_id()?;
        record.id = id;
        record.seq = id;
        for (index, file) in files.iter().enumerate() {
            self.store.put_file(id, index as u32, file)?;
        }
        self.store.put_job(&record)?;
        self.flush_pending = true;
        let info = self.job_info(&record);
        self.pending_events.push(event(info.clone()));
        Ok(info)
    }

    /// Stop a running job for `reason`; `None` when it is not running. Its runner
    /// checkpoints and the job ends in the state the reason asks for; the waiter resolves
    /// once that state is durable. `Requeue` on a job that is stopping already makes it end
    /// queued instead (a resume while a pause is still checkpointing).
    pub fn stop(&mut self, id: JobId, reason: StopReason) -> Option<StopWaiter> {
        let running = self.running.get_mut(&id)?;
        running.stop = Some(reason);
        if reason != StopReason::Requeue {
            running.cancel.cancel();
        }
        let (tx, rx) = oneshot::channel();
        running.stopped.push(tx);
        Some(rx)
    }

    /// Move a job that is not running to `state`: write the record (clearing the error and
    /// finish time when it becomes runnable again, deleting partial files when it is
    /// cancelled), and announce it with `event` after the commit.
    pub fn transition(
        &mut self,
        mut job: JobRecord,
        state: JobState,
        event: fn(JobInfo) -> Event,
    ) -> Result<JobInfo, StoreError> {
        job.state = state;
        if state.is_finished() {
            job.finished_ms = Some(job::now_ms());
        } else if state == JobState::Queued {
            job.error = None;
            job.finished_ms = None;
        }
        if state == JobState::Cancelled {
            let cleanup = finalize::Cleanup::partials(&job.dest_dir, job.id, job.file_count);
            self.pending_cleanups.push(cleanup);
        }
        self.store.put_job(&job)?;
        self.flush_pending = true;
        let info = self.job_info(&job);
        self.pending_events.push(event(info.clone()));
        Ok(info)
    }

    /// Change a job's priority (it keeps its FIFO position among equals).
    pub fn set_priority(
        &mut self,
        mut job: JobRecord,
        priority: i32,
    ) -> Result<JobInfo, StoreError> {
        job.priority = priority;
        self.store.put_job(&job)?;
        self.flush_pending = true;
        let info = self.job_info(&job);
        self.pending_events.push(Event::Updated(info.clone()));
        Ok(info)
    }

    /// Put a completed (or missing, or modified) file of a job that is not running back to
    /// pending with an empty checkpoint (its bytes are damaged or gone), and the job back in
    /// the queue. The caller deletes a leftover partial file first, off this task (see
    /// `handlers::verify`): nothing here touches the disk.
    pub fn requeue_file(&mut self, id: JobId, index: u32, note: &str) -> Result<bool, StoreError> {
        if self.running.contains_key(&id) {
            return Ok(false);
        }
        let (Some(mut job), Some(mut file)) =
            (self.store.get_job(id)?, self.store.get_file(id, index)?)
        else {
            return Ok(false);
        };
        if !matches!(
            file.state,
            FileState::Completed | FileState::Missing | FileState::Modified
        ) {
            return Ok(false);
        }
        file.state = FileState::Pending;
        file.checkpoint = FileCheckpoint::default();
        file.verified_sha256 = None;
        file.verified_stamp = None;
        file.verified_mtime_nanos = None;
        file.note = Some(note.to_string());
        self.store.put_file(id, index, &file)?;
        if job.state != JobState::Queued {
            job.state = JobState::Queued;
            job.error = None;
            job.finished_ms = None;
            self.store.put_job(&job)?;
        }
        self.flush_pending = true;
        Ok(true)
    }

    /// Announce a job as queued again (after [`Scheduler::requeue_file`]).
    pub fn announce_queued(&mut self, id: JobId) -> Result<Option<JobInfo>, StoreError> {
        let Some(job) = self.store.get_job(id)? else {
            return Ok(None);
        };
        let info = self.job_info(&job);
        self.pending_events.push(Event::Queued(info.clone()));
        Ok(Some(info))
    }

    /// Apply the config file's values for the keys `mdlctl` also sets at runtime. The rule: a
    /// key the file changed since it was last applied (or sets for the first time, or no
    /// longer sets: back to the default) takes the file's value; a key the file left alone
    /// keeps the value set with `mdlctl`. Returns the names of the keys applied.
    pub fn apply_file_values(
        &mut self,
        file: &FileValues,
    ) -> Result<Vec<&'static str>, StoreError> {
        let seen: FileValues = self.store.get_meta(META_FILE_VALUES)?.unwrap_or_default();
        let mut applied = Vec::new();
        if file.max_concurrent != seen.max_concurrent {
            self.set_concurrency(file.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT))?;
            applied.push("max_concurrent");
        }
        if file.bandwidth_limit != seen.bandwidth_limit {
            self.set_bandwidth_limit(None, file.bandwidth_limit.flatten())?;
            applied.push("bandwidth_limit");
        }
        let mut endpoints = self.hub_endpoints()?;
        for hub in crate::sources::HUBS {
            if file.endpoints.get(hub) != seen.endpoints.get(hub) && endpoints.remove(hub).is_some()
            {
                applied.extend(crate::settings::SourceSettings::key_of(hub));
            }
        }
        if *file != seen {
            self.store.put_meta(META_HUB_ENDPOINTS, &endpoints)?;
            self.store.put_meta(META_FILE_VALUES, file)?;
            self.flush_pending = true;
        }
        Ok(applied)
    }

    /// Update what the disk watchers report about themselves (for `Request::Health`).
    pub fn report_watch(&mut self, update: impl FnOnce(&mut WatchStatus)) {
        update(&mut self.watch);
    }

    /// Whether a drop-folder file with this key (a digest of its name and content) was
    /// queued before, by this daemon or an earlier one.
    pub fn was_dropped(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get_meta::<u64>(&format!("{META_DROPPED}{key}"))?
            .is_some())
    }

    /// Record that a drop-folder file was queued (durable before the call's reply), so that
    /// it is never queued again, also after a crash before it was renamed.
    pub fn record_dropped(&mut self, key: &str) -> Result<(), StoreError> {
        self.store
            .put_meta(&format!("{META_DROPPED}{key}"), &job::now_ms())?;
        self.flush_pending = true;
        Ok(())
    }

    /// The completed files of the completed, idle jobs after `after` (by id), a page at a
    /// time: whole jobs until `limit` files are gathered; with the id to go on after, or
    /// `None` after the last job. One page at a time keeps a store of 100k jobs light.
    pub fn completed_files_after(
        &self,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<(Vec<WatchedFile>, Option<JobId>), StoreError> {
        let mut out = Vec::new();
        for job in self.store.jobs_after(after) {
            let job = job?;
            // Only a completed job's files are watched: skip the others' file records.
            if job.state != JobState::Completed || self.running.contains_key(&job.id) {
                continue;
            }
            for (index, file) in self.store.files(job.id)?.iter().enumerate() {
                out.extend(self.watched(&job, index as u32, file));
            }
            if out.len() >= limit {
                return Ok((out, Some(job.id)));
            }
        }
        Ok((out, None))
    }

    /// The watched files of one job: none unless it is completed and idle.
    pub fn watched_files_of(&self, id: JobId) -> Result<Vec<WatchedFile>, StoreError> {
        let Some(job) = self.store.get_job(id)? else {
            return Ok(Vec::new());
        };
        if job.state != JobState::Completed || self.running.contains_key(&id) {
            return Ok(Vec::new());
        }
        let files = self.store.files(id)?;
        Ok(files
            .iter()
            .enumerate()
            .filter_map(|(index, file)| self.watched(&job, index as u32, file))
            .collect())
    }

    /// One file as [`Scheduler::completed_files_after`] lists it, if it is one of those.
    pub fn watched_file(&self, id: JobId, index: u32) -> Result<Option<WatchedFile>, StoreError> {
        let (Some(job), Some(file)) = (self.store.get_job(id)?, self.store.get_file(id, index)?)
        else {
            return Ok(None);
        };
        Ok(self.watched(&job, index, &file))
    }

    fn watched(&self, job: &JobRecord, index: u32, file: &FileRecord) -> Option<WatchedFile> {
        let watched = matches!(
            file.state,
            FileState::Completed | FileState::Missing | FileState::Modified
        );
        if job.state != JobState::Completed || self.running.contains_key(&job.id) || !watched {
            return None;
        }
        Some(WatchedFile {
            job: job.id,
            index,
            path: job.dest_dir.join(file.rel_path.as_ref()?),
            links: file.links.iter().map(|l| job.dest_dir.join(l)).collect(),
            stamp: file.verified_stamp,
            state: file.state,
        })
    }

    /// Mark a completed file of a completed, idle job as `missing` or `modified` (what the
    /// integrity watcher saw), or as `completed` again with its new time stamp (re-hashed and
    /// intact). Announces a `FileChanged` and an `Updated` event; false when the file is not
    /// in a state this applies to, or is in `state` already.
    pub fn mark_file(
        &mut self,
        id: JobId,
        index: u32,
        state: FileState,
        note: Option<String>,
        stamp: Option<(u64, i64)>,
    ) -> Result<bool, StoreError> {
        if self.running.contains_key(&id) {
            return Ok(false);
        }
        let (Some(job), Some(mut file)) =
            (self.store.get_job(id)?, self.store.get_file(id, index)?)
        else {
            return Ok(false);
        };
        let watched = matches!(
            file.state,
            FileState::Completed | FileState::Missing | FileState::Modified
        );
        if job.state != JobState::Completed || !watched || file.state == state {
            return Ok(false);
        }
        file.state = state;
        file.note = note.clone();
        if state == FileState::Completed {
            file.verified_stamp = stamp;
        }
        self.store.put_file(id, index, &file)?;
        self.flush_pending = true;
        let path = file
            .rel_path
            .as_ref()
            .map(|rel| job.dest_dir.join(rel).display().to_string())
            .unwrap_or_default();
        self.pending_events.push(Event::FileChanged(FileChange {
            job: id,
            path,
            state,
            note,
        }));
        let info = self.job_info(&job);
        self.pending_events.push(Event::Updated(info));
        Ok(true)
    }

    /// How the watched files and the watchers are (the reply to `Request::Health`).
    pub fn health_info(&self) -> HealthInfo {
        let w = &self.watch;
        HealthInfo {
            files_intact: w.files_intact,
            files_missing: w.files_missing,
            files_modified: w.files_modified,
            startup_check_done: w.startup_check_done,
            watch_mode: if w.mode.is_empty() {
                "off".into()
            } else {
                w.mode.clone()
            },
            poll_interval_ms: w.poll_interval_ms,
            repair: w.repair.clone(),
            watch_dir: w.watch_dir.clone(),
            watch_dir_error: w.watch_dir_error.clone(),
            dropped_queued: w.dropped_queued,
            dropped_invalid: w.dropped_invalid,
            config_file: w.config_file.clone(),
            config_loaded_ms: w.config_loaded_ms,
            config_error: w.config_error.clone(),
        }
    }

    /// Forget a finished job; returns the files to delete (its partial files, and with
    /// `delete_files` its completed files), for the caller to delete off this task.
    pub fn remove(
        &mut self,
        job: &JobRecord,
        delete_files: bool,
    ) -> Result<finalize::Cleanup, StoreError> {
        let mut cleanup = finalize::Cleanup::partials(&job.dest_dir, job.id, job.file_count);
        if delete_files && job.state == JobState::Completed {
            for file in self.store.files(job.id)? {
                // Never through a link that leads out of the destination.
                if let Some(path) = file
                    .rel_path
                    .and_then(|rel| names::safe_join(&job.dest_dir, &rel).ok())
                {
                    cleanup = cleanup.with_file(path);
                }
            }
        }
        self.store.delete_job(job)?;
        self.flush_pending = true;
        self.pending_events.push(Event::Removed(job.id));
        Ok(cleanup)
    }

    /// Change how many jobs run at once (kept across restarts).
    pub fn set_concurrency(&mut self, max: u32) -> Result<(), StoreError> {
        self.max_concurrent = max;
        self.store.put_meta(META_MAX_CONCURRENT, &max)?;
        self.flush_pending = true;
        Ok(())
    }

    /// Set or clear the global bandwidth limit, or one job's (kept across restarts).
    pub fn set_bandwidth_limit(
        &mut self,
        job: Option<JobRecord>,
        bytes_per_second: Option<u64>,
    ) -> Result<(), StoreError> {
        match job {
            None => {
                self.bandwidth_limit = bytes_per_second;
                self.runner_ctx
                    .engine
                    .global_limit()
                    .set_rate(bytes_per_second);
                self.store.put_meta(META_BANDWIDTH, &bytes_per_second)?;
            }
            Some(mut job) => {
                job.bandwidth_limit = bytes_per_second;
                self.store.put_job(&job)?;
                if let Some(running) = self.running.get(&job.id) {
                    running.limit.set_rate(bytes_per_second);
                }
            }
        }
        self.flush_pending = true;
        Ok(())
    }

    /// Store (or, with `None`, remove) the token of `hub` (one of [`crate::sources::HUBS`]).
    pub fn set_hub_token(&mut self, hub: &str, token: Option<Secret>) -> Result<(), StoreError> {
        let mut tokens = self.hub_tokens()?;
        match token {
            Some(token) => tokens.insert(hub.to_string(), token),
            None => tokens.remove(hub),
        };
        self.store.put_meta(META_HUB_TOKENS, &tokens)?;
        self.flush_pending = true;
        Ok(())
    }

    /// Set (or, with `None`, forget) the endpoint list of `hub` set at runtime, kept until the
    /// config file changes that hub's key; the lists in force become `base` (the config
    /// file's) with the ones set at runtime in place. Jobs resolved from now on use them.
    pub fn set_hub_endpoints(
        &mut self,
        hub: &str,
        endpoints: Option<Vec<String>>,
        base: &crate::settings::SourceSettings,
    ) -> Result<(), StoreError> {
        let mut all = self.hub_endpoints()?;
        match endpoints {
            Some(list) => all.insert(hub.to_string(), list),
            None => all.remove(hub),
        };
        self.store.put_meta(META_HUB_ENDPOINTS, &all)?;
        self.flush_pending = true;
        self.apply_hub_endpoints(base)
    }

    /// Put in force `base` (the config file's endpoints) with the lists set at runtime in
    /// place: at start, after a config reload, after a change.
    pub fn apply_hub_endpoints(
        &mut self,
        base: &crate::settings::SourceSettings,
    ) -> Result<(), StoreError> {
        let engine = &self.runner_ctx.engine;
        let mut next = (*engine.settings()).clone();
        next.sources = base.overlaid(&self.hub_endpoints()?);
        engine.reload(&next);
        Ok(())
    }

    // ---- Reads. ----

    /// The endpoint lists set at runtime, by hub.
    pub fn hub_endpoints(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        Ok(self.store.get_meta(META_HUB_ENDPOINTS)?.unwrap_or_default())
    }

    /// The stored hub tokens, by hub name.
    pub fn hub_tokens(&self) -> Result<BTreeMap<String, Secret>, StoreError> {
        Ok(self.store.get_meta(META_HUB_TOKENS)?.unwrap_or_default())
    }

    /// The stored token a job of a hub gets when it carries none of its own.
    pub fn stored_token_for(&self, job: &JobRecord) -> Option<Secret> {
        if job.token.is_some() {
            return None;
        }
        let hub = crate::sources::hub_name(&job.parsed_source)?;
        match self.hub_tokens() {
            Ok(mut tokens) => tokens.remove(hub),
            Err(e) => {
                tracing::warn!("cannot read the stored hub tokens: {e}");
                None
            }
        }
    }

    /// One job's record.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.store.get_job(id)
    }

    /// Every job's record.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.store.all_jobs()
    }

    /// The file records of a job.
    pub fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        self.store.files(id)
    }

    /// The jobs that download `source` to `dest_dir` (under `file_name`), oldest first.
    pub fn jobs_for_destination(
        &self,
        key: &crate::store::DestinationKey,
    ) -> Result<Vec<JobId>, StoreError> {
        self.store.jobs_for_destination(key)
    }

    /// Whether a job is running now.
    pub fn is_running(&self, id: JobId) -> bool {
        self.running.contains_key(&id)
    }

    /// What opening the store found and repaired, and whether it accepts writes now.
    pub fn store_health(&self) -> mdl_protocol::StoreHealth {
        let mut health = self.store.health().clone();
        health.write_error = self.store_write_error.clone();
        health
    }

    /// The daemon's own status.
    pub fn daemon_info(&self) -> DaemonInfo {
        // The queue index holds the queued and the running jobs: no scan of the history.
        let queued = self
            .store
            .queue_order()
            .map(|ids| {
                ids.iter()
                    .filter(|id| !self.running.contains_key(id))
                    .count()
            })
            .unwrap_or(0);
        DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
            socket: self.settings.socket.display().to_string(),
            data_dir: self.settings.data_dir.display().to_string(),
            max_concurrent: self.max_concurrent,
            bandwidth_limit: self.bandwidth_limit,
            running: self.running.len() as u32,
            queued: queued as u32,
            uptime_ms: self.started.elapsed().as_millis() as u64,
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
        let limit = Arc::new(RateLimiter::new(job.bandwidth_limit));
        self.running.insert(
            id,
            Running {
                cancel: cancel.clone(),
                stop: None,
                live: live.clone(),
                limit: limit.clone(),
                stopped: Vec::new(),
            },
        );
        self.flush_pending = true;
        self.pending_events
            .push(Event::Started(job::job_info(&job, &files, &[])));
        tracing::info!(job = id, source = %job::redact_url(&job.source), "starting");
        // The runner's copy gets the hub's stored token; the job record keeps none.
        if let Some(token) = self.stored_token_for(&job) {
            job.token = Some(token);
        }
        let ctx = self.runner_ctx.clone();
        let report = ctx.scheduler.clone();
        let runner = tokio::spawn(runner::run_job(ctx, job, files, cancel, live, limit));
        // Supervise the runner: one that panics fails its job and frees its slot.
        tokio::spawn(async move {
            if let Err(e) = runner.await {
                if e.is_panic() {
                    tracing::error!(job = id, "the download task panicked: {e}");
                    let _ = report.send(RunnerMessage::Finished {
                        job: id,
                        outcome: RunOutcome::Failed(ErrorInfo {
                            kind: ErrorKind::Other,
                            message: "internal error: the download task crashed; `mdlctl resume` tries again".into(),
                        }),
                    });
                }
            }
        });
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
                    record.resolved_revision = revision;
                }
                self.store.put_job(&record)?;
                self.flush_pending = true;
                self.pending_events
                    .push(Event::Updated(job::job_info(&record, &files, &[])));
            }
            RunnerMessage::File {
                job,
                index,
                record,
                durable,
            } => {
                // A late checkpoint of a job that was removed meanwhile must not resurrect it.
                let Some(owner) = self.store.get_job(job)? else {
                    return Ok(());
                };
                // Which completed file holds each final path (so that a second job never
                // silently replaces another's verified file): an index in the store.
                if let (FileState::Completed, Some(rel)) = (record.state, &record.rel_path) {
                    self.store
                        .set_owner(&owner.dest_dir.join(rel), job, index)?;
                }
                self.store.put_file(job, index, &record)?;
                // Group commit: one flush for every checkpoint that arrived together.
                self.flush_pending |= durable;
            }
            RunnerMessage::OwnerOf {
                job,
                path,
                sha256,
                reply,
            } => {
                let _ = reply.send(self.other_owner(job, &path, &sha256)?);
            }
            RunnerMessage::FindBySha256 { sha256, reply } => {
                let _ = reply.send(self.find_verified(&sha256)?);
            }
            RunnerMessage::Finished { job, outcome } => {
                let (stop, waiters) = match self.running.remove(&job) {
                    Some(running) => (running.stop, running.stopped),
                    None => (None, Vec::new()),
                };
                self.finish(job, outcome, stop).await?;
                for waiter in waiters {
                    self.pending_replies.push(Box::new(move |_| {
                        let _ = waiter.send(());
                    }));
                }
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
            (RunOutcome::Interrupted, _) | (_, Some(StopReason::Requeue)) => {
                (JobState::Queued, Event::Updated)
            }
            (RunOutcome::Failed(error), _) if error.kind == ErrorKind::NoSpace => {
                job.error = Some(error.clone());
                (JobState::Paused, Event::Paused)
            }
            (RunOutcome::Failed(error), _) => {
                job.error = Some(error.clone());
                (JobState::Failed, Event::Failed)
            }
        };
        if let RunOutcome::Failed(error) = &outcome {
            tracing::warn!(job = id, kind = error.kind.as_str(), "{}", error.message);
        } else {
            tracing::info!(job = id, state = state.as_str(), "job stopped");
        }
        self.transition(job, state, event)?;
        // A full disk may be the data directory's too: then the store stops the queue, and
        // resumes it (this job included) once there is space.
        if matches!(&outcome, RunOutcome::Failed(e) if e.kind == ErrorKind::NoSpace) {
            self.store_has_headroom();
        }
        Ok(())
    }

    /// A completed file with this sha256 that still looks as it was verified (same size and
    /// modification time, to the nanosecond where recorded), from any job and any source.
    pub fn find_verified(&self, sha256: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
        for (id, index) in self.store.files_with_sha256(sha256)? {
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
            // A cheap filter (the runner re-hashes the candidate before reusing it).
            let stamp = finalize::file_stamp(&path);
            let nanos_match = file
                .verified_mtime_nanos
                .is_none_or(|n| finalize::file_mtime_nanos(&path) == Some(n));
            if stamp.is_some() && stamp == file.verified_stamp && nanos_match {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Another job whose completed, verified file is at `path` with other bytes than `sha256`.
    fn other_owner(
        &self,
        job: JobId,
        path: &std::path::Path,
        sha256: &str,
    ) -> Result<Option<JobId>, StoreError> {
        let Some((other, index)) = self.store.owner_of(path)? else {
            return Ok(None);
        };
        if other == job {
            return Ok(None);
        }
        let (Some(record), Some(file)) = (
            self.store.get_job(other)?,
            self.store.get_file(other, index)?,
        ) else {
            return Ok(None);
        };
        let same_path = file
            .rel_path
            .as_ref()
            .is_some_and(|rel| record.dest_dir.join(rel) == path);
        let held = record.state == JobState::Completed && file.state == FileState::Completed;
        let differs = file.verified_sha256.as_deref() != Some(sha256);
        Ok((same_path && held && differs).then_some(other))
    }

    /// The wire view of one job, with live byte counts if it runs.
    pub fn job_info(&self, job: &JobRecord) -> JobInfo {
        let files: Vec<FileRecord> = self.store.files(job.id).unwrap_or_default();
        let live = self
            .running
            .get(&job.id)
            .map(|r| r.live.snapshot())
            .unwrap_or_default();
        let mut info = job::job_info(job, &files, &live);
        // Stopped for a store that cannot write: the record may still say running.
        if let Some(reason) = &self.store_write_error {
            if matches!(info.state, JobState::Running | JobState::Queued)
                && !self.running.contains_key(&job.id)
            {
                info.state = JobState::Queued;
                info.error = Some(ErrorInfo {
                    kind: if reason.contains("space") {
                        ErrorKind::NoSpace
                    } else {
                        ErrorKind::Other
                    },
                    message: format!(
                        "waiting: the store cannot save progress ({reason}); resumes by itself \
                         once the data directory has space"
                    ),
                });
            }
        }
        info
    }

    /// The runnable jobs in run order, and their ids (to leave out of the pages that follow).
    pub fn queued_job_infos(&self) -> (Vec<JobInfo>, std::collections::HashSet<JobId>) {
        let order = self.store.queue_order().unwrap_or_default();
        let infos = order
            .iter()
            .filter_map(|id| self.store.get_job(*id).ok().flatten())
            .map(|job| self.job_info(&job))
            .collect();
        (infos, order.into_iter().collect())
    }

    /// The jobs that cannot run (finished, failed, paused...), to be read page by page beside
    /// the scheduler: their views need nothing but their records, so a long listing does not
    /// hold up the scheduler.
    pub fn settled_jobs(&self) -> SettledJobs {
        SettledJobs {
            records: self.store.reader(),
        }
    }
}

/// How many events the bus holds for a subscriber that has not read them yet.
const EVENT_CAPACITY: usize = 1024;

/// The events of the batches since the last commit, sent once their records are flushed. A
/// batch that makes more than the bus holds (an add of 10k sources) would make every
/// subscriber lag anyway, as the bus drops the oldest: the backlog keeps only the newest
/// events that fit, and counts the others, so that the commit sends [`Event::Lagged`] with
/// that count first (subscribers then ask for a new snapshot, as after any lag). A bulk add
/// holds at most a bus's worth of job views for its events, not one per source.
#[derive(Default)]
struct EventBacklog {
    events: std::collections::VecDeque<Event>,
    missed: u64,
}

impl EventBacklog {
    /// Add an event, dropping the oldest when the bus could not hold them all.
    fn push(&mut self, event: Event) {
        // One place stays for the `Lagged` that announces the dropped ones.
        if self.events.len() >= EVENT_CAPACITY - 1 {
            self.events.pop_front();
            self.missed += 1;
        }
        self.events.push_back(event);
    }

    /// The events to send, in order (first a `Lagged` if some were dropped); empties it.
    fn take(&mut self) -> Vec<Event> {
        let missed = std::mem::take(&mut self.missed);
        let lagged = (missed > 0).then_some(Event::Lagged { missed });
        lagged.into_iter().chain(self.events.drain(..)).collect()
    }
}

/// A read-only view of the jobs that cannot run ([`Scheduler::settled_jobs`]), for listings
/// read beside the scheduler: no live bytes and no runner belong to them, so their records
/// alone make their views.
#[derive(Clone)]
pub struct SettledJobs {
    records: crate::store::RecordReader,
}

impl SettledJobs {
    /// Up to `limit` jobs with ids above `after` (all with `None`) that are not runnable and
    /// not in `skip`, by id; and the id to continue after, unless this was the last page.
    /// Records are read one at a time: memory holds one page.
    pub fn page_after(
        &self,
        after: Option<JobId>,
        limit: usize,
        skip: &std::collections::HashSet<JobId>,
    ) -> Result<(EncodedJobs, Option<JobId>), StoreError> {
        let mut infos = EncodedJobs::new();
        for entry in self.records.views_after(after) {
            let (id, view) = entry?;
            if skip.contains(&id) {
                continue;
            }
            match view {
                Some(view) => infos.push_encoded(view.encoded()),
                // Out of date: from the records, as they are now.
                None => match self.records.job(id)? {
                    Some(job) if !crate::store::is_runnable(job.state) => {
                        // A file record that does not decode lists the job without its files
                        // (as `status` does; the store's health reports the damage).
                        let files = self.records.files(id).unwrap_or_default();
                        infos.push(&job::job_info(&job, &files, &[])).map_err(|e| {
                            StoreError::Record {
                                key: format!("jobs/{id}"),
                                message: e.to_string(),
                            }
                        })?;
                    }
                    _ => continue,
                },
            }
            if infos.len() >= limit {
                return Ok((infos, Some(id)));
            }
        }
        Ok((infos, None))
    }
}

/// A scheduler on a temporary store, for unit tests of the handlers (no task, no socket).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A scheduler whose store and downloads live in `dir`, and a subscriber to its events.
    pub(crate) fn scheduler(dir: &std::path::Path) -> (Scheduler, broadcast::Receiver<Event>) {
        let mut settings = Settings::new(dir.join("mdld.sock"), dir.join("data"));
        settings.download_dir = dir.join("downloads");
        let engine = Engine::new(settings.engine.clone()).unwrap();
        let (scheduler, _runner_rx) =
            Scheduler::open(Arc::new(settings), engine, CancellationToken::new()).unwrap();
        let events = scheduler.events.subscribe();
        (scheduler, events)
    }

    /// The scheduler's engine (its settings are the ones in force).
    pub(crate) fn engine(scheduler: &Scheduler) -> Engine {
        scheduler.runner_ctx.engine.clone()
    }

    /// Commit like the scheduler's loop does after each batch.
    pub(crate) async fn commit(scheduler: &mut Scheduler) {
        scheduler.commit().await;
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{commit, scheduler};
    use super::*;

    fn url_job(dir: &std::path::Path) -> JobRecord {
        let request = mdl_protocol::AddRequest {
            source: "http://127.0.0.1:9/model.bin".into(),
            ..Default::default()
        };
        let source = crate::job::Source::Url(request.source.clone());
        JobRecord::from_add(&request, source, Default::default(), dir.to_path_buf())
    }

    #[test]
    fn a_backlog_larger_than_the_bus_keeps_the_newest_events_after_a_lagged() {
        let removed = |id: u64| Event::Removed(id);
        let ids = |events: &[Event]| {
            events
                .iter()
                .map(|e| match e {
                    Event::Removed(id) => *id,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let mut backlog = EventBacklog::default();
        for id in 0..(EVENT_CAPACITY as u64 - 1) {
            backlog.push(removed(id));
        }
        let all = backlog.take();
        assert_eq!(
            ids(&all),
            (0..EVENT_CAPACITY as u64 - 1).collect::<Vec<_>>()
        );
        assert!(backlog.take().is_empty());

        let total = EVENT_CAPACITY as u64 + 500;
        for id in 0..total {
            backlog.push(removed(id));
        }
        let sent = backlog.take();
        assert_eq!(sent.len(), EVENT_CAPACITY, "no more than the bus holds");
        assert!(
            matches!(sent[0], Event::Lagged { missed: 501 }),
            "{:?}",
            sent[0]
        );
        assert_eq!(ids(&sent[1..]), (501..total).collect::<Vec<_>>());
        backlog.push(removed(7));
        assert_eq!(ids(&backlog.take()), [7], "the count starts again");
    }

    #[tokio::test]
    async fn events_go_out_only_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut scheduler, mut events) = scheduler(dir.path());
        let info = scheduler
            .queue(url_job(dir.path()), &[], Event::Queued)
            .unwrap();
        let job = scheduler.job(info.id).unwrap().unwrap();
        scheduler
            .transition(job, JobState::Paused, Event::Paused)
            .unwrap();
        assert!(events.try_recv().is_err(), "an event before the flush");
        assert!(scheduler.flush_pending);
        commit(&mut scheduler).await;
        assert!(!scheduler.flush_pending);
        assert!(matches!(events.try_recv(), Ok(Event::Queued(j)) if j.id == info.id));
        assert!(matches!(events.try_recv(), Ok(Event::Paused(j)) if j.state == JobState::Paused));
    }

    #[tokio::test]
    async fn a_reply_waits_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut scheduler, _events) = scheduler(dir.path());
        let (reply, mut answer) = oneshot::channel::<Result<(), String>>();
        let info = scheduler
            .queue(url_job(dir.path()), &[], Event::Queued)
            .unwrap();
        scheduler.pending_replies.push(Box::new(move |durable| {
            let _ = reply.send(durable);
        }));
        assert!(answer.try_recv().is_err(), "a reply before the flush");
        commit(&mut scheduler).await;
        assert_eq!(answer.try_recv().unwrap(), Ok(()));
        // Durable: a second store on the same directory cannot open while this one holds it,
        // so read the record back through this one after the flush.
        assert_eq!(
            scheduler.job(info.id).unwrap().unwrap().state,
            JobState::Queued
        );
    }

    #[tokio::test]
    async fn cancelling_deletes_partial_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut scheduler, _events) = scheduler(dir.path());
        let info = scheduler
            .queue(url_job(dir.path()), &[], Event::Queued)
            .unwrap();
        let part = job::part_path(dir.path(), info.id, 0);
        std::fs::write(&part, b"partial").unwrap();
        let job = scheduler.job(info.id).unwrap().unwrap();
        scheduler
            .transition(job, JobState::Cancelled, Event::Cancelled)
            .unwrap();
        // Deleted after the commit, on a blocking thread, never in the scheduler's task.
        assert!(part.exists(), "deleted inside the scheduler's task");
        commit(&mut scheduler).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while part.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the partial file stayed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let job = scheduler.job(info.id).unwrap().unwrap();
        assert!(job.finished_ms.is_some());
    }
}
