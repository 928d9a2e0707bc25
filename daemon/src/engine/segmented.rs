//! Segmented downloads: one file over several `Range` connections at once.
//!
//! The response that discovered the file's length becomes worker 0; workers 1..n open their own
//! ranged requests (each under the per-host connection cap). Work is handed out and stolen
//! through a [`SegmentTable`], so a slow connection's tail moves to a free one. Every worker
//! writes through the same writer thread, which records the ranges and hashes the file in order
//! as its prefix completes: there is no second pass over the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdl_protocol::ErrorKind;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::growth::{Growth, Observation};
use super::limit::RateLimiter;
use super::retry::backoff_delay;
use super::segments::{SegmentTable, WorkerId};
use super::writer::{WriterHandle, WriterSender};
use super::{
    content_range, describe_reqwest, endpoint_of, header_string, if_range_validator,
    original_endpoint, retry, send, status_error, stop_io, Attempt, AttemptError, BodyStream,
    Engine, FetchError, Pending, StallClock, WRITE_AFTER, WRITE_QUEUE_DEPTH,
};
use crate::ranges::RangeSet;

/// Each connection of a segmented file buffers a quarter of a single stream's buffer, so
/// memory stays flat however many connections a file uses.
fn segment_buffer_bytes(write_buffer_bytes: usize) -> usize {
    (write_buffer_bytes / 4).max(64 * 1024)
}

/// The largest piece handed out at once (a steal can still split it).
const MAX_PIECE: u64 = 16 * 1024 * 1024;

/// What every worker of one file shares.
struct Shared {
    engine: Engine,
    url: String,
    headers: HeaderMap,
    if_range: Option<HeaderValue>,
    etag: Option<String>,
    total: u64,
    table: Mutex<SegmentTable>,
    writer: WriterSender,
    /// Bytes received (and kept) by all workers in this round.
    received: AtomicU64,
    cancel: CancellationToken,
    job_limit: Option<Arc<RateLimiter>>,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, SegmentTable> {
        self.table.lock().expect("segment table lock")
    }
}

/// How a worker ended.
enum WorkerEnd {
    /// No work left (or cancelled).
    Done,
    /// A ranged request got the whole file: the server does not do ranges after all.
    NoRanges,
    /// The server now has another version of the file.
    Changed,
    /// The writer thread stopped (its handle has the error).
    WriterGone,
    /// Retries ran out, or a failure that retrying cannot fix.
    Failed(AttemptError),
}

/// The first response, already open, that worker 0 continues to read.
struct FirstResponse {
    response: BodyStream,
    start: u64,
    slot: OwnedSemaphorePermit,
}

