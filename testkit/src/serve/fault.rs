//! One-shot faults injected into answers that would otherwise serve stored bytes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::lock;

/// One injected answer, used up by one request that would otherwise have served stored bytes
/// (which requests consume one is up to the mock: the file server lets `GET` and `HEAD`
/// consume them, the hubs' hosts only `GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, these extra headers and this body (e.g. 503, or 429 with
    /// `("Retry-After", "2")`, or 404). The body is sent with `Content-Type: text/plain`
    /// unless a `Content-Type` is given in `headers`.
    Status {
        /// HTTP status code (an invalid code becomes 500).
        code: u16,
        /// Extra response headers (invalid names or values are skipped).
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
    },
    /// Serve normally (honoring `Range`, with the full `Content-Length`) but abort the
    /// connection after this many body bytes, so that the client sees a truncated body. If
    /// the body is not longer than this, it is served completely. No effect on `HEAD`.
    ResetAfter(u64),
    /// Serve normally but after this many body bytes stop sending and keep the connection
    /// open until the client gives up (or the server shuts down). If the body is not longer
    /// than this, it is served completely. No effect on `HEAD`.
    StallAfter(u64),
    /// Wait this long before the first body byte (headers are sent first).
    DelayBody(Duration),
    /// Ignore `Range` and answer `200` with the whole content (restart-from-zero handling).
    IgnoreRange,
    /// Answer a ranged request with `200`, a `Content-Range` header and only the requested
    /// part (the unverified ModelScope quirk [OBS-MS2]).
    RangeAs200WithContentRange,
    /// Serve the right length with wrong bytes (hash verification and its retry).
    CorruptBody,
    /// Serve normally (a placeholder so that a later fault hits a later request).
    Normal,
}

impl Fault {
    /// [`Fault::Status`] with no extra headers and an empty body.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// A queue of one-shot faults.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue(Mutex<VecDeque<Fault>>);

impl FaultQueue {
    /// Queues `faults` for later requests, in order.
    pub(crate) fn extend(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.0).extend(faults);
    }

    /// Takes the next fault, if any.
    pub(crate) fn pop(&self) -> Option<Fault> {
        lock(&self.0).pop_front()
    }
}
