//! Helpers shared by the mock hubs: URL encoding and decoding, time formats, signed URLs,
//! JSON with optional gzip and S3-style XML errors. The serving itself (hosts, `Range`,
//! faults, the request log) is the serving core in [`crate::serve`]; the storage hosts are
//! [`super::storage`].
//!
//! Nothing here is hub-specific; each hub module decides status codes, headers and bodies
//! from its own specification in `shared/specs/`.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{StatusCode, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::serve::{lock, Body, Response};
use crate::sha256_hex;

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

/// `(year, month, day, hour, minute, second)` in UTC of a Unix time.
fn utc(unix: u64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = unix as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, (s / 60) % 60, s % 60)
}

/// `YYYYMMDDTHHMMSSZ` (the SigV4 `X-Amz-Date` form) of a Unix time.
pub(crate) fn amz_date(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc(unix);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` of a Unix time.
pub(crate) fn iso8601(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000Z")
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
    let mut resp = hyper::Response::builder()
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
    hyper::Response::builder()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
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
