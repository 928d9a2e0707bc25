//! The accept loop and one task per connection: handshake, then requests in order, or an event
//! stream after `Subscribe`.
//!
//! Nothing a peer sends can take the daemon down or hold it: a first frame that is not a hello
//! (garbage, a frame over the cap, a late hello, a foreign magic) gets a typed
//! [`HandshakeReply::Refused`] and the connection closes; after the handshake an undecodable or
//! oversized frame gets a typed error reply; connections past `max_connections` (settings) are refused
//! with a reason; and a peer that stops reading is dropped once a write has waited
//! [`WRITE_TIMEOUT`], so a stuck subscriber costs one bounded buffer, never more.

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::traits::tokio::Listener as _;
use mdl_protocol::endpoint::{LocalListener, LocalStream};
use mdl_protocol::handshake::{HandshakeReply, Hello, MAGIC, PROTOCOL_VERSION};
use mdl_protocol::{
    Codec, Connection, EncodedJobs, ErrorKind, ErrorReply, Event, JobInfo, ProtocolError, Request,
    Response, MAX_FRAME_LEN,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast::error::RecvError, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::handlers::{self, Reply, Services, Subscription};

/// How long a new connection has to send its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one frame may wait to be written before the peer counts as gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a refusal may take to write (its peer may not read at all).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Serve connections until `shutdown` fires.
pub async fn serve(listener: LocalListener, services: Services) {
    let shutdown = services.shutdown.clone();
    let settings = services.settings.get();
    let heartbeat = settings.heartbeat_interval;
    let max = settings.max_connections;
    let limit = Arc::new(Semaphore::new(max));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            stream = listener.accept() => stream,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let services = services.clone();
                tokio::spawn(async move {
                    handle_connection(stream, services, heartbeat).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!("refusing a connection: {max} are open");
                tokio::spawn(async move {
                    let mut conn = Connection::new(stream);
                    let message = format!(
                        "the daemon serves at most {max} connections at once; close some and retry"
                    );
                    refuse(&mut conn, ErrorKind::Unreachable, message).await;
                });
            }
        }
    }
}

/// Serve one connection: handshake, then requests until the client hangs up.
pub async fn handle_connection(stream: LocalStream, services: Services, heartbeat: Duration) {
    let shutdown = services.shutdown.clone();
    // The first frame picks the codec (JSON when it starts with `{`, else bincode).
    let mut conn = Connection::detecting(stream);
    if !handshake(&mut conn).await {
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
            Err(e) => {
                let keep_open = matches!(e, ProtocolError::Codec(_)) && conn.codec() == Codec::Json;
                tracing::debug!("bad request frame: {e}");
                let reply = ErrorReply::new(ErrorKind::InvalidRequest, bad_frame_message(&e));
                // A JSON frame is self-contained, so the next one can still be read; after a
                // bincode frame that does not decode, or a frame over the cap, the stream
                // cannot be trusted: reply, then close.
                if !send(&mut conn, &Response::Error(reply)).await || !keep_open {
                    return;
                }
                continue;
            }
        };
        match handlers::dispatch(&services, request).await {
            Reply::Response(Response::Jobs(jobs)) => {
                let sent = match EncodedJobs::from_jobs(&jobs) {
                    Ok(jobs) => send_in_parts(&mut conn, jobs, Listing::Reply).await,
                    Err(e) => {
                        let reply = ErrorReply::new(ErrorKind::Other, e.to_string());
                        send(&mut conn, &Response::Error(reply)).await
                    }
                };
                if !sent {
                    return;
                }
            }
            Reply::Response(response) => {
                let large = matches!(&response, Response::AddedMany(added) if added.len() > 1000);
                if !send(&mut conn, &response).await {
                    return;
                }
                if large {
                    // The request's and the reply's memory is free now: give it back.
                    drop(response);
                    crate::memory::release_free_memory_soon();
                }
            }
            Reply::Jobs(mut pages) => {
                if send_pages(&mut conn, EncodedJobs::new(), &mut pages, Listing::Reply).await
                    == Sent::Gone
                {
                    return;
                }
            }
            Reply::Events(subscription) => {
                stream_events(conn, subscription, heartbeat, shutdown).await;
                return;
            }
            Reply::Shutdown => {
                tracing::info!("shutdown requested by a client");
                send(&mut conn, &Response::Ok).await;
                shutdown.cancel();
                return;
            }
        }
    }
}

