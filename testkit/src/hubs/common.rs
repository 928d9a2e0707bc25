//! Machinery shared by the mock hubs: listeners on `127.0.0.1:0`, request recording, byte
//! serving with `Range` and injected faults, signed URLs, hashing and JSON with optional gzip.
//!
//! Nothing here is hub-specific; each hub module decides status codes, headers and bodies
//! from its own specification in `shared/specs/`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio_util::sync::{CancellationToken, DropGuard};

/// One request as a mock host received it, recorded before the handler ran.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Which host of the mock received it: `"hub"`/`"cdn"` (Hugging Face), `"api"`/`"oss"`
    /// (ModelScope) or `"api"`/`"storage"` (Civitai).
    pub host: String,
    /// The HTTP method, e.g. `"GET"`.
    pub method: String,
    /// The request target as sent: the raw (still percent-encoded) path plus `?query`.
    pub path_and_query: String,
    /// Every header, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` (case-insensitive) was sent at all.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The raw path, without the query string.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The raw query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// A fault to inject into the next body-serving `GET` of a storage (or hub file) host.
///
/// Faults are queued; each one is used up by exactly one `GET` that would otherwise have
/// served file bytes (a `HEAD` never consumes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the status line, the headers (with the full `Content-Length`) and only the first
    /// `n` body bytes, then drop the connection, so the client must resume with `Range`.
    ResetAfter(u64),
    /// Ignore `Range` and answer `200` with the whole file (tests restart-from-zero handling).
    IgnoreRange,
    /// Answer a ranged request with `200`, a `Content-Range` header and only the requested
    /// part (the unverified ModelScope quirk [OBS-MS2]).
    RangeAs200WithContentRange,
    /// Serve the right length with wrong bytes (tests hash verification and its retry).
    CorruptBody,
    /// Answer with this status and an empty body instead of the bytes.
    Status(u16),
    /// Wait this long before the first body byte (headers are sent first).
    DelayBody(Duration),
    /// Send the first `n` body bytes, then keep the connection open without sending more
    /// (tests read timeouts).
    StallAfter(u64),
    /// Serve normally (a placeholder so that a later fault hits a later `GET`).
    Normal,
}

/// A queue of one-shot faults.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue(Mutex<VecDeque<Fault>>);

impl FaultQueue {
    /// Queues `fault` for a later `GET`.
    pub(crate) fn push(&self, fault: Fault) {
        lock(&self.0).push_back(fault);
    }

    /// Takes the next fault, if any.
    pub(crate) fn pop(&self) -> Option<Fault> {
        lock(&self.0).pop_front()
    }
}

/// Locks a std mutex, ignoring poisoning (a panicking test handler must not hide the real
/// failure behind a `PoisonError`).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared log of requests of one mock (all of its hosts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<RecordedRequest>>>);

impl Recorder {
    /// A copy of everything recorded so far.
    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        lock(&self.0).clone()
    }

    /// Forgets everything recorded so far.
    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }

    fn push(&self, r: RecordedRequest) {
        lock(&self.0).push(r);
    }
}

/// One listening host of a mock. Dropping it stops the server.
pub(crate) struct HostListener {
    /// Where it listens (always `127.0.0.1`).
    pub(crate) addr: SocketAddr,
    _stop: DropGuard,
}

