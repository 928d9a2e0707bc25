//! The download engine: fetches one file over HTTP(S) into a partial file, resuming with
//! `Range` + `If-Range`, retrying with backoff, hashing as it writes, and checkpointing its
//! byte ranges durably. [`finalize`] then verifies and renames the file into place.
//!
//! The engine holds no job state: the caller passes in what the store remembers
//! ([`FileCheckpoint`]) and receives durable checkpoints back through a [`FetchObserver`].

pub mod finalize;
pub mod growth;
pub mod limit;
pub mod names;
pub mod proxy;
pub mod retry;
pub mod segmented;
pub mod segments;
pub mod sidecar;
pub mod space;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use mdl_protocol::ErrorKind;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::job::FileCheckpoint;
use crate::ranges::RangeSet;
use crate::settings::{EngineSettings, Live};
use retry::{classify_status, parse_retry_after, Retries, StatusClass};
use writer::WriterHandle;
pub use writer::{CheckpointSink, Digests, HashPlan};

/// A response body as a stream of chunks.
pub(crate) type BodyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Received bytes between two progress reports of a stream (keeps the per-chunk path cheap).
const PROGRESS_STEP: u64 = 64 * 1024;

/// How long one connection runs before the engine decides whether to split the file.
const SPLIT_PROBE: Duration = Duration::from_millis(150);

/// A connection that is clearly slow (under half of `single_stream_above`) is split after this
/// much of the probe already: while the probe runs, a capped link fetches at one connection's
/// rate, so every millisecond of it costs the other connections' share (measured: the 150 ms
/// probe was most of the gap to the limit of 16 capped connections).
const EARLY_SPLIT_PROBE: Duration = Duration::from_millis(40);

/// Whether the probe of one connection has seen enough: `Some(true)` to split into segments,
/// `Some(false)` to stay one stream, `None` to keep probing. A rate under half the threshold
/// decides after [`EARLY_SPLIT_PROBE`]; anything else waits for the whole [`SPLIT_PROBE`].
fn split_decision(elapsed: Duration, received: u64, single_stream_above: u64) -> Option<bool> {
    if elapsed < EARLY_SPLIT_PROBE {
        return None;
    }
    let rate = received as f64 / elapsed.as_secs_f64();
    let threshold = single_stream_above as f64;
    if rate < threshold / 2.0 {
        return Some(true);
    }
    (elapsed >= SPLIT_PROBE).then_some(rate < threshold)
}

/// A buffer is handed to the writer after this long even when it is not full: on a slow link
/// what a kill -9 can lose (received, not yet written) stays small.
pub const WRITE_AFTER: Duration = Duration::from_millis(100);

/// Buffers (of `write_buffer_bytes` each) queued to a writer thread before receiving waits:
/// bounds memory per file, and the bytes a crash can lose beyond the last checkpoint.
pub const WRITE_QUEUE_DEPTH: usize = 4;

/// Received chunks waiting to be handed to the writer together (one vectored write).
#[derive(Default)]
pub(crate) struct Pending {
    chunks: writer::Chunks,
    /// Their total length.
    len: u64,
}

impl Pending {
    /// Add a received chunk (empty ones are dropped).
    pub(crate) fn push(&mut self, chunk: bytes::Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len() as u64;
            self.chunks.push(chunk);
        }
    }

    /// Take the chunks and their length, leaving this empty.
    pub(crate) fn take(&mut self) -> (writer::Chunks, u64) {
        (
            std::mem::take(&mut self.chunks),
            std::mem::replace(&mut self.len, 0),
        )
    }
}

/// Why a fetch stopped without the whole file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The caller cancelled (pause, cancel, shutdown); a final checkpoint was written.
    #[error("interrupted")]
    Interrupted,
    /// A failure that retrying will not fix, or retries ran out.
    #[error("{message}")]
    Failed {
        /// The kind (decides exit codes).
        kind: ErrorKind,
        /// What happened, for a person; never contains secrets.
        message: String,
        /// The HTTP status, if the failure was one.
        status: Option<u16>,
    },
}

impl FetchError {
    /// A failure of `kind`.
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        FetchError::Failed {
            kind,
            message: message.into(),
            status: None,
        }
    }

    /// The error kind (`Other` for an interruption).
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Interrupted => ErrorKind::Other,
            FetchError::Failed { kind, .. } => *kind,
        }
    }
}

/// Map an I/O error on the partial file to a fetch error.
pub fn io_failure(context: &str, error: std::io::Error) -> FetchError {
    if space::is_no_space(&error) {
        FetchError::failed(
            ErrorKind::NoSpace,
            format!("no space left on device ({context})"),
        )
    } else {
        FetchError::failed(ErrorKind::Other, format!("{context}: {error}"))
    }
}

/// What the first successful response said about the file.
#[derive(Debug, Clone, Default)]
pub struct ResponseInfo {
    /// The `Content-Disposition` header, if any.
    pub content_disposition: Option<String>,
    /// Scheme, host and port that served the bytes (after redirects).
    pub endpoint: String,
    /// The full length, if the server said.
    pub total: Option<u64>,
    /// The server ignores `Range`: the download runs as one stream from the start.
    pub no_ranges: bool,
}

