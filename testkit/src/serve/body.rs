//! The response body of every host: stored bytes streamed in chunks, optionally throttled,
//! delayed, stalled or cut off, counting what it hands to the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the body chunks handed to the connection (when not throttled).
const CHUNK: usize = 64 * 1024;

/// How a body misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shape {
    /// Break the body with an I/O error after this many bytes (the connection is dropped).
    pub(crate) reset_after: Option<u64>,
    /// Stop sending after this many bytes but keep the connection open.
    pub(crate) stall_after: Option<u64>,
    /// Wait before the first byte.
    pub(crate) delay: Option<Duration>,
    /// Bytes per second, smoothly, in steps of about a twentieth of a second.
    pub(crate) throttle: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Reset,
    Stall,
}

/// A response body: `Bytes` in chunks, shaped by a [`Shape`].
pub struct Body {
    data: Bytes,
    pos: usize,
    chunk: usize,
    /// Report an exact size hint (`Content-Length`); else chunked encoding.
    exact: bool,
    /// Stored bytes (counted into the host's and the request's byte counts).
    counted: bool,
    cut: Option<(usize, Cut)>,
    delay: Option<Duration>,
    rate: Option<u64>,
    started: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Vec<Arc<AtomicU64>>,
    /// Keeps the in-flight gauge up while this body lives.
    in_flight: Option<InFlightGuard>,
    /// For a reset: the connection's flush signal, and the flush count seen when the cut
    /// point was reached.
    flushed: Option<Arc<FlushSignal>>,
    cut_seen_flushes: Option<u64>,
}

impl Body {
    /// A body of `data` with an exact length (not counted as stored bytes).
    pub(crate) fn full(data: impl Into<Bytes>) -> Body {
        Body {
            data: data.into(),
            pos: 0,
            chunk: CHUNK,
            exact: true,
            counted: false,
            cut: None,
            delay: None,
            rate: None,
            started: None,
            sleep: None,
            counters: Vec::new(),
            in_flight: None,
            flushed: None,
            cut_seen_flushes: None,
        }
    }

    /// No body.
    pub(crate) fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// Stored bytes, counted, shaped by `shape`; `exact: false` sends them chunked without a
    /// `Content-Length`.
    pub(crate) fn stored(data: Bytes, exact: bool, shape: Shape) -> Body {
        let len = data.len() as u64;
        let mut body = Body::full(data);
        body.exact = exact;
        body.counted = true;
        let cut = match (shape.reset_after, shape.stall_after) {
            (Some(n), _) => Some((n, Cut::Reset)),
            (None, Some(n)) => Some((n, Cut::Stall)),
            (None, None) => None,
        };
        body.cut = cut.filter(|(n, _)| *n < len).map(|(n, c)| (n as usize, c));
        body.delay = shape.delay;
        if let Some(rate) = shape.throttle.filter(|r| *r > 0) {
            body.rate = Some(rate);
            body.chunk = (rate / 20).clamp(512, CHUNK as u64) as usize;
        }
        body
    }

    /// Whether this body carries stored bytes.
    pub(crate) fn is_stored(&self) -> bool {
        self.counted && !self.data.is_empty()
    }

    /// The exact length, if known.
    pub(crate) fn exact_len(&self) -> Option<u64> {
        self.exact.then_some((self.data.len() - self.pos) as u64)
    }

    /// Wires the body to its connection and counters (done by the host for every answer).
    pub(crate) fn attach(
        &mut self,
        flushed: &Arc<FlushSignal>,
        counters: Vec<Arc<AtomicU64>>,
        in_flight: &Arc<InFlight>,
    ) {
        self.flushed = Some(flushed.clone());
        if self.is_stored() {
            self.counters = counters;
            self.in_flight = Some(InFlightGuard::new(in_flight));
        }
    }

    /// `Poll::Pending` while a delay or throttle sleep before the next `n` bytes runs.
    fn wait(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<()> {
        if let Some(d) = self.delay.take() {
            self.sleep = Some(Box::pin(tokio::time::sleep(d)));
        } else if let (Some(rate), None) = (self.rate, &self.sleep) {
            let started = *self.started.get_or_insert_with(tokio::time::Instant::now);
            let due = started + Duration::from_secs_f64((self.pos + n) as f64 / rate as f64);
            if due > tokio::time::Instant::now() {
                self.sleep = Some(Box::pin(tokio::time::sleep_until(due)));
            }
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        Poll::Ready(())
    }

    /// At the cut point: a stall never returns; a reset waits until everything before the
    /// cut is written out, then fails the body.
    fn cut_off(
        &mut self,
        cx: &mut Context<'_>,
        kind: Cut,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if kind == Cut::Stall {
            // Never woken: the connection stays open until the client goes away or the
            // server shuts down.
            return Poll::Pending;
        }
        // hyper buffers up to ~400 KiB before writing to the socket and drops its buffer
        // when the body fails, so wait until it has flushed (it flushes once its buffer is
        // empty) before failing the body.
        if let Some(signal) = &self.flushed {
            signal.waker.register(cx.waker());
            let now = signal.flushes.load(Ordering::SeqCst);
            match self.cut_seen_flushes {
                None => {
                    self.cut_seen_flushes = Some(now);
                    return Poll::Pending;
                }
                Some(seen) if now == seen => return Poll::Pending,
                Some(_) => {}
            }
        }
        self.cut = None;
        self.pos = self.data.len();
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "testkit: injected connection reset",
        ))))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::full(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::full(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body::full(s)
    }
}

impl hyper::body::Body for Body {
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
                return this.cut_off(cx, kind);
            }
            n = n.min(at - this.pos);
        }
        if this.wait(cx, n).is_pending() {
            return Poll::Pending;
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
        match self.exact_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bodies in flight

/// Stored-byte bodies being sent right now, and the most at once: how many connections a
/// client really kept busy at the same time.
#[derive(Default)]
pub(crate) struct InFlight {
    current: AtomicU64,
    max: AtomicU64,
}

impl InFlight {
    /// The most bodies at once since the host started.
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
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

// ---------------------------------------------------------------------------------------
// Connection IO that reports when hyper has written out its whole buffer

/// Counts `poll_flush` calls on a connection: hyper calls it only once its write buffer has
/// been completely handed to the socket.
#[derive(Default)]
pub(crate) struct FlushSignal {
    flushes: AtomicU64,
    waker: AtomicWaker,
}

/// A TCP stream that ticks a [`FlushSignal`] on every completed flush.
pub(crate) struct FlushSignalIo {
    pub(crate) inner: tokio::net::TcpStream,
    pub(crate) signal: Arc<FlushSignal>,
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
