//! The daemon's side of the protocol: bad frames, versions, subscriptions, concurrency.

use std::time::Duration;

use mdl_protocol::connection::encode_frame;
use mdl_protocol::handshake::{HandshakeReply, Hello, MAGIC};
use mdl_protocol::{
    endpoint, Client, ClientError, Codec, Connection, ErrorKind, Event, Request, Response,
};
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

/// Write one frame with a raw payload.
async fn write_raw_frame(stream: &mut endpoint::LocalStream, payload: &[u8]) {
    stream
        .write_all(&(payload.len() as u64).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(payload).await.unwrap();
}

#[tokio::test]
async fn a_json_client_and_a_bincode_client_are_served_at_the_same_time() {
    let daemon = TestDaemon::start().await;
    let mut json = Client::connect_with_codec(&daemon.socket, "json-test", Codec::Json)
        .await
        .unwrap();
    let mut bin = daemon.client().await;
    let added = json
        .add(mdl_protocol::AddRequest {
            source: "http://127.0.0.1:9/x.bin".into(),
            dest: Some(daemon.downloads.display().to_string()),
            paused: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Each sees what the other did, interleaved on two open connections.
    assert_eq!(bin.status(added.job.id).await.unwrap().id, added.job.id);
    bin.set_priority(added.job.id, 4).await.unwrap();
    assert_eq!(json.status(added.job.id).await.unwrap().priority, 4);
    let mut events = Client::connect_with_codec(&daemon.socket, "json-events", Codec::Json)
        .await
        .unwrap()
        .subscribe()
        .await
        .unwrap();
    assert!(matches!(
        events.next().await.unwrap(),
        Some(Event::Snapshot(jobs)) if jobs.len() == 1
    ));
    bin.cancel(added.job.id).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap();
        if matches!(event, Some(Event::Cancelled(ref j)) if j.id == added.job.id) {
            break;
        }
    }
    assert_eq!(json.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_json_frames_get_an_error_and_the_connection_keeps_serving() {
    let daemon = TestDaemon::start().await;
    let mut conn = Connection::with_codec(raw(&daemon).await, Codec::Json);
    conn.send(&Hello::new("json-test")).await.unwrap();
    assert!(matches!(
        conn.recv::<HandshakeReply>().await.unwrap(),
        Some(HandshakeReply::Welcome { .. })
    ));
    let mut stream = conn.into_inner();
    for bad in [
        &b"{\"Status\": "[..],
        b"{\"Frobnicate\": 1}",
        b"{\"Add\": {\"source\": 5}}",
        b"not json",
    ] {
        write_raw_frame(&mut stream, bad).await;
        let mut conn = Connection::with_codec(stream, Codec::Json);
        match conn.recv::<Response>().await.unwrap() {
            Some(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::InvalidRequest);
                assert!(e.message.contains("cannot decode"), "{e:?}");
            }
            other => panic!("expected an error reply, got {other:?}"),
        }
        stream = conn.into_inner();
    }
    let mut conn = Connection::with_codec(stream, Codec::Json);
    conn.send(&Request::List).await.unwrap();
    assert_eq!(
        conn.recv::<Response>().await.unwrap(),
        Some(Response::Jobs(vec![]))
    );
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn json_handshakes_get_the_same_answers_in_json() {
    let daemon = TestDaemon::start().await;
    // An incompatible version: the same clear error, in JSON.
    let mut stream = raw(&daemon).await;
    write_raw_frame(
        &mut stream,
        br#"{"magic":[109,100,108,0],"protocol":999,"client_version":"future"}"#,
    )
    .await;
    let mut conn = Connection::with_codec(stream, Codec::Json);
    match conn.recv::<HandshakeReply>().await.unwrap() {
        Some(HandshakeReply::Incompatible { expected, got, .. }) => {
            assert_eq!((expected, got), (mdl_protocol::PROTOCOL_VERSION, 999));
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert_closed(&mut conn.into_inner()).await;
    let err = Client::connect_with_codec(&daemon.socket, "ok", Codec::Json).await;
    assert!(err.is_ok(), "a compatible JSON client is welcome");

    // A first frame that is JSON but not a hello: an error saying so, then closed.
    let mut stream = raw(&daemon).await;
    write_raw_frame(&mut stream, br#"{"protocol":1}"#).await;
    let mut conn = Connection::with_codec(stream, Codec::Json);
    match conn.recv::<Response>().await.unwrap() {
        Some(Response::Error(e)) => assert!(e.message.contains("Hello"), "{e:?}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_closed(&mut conn.into_inner()).await;
    assert_still_serving(&daemon).await;
}
