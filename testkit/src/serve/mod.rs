//! The one serving core of testkit: every mock host (the file server, each hub's API host and
//! each hub's storage / CDN host) runs on it.
//!
//! * [`host`]: binds `127.0.0.1:0`, runs HTTP/1.1 on hyper, records every request and
//!   strips bodies from `HEAD` answers.
//! * [`entity`]: serves stored bytes with `Range` / `If-Range`, `206` / `416` and one-shot
//!   [`Fault`]s.
//! * [`body`]: the response body, which throttles, delays, stalls or cuts itself off and
//!   counts the bytes it hands to the connection.
//! * [`log`]: the request log ([`RequestRecord`]).
//! * [`fault`]: the [`Fault`] enum and its queue.

pub(crate) mod body;
pub(crate) mod entity;
pub(crate) mod fault;
pub(crate) mod host;
pub(crate) mod log;

use std::sync::{Mutex, MutexGuard};

pub(crate) use body::Body;
pub use fault::Fault;
pub use log::RequestRecord;

/// A request as every host's handler receives it.
pub(crate) type Request = hyper::Request<hyper::body::Incoming>;
/// A response as every host's handler produces it.
pub(crate) type Response = hyper::Response<Body>;

/// Locks a std mutex, ignoring poisoning (a panicking test handler must not hide the real
/// failure behind a `PoisonError`).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
