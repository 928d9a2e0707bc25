//! The request log every host writes to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;

/// One request as a mock host received it, with the status it answered.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Which host received it: `"files"` (the file server), `"hub"`/`"cdn"` (Hugging Face),
    /// `"api"`/`"oss"` (ModelScope) or `"api"`/`"storage"` (Civitai).
    pub host: String,
    /// Request method (`GET`, `HEAD`, ...).
    pub method: String,
    /// The request target as sent: the raw (still percent-encoded) path plus `?query`.
    pub path_and_query: String,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// `If-Range` header, if any.
    pub if_range: Option<String>,
    /// All request headers (lowercase names, values lossily decoded), in order.
    pub headers: Vec<(String, String)>,
    /// Response status code.
    pub status: u16,
    /// Stored bytes (file contents) handed to the connection for this response so far; error,
    /// fault and redirect bodies are not counted.
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

/// One logged request: the record, the resource it was filed under and its live byte count.
struct Logged {
    resource: String,
    record: RequestRecord,
    sent: Arc<AtomicU64>,
}

/// The shared log of one mock (all of its hosts), oldest first.
#[derive(Clone, Default)]
pub(crate) struct RequestLog(Arc<Mutex<Vec<Logged>>>);

impl RequestLog {
    /// Files `record` under `resource`; `sent` keeps counting its body bytes.
    pub(crate) fn push(&self, resource: String, record: RequestRecord, sent: Arc<AtomicU64>) {
        lock(&self.0).push(Logged {
            resource,
            record,
            sent,
        });
    }

    /// The records filed under resources for which `keep` holds, with their byte counts now.
    pub(crate) fn records(&self, keep: impl Fn(&str) -> bool) -> Vec<RequestRecord> {
        lock(&self.0)
            .iter()
            .filter(|l| keep(&l.resource))
            .map(|l| RequestRecord {
                body_bytes_sent: l.sent.load(Ordering::SeqCst),
                ..l.record.clone()
            })
            .collect()
    }

    /// Every record.
    pub(crate) fn all(&self) -> Vec<RequestRecord> {
        self.records(|_| true)
    }

    /// Forgets the records filed under resources for which `drop` holds.
    pub(crate) fn forget(&self, drop: impl Fn(&str) -> bool) {
        lock(&self.0).retain(|l| !drop(&l.resource));
    }
}
