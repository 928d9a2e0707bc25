//! Serving stored bytes the way static file servers, CDNs and object stores do: RFC 9110
//! single-range requests (`206`, `416` with `Content-Range: bytes */size`), `If-Range`, and
//! one-shot [`Fault`]s.

use std::time::SystemTime;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};

use super::body::{Body, Shape};
use super::{Fault, Response};

/// Stored bytes and how to serve them.
pub(crate) struct Entity {
    /// The full content.
    pub(crate) content: Bytes,
    /// Headers every answer but a fault's carries (`Content-Type`, `ETag`, `Last-Modified`,
    /// `Accept-Ranges`, `Content-Disposition`, vendor headers, ...).
    pub(crate) headers: HeaderMap,
    /// The entity tag `If-Range` is compared with (as sent in `ETag`).
    pub(crate) etag: Option<String>,
    /// The date `If-Range` is compared with (as sent in `Last-Modified`).
    pub(crate) last_modified: Option<SystemTime>,
    /// Honor `Range` at all.
    pub(crate) ranges: bool,
    /// Honor `Range` on `HEAD` too (object stores do; RFC 9110 defines it for `GET` only).
    pub(crate) head_ranges: bool,
    /// Send `Content-Length`; else the body goes chunked.
    pub(crate) exact: bool,
    /// Limit the body to this many bytes per second.
    pub(crate) throttle: Option<u64>,
}

/// What a `Range` header asks of an entity of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeReq {
    /// No usable range (another unit, multiple ranges, or syntactically invalid): the whole
    /// entity with `200`.
    Whole,
    /// The inclusive byte range `first..=last`, `last` already clamped to `size - 1`.
    Part(u64, u64),
    /// `416` with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Answers `req` for `entity`, shaped by `fault` (see [`Fault`]).
pub(crate) fn serve_entity(
    method: &Method,
    req: &HeaderMap,
    entity: Entity,
    fault: Option<Fault>,
) -> Response {
    let fault = fault.unwrap_or(Fault::Normal);
    if let Fault::Status {
        code,
        headers,
        body,
    } = fault
    {
        return status_answer(code, &headers, body);
    }
    let size = entity.content.len() as u64;
    let (start, end, partial) = match requested_range(method, req, &entity, &fault) {
        RangeReq::Whole => (0, size, false),
        RangeReq::Part(a, b) => (a, b + 1, true),
        RangeReq::Unsatisfiable => return unsatisfiable(entity.headers, size),
    };
    let mut headers = entity.headers;
    let status = if !partial {
        StatusCode::OK
    } else {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{size}", end - 1)),
        );
        if fault == Fault::RangeAs200WithContentRange {
            StatusCode::OK
        } else {
            StatusCode::PARTIAL_CONTENT
        }
    };
    if entity.exact {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    let data = entity.content.slice(start as usize..end as usize);
    let data = if fault == Fault::CorruptBody {
        corrupt(&data)
    } else {
        data
    };
    let body = Body::stored(data, entity.exact, shape(&fault, entity.throttle));
    answer(status, headers, body)
}

/// An answer with `status`, `headers` and `body`.
pub(crate) fn answer(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// [`Fault::Status`]: `code` with a `text/plain` body unless `headers` name a type.
pub(crate) fn status_answer(code: u16, headers: &[(String, String)], body: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, v) in headers {
        let (Ok(name), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) else {
            continue;
        };
        if name == header::CONTENT_TYPE {
            h.remove(header::CONTENT_TYPE);
        }
        h.append(name, v);
    }
    answer(status, h, Body::from(body))
}

/// The range to serve: `Range` if the method, the entity and `If-Range` allow it.
fn requested_range(method: &Method, req: &HeaderMap, entity: &Entity, fault: &Fault) -> RangeReq {
    let method_ok = method == Method::GET || (entity.head_ranges && method == Method::HEAD);
    let Some(range) = text(req, header::RANGE).filter(|_| entity.ranges && method_ok) else {
        return RangeReq::Whole;
    };
    let honored = text(req, header::IF_RANGE)
        .is_none_or(|v| if_range_matches(v, entity.etag.as_deref(), entity.last_modified));
    if !honored || *fault == Fault::IgnoreRange {
        return RangeReq::Whole;
    }
    parse_range(range, entity.content.len() as u64)
}

