//! A fault-injecting HTTP/1.1 static file server for tests.
//!
//! [`FileServer`] listens on `127.0.0.1:0` and serves in-memory files the way a
//! real static file server or CDN does on the wire (RFC 9110 range requests,
//! `If-Range`, `ETag`, `Last-Modified`, `HEAD`), with per-file knobs
//! ([`Behavior`]) to inject faults ([`Fault`]): error statuses, connection
//! resets mid-body, stalls, throttling, redirects, missing range support or
//! missing `Content-Length`.
//!
//! Every request is logged and every body byte handed to the connection is
//! counted, so tests can assert e.g. that a resumed download fetched at most
//! one checkpoint's worth of bytes again ([`FileServer::stats`]).
//!
//! ```no_run
//! # async fn demo() {
//! use testkit::fileserver::{Behavior, Fault, FileServer, pseudo_random_bytes};
//! let server = FileServer::start().await;
//! let file = server.add("/models/a.bin", pseudo_random_bytes(1 << 20, 7));
//! server.set_behavior(
//!     "/models/a.bin",
//!     Behavior { responses: vec![Fault::ResetAfter(300_000)], ..Default::default() },
//! );
//! // ... download file.url, then:
//! let stats = server.stats("/models/a.bin");
//! assert!(stats.body_bytes_sent <= file.len + 300_000);
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Size of the body chunks handed to the connection (when not throttled).
const CHUNK: usize = 64 * 1024;

/// `Last-Modified` of generation 0 of every file: 2024-01-01T00:00:00Z.
/// Each [`FileServer::set_body`] moves it one minute forward.
const BASE_LAST_MODIFIED_SECS: u64 = 1_704_067_200;

/// Handle to a running fault-injecting file server.
///
/// Cloning is cheap (an `Arc` inside). The server stops when the last handle
/// is dropped, or on [`FileServer::shutdown`]; open connections (including
/// stalled ones) are then closed.
#[derive(Clone)]
pub struct FileServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for FileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileServer")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// What [`FileServer::add`] returns: where the file is and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// Absolute URL of the file (`http://127.0.0.1:PORT/path`).
    pub url: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Content length in bytes.
    pub len: u64,
}

/// Per-path behavior knobs. `Behavior::default()` serves the file normally.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Ignore `Range`: always answer 200 with the full body, and send no
    /// `Accept-Ranges` header.
    pub no_ranges: bool,
    /// `Content-Disposition` header value, sent verbatim when set.
    pub content_disposition: Option<String>,
    /// Send the body with chunked transfer encoding and no `Content-Length`.
    pub no_content_length: bool,
    /// Override the `ETag` header. `None`: derived from the content
    /// (`"<first 16 hex chars of sha256>"`); `Some("")`: no `ETag` header;
    /// otherwise sent verbatim (include the quotes, e.g. `"\"v1\""`).
    pub etag: Option<String>,
    /// Faults consumed in order, one per request (GET or HEAD) to this path;
    /// once empty, requests are served normally.
    pub responses: Vec<Fault>,
    /// Throttle body bytes of each response to this rate (smoothly, in steps
    /// of at most 64 KiB, about 20 per second).
    pub rate_limit_bytes_per_sec: Option<u64>,
    /// Answer 302 with this `Location` (absolute or relative, sent verbatim).
    /// A fault from `responses` still takes precedence.
    pub redirect_to: Option<String>,
}

/// One injected response, consumed by one request (see [`Behavior::responses`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, these extra headers and this body (e.g. 503,
    /// or 429 with `("Retry-After", "2")`, or 404). The body is sent with
    /// `Content-Type: text/plain` unless a `Content-Type` is given in `headers`.
    Status {
        /// HTTP status code (an invalid code becomes 500).
        code: u16,
        /// Extra response headers (invalid names or values are skipped).
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
    /// Serve normally (honoring `Range`) but abort the connection after this
    /// many body bytes, so that the client sees an error / truncated body (with
    /// `Content-Length` the body is short; with chunked encoding the final
    /// chunk never comes). If the response body is not longer than this, it is
    /// served completely. No effect on HEAD.
    ResetAfter(u64),
    /// Serve normally (honoring `Range`) but after this many body bytes stop
    /// sending and keep the connection open until the client gives up (or the
    /// server shuts down). If the response body is not longer than this, it is
    /// served completely. No effect on HEAD.
    StallAfter(u64),
    /// Serve normally (a placeholder so that faults hit later requests).
    Normal,
}

/// Counters for one path (see [`FileServer::stats`]).
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    /// Number of requests to this path (any method, any outcome).
    pub requests: u64,
    /// Body bytes of the file's content handed to the connection, summed over
    /// all responses (200 and 206 bodies; error/fault/redirect bodies are not
    /// counted). Counted per chunk when the chunk is yielded to hyper.
    pub body_bytes_sent: u64,
    /// Every request to this path, oldest first.
    pub log: Vec<RequestRecord>,
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Request method (`GET`, `HEAD`, ...).
    pub method: String,
    /// Request path as sent (percent-encoded, without the query).
    pub path: String,
    /// Query string, if any (without the `?`).
    pub query: Option<String>,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// `If-Range` header, if any.
    pub if_range: Option<String>,
    /// All request headers (lowercase names, values lossily decoded), in order.
    pub headers: Vec<(String, String)>,
    /// Response status code.
    pub status: u16,
    /// File body bytes handed to the connection for this response so far.
    pub body_bytes_sent: u64,
}

