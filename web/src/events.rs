//! `GET /api/v1/events`: the daemon's event stream as `text/event-stream`, with replay.
//!
//! Every SSE message has `event:` set to the protocol [`Event`] variant's snake_case name
//! (`snapshot`, `queued`, `started`, `progress`, `verifying`, `completed`, `failed`, `paused`,
//! `resumed`, `cancelled`, `removed`, `updated`, `heartbeat`, `lagged`, `end`,
//! `file_changed`), `data:` set to the variant's payload as JSON (the same objects as the rest
//! of the API), and a numeric `id:` that grows with every message. The dashboard adds two of
//! its own: `resync` (see below) and `error` (`{kind, message, hint}`, ending the stream).
//!
//! **Feeds and replay.** A stream that starts fresh opens a *feed*: one subscription to mdld
//! (a `snapshot` of every job first, then every event, in the daemon's order) whose messages
//! are numbered and kept in a bounded ring buffer ([`RING_EVENTS`] messages, at most
//! [`RING_BYTES`] of data). When the HTTP connection drops, the feed stays subscribed for
//! [`DETACHED_GRACE`]. A client that reconnects with `Last-Event-ID: N` (browsers do this by
//! themselves) while N is still in a feed's buffer gets exactly the messages after N, then
//! the live ones: nothing missed, nothing twice. When N is not there (too old, the feed
//! expired, the dashboard restarted, or the client read too slowly and the buffer moved on),
//! the stream says so with a `resync` message (`{"last_event_id": N, "reason":
//! "not_buffered" | "fell_behind"}`) and continues as a fresh feed: a new `snapshot`, which
//! carries everything the missed messages would have changed, then live events. After
//! `lagged` (the feed fell behind the daemon) it subscribes again, so a `snapshot` follows.
//!
//! The daemon's own `heartbeat` events arrive when nothing else happens, and an SSE comment
//! keeps proxies from closing an idle connection. The feeds are the only state here, and
//! they only repeat what the daemon said.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use mdl_protocol::{Event, EventStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::AppState;

/// How long a browser waits before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_secs(2);

/// The interval of the keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Messages a feed keeps for replay.
pub const RING_EVENTS: usize = 1024;

/// Bytes of message data a feed keeps for replay (the newest message is always kept).
pub const RING_BYTES: usize = 16 * 1024 * 1024;

/// How long a feed whose last stream dropped stays subscribed, waiting for a reconnect.
pub const DETACHED_GRACE: Duration = Duration::from_secs(120);

/// The most feeds at once; a new one beyond it replaces the one detached longest, and when
/// every feed has a reader the stream is refused (503).
pub const MAX_FEEDS: usize = 64;