/// Read the hello and answer it; false when the connection is to be closed (it was refused
/// with a reason where the peer can still read one).
async fn handshake(conn: &mut Connection<LocalStream>) -> bool {
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv::<Hello>()).await {
        Ok(Ok(Some(hello))) => hello,
        Ok(Ok(None)) => return false,
        Ok(Err(e)) => {
            tracing::debug!("bad handshake frame: {e}");
            let message = format!(
                "the first frame must be an mdl Hello: {}",
                bad_frame_message(&e)
            );
            refuse(conn, ErrorKind::InvalidRequest, message).await;
            return false;
        }
        Err(_) => {
            tracing::debug!("no handshake within {HANDSHAKE_TIMEOUT:?}");
            let message = format!("no Hello within {} s", HANDSHAKE_TIMEOUT.as_secs());
            refuse(conn, ErrorKind::InvalidRequest, message).await;
            return false;
        }
    };
    let daemon_version = env!("CARGO_PKG_VERSION").to_string();
    if hello.magic != MAGIC {
        tracing::debug!("not an mdl client (bad magic)");
        let message = "not an mdl client: the Hello's magic must be \"mdl\\0\"".to_string();
        refuse(conn, ErrorKind::InvalidRequest, message).await;
        return false;
    }
    if hello.protocol != PROTOCOL_VERSION {
        tracing::info!(client = %hello.client_version, got = hello.protocol, "incompatible client");
        let reply = HandshakeReply::Incompatible {
            expected: PROTOCOL_VERSION,
            got: hello.protocol,
            daemon_version,
        };
        send(conn, &reply).await;
        return false;
    }
    let welcome = HandshakeReply::Welcome {
        protocol: PROTOCOL_VERSION,
        daemon_version,
    };
    send(conn, &welcome).await
}

/// What is wrong with a frame, for the peer.
fn bad_frame_message(error: &ProtocolError) -> String {
    match error {
        ProtocolError::Codec(e) => {
            format!("cannot decode the frame ({e}); is the client from the same mdl version?")
        }
        ProtocolError::TooLarge(len) => {
            format!("a message of {len} bytes is over the frame cap of {MAX_FRAME_LEN}")
        }
        ProtocolError::Io(e) => format!(
            "unreadable frame ({e}); a frame is an 8-byte big-endian length (at most {MAX_FRAME_LEN}) and its payload"
        ),
    }
}

/// Refuse a connection before the handshake: one typed frame, written within a short time
/// (the peer may not be an mdl client and may never read), then the connection closes.
async fn refuse(conn: &mut Connection<LocalStream>, kind: ErrorKind, message: String) {
    let reply = HandshakeReply::Refused(ErrorReply::new(kind, message));
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, conn.send(&reply)).await;
}

/// A list of jobs the daemon sends: a reply (`Jobs`) or a subscriber's first event
/// (`Snapshot`), each of which can be split into parts when it is too large for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `JobsPart`... then `Jobs`.
    Reply,
    /// `SnapshotPart`... then `Snapshot`.
    Snapshot,
    /// One page of a longer reply: `JobsPart`s only (the caller closes with `Jobs`).
    Page,
    /// One page of a longer snapshot: `SnapshotPart`s only (the caller closes with
    /// `Snapshot`).
    SnapshotPage,
}

impl Listing {
    fn wrap(self, jobs: Vec<JobInfo>, last: bool) -> Response {
        match (self, last) {
            (Listing::Reply, true) => Response::Jobs(jobs),
            (Listing::Reply, false) | (Listing::Page, _) => Response::JobsPart(jobs),
            (Listing::Snapshot, true) => Response::Event(Event::Snapshot(jobs)),
            (Listing::Snapshot, false) | (Listing::SnapshotPage, _) => {
                Response::Event(Event::SnapshotPart(jobs))
            }
        }
    }
}