/// `416` with `Content-Range: bytes */size` and no body.
fn unsatisfiable(mut headers: HeaderMap, size: u64) -> Response {
    headers.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    answer(StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::empty())
}

/// The body shape a fault asks for.
fn shape(fault: &Fault, throttle: Option<u64>) -> Shape {
    Shape {
        reset_after: match fault {
            Fault::ResetAfter(n) => Some(*n),
            _ => None,
        },
        stall_after: match fault {
            Fault::StallAfter(n) => Some(*n),
            _ => None,
        },
        delay: match fault {
            Fault::DelayBody(d) => Some(*d),
            _ => None,
        },
        throttle,
    }
}

/// The same length with every 97th byte flipped.
fn corrupt(data: &Bytes) -> Bytes {
    let mut v = data.to_vec();
    for b in v.iter_mut().step_by(97) {
        *b = !*b;
    }
    Bytes::from(v)
}

fn text(h: &HeaderMap, name: HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::try_from(s).expect("a valid header value")
}

/// Parses a `Range` header value (RFC 9110 §14.1.2) for a representation of `len` bytes.
/// Malformed headers, other units and multiple ranges yield [`RangeReq::Whole`].
pub(crate) fn parse_range(value: &str, len: u64) -> RangeReq {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeReq::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeReq::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeReq::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    // Digit strings too large for u64 saturate.
    let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !is_digits(last) {
            return RangeReq::Whole;
        }
        let n = number(last);
        if n == 0 || len == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(len - n.min(len), len - 1);
    }
    if !is_digits(first) || !(last.is_empty() || is_digits(last)) {
        return RangeReq::Whole;
    }
    let start = number(first);
    let end = (!last.is_empty()).then(|| number(last));
    if end.is_some_and(|e| e < start) {
        return RangeReq::Whole;
    }
    if start >= len {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
}

/// RFC 9110 §13.1.5: an entity tag matches by strong comparison (a weak tag never does), a
/// date matches if it is exactly the `Last-Modified` date.
fn if_range_matches(value: &str, etag: Option<&str>, last_modified: Option<SystemTime>) -> bool {
    let value = value.trim();
    if value.starts_with("W/") {
        return false;
    }
    if value.starts_with('"') {
        return etag.is_some_and(|e| !e.starts_with("W/") && e == value);
    }
    httpdate::parse_http_date(value).is_ok_and(|d| Some(d) == last_modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeReq::*;

    #[test]
    fn range_parsing() {
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=0-0", 10), Part(0, 0));
        assert_eq!(parse_range("bytes=10-", 100), Part(10, 99));
        assert_eq!(parse_range("bytes=90-200", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(parse_range("Bytes = 5 - 6", 100), Part(5, 6));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=9-5", 100), Whole);
        assert_eq!(parse_range("bytes=a-5", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-5", 100), Whole);
        assert_eq!(parse_range("bytes=", 100), Whole);
        assert_eq!(parse_range("bytes=-", 100), Whole);
        assert_eq!(parse_range("garbage", 100), Whole);
    }

    #[test]
    fn if_range_comparison() {
        let lm = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200);
        let date = httpdate::fmt_http_date(lm);
        assert!(if_range_matches("\"a\"", Some("\"a\""), None));
        assert!(!if_range_matches("\"a\"", Some("\"b\""), Some(lm)));
        assert!(!if_range_matches("W/\"a\"", Some("W/\"a\""), None));
        assert!(!if_range_matches("\"a\"", Some("W/\"a\""), None));
        assert!(if_range_matches(&date, None, Some(lm)));
        assert!(!if_range_matches(&date, Some("\"a\""), None));
    }
}
