//! Metadata requests to hub APIs (JSON listings, repo info), shared by every hub source.
//!
//! Every call goes through [`get`]: it tries the endpoints in order (an environment override,
//! configured mirrors, then the official endpoint) and, per endpoint, retries with the engine's
//! policy ([`crate::engine::retry`]): exponential backoff with jitter for transient failures
//! (5xx, 408, timeouts, connection errors) and the server's `Retry-After` for `429`. A mirror
//! that refuses connections, times out or keeps answering 5xx hands over to the next endpoint.
//! Any other status (2xx, 3xx, 4xx) is final and returned to the caller, which knows how the
//! hub spells its errors (e.g. Hugging Face's `X-Error-Code`).
//!
//! Error messages name the URL without its query and never contain request headers, so a
//! token cannot leak into a job's error.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mdl_protocol::ErrorKind;
use reqwest::header::{self, HeaderMap};
use serde::de::DeserializeOwned;

use super::Credentials;
use crate::engine::retry::{classify_status, parse_retry_after, Retries, StatusClass};
use crate::engine::FetchError;
use crate::settings::EngineSettings;

/// Attempts per endpoint before handing over to the next endpoint (the last endpoint gets the
/// policy's full `max_attempts`).
const ATTEMPTS_BEFORE_FALLBACK: u32 = 2;

/// The shortest per-request timeout for metadata calls.
const MIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A final answer to a metadata request.
#[derive(Debug, Clone)]
pub struct MetaResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The endpoint (as given in the endpoint list) that answered.
    pub endpoint: String,
    /// The URL that was requested (after redirects).
    pub url: String,
}

impl MetaResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header as a string, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Decode the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FetchError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            FetchError::failed(
                ErrorKind::Fatal,
                format!(
                    "unexpected answer from {}: not the expected JSON ({e})",
                    crate::job::redact_url(&self.url)
                ),
            )
        })
    }

    /// The `rel="next"` target of an RFC 8288 `Link` header, if any (absolute, or resolved
    /// against the requested URL).
    pub fn next_link(&self) -> Option<String> {
        let value = self.header("link")?;
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().to_ascii_lowercase().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                let target = target.trim_start_matches('<').trim_end_matches('>');
                return match url::Url::parse(&self.url).and_then(|base| base.join(target)) {
                    Ok(u) => Some(u.to_string()),
                    Err(_) => Some(target.to_string()),
                };
            }
        }
        None
    }

    /// A generic failure for a non-success answer: the status class decides the error kind.
    pub fn failure(&self) -> FetchError {
        let kind = match classify_status(self.status) {
            StatusClass::Permanent(kind) => kind,
            StatusClass::RateLimited => ErrorKind::RateLimited,
            StatusClass::Transient => ErrorKind::Network,
        };
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        FetchError::Failed {
            kind,
            message: format!(
                "HTTP {} {reason} from {}",
                self.status,
                crate::job::redact_url(&self.url)
            ),
            status: Some(self.status),
        }
    }
}

/// The most pages a listing may have before it is cut with an error.
pub const MAX_PAGES: usize = 10_000;
/// The most entries a listing may have before it is cut with an error.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Follows `Link: rel="next"` pagination safely: only on the origin the listing started on
/// (scheme, host and port: the credentials' own), each link once, and within [`MAX_PAGES`]
/// pages and [`MAX_ENTRIES`] entries, so a hostile or broken server can neither take the
/// token elsewhere nor keep the resolver busy forever.
#[derive(Debug)]
pub struct Pages {
    origin: Option<url::Origin>,
    seen: std::collections::HashSet<String>,
    pages: usize,
}

impl Pages {
    /// Pagination of a listing that started at `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        Pages {
            origin: url::Url::parse(endpoint).ok().map(|u| u.origin()),
            seen: Default::default(),
            pages: 1,
        }
    }

    /// The next page's URL, `None` after the last page; an error for a link to another
    /// origin, a link seen before, or too many pages.
    pub fn next(&mut self, page: &MetaResponse) -> Result<Option<String>, FetchError> {
        let Some(next) = page.next_link() else {
            return Ok(None);
        };
        let shown = crate::job::redact_url(&next);
        let origin = url::Url::parse(&next).ok().map(|u| u.origin());
        if origin.is_none() || origin != self.origin {
            return Err(FetchError::failed(
                ErrorKind::Fatal,
                format!(
                    "the listing's next page {shown} is on another server; refusing to follow it"
                ),
            ));
        }
        if !self.seen.insert(next.clone()) {
            return Err(FetchError::failed(
                ErrorKind::Fatal,
                format!("the listing repeats its page {shown}; stopping"),
            ));
        }
        self.pages += 1;
        if self.pages > MAX_PAGES {
            return Err(FetchError::failed(
                ErrorKind::Fatal,
                format!("the listing has more than {MAX_PAGES} pages; stopping"),
            ));
        }
        Ok(Some(next))
    }

    /// Check the number of entries collected so far.
    pub fn count_entries(&self, entries: usize) -> Result<(), FetchError> {
        if entries > MAX_ENTRIES {
            return Err(FetchError::failed(
                ErrorKind::Fatal,
                format!("the listing has more than {MAX_ENTRIES} entries; stopping"),
            ));
        }
        Ok(())
    }
}