/// The SSE name and JSON data of an event: the variant's snake_case name and its payload.
pub fn event_parts(event: &Event) -> (String, serde_json::Value) {
    match serde_json::to_value(event) {
        // A variant with a payload: {"Variant": payload}.
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
            let (name, data) = map.into_iter().next().expect("one entry");
            (snake_case(&name), data)
        }
        // A unit variant: "Variant".
        Ok(serde_json::Value::String(name)) => (snake_case(&name), serde_json::Value::Null),
        _ => ("unknown".into(), serde_json::Value::Null),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// One numbered message, as sent.
#[derive(Debug, Clone)]
struct Message {
    id: u64,
    name: Arc<str>,
    data: Arc<str>,
}

impl Message {
    fn sse(&self) -> SseEvent {
        let message = SseEvent::default()
            .event(&*self.name)
            .id(self.id.to_string())
            .data(&*self.data);
        if &*self.name == "snapshot" {
            message.retry(RETRY)
        } else {
            message
        }
    }
}

/// What a feed keeps.
#[derive(Debug, Default)]
struct Ring {
    messages: VecDeque<Message>,
    bytes: usize,
    /// The id of the newest message dropped from the front (0: none).
    evicted: u64,
    /// No more messages will come.
    ended: bool,
    /// Streams reading this feed now.
    readers: usize,
    /// When the last reader left.
    detached_since: Option<Instant>,
}

impl Ring {
    /// True when every message after `id` is still here (`id` was sent by this feed).
    fn has_after(&self, id: u64) -> bool {
        (self.evicted != 0 && id == self.evicted)
            || self.messages.binary_search_by_key(&id, |m| m.id).is_ok()
    }
}

/// One subscription to the daemon, numbered and buffered.
#[derive(Debug)]
struct Feed {
    ring: Mutex<Ring>,
    /// The id of the newest message (readers wait on it).
    latest: watch::Sender<u64>,
    /// Ends the feed's task.
    stop: CancellationToken,
}

impl Feed {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, id: u64, name: &str, data: &serde_json::Value) {
        let message = Message {
            id,
            name: name.into(),
            data: data.to_string().into(),
        };
        let mut ring = self.ring();
        ring.bytes += message.data.len();
        ring.messages.push_back(message);
        while ring.messages.len() > RING_EVENTS
            || (ring.bytes > RING_BYTES && ring.messages.len() > 1)
        {
            if let Some(old) = ring.messages.pop_front() {
                ring.bytes -= old.data.len();
                ring.evicted = old.id;
            }
        }
        drop(ring);
        self.latest.send_replace(id);
    }

    fn end(&self) {
        self.ring().ended = true;
        self.stop.cancel();
        // Wake the readers, so they see the end.
        self.latest.send_modify(|_| {});
    }
}

/// Every feed of this dashboard, and the message ids.
#[derive(Debug)]
pub struct Feeds {
    next_id: AtomicU64,
    feeds: Mutex<Vec<Arc<Feed>>>,
}

impl Default for Feeds {
    fn default() -> Self {
        Self::new()
    }
}

impl Feeds {
    /// No feeds yet. Ids start from the clock (seconds × 2^20), so an id a browser kept from
    /// an earlier run of the dashboard never names a message of this one.
    pub fn new() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Feeds {
            next_id: AtomicU64::new((secs << 20).max(1)),
            feeds: Mutex::new(Vec::new()),
        }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How many feeds are open (for tests).
    pub fn open_feeds(&self) -> usize {
        self.list().len()
    }

    /// The live feed that sent `id` and still holds everything after it, with a reader
    /// attached.
    fn resume(&self, id: u64) -> Option<Arc<Feed>> {
        let list = self.list();
        let feed = list.iter().find(|feed| {
            let ring = feed.ring();
            !ring.ended && ring.has_after(id)
        })?;
        attach(feed);
        Some(feed.clone())
    }

    /// Make room for one more feed: drop ended ones, then the one detached longest.
    fn make_room(&self) -> Result<(), ApiError> {
        let mut list = self.list();
        list.retain(|feed| !feed.ring().ended);
        if list.len() < MAX_FEEDS {
            return Ok(());
        }
        let oldest = list
            .iter()
            .enumerate()
            .filter_map(|(i, feed)| feed.ring().detached_since.map(|since| (since, i)))
            .min();
        match oldest {
            Some((_, i)) => {
                let feed = list.remove(i);
                feed.end();
                Ok(())
            }
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{MAX_FEEDS} event streams are open already; close a dashboard tab"),
            )),
        }
    }
}

fn attach(feed: &Feed) {
    let mut ring = feed.ring();
    ring.readers += 1;
    ring.detached_since = None;
}

/// A reader left `feed`: when it was the last, the feed ends after [`DETACHED_GRACE`] unless
/// a reader comes back.
fn detach(feed: &Arc<Feed>, state: &Arc<AppState>) {
    let mut ring = feed.ring();
    ring.readers = ring.readers.saturating_sub(1);
    if ring.readers > 0 || ring.ended {
        return;
    }
    let since = Instant::now();
    ring.detached_since = Some(since);
    drop(ring);
    let feed = feed.clone();
    let state = state.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(DETACHED_GRACE).await;
            let expired = feed.ring().detached_since == Some(since);
            if expired {
                feed.end();
                state.feeds.list().retain(|f| !Arc::ptr_eq(f, &feed));
            }
        });
    }
}