/// Observes a fetch: responses, progress and durable checkpoints.
pub trait FetchObserver: CheckpointSink {
    /// A response with a body is about to be read.
    fn response(&self, info: &ResponseInfo);
    /// Bytes of this file received so far (not yet necessarily durable).
    fn progress(&self, bytes: u64);
    /// A failed attempt that will be retried after `delay`.
    fn retrying(&self, message: &str, delay: Duration) {
        let _ = (message, delay);
    }
    /// Every byte is received and handed to the writer; the file's last sync and hashing run
    /// now. Work that needs the complete file but not its digests can start here, alongside.
    fn received(&self) {}
}

/// One file to fetch.
pub struct FetchSpec {
    /// The URL (redirects are followed).
    pub url: String,
    /// Extra headers (e.g. `Authorization`); reqwest drops sensitive ones on cross-host redirects.
    pub headers: HeaderMap,
    /// The partial file.
    pub part_path: PathBuf,
    /// The expected size, if the source told us.
    pub expected_size: Option<u64>,
    /// What an earlier attempt left (ranges, validators).
    pub checkpoint: FileCheckpoint,
    /// Digests to compute besides sha256.
    pub hashes: HashPlan,
    /// The job's bandwidth limit (the global one is the engine's).
    pub job_limit: Option<Arc<limit::RateLimiter>>,
}

/// The HTTP engine. Cheap to clone: the connection pool is shared.
///
/// Each job works with its own view ([`Engine::for_job`]): the same limits and host slots,
/// with the HTTP client of the job's proxy configuration (or the offline client). Clients are
/// cached by configuration, so jobs with the same proxies (most often: none) share one pool.
#[derive(Clone)]
pub struct Engine {
    http: reqwest::Client,
    /// The proxies of `http`, and whether it is the offline client.
    network: (proxy::ProxyConfig, bool),
    /// Replaced as a whole when the config file is reloaded ([`Engine::reload`]).
    settings: Arc<Live<EngineSettings>>,
    global_limit: Arc<limit::RateLimiter>,
    /// One semaphore per host with the limit it was sized for: the connection cap that holds
    /// across all jobs.
    host_slots: Arc<std::sync::Mutex<std::collections::HashMap<String, HostSlots>>>,
    /// One client per proxy configuration (and offline), built on first use.
    clients: Arc<
        std::sync::Mutex<std::collections::HashMap<(proxy::ProxyConfig, bool), reqwest::Client>>,
    >,
}

/// The connection slots of one host.
struct HostSlots {
    semaphore: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl Engine {
    /// An engine with its own connection pool; its default client (for requests outside a
    /// job) uses the daemon's proxy variables and the config's global `proxy`.
    pub fn new(settings: EngineSettings) -> Result<Engine, FetchError> {
        let daemon_env = |k: &str| std::env::var(k).ok();
        let config = proxy::ProxyConfig::for_daemon(&settings.network, &daemon_env);
        let http = build_client(&settings, &config, false)?;
        let network = (config, false);
        let clients = std::collections::HashMap::from([(network.clone(), http.clone())]);
        Ok(Engine {
            http,
            network,
            settings: Arc::new(Live::new(settings)),
            global_limit: Arc::new(limit::RateLimiter::new(None)),
            host_slots: Default::default(),
            clients: Arc::new(std::sync::Mutex::new(clients)),
        })
    }

    /// The engine as `job` sees it: the client of the job's proxies (its forwarded variables,
    /// the daemon's, the hub's and the global config, in that order), or the offline client
    /// that can open no connection. Limits and host slots stay shared.
    pub fn for_job(&self, job: &crate::job::JobRecord) -> Result<Engine, FetchError> {
        let daemon_env = |k: &str| std::env::var(k).ok();
        let settings = self.settings();
        let network = &settings.network;
        let offline = proxy::is_offline(job, network, &daemon_env);
        let config = if offline {
            proxy::ProxyConfig::default()
        } else {
            proxy::ProxyConfig::for_job(job, network, &daemon_env)
        };
        let key = (config, offline);
        if key == self.network {
            return Ok(self.clone());
        }
        let cached = self
            .clients
            .lock()
            .expect("clients lock")
            .get(&key)
            .cloned();
        let http = match cached {
            Some(http) => http,
            None => {
                let http = build_client(&settings, &key.0, offline)?;
                if !offline {
                    tracing::info!(job = job.id, proxy = %key.0.describe(), "new HTTP client for a proxy configuration");
                }
                self.clients
                    .lock()
                    .expect("clients lock")
                    .entry(key.clone())
                    .or_insert(http)
                    .clone()
            }
        };
        Ok(Engine {
            http,
            network: key,
            ..self.clone()
        })
    }

    /// True for a job's offline engine: resolve from local data only.
    pub fn offline(&self) -> bool {
        self.network.1
    }

    /// The proxies this engine's client uses.
    pub fn proxy(&self) -> &proxy::ProxyConfig {
        &self.network.0
    }

    /// The HTTP client (for source resolvers that call hub APIs).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Wait for a connection slot to the host of `url` (held until the permit drops).
    pub async fn host_slot(&self, url: &str) -> tokio::sync::OwnedSemaphorePermit {
        let host = host_of(url);
        let semaphore = {
            let mut slots = self.host_slots.lock().expect("host slots lock");
            slots
                .entry(host.clone())
                .or_insert_with(|| {
                    let limit = self.settings().connections_for(&host);
                    HostSlots {
                        semaphore: Arc::new(tokio::sync::Semaphore::new(limit)),
                        limit,
                    }
                })
                .semaphore
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .expect("host semaphores are never closed")
    }

    /// The limit shared by every download.
    pub fn global_limit(&self) -> &Arc<limit::RateLimiter> {
        &self.global_limit
    }

    /// The engine's settings now (a snapshot: a reload does not change it under the caller).
    pub fn settings(&self) -> Arc<EngineSettings> {
        self.settings.get()
    }

    /// Apply reloaded settings: the runtime keys (endpoints, per-host limits) of `next` take
    /// effect for every request from now on; the HTTP client's own settings (timeouts, user
    /// agent, redirects) stay until the next start. Each host's connection cap is resized in
    /// place: raised at once, lowered as connections finish (the removed permits are taken
    /// and forgotten), so the cap holds across the change.
    pub fn reload(&self, next: &EngineSettings) {
        let next = self.settings().with_runtime_keys_of(next);
        let mut slots = self.host_slots.lock().expect("host slots lock");
        for (host, slot) in slots.iter_mut() {
            let limit = next.connections_for(host);
            if limit > slot.limit {
                slot.semaphore.add_permits(limit - slot.limit);
            } else if limit < slot.limit {
                let surplus = (slot.limit - limit) as u32;
                let semaphore = slot.semaphore.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(surplus).await {
                        permits.forget();
                    }
                });
            }
            slot.limit = limit;
        }
        self.settings.set(next);
    }

