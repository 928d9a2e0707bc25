//! One listening host: `127.0.0.1:0`, HTTP/1.1 on hyper, one task per connection, every
//! request logged, `HEAD` answered as `GET` without the body.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::header;
use hyper::Method;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::body::{Body, FlushSignal, FlushSignalIo, InFlight};
use super::log::{RequestLog, RequestRecord};
use super::{Request, Response};

/// What a host does with a request.
pub(crate) type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// A [`Handler`] that calls `f` with a clone of `state` and the request.
pub(crate) fn handler<S, F, Fut>(state: Arc<S>, f: F) -> Handler
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(state.clone(), req)))
}

/// A response extension naming the resource the request is filed under in the log (the raw
/// path when a handler sets none).
#[derive(Debug, Clone)]
pub(crate) struct Resource(pub(crate) String);

/// A bound but not yet serving listener, so a handler's state can know its own address.
pub(crate) struct Bound {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Binds `127.0.0.1:0`.
    pub(crate) fn new() -> Bound {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("testkit: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("testkit: set_nonblocking");
        let addr = listener.local_addr().expect("testkit: local_addr");
        Bound { listener, addr }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves on the current tokio runtime (panics outside one), logging under `label`.
    pub(crate) fn serve(self, label: &'static str, log: RequestLog, handler: Handler) -> Host {
        let (host, shared) = self.host(label, log, handler);
        let (listener, cancel) = (self.listener, host.cancel.clone());
        tokio::spawn(accept_loop(listener, shared, cancel));
        host
    }

    /// Serves from a tokio runtime of its own on a background thread, for tests that are
    /// not async. Can be called from inside or outside a runtime.
    pub(crate) fn serve_on_own_thread(
        self,
        label: &'static str,
        log: RequestLog,
        handler: Handler,
    ) -> Host {
        let (host, shared) = self.host(label, log, handler);
        let (listener, cancel) = (self.listener, host.cancel.clone());
        std::thread::Builder::new()
            .name(format!("testkit-{}", self.addr.port()))
            .spawn(move || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("testkit-rt")
                    .enable_all()
                    .build()
                    .expect("testkit: build runtime")
                    .block_on(accept_loop(listener, shared, cancel));
            })
            .expect("testkit: spawn thread");
        host
    }

    fn host(&self, label: &'static str, log: RequestLog, handler: Handler) -> (Host, Arc<Shared>) {
        let shared = Arc::new(Shared {
            label,
            log,
            handler,
            sent: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(InFlight::default()),
        });
        let host = Host {
            addr: self.addr,
            cancel: CancellationToken::new(),
            shared: shared.clone(),
        };
        (host, shared)
    }
}

/// A serving host. Dropping it (or [`Host::shutdown`]) stops it and closes open connections,
/// stalled ones included.
pub(crate) struct Host {
    addr: SocketAddr,
    cancel: CancellationToken,
    shared: Arc<Shared>,
}

impl Host {
    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stored bytes this host has handed to connections so far.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// The most stored-byte bodies that were being sent at the same time.
    pub(crate) fn max_in_flight(&self) -> u64 {
        self.shared.in_flight.max()
    }

    /// Stops serving now.
    pub(crate) fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What every connection of a host shares.
struct Shared {
    label: &'static str,
    log: RequestLog,
    handler: Handler,
    /// Stored bytes sent, summed over all answers.
    sent: Arc<AtomicU64>,
    in_flight: Arc<InFlight>,
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("testkit: listener from_std");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Aborting every connection task closes the sockets.
    conns.abort_all();
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let flushed = Arc::new(FlushSignal::default());
    let io = FlushSignalIo {
        inner: stream,
        signal: flushed.clone(),
    };
    let svc = hyper::service::service_fn(move |req| {
        let (shared, flushed) = (shared.clone(), flushed.clone());
        async move { Ok::<_, Infallible>(respond(&shared, req, &flushed).await) }
    });
    // Errors (client gone, injected reset) just end the connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Runs the handler, then logs the request with its status and wires the body to its
/// connection and byte counters.
async fn respond(shared: &Shared, req: Request, flushed: &Arc<FlushSignal>) -> Response {
    let record = record_of(shared.label, &req);
    let is_head = req.method() == Method::HEAD;
    let mut resp = (shared.handler)(req).await;
    if is_head {
        strip_body(&mut resp);
    }
    let resource = resp
        .extensions_mut()
        .remove::<Resource>()
        .map_or_else(|| record.path().to_string(), |r| r.0);
    let sent = Arc::new(AtomicU64::new(0));
    resp.body_mut().attach(
        flushed,
        vec![shared.sent.clone(), sent.clone()],
        &shared.in_flight,
    );
    let status = resp.status().as_u16();
    shared
        .log
        .push(resource, RequestRecord { status, ..record }, sent);
    resp
}

/// A `HEAD` answer is the `GET` answer without its body; a known body length is kept as
/// `Content-Length` (unless the answer is encoded or names one itself).
fn strip_body(resp: &mut Response) {
    let h = resp.headers();
    if !h.contains_key(header::CONTENT_LENGTH) && !h.contains_key(header::CONTENT_ENCODING) {
        if let Some(n) = resp.body().exact_len() {
            resp.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        }
    }
    *resp.body_mut() = Body::empty();
}

fn record_of(label: &str, req: &Request) -> RequestRecord {
    let text = |v: &hyper::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    RequestRecord {
        host: label.to_string(),
        method: req.method().as_str().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string()),
        range: req.headers().get(header::RANGE).map(text),
        if_range: req.headers().get(header::IF_RANGE).map(text),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), text(v)))
            .collect(),
        status: 0,
        body_bytes_sent: 0,
    }
}