/// Open a feed: subscribe (an unreachable daemon is an error reply), then number and keep
/// what the daemon sends until the feed ends. The new feed has one reader attached.
async fn open_feed(state: &Arc<AppState>) -> Result<Arc<Feed>, ApiError> {
    state.feeds.make_room()?;
    let events = subscribe(state).await?;
    let feed = Arc::new(Feed {
        ring: Mutex::new(Ring::default()),
        latest: watch::channel(0).0,
        stop: CancellationToken::new(),
    });
    attach(&feed);
    state.feeds.list().push(feed.clone());
    tokio::spawn(run_feed(state.clone(), feed.clone(), events));
    Ok(feed)
}

/// The feed's task: every daemon event into the ring, until the daemon ends the stream, it
/// fails, or the feed is stopped.
async fn run_feed(state: Arc<AppState>, feed: Arc<Feed>, mut events: EventStream) {
    loop {
        let next = tokio::select! {
            () = feed.stop.cancelled() => break,
            next = events.next() => next,
        };
        match next {
            Ok(Some(event)) => {
                let lagged = matches!(event, Event::Lagged { .. });
                let (name, data) = event_parts(&event);
                feed.push(state.feeds.next_id(), &name, &data);
                if lagged {
                    // Subscribe again: a new snapshot follows.
                    match subscribe(&state).await {
                        Ok(fresh) => events = fresh,
                        Err(err) => {
                            push_error(&state, &feed, err);
                            break;
                        }
                    }
                }
            }
            Ok(None) => {
                feed.push(state.feeds.next_id(), "end", &serde_json::Value::Null);
                break;
            }
            Err(err) => {
                push_error(&state, &feed, err.into());
                break;
            }
        }
    }
    feed.end();
    state.feeds.list().retain(|f| !Arc::ptr_eq(f, &feed));
}

/// An `error` message (`{kind, message, hint}`): the stream ends and the browser reconnects.
fn push_error(state: &AppState, feed: &Feed, err: ApiError) {
    let data = serde_json::to_value(&err).unwrap_or_default();
    feed.push(state.feeds.next_id(), "error", &data);
}

async fn subscribe(state: &AppState) -> Result<EventStream, ApiError> {
    Ok(state.client().await?.subscribe().await?)
}

/// Where one HTTP stream is in its feed.
struct Reader {
    state: Arc<AppState>,
    feed: Arc<Feed>,
    latest: watch::Receiver<u64>,
    /// The id of the last message sent.
    cursor: u64,
    /// Messages to send before looking at the feed again.
    pending: VecDeque<SseEvent>,
    done: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        detach(&self.feed, &self.state);
    }
}

impl Reader {
    fn new(state: Arc<AppState>, feed: Arc<Feed>, cursor: u64) -> Reader {
        let latest = feed.latest.subscribe();
        Reader {
            state,
            feed,
            latest,
            cursor,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// The next SSE message, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            if self.done {
                return None;
            }
            self.latest.borrow_and_update();
            let (behind, ended) = self.take();
            if behind {
                self.resync("fell_behind").await;
                continue;
            }
            if !self.pending.is_empty() {
                continue;
            }
            if ended {
                return None;
            }
            if self.latest.changed().await.is_err() {
                // The feed is gone: send what it still holds, then end.
                let _ = self.take();
                self.done = true;
            }
        }
    }

    /// Move the feed's messages after the cursor into `pending`; returns whether this reader
    /// fell behind (messages it never got were dropped) and whether the feed has ended.
    fn take(&mut self) -> (bool, bool) {
        let ring = self.feed.ring();
        if ring.evicted > self.cursor && !ring.has_after(self.cursor) {
            return (true, ring.ended);
        }
        let start = ring.messages.partition_point(|m| m.id <= self.cursor);
        for message in ring.messages.range(start..) {
            self.pending.push_back(message.sse());
            self.cursor = message.id;
            if &*message.name == "error" || &*message.name == "end" {
                self.done = true;
                break;
            }
        }
        (false, ring.ended)
    }

    /// Say that messages after `last` cannot be replayed, and go on with a fresh feed.
    async fn resync(&mut self, reason: &str) {
        let last = self.cursor;
        match open_feed(&self.state).await {
            Ok(feed) => {
                let old = std::mem::replace(&mut self.feed, feed);
                detach(&old, &self.state);
                self.latest = self.feed.latest.subscribe();
                self.pending
                    .push_back(resync_message(self.state.feeds.next_id(), last, reason));
                self.cursor = 0;
            }
            Err(err) => {
                self.pending.push_back(error_message(&self.state, &err));
                self.done = true;
            }
        }
    }
}