    /// Fetch one file into `spec.part_path`, resuming from `spec.checkpoint`. Returns the
    /// digests of the complete file; verification against expected values is the caller's
    /// (see [`finalize`]).
    pub async fn fetch(
        &self,
        spec: FetchSpec,
        observer: Arc<dyn FetchObserver>,
        cancel: &CancellationToken,
    ) -> Result<Digests, FetchError> {
        let mut checkpoint = spec.checkpoint.clone();
        // Trust only ranges that are really inside the partial file.
        let on_disk = std::fs::metadata(&spec.part_path).map(|m| m.len()).ok();
        let boot = sidecar::boot_id();
        let sidecar_path = sidecar::path_for(&spec.part_path);
        match (on_disk, sidecar::read(&sidecar_path)) {
            // Same boot: the page cache still holds every range whose pwrite returned, and the
            // sidecar is newer than the store's durable checkpoint.
            (Some(_), Some(written)) if Some(&written.boot_id) == boot.as_ref() => {
                tracing::debug!(
                    durable = checkpoint.ranges.covered(),
                    written = written.ranges.covered(),
                    "same boot: trusting the written ranges"
                );
                checkpoint.ranges = written.ranges;
                checkpoint.total = written.total;
                checkpoint.etag = written.etag;
                checkpoint.last_modified = written.last_modified;
            }
            (Some(_), Some(_)) => tracing::info!(
                durable = checkpoint.ranges.covered(),
                "the machine rebooted since these bytes were written: trusting only the durable ranges"
            ),
            _ => {}
        }
        let on_disk = on_disk.unwrap_or(0);
        let mut kept = RangeSet::new();
        for &(start, end) in checkpoint.ranges.ranges() {
            kept.insert(start, end.min(on_disk));
        }
        checkpoint.ranges = kept;
        let prefix = checkpoint.ranges.contiguous_prefix();
        let sink: Arc<dyn CheckpointSink> = observer.clone() as Arc<dyn CheckpointSink>;
        let small_limit = self.settings().write_buffer_bytes as u64;
        let small = checkpoint.ranges.covered() == 0
            && spec.expected_size.is_none_or(|size| size <= small_limit);
        let mut writer = if small {
            // A new file that may well be small: held in memory, written, synced and hashed in
            // one go at the end (no writer thread), or handed to the threads as it grows.
            WriterHandle::lazy(
                &spec.part_path,
                spec.hashes,
                sink,
                WRITE_QUEUE_DEPTH,
                boot.map(|boot| (sidecar_path, boot)),
                small_limit,
            )
        } else {
            let sidecar = match boot {
                Some(boot) => Some(
                    sidecar::Sidecar::open(&sidecar_path, boot)
                        .map_err(|e| io_failure("cannot open the partial file's sidecar", e))?,
                ),
                None => None,
            };
            WriterHandle::spawn_with(
                &spec.part_path,
                checkpoint.clone(),
                spec.hashes,
                sink,
                WRITE_QUEUE_DEPTH,
                sidecar,
            )
            .map_err(|e| io_failure("cannot open the partial file", e))?
        };
        let mut attempt = Attempt {
            engine: self,
            spec: &spec,
            observer: &*observer,
            cancel,
            ranges: checkpoint.ranges.clone(),
            checkpoint,
            pos: prefix,
            single_stream: false,
        };
        let started = Instant::now();
        match attempt.run(&mut writer).await {
            Ok(()) => {
                observer.progress(attempt.pos);
                observer.received();
                let received = started.elapsed();
                let finished = writer
                    .finish()
                    .await
                    .map_err(|e| io_failure("cannot finish the partial file", e));
                // The tail after the last byte (the last fsync, the hash catching up).
                tracing::debug!(
                    receive_ms = received.as_secs_f64() * 1e3,
                    finish_ms = (started.elapsed() - received).as_secs_f64() * 1e3,
                    "fetched"
                );
                finished
            }
            Err(err) => {
                // Make what we have durable before giving up, so a resume loses nothing.
                // (the writer records its own ranges into the checkpoint)
                let _ = writer.checkpoint(attempt.checkpoint.clone()).await;
                let _ = writer.close().await;
                Err(err)
            }
        }
    }
}