impl HostListener {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Binds `127.0.0.1:0` and serves `router` there, recording every request under `label`.
pub(crate) async fn spawn_host(label: &'static str, router: Router, rec: Recorder) -> HostListener {
    let router = router
        .layer(middleware::from_fn(head_without_body))
        .layer(middleware::from_fn_with_state((label, rec), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("mock hub: bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("mock hub: local_addr");
    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await;
    });
    HostListener {
        addr,
        _stop: stop.drop_guard(),
    }
}

/// Middleware: record the request before anything else sees it.
async fn record(
    State((label, rec)): State<(&'static str, Recorder)>,
    req: Request,
    next: Next,
) -> Response {
    rec.push(RecordedRequest {
        host: label.to_string(),
        method: req.method().as_str().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    next.run(req).await
}

/// Middleware: a `HEAD` answer is the `GET` answer without its body. A known body length is
/// kept as `Content-Length` (handlers that stream set it themselves).
async fn head_without_body(req: Request, next: Next) -> Response {
    let is_head = req.method() == Method::HEAD;
    let resp = next.run(req).await;
    if !is_head {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if !parts.headers.contains_key(header::CONTENT_LENGTH)
        && !parts.headers.contains_key(header::CONTENT_ENCODING)
    {
        if let Some(n) = body.size_hint().exact() {
            parts.headers.insert(header::CONTENT_LENGTH, n.into());
        }
    }
    Response::from_parts(parts, Body::empty())
}

// ---------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lower-case hex git blob id of `data`: `sha1("blob " + len + "\0" + data)`.
pub fn git_blob_sha1_hex(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex::encode(h.finalize())
}

/// Lower-case hex sha1 of `data` (used for made-up but deterministic ids).
pub(crate) fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// Lower-case hex MD5 of `data` (S3/OSS-style ETags, which are *not* the sha256).
pub(crate) fn md5_hex(data: &[u8]) -> String {
    use md5::Md5;
    hex::encode(Md5::digest(data))
}

// ---------------------------------------------------------------------------------------
// URL encoding and decoding
// ---------------------------------------------------------------------------------------

/// Everything but RFC 3986 unreserved characters is encoded (Python `quote(s, safe="")`).
pub(crate) const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Like [`COMPONENT`] but keeps `/` (Python `quote(path)`).
pub(crate) const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// Percent-encodes `s` with `set`.
pub(crate) fn enc(s: &str, set: &'static AsciiSet) -> String {
    utf8_percent_encode(s, set).to_string()
}

/// The raw path split on `/`, leading empty segment removed, each segment still encoded.
pub(crate) fn raw_segments(uri: &Uri) -> Vec<String> {
    uri.path().split('/').skip(1).map(str::to_string).collect()
}

/// The path split on `/` and *then* percent-decoded per segment, so `%2F` stays inside its
/// segment (Hugging Face revisions like `refs%2Fpr%2F1`, tree paths sent as one segment).
pub(crate) fn path_segments(uri: &Uri) -> Vec<String> {
    raw_segments(uri)
        .iter()
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// The query decoded with form rules (`+` is a space), in order.
pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The first value of `name` in decoded query pairs.
pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Encodes `pairs` as a query string with `%20` for spaces (not `+`).
pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k, COMPONENT), enc(v, COMPONENT)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The header's value as text, if present and visible ASCII or UTF-8.
pub(crate) fn header_str(h: &HeaderMap, name: impl AsRef<str>) -> Option<&str> {
    h.get(name.as_ref())
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// A header value from arbitrary text; bytes a header cannot carry become `_`.
pub(crate) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        // Raw UTF-8 (obs-text) is allowed by `from_bytes`; control characters are not.
        let cleaned: Vec<u8> = s
            .bytes()
            .map(|b| if b < 0x20 || b == 0x7f { b'_' } else { b })
            .collect();
        HeaderValue::from_bytes(&cleaned).expect("cleaned header value")
    })
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(year, month, day)` of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYYMMDDTHHMMSSZ` (the SigV4 `X-Amz-Date` form) of a Unix time.
pub(crate) fn amz_date(unix: u64) -> String {
    let secs = unix as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` of a Unix time.
pub(crate) fn iso8601(unix: u64) -> String {
    let secs = unix as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A random version-4-looking UUID.
pub(crate) fn random_uuid() -> String {
    let h = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `n` random lower-case hex characters.
pub(crate) fn random_hex(n: usize) -> String {
    let mut s = String::with_capacity(n + 32);
    while s.len() < n {
        s.push_str(&hex::encode(rand::random::<[u8; 16]>()));
    }
    s.truncate(n);
    s
}

// ---------------------------------------------------------------------------------------
// Signed URLs
// ---------------------------------------------------------------------------------------

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignError {
    /// No signature, an unknown one, or one issued for another resource.
    Invalid,
    /// Past its expiry time, or expired by [`Signer::expire_all`].
    Expired,
}

/// One issued signature.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    /// The opaque signature (hex).
    pub(crate) signature: String,
    /// When it was issued (Unix seconds).
    pub(crate) issued: u64,
    /// When it expires (Unix seconds).
    pub(crate) expires: u64,
    /// The lifetime in seconds (`expires - issued`).
    pub(crate) ttl_secs: u64,
}

#[derive(Debug)]
struct SignerState {
    ttl: Duration,
    counter: u64,
    /// signature -> (resource, expiry instant)
    live: HashMap<String, (String, SystemTime)>,
    expired: HashSet<String>,
}

/// Issues and checks signatures for storage URLs. A signature is bound to one resource
/// (the storage path) and has an expiry; [`Signer::expire_all`] expires all issued ones.
#[derive(Debug)]
pub(crate) struct Signer {
    secret: String,
    state: Mutex<SignerState>,
}

impl Signer {
    /// A signer whose URLs live one hour.
    pub(crate) fn new() -> Signer {
        Signer {
            secret: random_hex(32),
            state: Mutex::new(SignerState {
                ttl: Duration::from_secs(3600),
                counter: 0,
                live: HashMap::new(),
                expired: HashSet::new(),
            }),
        }
    }

    /// Sets the lifetime of URLs signed from now on.
    pub(crate) fn set_ttl(&self, ttl: Duration) {
        lock(&self.state).ttl = ttl;
    }

    /// Signs `resource`.
    pub(crate) fn sign(&self, resource: &str) -> Signed {
        let mut st = lock(&self.state);
        st.counter += 1;
        let signature =
            sha256_hex(format!("{}\n{}\n{}", self.secret, resource, st.counter).as_bytes());
        let now = SystemTime::now();
        let expires_at = now + st.ttl;
        st.live
            .insert(signature.clone(), (resource.to_string(), expires_at));
        let issued = now_unix();
        Signed {
            signature,
            issued,
            expires: issued + st.ttl.as_secs(),
            ttl_secs: st.ttl.as_secs(),
        }
    }

    /// Checks `signature` for `resource`.
    pub(crate) fn verify(&self, resource: &str, signature: Option<&str>) -> Result<(), SignError> {
        let Some(sig) = signature else {
            return Err(SignError::Invalid);
        };
        let st = lock(&self.state);
        if st.expired.contains(sig) {
            return Err(SignError::Expired);
        }
        match st.live.get(sig) {
            Some((r, _)) if r != resource => Err(SignError::Invalid),
            Some((_, at)) if SystemTime::now() >= *at => Err(SignError::Expired),
            Some(_) => Ok(()),
            None => Err(SignError::Invalid),
        }
    }

    /// Expires every signature issued so far.
    pub(crate) fn expire_all(&self) {
        let mut st = lock(&self.state);
        let all: Vec<String> = st.live.drain().map(|(k, _)| k).collect();
        st.expired.extend(all);
    }
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// Whether `Accept-Encoding` allows gzip (a `gzip` or `*` token without `q=0`).
pub(crate) fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|tok| {
            let mut parts = tok.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
    })
}

/// Gzip-compresses `data`.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

/// A JSON response with `content_type`, gzip-encoded when the request allows it.
pub(crate) fn json_response(
    status: StatusCode,
    req_headers: &HeaderMap,
    value: &serde_json::Value,
    content_type: &'static str,
) -> Response {
    let body = serde_json::to_vec(value).expect("serialize JSON");
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    let body = if accepts_gzip(req_headers) {
        resp = resp
            .header(header::CONTENT_ENCODING, "gzip")
            .header(header::VARY, "Accept-Encoding");
        gzip(&body)
    } else {
        body
    };
    resp.body(Body::from(body)).expect("JSON response")
}

/// A plain response with a text body.
pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("text response")
}

/// An S3/OSS/CloudFront-style XML error.
pub(crate) fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    text_response(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{}</RequestId></Error>",
            random_hex(24).to_uppercase()
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Serving bytes with Range
// ---------------------------------------------------------------------------------------

/// What a `Range` header asks of an entity of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeReq {
    /// No usable range (absent, another unit, multiple ranges, or syntactically invalid):
    /// the whole entity with `200`.
    Whole,
    /// The inclusive byte range `start..=end`, end already clamped to `size - 1`.
    Part(u64, u64),
    /// `416` with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses a single-range `Range` header (RFC 9110 §14.1.2) for an entity of `size` bytes.
pub(crate) fn parse_range(value: Option<&str>, size: u64) -> RangeReq {
    let Some(v) = value else {
        return RangeReq::Whole;
    };
    let v = v.trim();
    let Some(spec) = v
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| v[6..].trim())
    else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last k bytes.
        let Ok(k) = b.parse::<u64>() else {
            return RangeReq::Whole;
        };
        if k == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(size.saturating_sub(k), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Whole;
    };
    let end = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return RangeReq::Whole,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.map_or(size - 1, |e| e.min(size - 1)))
}

/// How to serve one stored entity.
pub(crate) struct BlobServe {
    /// The full entity.
    pub(crate) content: Bytes,
    /// Headers every answer carries (ETag, Content-Type, Content-Disposition, ...).
    pub(crate) headers: HeaderMap,
    /// The entity tag compared with `If-Range` (quoted, as sent in `ETag`).
    pub(crate) etag: Option<String>,
    /// A one-shot fault for this answer.
    pub(crate) fault: Option<Fault>,
    /// Always ignore `Range` (a persistent switch).
    pub(crate) ignore_range: bool,
    /// Counts body bytes actually handed to the connection.
    pub(crate) counter: Arc<AtomicU64>,
    /// Limit the body to this many bytes per second.
    pub(crate) throttle: Option<u64>,
}

/// Serves an entity with `Accept-Ranges: bytes`, single-range `206`, `416` with
/// `Content-Range: bytes */size`, `If-Range`, and the fault of `opts`.
pub(crate) fn serve_blob(req_headers: &HeaderMap, opts: BlobServe) -> Response {
    let size = opts.content.len() as u64;
    let mut range = parse_range(header_str(req_headers, "range"), size);
    if opts.ignore_range || opts.fault == Some(Fault::IgnoreRange) {
        range = RangeReq::Whole;
    }
    if let (Some(if_range), Some(etag)) = (header_str(req_headers, "if-range"), &opts.etag) {
        // A strong comparison; a date or another tag means "send the whole entity".
        if if_range.trim() != etag {
            range = RangeReq::Whole;
        }
    }
    let mut headers = opts.headers;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(Fault::Status(code)) = opts.fault {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(header::CONTENT_LENGTH, 0.into());
        return resp;
    }
    let (status, start, end) = match range {
        RangeReq::Whole => (StatusCode::OK, 0, size),
        RangeReq::Part(a, b) => {
            headers.insert(header::CONTENT_RANGE, hv(&format!("bytes {a}-{b}/{size}")));
            let status = if opts.fault == Some(Fault::RangeAs200WithContentRange) {
                StatusCode::OK
            } else {
                StatusCode::PARTIAL_CONTENT
            };
            (status, a, b + 1)
        }
        RangeReq::Unsatisfiable => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::CONTENT_LENGTH, 0.into());
            return resp;
        }
    };
    let mut data = opts.content.slice(start as usize..end as usize);
    if opts.fault == Some(Fault::CorruptBody) && !data.is_empty() {
        let mut v = data.to_vec();
        for b in v.iter_mut().step_by(97) {
            *b = !*b;
        }
        data = Bytes::from(v);
    }
    headers.insert(header::CONTENT_LENGTH, (end - start).into());
    let reset_after = match opts.fault {
        Some(Fault::ResetAfter(n)) => Some(n),
        _ => None,
    };
    let delay = match opts.fault {
        Some(Fault::DelayBody(d)) => Some(d),
        _ => None,
    };
    let stall_after = match opts.fault {
        Some(Fault::StallAfter(n)) => Some(n),
        _ => None,
    };
    let body = body_stream(
        data,
        BodyShape {
            reset_after,
            stall_after,
            delay,
            throttle: opts.throttle,
        },
        opts.counter,
    );
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// How [`body_stream`] misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BodyShape {
    /// Break the body with an I/O error after this many bytes (hyper drops the connection).
    pub(crate) reset_after: Option<u64>,
    /// Stop sending after this many bytes but keep the connection open.
    pub(crate) stall_after: Option<u64>,
    /// Wait before the first byte.
    pub(crate) delay: Option<Duration>,
    /// Bytes per second.
    pub(crate) throttle: Option<u64>,
}

/// A streamed body of `data` in 16 KiB chunks that counts what it hands out, shaped by
/// `shape` (throttled, delayed, cut off, or stalled).
pub(crate) fn body_stream(data: Bytes, shape: BodyShape, counter: Arc<AtomicU64>) -> Body {
    let BodyShape {
        reset_after,
        stall_after,
        delay,
        throttle,
    } = shape;
    const CHUNK: usize = 16 * 1024;
    struct St {
        data: Bytes,
        pos: usize,
        first: bool,
        done: bool,
    }
    let st = St {
        data,
        pos: 0,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(st, move |mut st| {
        let counter = counter.clone();
        async move {
            if st.done {
                return None;
            }
            if st.first {
                st.first = false;
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
            }
            let cut = reset_after.or(stall_after);
            let limit = cut.map_or(st.data.len(), |n| (n as usize).min(st.data.len()));
            if st.pos >= limit {
                if stall_after.is_some_and(|n| (n as usize) < st.data.len()) {
                    // Never send the rest; the connection stays open until the client quits.
                    futures::future::pending::<()>().await;
                }
                if reset_after.is_some_and(|n| (n as usize) < st.data.len()) {
                    // Give hyper a moment to flush what was sent, then break the body.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    st.done = true;
                    let err = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mock hub: injected connection reset",
                    );
                    return Some((Err(err), st));
                }
                return None;
            }
            let end = (st.pos + CHUNK).min(limit);
            let chunk = st.data.slice(st.pos..end);
            if let Some(rate) = throttle.filter(|r| *r > 0) {
                tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
            }
            st.pos = end;
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((Ok(chunk), st))
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 10), RangeReq::Part(0, 0));
        assert_eq!(parse_range(Some("bytes=3-"), 10), RangeReq::Part(3, 9));
        assert_eq!(parse_range(Some("bytes=3-100"), 10), RangeReq::Part(3, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), RangeReq::Part(6, 9));
        assert_eq!(parse_range(Some("bytes=-40"), 10), RangeReq::Part(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeReq::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeReq::Whole);
    }

    #[test]
    fn hashes_and_dates() {
        // `git hash-object` of an empty file and of "hello\n".
        assert_eq!(
            git_blob_sha1_hex(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            git_blob_sha1_hex(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(amz_date(1_788_001_234), "20260829T110034Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }
}