impl<'a> Attempt<'a> {
    /// Read `first` (which starts at `self.pos`) as worker 0 and fetch the rest of the file
    /// over `segments` connections.
    pub(super) async fn read_segmented(
        &mut self,
        first: BodyStream,
        slot: OwnedSemaphorePermit,
        writer: &mut WriterHandle,
        segments: usize,
    ) -> Result<(), AttemptError> {
        let settings = self.engine.settings();
        let total = self
            .checkpoint
            .total
            .expect("segmented downloads know their length");
        let mut known = self.ranges.clone();
        known.insert(0, self.pos);
        // Hand out pieces in file order, small enough that the workers move forward together:
        // the contiguous prefix (which the writer hashes in order) then trails the newest byte
        // by about `segments * piece`, so verification finishes right after the last byte.
        let piece = total
            .div_ceil(segments as u64)
            .clamp(settings.min_segment, MAX_PIECE.max(settings.min_segment));
        // Pieces shrink towards the end (to half of `min_segment`, at least 1 MiB): the last
        // round ends together and leaves the hasher little to catch up after the last byte.
        let floor = (settings.min_segment / 2).max(1 << 20).min(piece);
        let mut table = SegmentTable::new(total, &known, piece, settings.min_segment)
            .taper(segments as u64, floor);
        let first_gap_end = known
            .missing(total)
            .first()
            .map(|&(_, end)| end)
            .unwrap_or(total);
        table.claim(
            0,
            self.pos,
            first_gap_end.min(self.pos.saturating_add(piece)),
        );
        let covered_before = known.covered();
        let sender = writer
            .sender()
            .await
            .map_err(|e| stop_io("cannot write the partial file", e))?;
        let shared = Arc::new(Shared {
            engine: self.engine.clone(),
            url: self.spec.url.clone(),
            headers: self.spec.headers.clone(),
            if_range: if_range_validator(&self.checkpoint),
            etag: self.checkpoint.etag.clone(),
            total,
            table: Mutex::new(table),
            writer: sender,
            received: AtomicU64::new(0),
            cancel: self.cancel.child_token(),
            job_limit: self.spec.job_limit.clone(),
        });
        tracing::debug!(total, segments, piece, "segmented download");
        let mut workers = JoinSet::new();
        let first = FirstResponse {
            response: first,
            start: self.pos,
            slot,
        };
        workers.spawn(worker(shared.clone(), 0, Some(first)));
        for id in 1..segments {
            workers.spawn(worker(shared.clone(), id, None));
        }

        // More connections while each one is capped (see `growth`); never under a bandwidth
        // limit, which caps them all together.
        let host = super::host_of(&shared.url);
        let limited = shared.engine.global_limit.rate().is_some()
            || shared
                .job_limit
                .as_ref()
                .is_some_and(|l| l.rate().is_some());
        let ceiling = if limited {
            segments
        } else {
            (settings.max_segments_for(&host) as usize)
                .min(settings.connections_for(&host))
                .min(total.div_ceil(settings.min_segment.max(1)) as usize)
                .max(segments)
        };
        let mut growth = Growth::new(segments, ceiling, Instant::now());
        let in_flight = (WRITE_QUEUE_DEPTH + ceiling) as u64
            * segment_buffer_bytes(settings.write_buffer_bytes) as u64;
        let checkpoint_every = settings
            .checkpoint_bytes
            .saturating_sub(in_flight)
            .max(settings.write_buffer_bytes as u64);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut last_checkpoint = (0u64, Instant::now());
        let mut result: Result<(), AttemptError> = Ok(());
        let mut changed = false;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    result = Err(AttemptError::Stop(FetchError::Interrupted));
                    break;
                }
                joined = workers.join_next() => match joined {
                    None => break,
                    Some(Ok(WorkerEnd::Done)) => {}
                    Some(Ok(end)) => {
                        changed = matches!(end, WorkerEnd::Changed);
                        result = Err(self.worker_failure(end, writer).await);
                        break;
                    }
                    Some(Err(e)) => {
                        result = Err(AttemptError::Stop(FetchError::failed(ErrorKind::Other, format!("a download task failed: {e}"))));
                        break;
                    }
                },
                _ = ticker.tick() => {
                    let received = shared.received.load(Ordering::Relaxed);
                    self.observer.progress(covered_before + received);
                    let running = growth.workers();
                    let added = growth.observe(Observation {
                        now: Instant::now(),
                        received,
                        remaining: total.saturating_sub(covered_before + received),
                        writer_queue_fill: shared.writer.queue_fill(),
                    });
                    if added > 0 {
                        shared.table().set_workers(growth.workers() as u64);
                        for id in running..running + added {
                            workers.spawn(worker(shared.clone(), id, None));
                        }
                    }
                    let (at_bytes, at_time) = last_checkpoint;
                    if received - at_bytes >= checkpoint_every
                        || (at_time.elapsed() >= settings.checkpoint_interval && received > at_bytes)
                    {
                        writer.checkpoint(self.checkpoint.clone()).await.map_err(|e| stop_io("cannot write the partial file", e))?;
                        last_checkpoint = (received, Instant::now());
                    }
                }
            }
        }
        // Stop the others; each hands what it received to the writer before it returns.
        shared.cancel.cancel();
        while workers.join_next().await.is_some() {}
        self.observer
            .progress(covered_before + shared.received.load(Ordering::Relaxed));

        if changed {
            // Another version: nothing fetched so far may be kept (the workers have stopped).
            self.reset(writer).await?;
            self.checkpoint = crate::job::FileCheckpoint::default();
            return result;
        }
        let table = shared.table();
        if matches!(result, Ok(())) && !table.is_done() {
            result = Err(retry("segments ended before the file was complete"));
        }
        // What is on disk now: everything the table no longer expects.
        let mut on_disk = RangeSet::new();
        let mut pos = 0;
        for (start, end) in table.unfetched() {
            on_disk.insert(pos, start);
            pos = end;
        }
        on_disk.insert(pos, total);
        drop(table);
        self.pos = on_disk.contiguous_prefix();
        self.ranges = on_disk;
        result
    }

    /// Turn a worker's failure into the attempt's error, resetting when the file changed.
    async fn worker_failure(&mut self, end: WorkerEnd, writer: &mut WriterHandle) -> AttemptError {
        match end {
            WorkerEnd::Done => retry("a segment ended early"),
            WorkerEnd::NoRanges => {
                tracing::info!("a ranged request got the whole file; continuing as one stream");
                self.single_stream = true;
                AttemptError::Retry {
                    message: "the server stopped honouring Range; continuing as one stream".into(),
                    retry_after: Some(Duration::ZERO),
                    rate_limited: false,
                }
            }
            WorkerEnd::Changed => AttemptError::Retry {
                message: "the file changed on the server; restarting".into(),
                retry_after: Some(Duration::ZERO),
                rate_limited: false,
            },
            WorkerEnd::WriterGone => match writer.checkpoint(self.checkpoint.clone()).await {
                Err(e) => stop_io("cannot write the partial file", e),
                Ok(()) => {
                    AttemptError::Stop(FetchError::failed(ErrorKind::Other, "the writer stopped"))
                }
            },
            WorkerEnd::Failed(e) => e,
        }
    }
}