/// A client with the engine's timeouts and redirect policy, and `config`'s proxies (never
/// reqwest's own reading of the environment), or the offline client.
fn build_client(
    settings: &EngineSettings,
    config: &proxy::ProxyConfig,
    offline: bool,
) -> Result<reqwest::Client, FetchError> {
    let builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(settings.max_redirects))
        .tcp_nodelay(true);
    let builder = if offline {
        proxy::offline(builder)?
    } else {
        config.apply(builder)?
    };
    builder.build().map_err(|e| {
        FetchError::failed(
            ErrorKind::Other,
            format!("cannot set up the HTTP client: {}", describe_reqwest(&e)),
        )
    })
}

/// Decides when one connection has stalled: no byte for `max(stall_min, 20 × the longest of
/// its recent waits for a chunk)`, and never longer than `stall_timeout`. A steady slow link
/// (a chunk every 200 ms at 50 KB/s) keeps a limit of a few seconds; a bursty one earns a
/// longer one from its own gaps.
pub(crate) struct StallClock {
    recent: [Duration; 16],
    next: usize,
    min: Duration,
    max: Duration,
}

impl StallClock {
    /// A clock for a new connection.
    pub(crate) fn new(settings: &EngineSettings) -> StallClock {
        StallClock {
            recent: [Duration::ZERO; 16],
            next: 0,
            min: settings.stall_min,
            max: settings.stall_timeout,
        }
    }

    /// How long the next wait for a chunk may last.
    pub(crate) fn limit(&self) -> Duration {
        let longest = self.recent.iter().max().copied().unwrap_or_default();
        longest.saturating_mul(20).max(self.min).min(self.max)
    }

    /// A chunk arrived after waiting `waited` for it.
    pub(crate) fn arrived(&mut self, waited: Duration) {
        self.recent[self.next % self.recent.len()] = waited;
        self.next += 1;
    }

    /// Wait for the next chunk of `stream`; `Err(limit)` when it stalled.
    pub(crate) async fn next(
        &mut self,
        stream: &mut BodyStream,
    ) -> Result<Option<reqwest::Result<bytes::Bytes>>, Duration> {
        let limit = self.limit();
        let started = Instant::now();
        let next = tokio::time::timeout(limit, stream.next())
            .await
            .map_err(|_| limit)?;
        self.arrived(started.elapsed());
        Ok(next)
    }
}

/// The state of one fetch across its attempts.
struct Attempt<'a> {
    engine: &'a Engine,
    spec: &'a FetchSpec,
    observer: &'a dyn FetchObserver,
    cancel: &'a CancellationToken,
    checkpoint: FileCheckpoint,
    /// Bytes handed to the writer: the next offset to fetch in a single stream.
    pos: u64,
    /// Ranges already in the partial file beyond `pos` (from segments).
    ranges: RangeSet,
    /// Segments failed for this server: fetch as one stream.
    single_stream: bool,
}

/// What an attempt's response turned out to be.
enum Accepted {
    /// We have every byte already (a `416` for exactly our length).
    AlreadyComplete,
    /// A body to read; `ranges_ok` when the server takes ranges (so segments may follow).
    Body { ranges_ok: bool },
}