impl RequestRecord {
    /// Value of the first request header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

// ---------------------------------------------------------------------------
// State

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    in_flight: Arc<InFlight>,
}

/// Bodies being sent right now, and the most at once: how many connections a client really
/// kept busy at the same time.
#[derive(Default)]
struct InFlight {
    current: AtomicU64,
    max: AtomicU64,
}

/// Counts one body in flight for as long as it lives.
struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(gauge: &Arc<InFlight>) -> Self {
        let now = gauge.current.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(gauge.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Entry {
    file: Option<FileData>,
    /// Number of times the content was replaced (drives `Last-Modified`).
    generation: u64,
    behavior: Behavior,
    requests: u64,
    body_bytes: Arc<AtomicU64>,
    log: Vec<LogEntry>,
}

struct FileData {
    body: Bytes,
    sha256: String,
    etag: String,
    last_modified: SystemTime,
}

impl FileData {
    fn new(body: Bytes, generation: u64) -> FileData {
        let sha256 = sha256_hex(&body);
        let etag = format!("\"{}\"", &sha256[..16]);
        let last_modified =
            SystemTime::UNIX_EPOCH + Duration::from_secs(BASE_LAST_MODIFIED_SECS + 60 * generation);
        FileData {
            body,
            sha256,
            etag,
            last_modified,
        }
    }
}

struct LogEntry {
    record: RequestRecord,
    body_bytes: Arc<AtomicU64>,
}

fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Public API

impl FileServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// Panics if called outside a tokio runtime or if binding fails.
    pub async fn start() -> FileServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("fileserver: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fileserver: local_addr");
        let state = Arc::new(Mutex::new(State::default()));
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, state.clone(), cancel.clone()));
        FileServer {
            inner: Arc::new(Inner {
                addr,
                state,
                cancel,
            }),
        }
    }

    /// Binds `127.0.0.1:0` and serves from a tokio runtime of its own on a
    /// background thread, for tests that are not async (e.g. end-to-end tests
    /// that spawn binaries). Can be called from inside or outside a runtime.
    pub fn start_blocking() -> FileServer {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("fileserver: bind 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("fileserver: set_nonblocking");
        let addr = std_listener.local_addr().expect("fileserver: local_addr");
        let state = Arc::new(Mutex::new(State::default()));
        let cancel = CancellationToken::new();
        let (thread_state, thread_cancel) = (state.clone(), cancel.clone());
        std::thread::Builder::new()
            .name(format!("fileserver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fileserver-rt")
                    .enable_all()
                    .build()
                    .expect("fileserver: build runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .expect("fileserver: listener from_std");
                    serve(listener, thread_state, thread_cancel).await;
                });
            })
            .expect("fileserver: spawn thread");
        FileServer {
            inner: Arc::new(Inner {
                addr,
                state,
                cancel,
            }),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Absolute URL for `path` (a leading `/` is added when missing; the path
    /// is used verbatim otherwise, so percent-encode it yourself if needed).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.inner.addr, normalize(path))
    }

    /// Serves `body` at `path` (replacing any previous content, keeping the
    /// behavior and stats). `ETag` is derived from the content; `Last-Modified`
    /// is a fixed date that moves forward each time the content is replaced.
    pub fn add(&self, path: &str, body: impl Into<Bytes>) -> ServedFile {
        let key = normalize(path);
        let body = body.into();
        let len = body.len() as u64;
        let mut st = lock(&self.inner.state);
        let entry = st.entries.entry(key).or_default();
        let generation = match entry.file {
            Some(_) => entry.generation + 1,
            None => entry.generation,
        };
        drop(st);
        // Hash outside the lock: this can take a while for big files.
        let data = FileData::new(body, generation);
        let sha256 = data.sha256.clone();
        let mut st = lock(&self.inner.state);
        let entry = st.entries.entry(normalize(path)).or_default();
        entry.generation = generation;
        entry.file = Some(data);
        ServedFile {
            url: self.url(path),
            sha256,
            len,
        }
    }

    /// Replaces the content at `path` (creating the file if needed). The
    /// derived `ETag` and the `Last-Modified` date change accordingly.
    pub fn set_body(&self, path: &str, body: impl Into<Bytes>) {
        self.add(path, body);
    }

    /// Stops serving `path` (requests then get 404). Behavior and stats are kept.
    pub fn remove(&self, path: &str) {
        if let Some(entry) = lock(&self.inner.state).entries.get_mut(&normalize(path)) {
            if entry.file.take().is_some() {
                // A later `add` must not reuse this `Last-Modified` date.
                entry.generation += 1;
            }
        }
    }

    /// Replaces the behavior of `path` (the path need not have a file, e.g. a
    /// redirect or a fault-only path).
    pub fn set_behavior(&self, path: &str, behavior: Behavior) {
        lock(&self.inner.state)
            .entries
            .entry(normalize(path))
            .or_default()
            .behavior = behavior;
    }

    /// The current behavior of `path`, including the faults not consumed yet.
    pub fn behavior(&self, path: &str) -> Behavior {
        lock(&self.inner.state)
            .entries
            .get(&normalize(path))
            .map(|e| e.behavior.clone())
            .unwrap_or_default()
    }

    /// Appends faults to the queue of `path` (see [`Behavior::responses`]).
    pub fn push_faults(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.inner.state)
            .entries
            .entry(normalize(path))
            .or_default()
            .behavior
            .responses
            .extend(faults);
    }

    /// Request count, body bytes sent and request log of `path` (requests to
    /// unknown paths are counted too). All zero/empty if never requested.
    pub fn stats(&self, path: &str) -> FileStats {
        let st = lock(&self.inner.state);
        let Some(entry) = st.entries.get(&normalize(path)) else {
            return FileStats::default();
        };
        FileStats {
            requests: entry.requests,
            body_bytes_sent: entry.body_bytes.load(Ordering::SeqCst),
            log: entry
                .log
                .iter()
                .map(|l| RequestRecord {
                    body_bytes_sent: l.body_bytes.load(Ordering::SeqCst),
                    ..l.record.clone()
                })
                .collect(),
        }
    }

    /// The most response bodies (file contents) that were being sent at the same time since
    /// the server started or [`FileServer::reset_max_in_flight`].
    pub fn max_in_flight(&self) -> u64 {
        lock(&self.inner.state).in_flight.max.load(Ordering::SeqCst)
    }

    /// Start counting [`FileServer::max_in_flight`] afresh.
    pub fn reset_max_in_flight(&self) {
        let st = lock(&self.inner.state);
        st.in_flight.max.store(
            st.in_flight.current.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// Zeroes the counters and clears the log of `path`. Bytes still being
    /// sent by responses started before the reset are not counted afterwards.
    pub fn reset_stats(&self, path: &str) {
        if let Some(entry) = lock(&self.inner.state).entries.get_mut(&normalize(path)) {
            entry.requests = 0;
            entry.body_bytes = Arc::new(AtomicU64::new(0));
            entry.log.clear();
        }
    }

    /// Stops the server now: no new connections are accepted and open
    /// connections are closed. Other handles then see a dead server.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Deterministic pseudo-random bytes (xorshift64), fast enough for hundreds
/// of MiB in tests. The same `(len, seed)` always gives the same bytes, and a
/// shorter `len` gives a prefix of a longer one.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    if x == 0 {
        x = 0x2545_F491_4F6C_DD1D;
    }
    const BLOCK: usize = 4096;
    let mut out: Vec<u8> = Vec::with_capacity(len + BLOCK);
    let mut buf = [0u8; BLOCK];
    while out.len() < len {
        let mut j = 0;
        while j < BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            buf[j] = b[0];
            buf[j + 1] = b[1];
            buf[j + 2] = b[2];
            buf[j + 3] = b[3];
            buf[j + 4] = b[4];
            buf[j + 5] = b[5];
            buf[j + 6] = b[6];
            buf[j + 7] = b[7];
            j += 8;
        }
        out.extend_from_slice(&buf);
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Lowercase hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

// ---------------------------------------------------------------------------
// Server

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    conns.spawn(async move {
                        let flushed = Arc::new(FlushSignal::default());
                        let io = FlushSignalIo { inner: stream, signal: flushed.clone() };
                        let svc = hyper::service::service_fn(move |req| {
                            let resp = handle(&state, req, &flushed);
                            async move { Ok::<_, Infallible>(resp) }
                        });
                        // Errors (client gone, injected reset) just end the connection.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(io), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Dropping the JoinSet aborts every connection task, closing the sockets.
    conns.abort_all();
}

fn header_string(headers: &hyper::HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn handle(
    state: &Mutex<State>,
    req: Request<Incoming>,
    flushed: &Arc<FlushSignal>,
) -> Response<ServeBody> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let range = header_string(req.headers(), header::RANGE);
    let if_range = header_string(req.headers(), header::IF_RANGE);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    let mut st = lock(state);
    let key = if st.entries.contains_key(&raw_path) {
        raw_path.clone()
    } else {
        let decoded = percent_encoding::percent_decode_str(&raw_path)
            .decode_utf8_lossy()
            .into_owned();
        if st.entries.contains_key(&decoded) {
            decoded
        } else {
            raw_path.clone()
        }
    };
    let in_flight = st.in_flight.clone();
    let entry = st.entries.entry(key).or_default();
    entry.requests += 1;
    let counter = Arc::new(AtomicU64::new(0));
    let mut resp = respond(
        entry,
        &method,
        range.as_deref(),
        if_range.as_deref(),
        &counter,
        flushed,
    );
    if !resp.body().data.is_empty() {
        resp.body_mut().in_flight = Some(InFlightGuard::new(&in_flight));
    }
    entry.log.push(LogEntry {
        record: RequestRecord {
            method: method.as_str().to_string(),
            path: raw_path,
            query: req.uri().query().map(str::to_string),
            range,
            if_range,
            headers,
            status: resp.status().as_u16(),
            body_bytes_sent: 0,
        },
        body_bytes: counter,
    });
    resp
}

fn simple(status: StatusCode, body: &str, is_head: bool) -> Response<ServeBody> {
    let mut resp = Response::new(if is_head {
        ServeBody::empty()
    } else {
        ServeBody::plain(Bytes::copy_from_slice(body.as_bytes()))
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn respond(
    entry: &mut Entry,
    method: &Method,
    range: Option<&str>,
    if_range: Option<&str>,
    counter: &Arc<AtomicU64>,
    flushed: &Arc<FlushSignal>,
) -> Response<ServeBody> {
    let is_head = method == Method::HEAD;
    if method != Method::GET && !is_head {
        let mut resp = simple(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            false,
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }

    let fault = if entry.behavior.responses.is_empty() {
        Fault::Normal
    } else {
        entry.behavior.responses.remove(0)
    };
    let mut cut = None;
    match fault {
        Fault::Status {
            code,
            headers,
            body,
        } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = simple(status, &body, is_head);
            let h = resp.headers_mut();
            for (name, value) in headers {
                let (Ok(name), Ok(value)) = (
                    HeaderName::try_from(name.as_str()),
                    HeaderValue::try_from(value.as_str()),
                ) else {
                    continue;
                };
                if name == header::CONTENT_TYPE {
                    h.remove(header::CONTENT_TYPE);
                }
                h.append(name, value);
            }
            return resp;
        }
        Fault::ResetAfter(n) => cut = Some((n, Cut::Reset)),
        Fault::StallAfter(n) => cut = Some((n, Cut::Stall)),
        Fault::Normal => {}
    }

    let behavior = &entry.behavior;
    if let Some(location) = &behavior.redirect_to {
        let mut resp = simple(StatusCode::FOUND, "", is_head);
        match HeaderValue::try_from(location.as_str()) {
            Ok(v) => {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Err(_) => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        }
        return resp;
    }

    let Some(file) = &entry.file else {
        return simple(StatusCode::NOT_FOUND, "not found\n", is_head);
    };
    let len = file.body.len() as u64;
    let etag = match &behavior.etag {
        None => Some(file.etag.clone()),
        Some(e) if e.is_empty() => None,
        Some(e) => Some(e.clone()),
    };

    let mut outcome = RangeOutcome::Full;
    if method == Method::GET && !behavior.no_ranges {
        if let Some(range) = range {
            let honor = match if_range {
                None => true,
                Some(v) => if_range_matches(v, etag.as_deref(), file.last_modified),
            };
            if honor {
                outcome = parse_range(range, len);
            }
        }
    }

    let (status, start, end) = match outcome {
        RangeOutcome::Full => (StatusCode::OK, 0, len),
        RangeOutcome::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        RangeOutcome::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0),
    };

    let body = if is_head || status == StatusCode::RANGE_NOT_SATISFIABLE {
        ServeBody::empty()
    } else {
        let data = file.body.slice(start as usize..end as usize);
        let mut body = ServeBody::plain(data);
        body.exact = !behavior.no_content_length;
        body.counters = vec![entry.body_bytes.clone(), counter.clone()];
        if let Some((n, kind)) = cut {
            if n < end - start {
                body.cut = Some((n as usize, kind));
                body.flushed = Some(flushed.clone());
            }
        }
        if let Some(rate) = behavior.rate_limit_bytes_per_sec {
            let rate = rate.max(1);
            body.rate = Some(rate);
            body.chunk = (rate / 20).clamp(512, CHUNK as u64) as usize;
        }
        body
    };

    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if !behavior.no_ranges {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Some(etag) = etag.and_then(|e| HeaderValue::try_from(e).ok()) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::try_from(httpdate::fmt_http_date(file.last_modified))
            .expect("http date is a valid header value"),
    );
    if let Some(cd) = behavior
        .content_disposition
        .as_deref()
        .and_then(|v| HeaderValue::try_from(v).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, cd);
    }
    match status {
        StatusCode::RANGE_NOT_SATISFIABLE => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes */{len}")).expect("valid header"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        }
        _ => {
            if status == StatusCode::PARTIAL_CONTENT {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::try_from(format!("bytes {start}-{}/{len}", end - 1))
                        .expect("valid header"),
                );
            }
            if !behavior.no_content_length {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
            }
        }
    }
    resp
}

// ---------------------------------------------------------------------------
// Range handling (RFC 9110 §14)

#[derive(Debug, PartialEq, Eq)]
enum RangeOutcome {
    /// Ignore the Range header: 200 with the full body.
    Full,
    /// 206 with bytes `first..=last`.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses a `Range` header value for a representation of `len` bytes.
/// Malformed headers, other units and multiple ranges yield `Full`.
fn parse_range(value: &str, len: u64) -> RangeOutcome {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let set = set.trim();
    if set.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = set.split_once('-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    // Digit strings too large for u64 saturate.
    let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !is_digits(last) {
            return RangeOutcome::Full;
        }
        let n = number(last);
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeOutcome::Partial(len - n, len - 1);
    }
    if !is_digits(first) {
        return RangeOutcome::Full;
    }
    let start = number(first);
    let end = if last.is_empty() {
        None
    } else if is_digits(last) {
        Some(number(last))
    } else {
        return RangeOutcome::Full;
    };
    if end.is_some_and(|e| e < start) {
        return RangeOutcome::Full;
    }
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// RFC 9110 §13.1.5: an entity tag matches by strong comparison, a date
/// matches if it is exactly the `Last-Modified` date.
fn if_range_matches(value: &str, etag: Option<&str>, last_modified: SystemTime) -> bool {
    let value = value.trim();
    if value.starts_with("W/") {
        return false;
    }
    if value.starts_with('"') {
        return etag.is_some_and(|e| !e.starts_with("W/") && e == value);
    }
    httpdate::parse_http_date(value).is_ok_and(|d| d == last_modified)
}

// ---------------------------------------------------------------------------
// Connection IO that reports when hyper has written out its whole buffer

/// Counts `poll_flush` calls on a connection: hyper calls it only once its
/// write buffer has been completely handed to the socket.
#[derive(Default)]
struct FlushSignal {
    flushes: AtomicU64,
    waker: AtomicWaker,
}

struct FlushSignalIo {
    inner: tokio::net::TcpStream,
    signal: Arc<FlushSignal>,
}

impl AsyncRead for FlushSignalIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushSignalIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        if res.is_ready() {
            self.signal.flushes.fetch_add(1, Ordering::SeqCst);
            self.signal.waker.wake();
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Response body

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Reset,
    Stall,
}

/// Streams a `Bytes` in chunks, with optional throttling and an optional cut
/// (reset or stall) after some bytes, counting the bytes it yields.
struct ServeBody {
    data: Bytes,
    pos: usize,
    chunk: usize,
    /// Report an exact size hint (`Content-Length`); else chunked encoding.
    exact: bool,
    cut: Option<(usize, Cut)>,
    rate: Option<u64>,
    started: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Vec<Arc<AtomicU64>>,
    /// Keeps the in-flight gauge up while this body lives.
    in_flight: Option<InFlightGuard>,
    /// For a reset: the connection's flush signal, and the flush count seen
    /// when the cut point was reached.
    flushed: Option<Arc<FlushSignal>>,
    cut_seen_flushes: Option<u64>,
}

impl ServeBody {
    fn plain(data: Bytes) -> ServeBody {
        ServeBody {
            data,
            pos: 0,
            chunk: CHUNK,
            exact: true,
            cut: None,
            rate: None,
            started: None,
            sleep: None,
            counters: Vec::new(),
            in_flight: None,
            flushed: None,
            cut_seen_flushes: None,
        }
    }

    fn empty() -> ServeBody {
        ServeBody::plain(Bytes::new())
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let remaining = this.data.len() - this.pos;
        if remaining == 0 {
            return Poll::Ready(None);
        }
        let mut n = remaining.min(this.chunk);
        if let Some((at, kind)) = this.cut {
            if this.pos >= at {
                return match kind {
                    Cut::Reset => {
                        // hyper buffers up to ~400 KiB before writing to the
                        // socket and drops its buffer when the body fails, so
                        // wait until everything before the cut has been
                        // written out (hyper flushes the socket once its
                        // buffer is empty) before failing the body.
                        if let Some(signal) = &this.flushed {
                            signal.waker.register(cx.waker());
                            let now = signal.flushes.load(Ordering::SeqCst);
                            match this.cut_seen_flushes {
                                None => {
                                    this.cut_seen_flushes = Some(now);
                                    return Poll::Pending;
                                }
                                Some(seen) if now == seen => return Poll::Pending,
                                Some(_) => {}
                            }
                        }
                        this.cut = None;
                        this.pos = this.data.len();
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "fileserver: injected connection reset",
                        ))))
                    }
                    // Never woken: the connection stays open until the client
                    // goes away or the server shuts down.
                    Cut::Stall => Poll::Pending,
                };
            }
            n = n.min(at - this.pos);
        }
        if let Some(rate) = this.rate {
            if this.sleep.is_none() {
                let started = *this.started.get_or_insert_with(tokio::time::Instant::now);
                let due = started + Duration::from_secs_f64((this.pos + n) as f64 / rate as f64);
                if due > tokio::time::Instant::now() {
                    this.sleep = Some(Box::pin(tokio::time::sleep_until(due)));
                }
            }
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
        }
        let chunk = this.data.slice(this.pos..this.pos + n);
        this.pos += n;
        for c in &this.counters {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact((self.data.len() - self.pos) as u64)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn hdr<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
        resp.headers().get(name).map(|v| v.to_str().unwrap())
    }

    async fn setup(len: usize) -> (FileServer, ServedFile, Bytes) {
        let server = FileServer::start().await;
        let data = pseudo_random_bytes(len, 42);
        let file = server.add("/f.bin", data.clone());
        (server, file, data)
    }

    #[test]
    fn range_parsing() {
        use RangeOutcome::*;
        assert_eq!(parse_range("bytes=0-9", 100), Partial(0, 9));
        assert_eq!(parse_range("bytes=10-", 100), Partial(10, 99));
        assert_eq!(parse_range("bytes=90-200", 100), Partial(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Partial(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Partial(0, 99));
        assert_eq!(parse_range("Bytes = 5 - 6", 100), Partial(5, 6));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=9-5", 100), Full);
        assert_eq!(parse_range("bytes=a-5", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-5", 100), Full);
        assert_eq!(parse_range("bytes=", 100), Full);
        assert_eq!(parse_range("bytes=-", 100), Full);
        assert_eq!(parse_range("garbage", 100), Full);
    }

    #[test]
    fn random_bytes_are_deterministic_prefixes() {
        let a = pseudo_random_bytes(10_000, 1);
        let b = pseudo_random_bytes(10_003, 1);
        let c = pseudo_random_bytes(10_000, 2);
        assert_eq!(a.len(), 10_000);
        assert_eq!(&b[..10_000], &a[..]);
        assert_ne!(a, c);
        assert!(pseudo_random_bytes(0, 0).is_empty());
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn random_bytes_are_fast() {
        let t = Instant::now();
        let big = pseudo_random_bytes(256 << 20, 3);
        assert_eq!(big.len(), 256 << 20);
        // Generous bound: debug builds on a loaded 2-core machine.
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn full_get() {
        let (server, file, data) = setup(300_000).await;
        assert_eq!(file.len, 300_000);
        assert_eq!(file.sha256, sha256_hex(&data));
        assert_eq!(file.url, server.url("f.bin"));
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(hdr(&resp, "content-length"), Some("300000"));
        assert_eq!(hdr(&resp, "accept-ranges"), Some("bytes"));
        assert_eq!(hdr(&resp, "content-type"), Some("application/octet-stream"));
        let etag = hdr(&resp, "etag").unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", &file.sha256[..16]));
        let lm = hdr(&resp, "last-modified").unwrap().to_string();
        assert!(httpdate::parse_http_date(&lm).is_ok());
        assert!(hdr(&resp, "content-disposition").is_none());
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, data);
        let stats = server.stats("/f.bin");
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.body_bytes_sent, 300_000);
        assert_eq!(stats.log[0].method, "GET");
        assert_eq!(stats.log[0].status, 200);
        assert_eq!(stats.log[0].body_bytes_sent, 300_000);
        assert!(stats.log[0].header("host").is_some());
    }

    #[tokio::test]
    async fn range_206() {
        let (server, file, data) = setup(300_000).await;
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=1000-199999")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(
            hdr(&resp, "content-range"),
            Some("bytes 1000-199999/300000")
        );
        assert_eq!(hdr(&resp, "content-length"), Some("199000"));
        assert_eq!(hdr(&resp, "accept-ranges"), Some("bytes"));
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, data.slice(1000..200_000));

        // Open-ended and past-the-end ranges.
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=299990-400000")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(
            hdr(&resp, "content-range"),
            Some("bytes 299990-299999/300000")
        );
        assert_eq!(resp.bytes().await.unwrap(), data.slice(299_990..));

        let stats = server.stats("/f.bin");
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.body_bytes_sent, 199_000 + 10);
        assert_eq!(stats.log[0].range.as_deref(), Some("bytes=1000-199999"));
        assert_eq!(stats.log[0].status, 206);
    }

    #[tokio::test]
    async fn suffix_range() {
        let (_server, file, data) = setup(5000).await;
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=-100")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert_eq!(hdr(&resp, "content-range"), Some("bytes 4900-4999/5000"));
        assert_eq!(resp.bytes().await.unwrap(), data.slice(4900..));
    }

    #[tokio::test]
    async fn unsatisfiable_416() {
        let (server, file, _data) = setup(5000).await;
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=5000-")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 416);
        assert_eq!(hdr(&resp, "content-range"), Some("bytes */5000"));
        assert!(resp.bytes().await.unwrap().is_empty());
        assert_eq!(server.stats("f.bin").body_bytes_sent, 0);
        assert_eq!(server.stats("f.bin").log[0].status, 416);
    }

    #[tokio::test]
    async fn malformed_range_is_ignored() {
        let (_server, file, data) = setup(5000).await;
        for range in ["bytes=9-5", "bytes=x-", "lines=1-2", "bytes=0-1,4-5"] {
            let resp = client()
                .get(&file.url)
                .header("Range", range)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{range}");
            assert!(hdr(&resp, "content-range").is_none());
            assert_eq!(resp.bytes().await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn if_range_match_and_mismatch() {
        let (server, file, data) = setup(10_000).await;
        let head = client().head(&file.url).send().await.unwrap();
        let etag = hdr(&head, "etag").unwrap().to_string();
        let lm = hdr(&head, "last-modified").unwrap().to_string();

        // Matching ETag / date: range honored.
        for validator in [etag.as_str(), lm.as_str()] {
            let resp = client()
                .get(&file.url)
                .header("Range", "bytes=100-")
                .header("If-Range", validator)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206, "{validator}");
            assert_eq!(resp.bytes().await.unwrap(), data.slice(100..));
        }

        // Content changes: ETag and Last-Modified change, old validators
        // get the full new body.
        let new_data = pseudo_random_bytes(12_000, 99);
        server.set_body("/f.bin", new_data.clone());
        for validator in [etag.as_str(), lm.as_str(), "W/\"weak\"", "\"other\""] {
            let resp = client()
                .get(&file.url)
                .header("Range", "bytes=100-")
                .header("If-Range", validator)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{validator}");
            assert_ne!(hdr(&resp, "etag"), Some(etag.as_str()));
            assert_ne!(hdr(&resp, "last-modified"), Some(lm.as_str()));
            assert_eq!(hdr(&resp, "content-length"), Some("12000"));
            assert_eq!(resp.bytes().await.unwrap(), new_data);
        }
        let log = server.stats("/f.bin").log;
        assert_eq!(log.last().unwrap().if_range.as_deref(), Some("\"other\""));
    }

    #[tokio::test]
    async fn etag_override_and_content_disposition() {
        let (server, file, _data) = setup(100).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                etag: Some("W/\"v1\"".into()),
                content_disposition: Some("attachment; filename=\"x.bin\"".into()),
                ..Default::default()
            },
        );
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(hdr(&resp, "etag"), Some("W/\"v1\""));
        assert_eq!(
            hdr(&resp, "content-disposition"),
            Some("attachment; filename=\"x.bin\"")
        );
        // A weak ETag never matches If-Range.
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=1-")
            .header("If-Range", "W/\"v1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);

        server.set_behavior(
            "/f.bin",
            Behavior {
                etag: Some(String::new()),
                ..Default::default()
            },
        );
        let resp = client().get(&file.url).send().await.unwrap();
        assert!(hdr(&resp, "etag").is_none());
        assert!(hdr(&resp, "last-modified").is_some());
    }

    #[tokio::test]
    async fn no_ranges() {
        let (server, file, data) = setup(10_000).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                no_ranges: true,
                ..Default::default()
            },
        );
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=100-")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(hdr(&resp, "accept-ranges").is_none());
        assert!(hdr(&resp, "content-range").is_none());
        assert_eq!(resp.bytes().await.unwrap(), data);
        assert_eq!(server.stats("/f.bin").body_bytes_sent, 10_000);
    }

    #[tokio::test]
    async fn no_content_length_is_chunked() {
        let (server, file, data) = setup(200_000).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                no_content_length: true,
                ..Default::default()
            },
        );
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(hdr(&resp, "content-length").is_none());
        assert_eq!(hdr(&resp, "transfer-encoding"), Some("chunked"));
        assert_eq!(resp.bytes().await.unwrap(), data);
    }

    #[tokio::test]
    async fn reset_after_is_a_client_error() {
        for chunked in [false, true] {
            let (server, file, _data) = setup(1 << 20).await;
            server.set_behavior(
                "/f.bin",
                Behavior {
                    no_content_length: chunked,
                    responses: vec![Fault::ResetAfter(300_000)],
                    ..Default::default()
                },
            );
            let resp = client().get(&file.url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut resp = resp;
            let mut got = 0u64;
            let err = loop {
                match resp.chunk().await {
                    Ok(Some(c)) => got += c.len() as u64,
                    Ok(None) => panic!("clean EOF after {got} bytes (chunked: {chunked})"),
                    Err(e) => break e,
                }
            };
            // Everything before the cut reaches the client, then the connection dies.
            assert_eq!(got, 300_000);
            assert!(
                err.is_body() || err.is_decode() || err.is_request(),
                "{err:?}"
            );
            assert_eq!(server.stats("/f.bin").body_bytes_sent, 300_000);

            // The next request is served normally, honoring Range.
            let resp = client()
                .get(&file.url)
                .header("Range", format!("bytes={got}-"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206);
            assert_eq!(resp.bytes().await.unwrap().len() as u64, (1 << 20) - got);
        }
    }

    #[tokio::test]
    async fn reset_after_with_slow_reader_delivers_everything_before_the_cut() {
        let (server, file, data) = setup(4 << 20).await;
        server.push_faults("/f.bin", [Fault::ResetAfter(2 << 20)]);
        let mut resp = client().get(&file.url).send().await.unwrap();
        let mut got = Vec::new();
        let res = loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            match resp.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                other => break other,
            }
        };
        assert!(res.is_err(), "{res:?}");
        assert_eq!(got.len(), 2 << 20);
        assert_eq!(&got[..], &data[..2 << 20]);
    }

    #[tokio::test]
    async fn reset_after_on_range_counts_from_range_start() {
        let (server, file, data) = setup(1 << 20).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                responses: vec![Fault::Normal, Fault::ResetAfter(100_000)],
                ..Default::default()
            },
        );
        assert_eq!(
            client()
                .get(&file.url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            data
        );
        let resp = client()
            .get(&file.url)
            .header("Range", "bytes=500000-")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        assert!(resp.bytes().await.is_err());
        let stats = server.stats("/f.bin");
        assert_eq!(stats.body_bytes_sent, (1 << 20) + 100_000);
        assert_eq!(stats.log[1].body_bytes_sent, 100_000);
        assert!(server.behavior("/f.bin").responses.is_empty());
    }

    #[tokio::test]
    async fn stall_after() {
        let (server, file, _data) = setup(1 << 20).await;
        server.push_faults("/f.bin", [Fault::StallAfter(100_000)]);
        let mut resp = client().get(&file.url).send().await.unwrap();
        let mut got = 0;
        loop {
            match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
                Ok(Ok(Some(c))) => got += c.len(),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_elapsed) => break,
            }
        }
        assert_eq!(got, 100_000);
        assert_eq!(server.stats("/f.bin").body_bytes_sent, 100_000);
    }

    #[tokio::test]
    async fn status_fault_with_retry_after() {
        let (server, file, data) = setup(1000).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                responses: vec![
                    Fault::Status {
                        code: 429,
                        headers: vec![("Retry-After".into(), "2".into())],
                        body: "slow down".into(),
                    },
                    Fault::Status {
                        code: 503,
                        headers: vec![],
                        body: String::new(),
                    },
                ],
                ..Default::default()
            },
        );
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(hdr(&resp, "retry-after"), Some("2"));
        assert_eq!(resp.text().await.unwrap(), "slow down");
        let resp = client().head(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), data);
        let stats = server.stats("/f.bin");
        assert_eq!(stats.requests, 3);
        assert_eq!(
            stats.log.iter().map(|r| r.status).collect::<Vec<_>>(),
            [429, 503, 200]
        );
        // Fault bodies are not file bytes.
        assert_eq!(stats.body_bytes_sent, 1000);
    }

    #[tokio::test]
    async fn head() {
        let (server, file, _data) = setup(123_456).await;
        let resp = client()
            .head(&file.url)
            .header("Range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        // Range is only defined for GET (RFC 9110 §14.2).
        assert_eq!(resp.status(), 200);
        assert_eq!(hdr(&resp, "content-length"), Some("123456"));
        assert_eq!(hdr(&resp, "accept-ranges"), Some("bytes"));
        assert!(hdr(&resp, "etag").is_some());
        assert!(resp.bytes().await.unwrap().is_empty());
        let stats = server.stats("/f.bin");
        assert_eq!(stats.body_bytes_sent, 0);
        assert_eq!(stats.log[0].method, "HEAD");

        let resp = client().head(server.url("/missing")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }

    #[tokio::test]
    async fn not_found_and_method_not_allowed() {
        let (server, file, _data) = setup(10).await;
        let resp = client().get(server.url("/nope")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(server.stats("/nope").requests, 1);
        let resp = client().post(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 405);
        server.remove("/f.bin");
        let resp = client().get(&file.url).send().await.unwrap();
        assert_eq!(resp.status(), 404);
    }

    #[tokio::test]
    async fn redirect() {
        let server = FileServer::start().await;
        let data = pseudo_random_bytes(1000, 5);
        server.add("/real/file.bin", data.clone());
        server.set_behavior(
            "/alias",
            Behavior {
                redirect_to: Some("/real/file.bin".into()),
                ..Default::default()
            },
        );
        let resp = client().get(server.url("/alias")).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(hdr(&resp, "location"), Some("/real/file.bin"));

        // An absolute Location, followed by a redirect-following client.
        server.set_behavior(
            "/abs",
            Behavior {
                redirect_to: Some(server.url("/real/file.bin")),
                ..Default::default()
            },
        );
        let following = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = following.get(server.url("/abs")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.url().path(), "/real/file.bin");
        assert_eq!(resp.bytes().await.unwrap(), data);
        assert_eq!(server.stats("/abs").log[0].status, 302);
        assert_eq!(server.stats("/real/file.bin").body_bytes_sent, 1000);
    }

    #[tokio::test]
    async fn rate_limit_roughly_holds() {
        let (server, file, data) = setup(1 << 20).await;
        server.set_behavior(
            "/f.bin",
            Behavior {
                rate_limit_bytes_per_sec: Some(2 << 20),
                ..Default::default()
            },
        );
        let t = Instant::now();
        let body = client()
            .get(&file.url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let elapsed = t.elapsed();
        assert_eq!(body, data);
        assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn stats_counting_and_reset() {
        let (server, file, _data) = setup(100_000).await;
        for _ in 0..3 {
            client()
                .get(&file.url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
        }
        client()
            .get(&file.url)
            .header("Range", "bytes=-10")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let stats = server.stats("/f.bin");
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.body_bytes_sent, 300_010);
        assert_eq!(stats.log.len(), 4);
        server.reset_stats("/f.bin");
        let stats = server.stats("/f.bin");
        assert_eq!(
            (stats.requests, stats.body_bytes_sent, stats.log.len()),
            (0, 0, 0)
        );
        assert_eq!(server.stats("/never").requests, 0);
    }

    #[tokio::test]
    async fn percent_encoded_paths_and_query() {
        let server = FileServer::start().await;
        server.add("/a b/c.bin", Bytes::from_static(b"hello"));
        let resp = client()
            .get(format!("http://{}/a%20b/c.bin?x=1", server.addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), "hello");
        let log = server.stats("/a b/c.bin").log;
        assert_eq!(log[0].path, "/a%20b/c.bin");
        assert_eq!(log[0].query.as_deref(), Some("x=1"));
    }

    #[tokio::test]
    async fn shutdown_stops_serving() {
        let (server, file, _data) = setup(10).await;
        let other = server.clone();
        drop(server);
        // A clone keeps it alive.
        assert_eq!(client().get(&file.url).send().await.unwrap().status(), 200);
        other.shutdown();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(client().get(&file.url).send().await.is_err());
    }

    /// Raw HTTP/1.1 over a std socket against the background-thread server.
    fn raw_request(addr: SocketAddr, request: &str) -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    fn split_response(raw: &[u8]) -> (String, &[u8]) {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8(raw[..end].to_vec())
                .unwrap()
                .to_lowercase(),
            &raw[end + 4..],
        )
    }

    #[test]
    fn blocking_server_on_the_wire() {
        let server = FileServer::start_blocking();
        let data = pseudo_random_bytes(200_000, 11);
        server.add("/w.bin", data.clone());
        let addr = server.addr();

        let raw = raw_request(
            addr,
            "GET /w.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
        );
        let (head, body) = split_response(&raw);
        assert!(head.starts_with("http/1.1 206"), "{head}");
        assert!(head.contains("content-range: bytes 10-19/200000"), "{head}");
        assert!(head.contains("content-length: 10"), "{head}");
        assert_eq!(body, &data[10..20]);

        let raw = raw_request(
            addr,
            "HEAD /w.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let (head, body) = split_response(&raw);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-length: 200000"), "{head}");
        assert!(body.is_empty());

        // A reset leaves a truncated body behind a full Content-Length.
        server.push_faults("/w.bin", [Fault::ResetAfter(70_000)]);
        let raw = raw_request(addr, "GET /w.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = split_response(&raw);
        assert!(head.contains("content-length: 200000"), "{head}");
        assert_eq!(body, &data[..70_000]);

        let stats = server.stats("/w.bin");
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.body_bytes_sent, 10 + 70_000);
    }
}
