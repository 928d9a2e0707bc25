//! The accept loop and one task per connection: handshake, then requests in order, or an event
//! stream after `Subscribe`.

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use mdl_protocol::endpoint::{LocalListener, LocalStream};
use mdl_protocol::handshake::{HandshakeReply, Hello, MAGIC, PROTOCOL_VERSION};
use mdl_protocol::{
    Codec, Connection, ErrorKind, ErrorReply, Event, ProtocolError, Request, Response,
};
use tokio::sync::{broadcast::error::RecvError, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::handlers::{self, Reply, Services, Subscription};

/// The most connections served at once; more wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a new connection has to send its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve connections until `shutdown` fires.
pub async fn serve(listener: LocalListener, services: Services, heartbeat: Duration) {
    let shutdown = services.shutdown.clone();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => permit.expect("semaphore never closes"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            stream = listener.accept() => stream,
        };
        match stream {
            Ok(stream) => {
                let services = services.clone();
                tokio::spawn(async move {
                    handle_connection(stream, services, heartbeat).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serve one connection: handshake, then requests until the client hangs up.
pub async fn handle_connection(stream: LocalStream, services: Services, heartbeat: Duration) {
    let shutdown = services.shutdown.clone();
    // The first frame picks the codec (JSON when it starts with `{`, else bincode).
    let mut conn = Connection::detecting(stream);
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv::<Hello>()).await {
        Ok(Ok(Some(hello))) => hello,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!("bad handshake frame: {e}");
            if let (Codec::Json, ProtocolError::Codec(e)) = (conn.codec(), &e) {
                // A hand-written JSON client learns what is wrong; bincode gets no reply, as
                // its peer may not be an mdl client at all.
                let reply = ErrorReply::new(
                    ErrorKind::InvalidRequest,
                    format!("the first frame must be a Hello ({e})"),
                );
                let _ = conn.send(&Response::Error(reply)).await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!("no handshake within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let daemon_version = env!("CARGO_PKG_VERSION").to_string();
    if hello.magic != MAGIC {
        tracing::debug!("not an mdl client (bad magic)");
        return;
    }
    if hello.protocol != PROTOCOL_VERSION {
        tracing::info!(client = %hello.client_version, got = hello.protocol, "incompatible client");
        let _ = conn
            .send(&HandshakeReply::Incompatible {
                expected: PROTOCOL_VERSION,
                got: hello.protocol,
                daemon_version,
            })
            .await;
        return;
    }
    if conn
        .send(&HandshakeReply::Welcome {
            protocol: PROTOCOL_VERSION,
            daemon_version,
        })
        .await
        .is_err()
    {
        return;
    }
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = conn.recv::<Request>() => request,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(ProtocolError::Codec(e)) => {
                tracing::debug!("undecodable request: {e}");
                let reply = ErrorReply::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "cannot decode the request ({e}); is the client from the same mdl version?"
                    ),
                );
                if conn.send(&Response::Error(reply)).await.is_err() {
                    return;
                }
                // A JSON frame is self-contained, so the next one can still be read; a
                // bincode peer that sends an undecodable frame is not trusted further.
                if conn.codec() == Codec::Json {
                    continue;
                }
                return;
            }
            Err(e) => {
                tracing::debug!("connection error: {e}");
                return;
            }
        };
        match handlers::dispatch(&services, request).await {
            Reply::Response(response) => {
                if conn.send(&response).await.is_err() {
                    return;
                }
            }
            Reply::Events(subscription) => {
                stream_events(conn, subscription, heartbeat, shutdown).await;
                return;
            }
            Reply::Shutdown => {
                tracing::info!("shutdown requested by a client");
                let _ = conn.send(&Response::Ok).await;
                shutdown.cancel();
                return;
            }
        }
    }
}

/// Send a snapshot, then every event, with heartbeats when idle. A subscriber that cannot keep
/// up gets `Lagged`; it never slows anything else down.
async fn stream_events(
    mut conn: Connection<LocalStream>,
    subscription: Subscription,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let Subscription {
        snapshot,
        mut events,
    } = subscription;
    if conn
        .send(&Response::Event(Event::Snapshot(snapshot)))
        .await
        .is_err()
    {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => Event::Lagged { missed },
                Err(RecvError::Closed) => Event::End,
            },
            _ = ticker.tick() => Event::Heartbeat { unix_ms: crate::job::now_ms() },
            _ = shutdown.cancelled() => Event::End,
        };
        let end = matches!(event, Event::End);
        if conn.send(&Response::Event(event)).await.is_err() || end {
            return;
        }
        ticker.reset();
    }
}