/// One failed attempt.
enum AttemptError {
    /// Worth retrying; `progressed` resets the failure count.
    Retry {
        message: String,
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
    /// Stop now.
    Stop(FetchError),
}

impl<'a> Attempt<'a> {
    async fn run(&mut self, writer: &mut WriterHandle) -> Result<(), FetchError> {
        let settings = &*self.engine.settings();
        let mut retries = Retries::new(settings, settings.max_attempts);
        loop {
            if self.cancel.is_cancelled() {
                return Err(FetchError::Interrupted);
            }
            let before = self.pos + self.ranges.covered();
            match self.once(writer).await {
                Ok(()) => return Ok(()),
                Err(AttemptError::Stop(err)) => return Err(err),
                Err(AttemptError::Retry {
                    message,
                    retry_after,
                    rate_limited,
                }) => {
                    if self.pos + self.ranges.covered() > before {
                        retries.progressed();
                    }
                    let Some(delay) = retries.failed(retry_after) else {
                        let kind = if rate_limited {
                            ErrorKind::RateLimited
                        } else {
                            ErrorKind::Network
                        };
                        return Err(FetchError::failed(
                            kind,
                            format!("{message} (gave up after {} attempts)", retries.failures()),
                        ));
                    };
                    tracing::warn!(%message, ?delay, attempt = retries.failures(), "retrying");
                    self.observer.retrying(&message, delay);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(FetchError::Interrupted),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn request(&self) -> reqwest::RequestBuilder {
        let mut req = self
            .engine
            .http
            .get(&self.spec.url)
            .headers(self.spec.headers.clone());
        // Bytes on disk must be the file's bytes, not a compressed transfer of them.
        req = req.header(header::ACCEPT_ENCODING, "identity");
        // With bytes on disk, always ask by range with a validator: a 206 proves the same
        // version, a 200 says start over.
        if self.pos > 0 || self.ranges.covered() > 0 {
            req = req.header(header::RANGE, format!("bytes={}-", self.pos));
            if let Some(validator) = if_range_validator(&self.checkpoint) {
                req = req.header(header::IF_RANGE, validator);
            }
        }
        req
    }

    /// One attempt: a connection slot, one request, the response judged, its body read (split
    /// into segments if the one connection proves slow).
    async fn once(&mut self, writer: &mut WriterHandle) -> Result<(), AttemptError> {
        if let Some(total) = self.checkpoint.total {
            if self.pos >= total && self.pos > 0 {
                return Ok(());
            }
        }
        let slot = tokio::select! {
            _ = self.cancel.cancelled() => return Err(AttemptError::Stop(FetchError::Interrupted)),
            slot = self.engine.host_slot(&self.spec.url) => slot,
        };
        let response = tokio::select! {
            _ = self.cancel.cancelled() => return Err(AttemptError::Stop(FetchError::Interrupted)),
            r = send(self.engine, self.request()) => r,
        };
        let response = response?;
        match self.accept(&response, writer).await? {
            Accepted::AlreadyComplete => Ok(()),
            Accepted::Body { ranges_ok } => self.read(response, slot, ranges_ok, writer).await,
        }
    }

    /// Judge a response against what we have: adopt a `200` (starting over when we had bytes)
    /// or a matching `206`; start over on a changed file; a `416` for exactly what we have
    /// means done; an expired signed URL is resolved again; anything else is an error.
    async fn accept(
        &mut self,
        response: &reqwest::Response,
        writer: &mut WriterHandle,
    ) -> Result<Accepted, AttemptError> {
        let status = response.status().as_u16();
        let headers = response.headers();
        let endpoint = endpoint_of(response.url());
        let restart = |message: &str| AttemptError::Retry {
            message: message.into(),
            retry_after: Some(Duration::ZERO),
            rate_limited: false,
        };
        match status {
            200 => {
                if self.pos > 0 || self.ranges.covered() > 0 {
                    // The server ignored our Range, or If-Range says the file changed:
                    // start over, never splice two versions.
                    tracing::info!(
                        pos = self.pos,
                        "server sent the whole file; restarting from 0"
                    );
                    self.reset(writer).await?;
                }
                let no_ranges = !accepts_ranges(headers);
                self.adopt(
                    headers,
                    content_length(headers),
                    &endpoint,
                    no_ranges,
                    writer,
                )
                .await?;
                Ok(Accepted::Body {
                    ranges_ok: !no_ranges,
                })
            }
            206 => {
                let Some((start, total)) = content_range(headers) else {
                    return Err(retry("206 without a valid Content-Range"));
                };
                let validators_changed = validator_changed(&self.checkpoint, headers)
                    || matches!((self.checkpoint.total, total), (Some(a), Some(b)) if a != b);
                if start != self.pos || validators_changed {
                    tracing::info!("resource changed or range mismatch; restarting from 0");
                    self.reset(writer).await?;
                    self.checkpoint = FileCheckpoint::default();
                    return Err(restart("the file changed on the server; restarting"));
                }
                self.adopt(headers, total, &endpoint, false, writer).await?;
                Ok(Accepted::Body { ranges_ok: true })
            }
            416 => {
                let total = headers
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if total == Some(self.pos) && self.pos > 0 {
                    self.checkpoint.total = total;
                    return Ok(Accepted::AlreadyComplete);
                }
                self.reset(writer).await?;
                self.checkpoint = FileCheckpoint::default();
                Err(restart("416 range not satisfiable; restarting"))
            }
            // A signed CDN URL that expired: asking the stable URL again yields a fresh one,
            // and the partial file continues where it was.
            403 | 410 if endpoint != original_endpoint(&self.spec.url) => Err(restart(&format!(
                "HTTP {status} from {endpoint} (signed URL expired?); resolving again"
            ))),
            _ => Err(status_error(status, headers, &redacted(&self.spec.url))),
        }
    }

    /// Read an accepted body: as one stream, split into segments when that one connection
    /// turns out to be slow (a CDN that caps each connection) and the server takes ranges.
    async fn read(
        &mut self,
        response: reqwest::Response,
        slot: tokio::sync::OwnedSemaphorePermit,
        ranges_ok: bool,
        writer: &mut WriterHandle,
    ) -> Result<(), AttemptError> {
        let settings = &*self.engine.settings();
        let segments = settings.segments_for(&host_of(&self.spec.url));
        let big = self
            .checkpoint
            .total
            .is_some_and(|t| t >= settings.segment_threshold);
        let may_split = ranges_ok && big && segments > 1 && !self.single_stream;
        let start = self.pos;
        let stream: BodyStream = Box::pin(response.bytes_stream());
        // A fast link keeps one connection and no split overhead.
        match self.read_body(stream, writer, may_split).await? {
            None => Ok(()),
            Some(stream) => {
                tracing::debug!(
                    at = self.pos,
                    from = start,
                    "one connection is slow; splitting into segments"
                );
                self.read_segmented(stream, slot, writer, segments as usize)
                    .await
            }
        }
    }

    /// Throw away every byte fetched so far (another version, or a server that ignores Range).
    async fn reset(&mut self, writer: &mut WriterHandle) -> Result<(), AttemptError> {
        writer
            .truncate()
            .await
            .map_err(|e| stop_io("cannot reset the partial file", e))?;
        self.pos = 0;
        self.ranges.clear();
        Ok(())
    }

    /// Take the validators and length of a response we are going to read.
    async fn adopt(
        &mut self,
        headers: &HeaderMap,
        total: Option<u64>,
        endpoint: &str,
        no_ranges: bool,
        writer: &mut WriterHandle,
    ) -> Result<(), AttemptError> {
        if let (Some(expected), Some(total)) = (self.spec.expected_size, total) {
            if expected != total {
                return Err(AttemptError::Stop(FetchError::failed(
                    ErrorKind::Integrity,
                    format!("the server reports {total} bytes, but {expected} were expected"),
                )));
            }
        }
        self.checkpoint.total = total.or(self.checkpoint.total);
        self.checkpoint.etag = header_string(headers, header::ETAG);
        self.checkpoint.last_modified = header_string(headers, header::LAST_MODIFIED);
        if let Some(total) = total {
            let dir = self
                .spec
                .part_path
                .parent()
                .unwrap_or(std::path::Path::new("."));
            space::ensure_space(dir, total.saturating_sub(self.pos)).map_err(AttemptError::Stop)?;
            writer
                .preallocate(total)
                .await
                .map_err(|e| stop_io("cannot reserve space for the file", e))?;
        }
        self.observer.response(&ResponseInfo {
            content_disposition: header_string(headers, header::CONTENT_DISPOSITION),
            endpoint: endpoint.to_string(),
            total: self.checkpoint.total,
            no_ranges,
        });
        // Record the validators at once, so a crash before the first data checkpoint still
        // resumes against the right version.
        let mut cp = self.checkpoint.clone();
        cp.ranges = RangeSet::new();
        writer
            .checkpoint(cp)
            .await
            .map_err(|e| stop_io("cannot write the partial file", e))
    }

    /// Read a body as one stream into the partial file. With `may_split`, after a short probe
    /// a connection slower than `single_stream_above` is handed back (at `self.pos`) so the
    /// caller can continue with segments.
    async fn read_body(
        &mut self,
        mut stream: BodyStream,
        writer: &mut WriterHandle,
        mut may_split: bool,
    ) -> Result<Option<BodyStream>, AttemptError> {
        let settings = &*self.engine.settings();
        let probe_start = (Instant::now(), self.pos);
        let mut last_progress = self.pos;
        // The chunks hyper received, handed on as they are (no copy) once a write buffer's worth
        // is together.
        let mut buffer = Pending::default();
        let mut buffer_start = self.pos;
        let mut last_checkpoint_pos = self.pos;
        let mut last_checkpoint_at = Instant::now();
        let mut stall = StallClock::new(settings);
        let mut buffer_since = Instant::now();
        // Bytes not yet covered by a durable checkpoint are at most: those since the last
        // checkpoint, plus the writer queue, plus the buffer being filled. Checkpoint often
        // enough that their sum stays within `checkpoint_bytes`.
        let in_flight = (WRITE_QUEUE_DEPTH as u64 + 1) * settings.write_buffer_bytes as u64;
        let checkpoint_every = settings
            .checkpoint_bytes
            .saturating_sub(in_flight)
            .max(settings.write_buffer_bytes as u64);
        // Ok(true): hand the stream to segments.
        // The probe also decides on a timer, not only when a chunk arrives: a capped server
        // sends a burst and then pauses (nginx's limit_rate: ~90 ms after the first 2 MiB at
        // 25 MiB/s), and waiting for the next chunk delayed the split by that pause.
        let mut probe_at = tokio::time::Instant::from_std(probe_start.0) + EARLY_SPLIT_PROBE;
        let result: Result<bool, AttemptError> = loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => break Err(AttemptError::Stop(FetchError::Interrupted)),
                _ = tokio::time::sleep_until(probe_at), if may_split => {
                    let received = buffer_start + buffer.len - probe_start.1;
                    match split_decision(probe_start.0.elapsed(), received, settings.single_stream_above) {
                        Some(true) => break Ok(true),
                        Some(false) => may_split = false,
                        None => probe_at = tokio::time::Instant::from_std(probe_start.0) + SPLIT_PROBE,
                    }
                    continue;
                }
                n = stall.next(&mut stream) => n,
            };
            match next {
                Err(limit) => {
                    // Replace the connection at once: resuming costs one request.
                    break Err(AttemptError::Retry {
                        message: format!("stalled: no data for {:.1} s", limit.as_secs_f64()),
                        retry_after: Some(Duration::ZERO),
                        rate_limited: false,
                    });
                }
                Ok(None) => break Ok(false),
                Ok(Some(Err(e))) => {
                    break Err(retry(format!("connection lost: {}", describe_reqwest(&e))))
                }
                Ok(Some(Ok(chunk))) => {
                    self.engine.global_limit.acquire(chunk.len() as u64).await;
                    if let Some(job_limit) = &self.spec.job_limit {
                        job_limit.acquire(chunk.len() as u64).await;
                    }
                    buffer.push(chunk);
                    let received = buffer_start + buffer.len;
                    if let Some(total) = self.checkpoint.total {
                        if received > total {
                            break Err(AttemptError::Stop(FetchError::failed(
                                ErrorKind::Integrity,
                                format!("the server sent more than the {total} bytes it announced"),
                            )));
                        }
                    }
                    if buffer.len >= settings.write_buffer_bytes as u64
                        || buffer_since.elapsed() >= WRITE_AFTER
                    {
                        buffer_since = Instant::now();
                        buffer_start = self.hand_over(&mut buffer, buffer_start, writer).await?;
                    }
                    if received - last_progress >= PROGRESS_STEP {
                        self.observer.progress(received);
                        last_progress = received;
                    }
                    if may_split {
                        if let Some(split) = split_decision(
                            probe_start.0.elapsed(),
                            received - probe_start.1,
                            settings.single_stream_above,
                        ) {
                            may_split = false;
                            if split {
                                break Ok(true);
                            }
                        }
                    }
                    if self.pos - last_checkpoint_pos >= checkpoint_every
                        || (last_checkpoint_at.elapsed() >= settings.checkpoint_interval
                            && self.pos > last_checkpoint_pos)
                    {
                        writer
                            .checkpoint(self.checkpoint.clone())
                            .await
                            .map_err(|e| stop_io("cannot write the partial file", e))?;
                        last_checkpoint_pos = self.pos;
                        last_checkpoint_at = Instant::now();
                    }
                }
            }
        };
        // Whatever happened, keep the bytes we received.
        if buffer.len > 0 {
            self.hand_over(&mut buffer, buffer_start, writer).await?;
        }
        self.observer.progress(self.pos);
        if result? {
            return Ok(Some(stream));
        }
        self.body_ended()
    }

    /// Hand the buffered bytes (starting at `offset`) to the writer; returns where the next
    /// buffer starts.
    async fn hand_over(
        &mut self,
        buffer: &mut Pending,
        offset: u64,
        writer: &mut WriterHandle,
    ) -> Result<u64, AttemptError> {
        let (data, len) = buffer.take();
        let end = offset + len;
        writer
            .write_chunks(offset, data)
            .await
            .map_err(|e| stop_io("cannot write the partial file", e))?;
        self.pos = end;
        Ok(end)
    }

    /// The body ended: complete if it had every byte announced (or none was announced),
    /// else an early close to resume from.
    fn body_ended(&mut self) -> Result<Option<BodyStream>, AttemptError> {
        match self.checkpoint.total {
            Some(total) if self.pos < total => Err(retry(format!(
                "connection closed early after {} of {total} bytes",
                self.pos
            ))),
            Some(_) => Ok(None),
            None => {
                self.checkpoint.total = Some(self.pos);
                Ok(None)
            }
        }
    }
}

fn retry(message: impl Into<String>) -> AttemptError {
    AttemptError::Retry {
        message: message.into(),
        retry_after: None,
        rate_limited: false,
    }
}

fn stop_io(context: &str, error: std::io::Error) -> AttemptError {
    AttemptError::Stop(io_failure(context, error))
}

fn redacted(url: &str) -> String {
    crate::job::redact_url(url)
}

fn status_error(status: u16, headers: &HeaderMap, url: &str) -> AttemptError {
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let message = format!("HTTP {status} {reason} from {url}");
    match classify_status(status) {
        StatusClass::Transient => AttemptError::Retry {
            message,
            retry_after,
            rate_limited: false,
        },
        StatusClass::RateLimited => AttemptError::Retry {
            message,
            retry_after,
            rate_limited: true,
        },
        StatusClass::Permanent(kind) => {
            let hint = match kind {
                ErrorKind::Auth if status == 407 => "; the proxy wants credentials (user:password@ in the proxy URL)",
                ErrorKind::Auth => "; the server wants credentials (pass --token or set the source's token variable)",
                ErrorKind::NotFound => "; check the URL",
                _ => "",
            };
            AttemptError::Stop(FetchError::Failed {
                kind,
                message: format!("{message}{hint}"),
                status: Some(status),
            })
        }
    }
}

/// Send a request and wait for its response headers, at most the engine's
/// `response_timeout`: a server that accepts a connection and never answers is retried like
/// any other network failure instead of holding the job and its per-host slot.
async fn send(
    engine: &Engine,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, AttemptError> {
    let limit = engine.settings().response_timeout;
    match tokio::time::timeout(limit, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(request_error(&e)),
        Err(_) => Err(retry(format!(
            "no response within {} s of the request",
            limit.as_secs_f64()
        ))),
    }
}

fn request_error(error: &reqwest::Error) -> AttemptError {
    if error.is_redirect() {
        return AttemptError::Stop(FetchError::failed(
            ErrorKind::Fatal,
            format!("too many redirects: {}", describe_reqwest(error)),
        ));
    }
    if error.is_builder() {
        return AttemptError::Stop(FetchError::failed(
            ErrorKind::InvalidRequest,
            describe_reqwest(error),
        ));
    }
    retry(describe_reqwest(error))
}

/// A reqwest error as text with its causes, without the URL (which may carry a signature).
pub fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut text = error.without_url_ref().to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_timeout() {
            "timed out"
        } else if self.is_connect() {
            "cannot connect"
        } else if self.is_body() || self.is_decode() {
            "error reading the body"
        } else if self.is_request() {
            "request failed"
        } else {
            "HTTP error"
        };
        kind.to_string()
    }
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn accepts_ranges(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase().contains("bytes"))
        .unwrap_or(false)
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL); TOTAL is `None` for `*`.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    Some((start.trim().parse().ok()?, total))
}

/// The validator to send in `If-Range`: a strong ETag, else Last-Modified.
fn if_range_validator(checkpoint: &FileCheckpoint) -> Option<HeaderValue> {
    let value = match &checkpoint.etag {
        Some(etag) if !etag.starts_with("W/") => etag.clone(),
        _ => checkpoint.last_modified.clone()?,
    };
    HeaderValue::from_str(&value).ok()
}

fn validator_changed(checkpoint: &FileCheckpoint, headers: &HeaderMap) -> bool {
    let etag = header_string(headers, header::ETAG);
    match (&checkpoint.etag, &etag) {
        (Some(old), Some(new)) => old != new,
        _ => false,
    }
}

fn original_endpoint(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| endpoint_of(&u))
        .unwrap_or_default()
}