/// Send a list of jobs as one frame or, when it is too large for one, as parts of at most the
/// frame cap each (halving until each fits), the last one as the closing message; the peer
/// joins them. False when the peer is gone or stopped reading.
pub async fn send_in_parts<S>(conn: &mut Connection<S>, jobs: EncodedJobs, listing: Listing) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Chunks still to send, in order; the last one goes out as the closing message.
    let mut pending = std::collections::VecDeque::from([jobs]);
    while let Some(mut chunk) = pending.pop_front() {
        let last = pending.is_empty();
        let sent = conn.send_jobs(&chunk, |jobs| listing.wrap(jobs, last));
        match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(ProtocolError::TooLarge(_))) => {
                if chunk.len() < 2 {
                    tracing::warn!(
                        "one job's listing is over the frame cap; sending it without its files"
                    );
                    let without_files = chunk.decode().and_then(|mut jobs| {
                        jobs.iter_mut().for_each(|job| job.files.clear());
                        EncodedJobs::from_jobs(&jobs)
                    });
                    chunk = match without_files {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            tracing::error!("a job's listing cannot be sent: {e}");
                            continue;
                        }
                    };
                } else {
                    let second = chunk.split_off(chunk.len() / 2);
                    pending.push_front(second);
                }
                pending.push_front(chunk);
            }
            Ok(Err(e)) => {
                tracing::debug!("cannot write to a client: {e}");
                return false;
            }
            Err(_) => {
                tracing::info!("dropping a client that stopped reading");
                return false;
            }
        }
    }
    true
}

/// How a paged listing went ([`send_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Every job was sent, and the closing message.
    Listed,
    /// A page could not be read: an error reply was sent instead of the rest.
    Failed,
    /// The peer is gone or stopped reading.
    Gone,
}

/// Send a listing read page by page (`first`, then the pages of `pages`): parts of at least a
/// page each (`JobsPart`s or `SnapshotPart`s, each split further if over the frame cap), the
/// last part as the closing message of `last` (`Jobs` or `Snapshot`), so a listing shorter
/// than a page is one frame; an error reply instead of the rest if a page cannot be read.
async fn send_pages(
    conn: &mut Connection<LocalStream>,
    first: EncodedJobs,
    pages: &mut handlers::query::JobPages,
    last: Listing,
) -> Sent {
    let part = match last {
        Listing::Snapshot | Listing::SnapshotPage => Listing::SnapshotPage,
        Listing::Reply | Listing::Page => Listing::Page,
    };
    let gone = |sent: bool| if sent { Sent::Failed } else { Sent::Gone };
    let mut held = first;
    loop {
        match pages.next().await {
            Ok(Some(page)) if held.len() >= handlers::query::PAGE_LEN && !page.is_empty() => {
                let full = std::mem::replace(&mut held, page);
                if !send_in_parts(conn, full, part).await {
                    return Sent::Gone;
                }
            }
            Ok(Some(page)) => held.append(page),
            Ok(None) => {
                return match send_in_parts(conn, held, last).await {
                    true => Sent::Listed,
                    false => Sent::Gone,
                }
            }
            Err(e) => return gone(send(conn, &Response::Error(e)).await),
        }
    }
}

/// Send one frame within [`WRITE_TIMEOUT`]; false when the peer is gone or stopped reading.
async fn send<T: Serialize>(conn: &mut Connection<LocalStream>, value: &T) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, conn.send(value)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!("cannot write to a client: {e}");
            false
        }
        Err(_) => {
            tracing::info!("dropping a client that stopped reading");
            false
        }
    }
}