fn resync_message(id: u64, last: u64, reason: &str) -> SseEvent {
    SseEvent::default()
        .event("resync")
        .id(id.to_string())
        .data(serde_json::json!({ "last_event_id": last, "reason": reason }).to_string())
}

fn error_message(state: &AppState, err: &ApiError) -> SseEvent {
    SseEvent::default()
        .event("error")
        .id(state.feeds.next_id().to_string())
        .data(serde_json::to_value(err).unwrap_or_default().to_string())
}

/// `GET /events`.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let reader = match last.and_then(|id| Some((id, state.feeds.resume(id)?))) {
        Some((id, feed)) => Reader::new(state.clone(), feed, id),
        None => {
            // Subscribe before answering, so an unreachable daemon is a plain error reply.
            let feed = open_feed(&state).await?;
            let mut reader = Reader::new(state.clone(), feed, 0);
            if let Some(id) = last {
                let message = resync_message(state.feeds.next_id(), id, "not_buffered");
                reader.pending.push_back(message);
            }
            reader
        }
    };
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let message = reader.next().await?;
        Some((Ok(message), reader))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_name_and_payload() {
        let (name, data) = event_parts(&Event::Heartbeat { unix_ms: 5 });
        assert_eq!(name, "heartbeat");
        assert_eq!(data, serde_json::json!({"unix_ms": 5}));
        let (name, data) = event_parts(&Event::Removed(7));
        assert_eq!((name.as_str(), data), ("removed", serde_json::json!(7)));
        let (name, data) = event_parts(&Event::End);
        assert_eq!((name.as_str(), data), ("end", serde_json::Value::Null));
        let (name, _) = event_parts(&Event::Snapshot(Vec::new()));
        assert_eq!(name, "snapshot");
    }

    #[test]
    fn the_ring_is_bounded_and_knows_what_it_still_holds() {
        let feed = Feed {
            ring: Mutex::new(Ring::default()),
            latest: watch::channel(0).0,
            stop: CancellationToken::new(),
        };
        // Ids of one feed need not be consecutive (feeds share one counter).
        for i in 0..(RING_EVENTS as u64 + 10) {
            feed.push(100 + 2 * i, "progress", &serde_json::json!({ "n": i }));
        }
        let ring = feed.ring();
        assert_eq!(ring.messages.len(), RING_EVENTS);
        assert_eq!(ring.evicted, 100 + 2 * 9);
        assert!(
            ring.has_after(ring.evicted),
            "the last dropped id: all after it are here"
        );
        assert!(
            !ring.has_after(100 + 2 * 8),
            "older than that: some are gone"
        );
        assert!(
            !ring.has_after(100 + 2 * 10 + 1),
            "an id this feed never sent"
        );
        assert!(
            ring.has_after(100 + 2 * (RING_EVENTS as u64 + 9)),
            "the newest"
        );
        drop(ring);
        // A message larger than the byte budget is still kept while it is the newest.
        let big = "x".repeat(RING_BYTES + 1);
        feed.push(1_000_000, "snapshot", &serde_json::json!(big));
        assert_eq!(feed.ring().messages.len(), 1);
        assert!(feed.ring().has_after(1_000_000));
    }
}