/// One connection's loop: take a range, fetch it, write it; steal when nothing is pending.
async fn worker(shared: Arc<Shared>, id: WorkerId, mut first: Option<FirstResponse>) -> WorkerEnd {
    let settings = shared.engine.settings();
    let mut failures = 0u32;
    loop {
        if shared.cancel.is_cancelled() {
            return WorkerEnd::Done;
        }
        let opened = match first.take() {
            Some(first) => Ok(first),
            None => open_next(&shared, id).await,
        };
        let (message, retry_after, progressed) = match opened {
            Ok(FirstResponse {
                response,
                start,
                slot,
            }) => {
                let (outcome, kept) = stream_range(&shared, id, response, start).await;
                drop(slot);
                match outcome {
                    StreamOutcome::Complete => {
                        failures = 0;
                        continue;
                    }
                    StreamOutcome::Cancelled => return WorkerEnd::Done,
                    StreamOutcome::WriterGone => return WorkerEnd::WriterGone,
                    StreamOutcome::Broken(message) => {
                        shared.table().release(id);
                        (message, None, kept > 0)
                    }
                    StreamOutcome::Stalled(message) => {
                        shared.table().release(id);
                        (message, Some(Duration::ZERO), kept > 0)
                    }
                }
            }
            Err(Opened::NoWork) => return WorkerEnd::Done,
            Err(Opened::End(end)) => return end,
            Err(Opened::Retry(message, retry_after)) => (message, retry_after, false),
        };
        if progressed {
            failures = 0;
        }
        failures += 1;
        if failures >= settings.max_attempts {
            return WorkerEnd::Failed(AttemptError::Stop(FetchError::failed(
                ErrorKind::Network,
                format!("{message} (gave up after {failures} attempts)"),
            )));
        }
        let delay = retry_after
            .map(|d| d.min(settings.retry_after_max))
            .unwrap_or_else(|| {
                backoff_delay(failures, settings.backoff_base, settings.backoff_max)
            });
        tracing::debug!(worker = id, %message, ?delay, "segment retry");
        tokio::select! {
            _ = shared.cancel.cancelled() => return WorkerEnd::Done,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Why a worker could not open its next range.
enum Opened {
    /// Nothing left to fetch.
    NoWork,
    /// Stop the worker with this end.
    End(WorkerEnd),
    /// Try again after a delay (the range went back to the table).
    Retry(String, Option<Duration>),
}

/// Take the next range from the table and open a request for it.
async fn open_next(shared: &Shared, id: WorkerId) -> Result<FirstResponse, Opened> {
    let slot = tokio::select! {
        _ = shared.cancel.cancelled() => return Err(Opened::End(WorkerEnd::Done)),
        slot = shared.engine.host_slot(&shared.url) => slot,
    };
    // Take work only once a connection is free, so queued workers do not hold ranges.
    let Some((start, end)) = shared.table().next(id) else {
        return Err(Opened::NoWork);
    };
    let response = tokio::select! {
        _ = shared.cancel.cancelled() => Err(Opened::End(WorkerEnd::Done)),
        response = send(&shared.engine, range_request(shared, start, end)) => {
            response.map_err(|e| match e {
                AttemptError::Retry { message, retry_after, .. } => Opened::Retry(message, retry_after),
                stop => Opened::End(WorkerEnd::Failed(stop)),
            })
        }
    };
    let opened = response.and_then(|response| judge_range_response(shared, start, end, response));
    match opened {
        Ok(response) => Ok(FirstResponse {
            response: Box::pin(response.bytes_stream()),
            start,
            slot,
        }),
        Err(not_opened) => {
            // The range goes back to the table for whoever takes it next.
            shared.table().release(id);
            Err(not_opened)
        }
    }
}

/// `GET` of bytes `start..end` of the file, validated by `If-Range` when a validator is known.
fn range_request(shared: &Shared, start: u64, end: u64) -> reqwest::RequestBuilder {
    let request = shared
        .engine
        .http
        .get(&shared.url)
        .headers(shared.headers.clone())
        .header(header::ACCEPT_ENCODING, "identity")
        .header(header::RANGE, format!("bytes={start}-{}", end - 1));
    match &shared.if_range {
        Some(validator) => request.header(header::IF_RANGE, validator.clone()),
        None => request,
    }
}

/// Whether the server still has the version this download started with (by ETag).
fn same_version(shared: &Shared, headers: &HeaderMap) -> bool {
    match (&shared.etag, header_string(headers, header::ETAG)) {
        (Some(old), Some(new)) => *old == new,
        _ => true,
    }
}

/// Accept a `206` for exactly the range asked, of the same version; anything else says how the
/// worker goes on (retry, another version, no range support, or a failure).
fn judge_range_response(
    shared: &Shared,
    start: u64,
    end: u64,
    response: reqwest::Response,
) -> Result<reqwest::Response, Opened> {
    let status = response.status().as_u16();
    let headers = response.headers();
    match status {
        206 if !same_version(shared, headers) => Err(Opened::End(WorkerEnd::Changed)),
        206 => match content_range(headers) {
            Some((got, total)) if got == start && total.is_none_or(|t| t == shared.total) => {
                Ok(response)
            }
            _ => Err(Opened::Retry(
                format!("unexpected Content-Range for bytes {start}-{}", end - 1),
                None,
            )),
        },
        200 if same_version(shared, headers) => Err(Opened::End(WorkerEnd::NoRanges)),
        200 => Err(Opened::End(WorkerEnd::Changed)),
        403 | 410 if endpoint_of(response.url()) != original_endpoint(&shared.url) => {
            Err(Opened::Retry(
                format!("HTTP {status} from a redirect target (signed URL expired?)"),
                Some(Duration::ZERO),
            ))
        }
        _ => match status_error(status, headers, &crate::job::redact_url(&shared.url)) {
            AttemptError::Retry {
                message,
                retry_after,
                ..
            } => Err(Opened::Retry(message, retry_after)),
            stop => Err(Opened::End(WorkerEnd::Failed(stop))),
        },
    }
}

/// How reading one range ended.
enum StreamOutcome {
    /// The assignment is complete.
    Complete,
    /// The download is stopping.
    Cancelled,
    /// The writer thread stopped.
    WriterGone,
    /// The connection broke; the rest of the range goes back to the table.
    Broken(String),
    /// The connection stalled; the rest of the range goes back to the table and a new
    /// connection takes it over at once (no backoff).
    Stalled(String),
}

/// Read a response for the range starting at `start`, keeping only what is still this
/// worker's (its end moves when another worker steals the tail). Returns the bytes kept.
async fn stream_range(
    shared: &Shared,
    id: WorkerId,
    mut stream: BodyStream,
    start: u64,
) -> (StreamOutcome, u64) {
    let settings = &*shared.engine.settings();
    let buffer_size = segment_buffer_bytes(settings.write_buffer_bytes);
    let mut buffer = Pending::default();
    let mut buffer_start = start;
    let mut offset = start;
    let mut stall = StallClock::new(settings);
    let mut buffer_since = Instant::now();
    let outcome = loop {
        let next = tokio::select! {
            _ = shared.cancel.cancelled() => break StreamOutcome::Cancelled,
            next = stall.next(&mut stream) => next,
        };
        let chunk = match next {
            Err(limit) => {
                break StreamOutcome::Stalled(format!(
                    "stalled: no data for {:.1} s",
                    limit.as_secs_f64()
                ))
            }
            Ok(None) => {
                break StreamOutcome::Broken(
                    "connection closed before the range was complete".into(),
                )
            }
            Ok(Some(Err(e))) => {
                break StreamOutcome::Broken(format!("connection lost: {}", describe_reqwest(&e)))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        shared.engine.global_limit.acquire(chunk.len() as u64).await;
        if let Some(limit) = &shared.job_limit {
            limit.acquire(chunk.len() as u64).await;
        }
        let (keep, done) = shared.table().advance(id, offset, chunk.len() as u64);
        // The kept part, without a copy.
        buffer.push(if keep as usize == chunk.len() {
            chunk
        } else {
            chunk.slice(..keep as usize)
        });
        offset += keep;
        shared.received.fetch_add(keep, Ordering::Relaxed);
        let stale = buffer.len > 0 && buffer_since.elapsed() >= WRITE_AFTER;
        if buffer.len >= buffer_size as u64 || done || stale {
            buffer_since = Instant::now();
            if shared
                .writer
                .write_chunks(buffer_start, buffer.take().0)
                .await
                .is_err()
            {
                return (StreamOutcome::WriterGone, offset - start);
            }
            buffer_start = offset;
        }
        if done {
            break StreamOutcome::Complete;
        }
    };
    // Keep what arrived, whatever ended the stream.
    if buffer.len > 0
        && shared
            .writer
            .write_chunks(buffer_start, buffer.take().0)
            .await
            .is_err()
    {
        return (StreamOutcome::WriterGone, offset - start);
    }
    (outcome, offset - start)
}
