//! A fault-injecting HTTP/1.1 static file server for tests.
//!
//! [`FileServer`] listens on `127.0.0.1:0` and serves in-memory files the way a
//! real static file server or CDN does on the wire (RFC 9110 range requests,
//! `If-Range`, `ETag`, `Last-Modified`, `HEAD`), with per-file knobs
//! ([`Behavior`]) to inject faults ([`Fault`]): error statuses, connection
//! resets mid-body, stalls, throttling, redirects, missing range support or
//! missing `Content-Length`. It runs on the serving core in [`crate::serve`].
//!
//! Every request is logged and every body byte handed to the connection is
//! counted, so tests can assert e.g. that a resumed download fetched at most
//! one checkpoint's worth of bytes again ([`FileServer::stats`]).
//!
//! ```no_run
//! # async fn demo() {
//! use testkit::{pseudo_random_bytes, Behavior, Fault, FileServer};
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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::Method;

use crate::serve::entity::{serve_entity, status_answer, Entity};
use crate::serve::host::{handler, Bound, Host, Resource};
use crate::serve::log::RequestLog;
use crate::serve::{lock, Fault, Request, RequestRecord, Response};
use crate::sha256_hex;

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
    host: Host,
    files: Arc<Mutex<Files>>,
    log: RequestLog,
}

impl std::fmt::Debug for FileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileServer")
            .field("addr", &self.inner.host.addr())
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

/// Counters for one path (see [`FileServer::stats`]).
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    /// Number of requests to this path (any method, any outcome).
    pub requests: u64,
    /// Body bytes of the file's content handed to the connection, summed over
    /// all responses (200 and 206 bodies; error/fault/redirect bodies are not
    /// counted).
    pub body_bytes_sent: u64,
    /// Every request to this path, oldest first.
    pub log: Vec<RequestRecord>,
}

/// The served paths.
#[derive(Default)]
struct Files {
    entries: HashMap<String, Entry>,
}

/// One path: its file (if any) and its behavior.
#[derive(Default)]
struct Entry {
    file: Option<FileData>,
    /// Number of times the content was replaced (drives `Last-Modified`).
    generation: u64,
    behavior: Behavior,
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

fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

// ---------------------------------------------------------------------------
// Public API

impl FileServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// Panics if called outside a tokio runtime or if binding fails.
    pub async fn start() -> FileServer {
        Self::on(|bound, log, h| bound.serve("files", log, h))
    }

    /// Binds `127.0.0.1:0` and serves from a tokio runtime of its own on a
    /// background thread, for tests that are not async (e.g. end-to-end tests
    /// that spawn binaries). Can be called from inside or outside a runtime.
    pub fn start_blocking() -> FileServer {
        Self::on(|bound, log, h| bound.serve_on_own_thread("files", log, h))
    }

    fn on(
        serve: impl FnOnce(Bound, RequestLog, crate::serve::host::Handler) -> Host,
    ) -> FileServer {
        let files = Arc::new(Mutex::new(Files::default()));
        let log = RequestLog::default();
        let host = serve(Bound::new(), log.clone(), handler(files.clone(), handle));
        FileServer {
            inner: Arc::new(Inner { host, files, log }),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.host.addr()
    }

    /// Absolute URL for `path` (a leading `/` is added when missing; the path
    /// is used verbatim otherwise, so percent-encode it yourself if needed).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.host.base_url(), normalize(path))
    }

    /// Serves `body` at `path` (replacing any previous content, keeping the
    /// behavior and stats). `ETag` is derived from the content; `Last-Modified`
    /// is a fixed date that moves forward each time the content is replaced.
    pub fn add(&self, path: &str, body: impl Into<Bytes>) -> ServedFile {
        let key = normalize(path);
        let body = body.into();
        let len = body.len() as u64;
        let generation = match lock(&self.inner.files).entries.get(&key) {
            Some(e) if e.file.is_some() => e.generation + 1,
            Some(e) => e.generation,
            None => 0,
        };
        // Hash outside the lock: this can take a while for big files.
        let data = FileData::new(body, generation);
        let sha256 = data.sha256.clone();
        let mut files = lock(&self.inner.files);
        let entry = files.entries.entry(key).or_default();
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
        if let Some(entry) = lock(&self.inner.files).entries.get_mut(&normalize(path)) {
            if entry.file.take().is_some() {
                // A later `add` must not reuse this `Last-Modified` date.
                entry.generation += 1;
            }
        }
    }

    /// Replaces the behavior of `path` (the path need not have a file, e.g. a
    /// redirect or a fault-only path).
    pub fn set_behavior(&self, path: &str, behavior: Behavior) {
        self.with_entry(path, |e| e.behavior = behavior);
    }

    /// The current behavior of `path`, including the faults not consumed yet.
    pub fn behavior(&self, path: &str) -> Behavior {
        self.with_entry(path, |e| e.behavior.clone())
    }