/// `host` (or `host:port` when a port is given) of a URL, for per-host limits.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.port() {
            Some(port) => format!("{}:{port}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_string(),
        },
        Err(_) => String::new(),
    }
}

/// `scheme://host[:port]` of a URL.
pub fn endpoint_of(url: &reqwest::Url) -> String {
    match url.port() {
        Some(port) => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            port
        ),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 5-9/*"),
        );
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("garbage"));
        assert_eq!(content_range(&h), None);
    }

    #[test]
    fn a_clearly_slow_connection_splits_early_and_a_fast_one_stays() {
        let ms = Duration::from_millis;
        let threshold = 128 << 20;
        // Too early to tell anything.
        assert_eq!(split_decision(ms(10), 0, threshold), None);
        // 25 MiB/s (a capped CDN connection): split after the short probe already.
        assert_eq!(split_decision(ms(40), 1 << 20, threshold), Some(true));
        // 100 MiB/s: not clearly slow yet; the whole probe decides.
        assert_eq!(split_decision(ms(40), 4 << 20, threshold), None);
        assert_eq!(split_decision(ms(150), 15 << 20, threshold), Some(true));
        // 1 GiB/s (loopback): one stream.
        assert_eq!(split_decision(ms(40), 40 << 20, threshold), None);
        assert_eq!(split_decision(ms(150), 150 << 20, threshold), Some(false));
    }

    #[test]
    fn if_range_prefers_a_strong_etag() {
        let mut cp = FileCheckpoint {
            etag: Some("\"abc\"".into()),
            last_modified: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(if_range_validator(&cp).unwrap(), "\"abc\"");
        cp.etag = Some("W/\"abc\"".into());
        assert_eq!(if_range_validator(&cp).unwrap(), "x");
        cp.last_modified = None;
        assert!(if_range_validator(&cp).is_none());
    }
}