/// `GET endpoint + path_and_query` on each endpoint in order until one gives a final answer
/// (any status that is not transient); see the module docs. `headers` go to every endpoint,
/// `credentials` only to the origins they belong to.
pub async fn get(
    http: &reqwest::Client,
    endpoints: &[String],
    path_and_query: &str,
    headers: HeaderMap,
    credentials: &Credentials,
    policy: &EngineSettings,
) -> Result<MetaResponse, FetchError> {
    if endpoints.is_empty() {
        return Err(FetchError::failed(
            ErrorKind::InvalidRequest,
            "no endpoint configured for this source",
        ));
    }
    let mut failures: Vec<String> = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let is_last = i + 1 == endpoints.len();
        let url = join(endpoint, path_and_query);
        let attempts = if is_last {
            policy.max_attempts.max(1)
        } else {
            ATTEMPTS_BEFORE_FALLBACK.min(policy.max_attempts.max(1))
        };
        let headers = with_credentials(&headers, credentials, &url);
        match get_url_attempts(http, &url, endpoint, &headers, policy, attempts, !is_last).await {
            Ok(response) => return Ok(response),
            Err(err) if is_last => {
                // Every endpoint failed: say what each one did, the last one's kind decides.
                if failures.is_empty() {
                    return Err(err);
                }
                failures.push(err.to_string());
                return Err(FetchError::failed(err.kind(), failures.join("; then ")));
            }
            Err(err) => {
                tracing::warn!(endpoint = %crate::job::redact_url(endpoint), error = %err, "endpoint failed; trying the next one");
                failures.push(err.to_string());
            }
        }
    }
    // Not reached: the last endpoint returns above, and the list is not empty.
    Err(FetchError::failed(
        ErrorKind::Network,
        failures.join("; then "),
    ))
}

/// `GET` one absolute URL (e.g. a `Link: rel="next"` page) with the retry policy; `endpoint`
/// is reported back in [`MetaResponse::endpoint`].
pub async fn get_url(
    http: &reqwest::Client,
    url: &str,
    endpoint: &str,
    headers: HeaderMap,
    credentials: &Credentials,
    policy: &EngineSettings,
) -> Result<MetaResponse, FetchError> {
    get_url_attempts(
        http,
        url,
        endpoint,
        &with_credentials(&headers, credentials, url),
        policy,
        policy.max_attempts.max(1),
        false,
    )
    .await
}

/// The most bytes a metadata answer (a file list page, a model's JSON) may have; a server
/// that sends more is cut off with an error instead of filling the daemon's memory.
pub const MAX_META_BODY: usize = 32 * 1024 * 1024;

/// Why a metadata body could not be read.
enum BodyError {
    /// Larger than [`MAX_META_BODY`] (announced or sent).
    TooLarge(String),
    /// The connection failed mid-body (worth retrying).
    Read(String),
}

/// Read a metadata body, at most [`MAX_META_BODY`] bytes.
async fn read_capped(mut response: reqwest::Response) -> Result<Bytes, BodyError> {
    let shown = crate::job::redact_url(response.url().as_str());
    let too_large = || {
        BodyError::TooLarge(format!(
            "the answer from {shown} is larger than {} MiB; refusing it",
            MAX_META_BODY >> 20
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_META_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_META_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(BodyError::Read(format!(
                    "{} (reading {shown})",
                    describe(&e)
                )))
            }
        }
    }
}

/// `headers` plus the credentials that belong to `url`'s origin.
fn with_credentials(headers: &HeaderMap, credentials: &Credentials, url: &str) -> HeaderMap {
    let mut all = headers.clone();
    all.extend(credentials.for_url(url));
    all
}

