//! The daemon's side of the protocol: bad frames, versions, subscriptions, concurrency.

use std::time::Duration;

use mdl_protocol::connection::encode_frame;
use mdl_protocol::handshake::{HandshakeReply, Hello, MAGIC};
use mdl_protocol::{endpoint, Client, ClientError, Connection, Event, Request, Response};
use testkit::daemon::TestDaemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw(daemon: &TestDaemon) -> endpoint::LocalStream {
    endpoint::connect(&daemon.socket).await.unwrap()
}

/// The daemon closed the connection: reading gives EOF (or an error), never data.
async fn assert_closed(stream: &mut endpoint::LocalStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the daemon to close, got {read:?}"
    );
}

async fn assert_still_serving(daemon: &TestDaemon) {
    let mut client = daemon.client().await;
    client
        .list()
        .await
        .expect("the daemon keeps serving other clients");
}

#[tokio::test]
async fn huge_length_header_is_refused_without_allocating() {
    let daemon = TestDaemon::start().await;
    let mut stream = raw(&daemon).await;
    stream.write_all(&(1u64 << 63).to_be_bytes()).await.unwrap();
    assert_closed(&mut stream).await;
    // Also after a valid handshake.
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello::new("test")).await.unwrap();
    let _: Option<HandshakeReply> = conn.recv().await.unwrap();
    let mut stream = conn.into_inner();
    stream.write_all(&(1u64 << 63).to_be_bytes()).await.unwrap();
    assert_closed(&mut stream).await;
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn truncated_and_garbage_frames_close_only_that_connection() {
    let daemon = TestDaemon::start().await;
    let mut held = daemon.client().await;

    // A frame cut short by the peer hanging up (the local socket has no half-close).
    let mut truncated = raw(&daemon).await;
    let frame = encode_frame(&Hello::new("test")).unwrap();
    truncated
        .write_all(&frame[..frame.len() - 3])
        .await
        .unwrap();
    drop(truncated);
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello::new("test")).await.unwrap();
    let _: Option<HandshakeReply> = conn.recv().await.unwrap();
    let mut stream = conn.into_inner();
    let request = encode_frame(&Request::List).unwrap();
    stream
        .write_all(&request[..request.len() / 2 + 4])
        .await
        .unwrap();
    drop(stream);

    let mut garbage = raw(&daemon).await;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut garbage).await;

    // A valid hello, then a frame whose payload is not a request: typed error, then closed.
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello::new("test")).await.unwrap();
    let _: Option<HandshakeReply> = conn.recv().await.unwrap();
    let mut stream = conn.into_inner();
    stream.write_all(&5u64.to_be_bytes()).await.unwrap();
    stream
        .write_all(&[0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut conn = Connection::new(stream);
    match conn.recv::<Response>().await.unwrap() {
        Some(Response::Error(e)) => assert!(e.message.contains("cannot decode"), "{e:?}"),
        other => panic!("expected an error reply, got {other:?}"),
    }

    held.list().await.expect("an open connection is unaffected");
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn incompatible_version_gets_a_clear_error() {
    let daemon = TestDaemon::start().await;
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello {
        magic: MAGIC,
        protocol: 999,
        client_version: "future".into(),
    })
    .await
    .unwrap();
    match conn.recv::<HandshakeReply>().await.unwrap() {
        Some(HandshakeReply::Incompatible { expected, got, .. }) => {
            assert_eq!(expected, mdl_protocol::PROTOCOL_VERSION);
            assert_eq!(got, 999);
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    let message = mdl_protocol::handshake::incompatible_message(1, 999, "0.1.0");
    assert!(
        message.contains("protocol 1")
            && message.contains("protocol 999")
            && message.contains("restart")
    );
    // Bad magic: closed without a reply.
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello {
        magic: *b"nope",
        protocol: 1,
        client_version: "x".into(),
    })
    .await
    .unwrap();
    assert!(conn
        .recv::<HandshakeReply>()
        .await
        .map(|r| r.is_none())
        .unwrap_or(true));
}

#[tokio::test]
async fn subscribers_get_a_snapshot_then_events_and_heartbeats() {
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = client
        .add(mdl_protocol::AddRequest {
            source: "http://127.0.0.1:9/x.bin".into(),
            dest: Some(daemon.downloads.display().to_string()),
            paused: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let mut events = daemon.client().await.subscribe().await.unwrap();
    match events.next().await.unwrap() {
        Some(Event::Snapshot(jobs)) => assert_eq!(jobs.len(), 1),
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    client.cancel(job.id).await.unwrap();
    let mut saw_cancel = false;
    let mut saw_heartbeat = false;
    while !(saw_cancel && saw_heartbeat) {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::Cancelled(j)) => saw_cancel = j.id == job.id,
            Some(Event::Heartbeat { .. }) => saw_heartbeat = true,
            _ => {}
        }
    }
}

#[tokio::test]
async fn unknown_job_and_requests_keep_the_connection_open() {
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let err = client.status(12345).await.unwrap_err();
    assert!(matches!(err, ClientError::Daemon(_)), "{err:?}");
    assert!(err.to_string().contains("no job 12345"));
    let reply = client.request(&Request::Subscribe).await.unwrap();
    assert!(matches!(reply, Response::Event(Event::Snapshot(_))));
}

#[tokio::test]
async fn shutdown_request_replies_then_stops() {
    let mut daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    client.shutdown().await.unwrap();
    daemon.stop().await;
    assert!(Client::connect(&daemon.socket, "t").await.is_err());
    assert!(
        !daemon.socket.exists(),
        "the socket file is removed on exit"
    );
}