    /// Appends faults to the queue of `path` (see [`Behavior::responses`]).
    pub fn push_faults(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        self.with_entry(path, |e| e.behavior.responses.extend(faults));
    }

    fn with_entry<T>(&self, path: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        f(lock(&self.inner.files)
            .entries
            .entry(normalize(path))
            .or_default())
    }

    /// Request count, body bytes sent and request log of `path` (requests to
    /// unknown paths are counted too). All zero/empty if never requested.
    pub fn stats(&self, path: &str) -> FileStats {
        let key = normalize(path);
        let log = self.inner.log.records(|r| r == key);
        FileStats {
            requests: log.len() as u64,
            body_bytes_sent: log.iter().map(|r| r.body_bytes_sent).sum(),
            log,
        }
    }

    /// The most response bodies (file contents) that were being sent at the same time since
    /// the server started.
    pub fn max_in_flight(&self) -> u64 {
        self.inner.host.max_in_flight()
    }

    /// Zeroes the counters and clears the log of `path`. Bytes still being
    /// sent by responses started before the reset are not counted afterwards.
    pub fn reset_stats(&self, path: &str) {
        let key = normalize(path);
        self.inner.log.forget(|r| r == key);
    }

    /// Stops the server now: no new connections are accepted and open
    /// connections are closed. Other handles then see a dead server.
    pub fn shutdown(&self) {
        self.inner.host.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Serving

async fn handle(files: Arc<Mutex<Files>>, req: Request) -> Response {
    let mut files = lock(&files);
    let key = files.key_of(req.uri().path());
    let mut resp = match files.entries.get_mut(&key) {
        Some(entry) => entry.respond(&req),
        None => not_found(),
    };
    resp.extensions_mut().insert(Resource(key));
    resp
}

impl Files {
    /// The entry a raw path names: as sent, else percent-decoded.
    fn key_of(&self, raw: &str) -> String {
        if self.entries.contains_key(raw) {
            return raw.to_string();
        }
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        if self.entries.contains_key(&decoded) {
            decoded
        } else {
            raw.to_string()
        }
    }
}

impl Entry {
    /// The method check, then the next fault, the redirect, the file.
    fn respond(&mut self, req: &Request) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let allow = [("Allow".to_string(), "GET, HEAD".to_string())];
            return status_answer(405, &allow, "method not allowed\n".into());
        }
        let fault =
            (!self.behavior.responses.is_empty()).then(|| self.behavior.responses.remove(0));
        if let Some(Fault::Status {
            code,
            headers,
            body,
        }) = fault
        {
            return status_answer(code, &headers, body);
        }
        if let Some(location) = &self.behavior.redirect_to {
            return match HeaderValue::try_from(location.as_str()) {
                Ok(_) => {
                    status_answer(302, &[("Location".into(), location.clone())], String::new())
                }
                Err(_) => status_answer(500, &[], String::new()),
            };
        }
        match &self.file {
            Some(file) => serve_entity(req.method(), req.headers(), self.entity(file), fault),
            None => not_found(),
        }
    }

    /// The file as the serving core sees it, with this path's behavior.
    fn entity(&self, file: &FileData) -> Entity {
        let b = &self.behavior;
        let etag = match &b.etag {
            None => Some(file.etag.clone()),
            Some(e) if e.is_empty() => None,
            Some(e) => Some(e.clone()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if !b.no_ranges {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        if let Some(etag) = etag.as_deref().and_then(|e| HeaderValue::try_from(e).ok()) {
            headers.insert(header::ETAG, etag);
        }
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::try_from(httpdate::fmt_http_date(file.last_modified))
                .expect("http date is a valid header value"),
        );
        if let Some(cd) = b
            .content_disposition
            .as_deref()
            .and_then(|v| HeaderValue::try_from(v).ok())
        {
            headers.insert(header::CONTENT_DISPOSITION, cd);
        }
        Entity {
            content: file.body.clone(),
            headers,
            etag,
            last_modified: Some(file.last_modified),
            ranges: !b.no_ranges,
            head_ranges: false,
            exact: !b.no_content_length,
            throttle: b.rate_limit_bytes_per_sec.map(|r| r.max(1)),
        }
    }
}

fn not_found() -> Response {
    status_answer(404, &[], "not found\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client, header as hdr};
    use crate::{md5_hex, pseudo_random_bytes, sha256_hex};
    use std::io::{Read, Write};
    use std::time::Instant;

    async fn setup(len: usize) -> (FileServer, ServedFile, Bytes) {
        let server = FileServer::start().await;
        let data = pseudo_random_bytes(len, 42);
        let file = server.add("/f.bin", data.clone());
        (server, file, data)
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
        assert_eq!(log[0].path(), "/a%20b/c.bin");
        assert_eq!(log[0].query(), Some("x=1"));
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