async fn get_url_attempts(
    http: &reqwest::Client,
    url: &str,
    endpoint: &str,
    headers: &HeaderMap,
    policy: &EngineSettings,
    attempts: u32,
    fail_fast_on_connect: bool,
) -> Result<MetaResponse, FetchError> {
    let timeout = policy.stall_timeout.max(MIN_TIMEOUT);
    let mut retries = Retries::new(policy, attempts);
    // 429s do not count as a failing mirror, but are bounded too.
    let mut rate_limits = Retries::new(policy, policy.max_attempts);
    loop {
        let sent = http
            .get(url)
            .headers(headers.clone())
            .timeout(timeout)
            .send()
            .await;
        let (message, retry_after, kind) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let response_headers = response.headers().clone();
                let final_url = response.url().to_string();
                match classify_status(status) {
                    StatusClass::Transient => (
                        format!("HTTP {status} from {}", crate::job::redact_url(url)),
                        retry_after_of(&response_headers),
                        ErrorKind::Network,
                    ),
                    StatusClass::RateLimited => {
                        let wait = retry_after_of(&response_headers)
                            .or_else(|| ratelimit_reset(&response_headers));
                        if let Some(delay) = rate_limits.failed(wait) {
                            tracing::info!(url = %crate::job::redact_url(url), ?delay, "rate limited; waiting");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        return Err(FetchError::Failed {
                            kind: ErrorKind::RateLimited,
                            message: format!(
                                "rate limited by {} (HTTP 429, gave up after {} attempts)",
                                crate::job::redact_url(url),
                                rate_limits.failures()
                            ),
                            status: Some(429),
                        });
                    }
                    StatusClass::Permanent(_) => match read_capped(response).await {
                        Ok(body) => {
                            return Ok(MetaResponse {
                                status,
                                headers: response_headers,
                                body,
                                endpoint: endpoint.to_string(),
                                url: final_url,
                            })
                        }
                        Err(BodyError::TooLarge(message)) => {
                            return Err(FetchError::failed(ErrorKind::Fatal, message))
                        }
                        Err(BodyError::Read(message)) => (message, None, ErrorKind::Network),
                    },
                }
            }
            Err(e) if e.is_connect() && fail_fast_on_connect => {
                return Err(FetchError::failed(
                    ErrorKind::Network,
                    format!("cannot connect to {}", crate::job::redact_url(endpoint)),
                ));
            }
            Err(e) => (
                format!("{} ({})", describe(&e), crate::job::redact_url(url)),
                None,
                ErrorKind::Network,
            ),
        };
        let Some(delay) = retries.failed(retry_after) else {
            return Err(FetchError::failed(
                kind,
                format!("{message} (gave up after {} attempts)", retries.failures()),
            ));
        };
        tracing::warn!(%message, ?delay, attempt = retries.failures(), "metadata request failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// `endpoint` (without trailing `/`) + `path_and_query` (with or without leading `/`).
pub fn join(endpoint: &str, path_and_query: &str) -> String {
    format!(
        "{}/{}",
        endpoint.trim_end_matches('/'),
        path_and_query.trim_start_matches('/')
    )
}

/// The ordered endpoint list of a source: the environment override first (job env, then the
/// daemon's), then the configured list, then the official endpoint; trailing `/` stripped,
/// duplicates removed.
pub fn endpoint_list(
    env_override: Option<String>,
    configured: &[String],
    official: &str,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let candidates = env_override
        .into_iter()
        .chain(configured.iter().cloned())
        .chain(std::iter::once(official.to_string()));
    for e in candidates {
        let e = e.trim().trim_end_matches('/').to_string();
        if !e.is_empty() && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// `RateLimit: "bucket";r=0;t=55` → 55 s (+1, as huggingface_hub does) when nothing remains.
fn ratelimit_reset(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("ratelimit")?.to_str().ok()?;
    let mut remaining = None;
    let mut reset = None;
    for part in value.split(';') {
        let part = part.trim();
        if let Some(r) = part.strip_prefix("r=") {
            remaining = r.parse::<u64>().ok();
        } else if let Some(t) = part.strip_prefix("t=") {
            reset = t.parse::<u64>().ok();
        }
    }
    match (remaining, reset) {
        (Some(0), Some(t)) => Some(Duration::from_secs(t + 1)),
        _ => None,
    }
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "error reading the body"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_list_orders_and_dedups() {
        let list = endpoint_list(
            Some("http://env/".into()),
            &["http://mirror".into(), "https://huggingface.co".into()],
            "https://huggingface.co",
        );
        assert_eq!(
            list,
            vec!["http://env", "http://mirror", "https://huggingface.co"]
        );
    }

    #[test]
    fn next_link_is_found() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            "<http://h/api/x?cursor=abc>; rel=\"next\"".parse().unwrap(),
        );
        let r = MetaResponse {
            status: 200,
            headers,
            body: Bytes::new(),
            endpoint: "http://h".into(),
            url: "http://h/api/x".into(),
        };
        assert_eq!(r.next_link().as_deref(), Some("http://h/api/x?cursor=abc"));
    }
}