/// Send a snapshot, then every event, with heartbeats when idle. A subscriber that cannot keep
/// up gets `Lagged`; one that stops reading is dropped; it never slows anything else down.
async fn stream_events(
    mut conn: Connection<LocalStream>,
    subscription: Subscription,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let Subscription {
        first,
        mut rest,
        mut events,
    } = subscription;
    // The snapshot page by page (clients join the parts); a page that cannot be read ends
    // the stream with the error.
    if send_pages(&mut conn, first, &mut rest, Listing::Snapshot).await != Sent::Listed {
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
        if !send(&mut conn, &Response::Event(event)).await || end {
            return;
        }
        ticker.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdl_protocol::{FileInfo, FileState, JobState};

    fn job(id: u64, files: usize) -> JobInfo {
        JobInfo {
            id,
            source: format!("hf://org/repo-{id}"),
            state: JobState::Completed,
            priority: 0,
            dest: "/data".into(),
            bytes_done: 0,
            bytes_total: None,
            error: None,
            files: (0..files)
                .map(|i| FileInfo {
                    path: format!(
                        "/data/models--org--repo-{id}/snapshots/{}/file-{i:06}.safetensors",
                        "a".repeat(40)
                    ),
                    size: Some(1),
                    bytes_done: 1,
                    state: FileState::Completed,
                    sha256: Some("ab".repeat(32)),
                    endpoint: None,
                    note: None,
                })
                .collect(),
            created_ms: 0,
            finished_ms: None,
            revision: None,
        }
    }

    /// 100k jobs and 200k files (far over the 16 MiB frame cap) arrive complete and in order,
    /// in both codecs, as a reply and as a snapshot.
    #[tokio::test]
    async fn a_listing_over_the_frame_cap_arrives_in_parts() {
        let jobs: Vec<JobInfo> = (0..100_000).map(|id| job(id, 2)).collect();
        for codec in [Codec::Bincode, Codec::Json] {
            for listing in [Listing::Reply, Listing::Snapshot] {
                let (a, b) = tokio::io::duplex(1 << 20);
                let sent = jobs.clone();
                let writer = tokio::spawn(async move {
                    let mut conn = Connection::with_codec(a, codec);
                    send_in_parts(&mut conn, EncodedJobs::from_jobs(&sent).unwrap(), listing).await
                });
                let mut conn = Connection::with_codec(b, codec);
                let (mut got, mut parts) = (Vec::new(), 0);
                loop {
                    match conn.recv::<Response>().await.unwrap().unwrap() {
                        Response::JobsPart(part) | Response::Event(Event::SnapshotPart(part)) => {
                            parts += 1;
                            got.extend(part);
                        }
                        Response::Jobs(last) | Response::Event(Event::Snapshot(last)) => {
                            got.extend(last);
                            break;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert!(writer.await.unwrap());
                assert!(parts >= 2, "{codec:?} {listing:?}: {parts} parts");
                assert_eq!(got.len(), jobs.len());
                assert!(got
                    .iter()
                    .zip(&jobs)
                    .all(|(a, b)| a.id == b.id && a.files.len() == 2));
            }
        }
    }

    /// A job whose listing alone is over the frame cap is sent without its files, between
    /// the others, in both codecs.
    #[tokio::test]
    async fn a_job_over_the_frame_cap_is_listed_without_its_files() {
        let jobs = vec![job(1, 1), job(2, 100_000), job(3, 1)];
        for codec in [Codec::Bincode, Codec::Json] {
            let (a, b) = tokio::io::duplex(1 << 20);
            let sent = EncodedJobs::from_jobs(&jobs).unwrap();
            let writer = tokio::spawn(async move {
                let mut conn = Connection::with_codec(a, codec);
                send_in_parts(&mut conn, sent, Listing::Reply).await
            });
            let mut conn = Connection::with_codec(b, codec);
            let mut got = Vec::new();
            loop {
                match conn.recv::<Response>().await.unwrap().unwrap() {
                    Response::JobsPart(part) => got.extend(part),
                    Response::Jobs(last) => {
                        got.extend(last);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert!(writer.await.unwrap());
            let files: Vec<_> = got.iter().map(|j| (j.id, j.files.len())).collect();
            assert_eq!(files, [(1, 1), (2, 0), (3, 1)], "{codec:?}");
        }
    }
}
