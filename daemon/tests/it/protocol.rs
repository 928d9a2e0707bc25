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

/// The daemon refused the connection before the handshake with a reason, then closed it.
async fn assert_refused(stream: endpoint::LocalStream, codec: Codec, says: &str) {
    let mut conn = Connection::with_codec(stream, codec);
    let reply = tokio::time::timeout(Duration::from_secs(15), conn.recv::<HandshakeReply>())
        .await
        .expect("a reply in time");
    match reply {
        Ok(Some(HandshakeReply::Refused(e))) => {
            assert!(e.message.contains(says), "{e:?} does not say {says:?}")
        }
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    }
    assert_closed(&mut conn.into_inner()).await;
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
    assert_refused(stream, Codec::Bincode, "8-byte big-endian length").await;
    // Also after a valid handshake: a typed error, then closed.
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello::new("test")).await.unwrap();
    let _: Option<HandshakeReply> = conn.recv().await.unwrap();
    let mut stream = conn.into_inner();
    stream.write_all(&(1u64 << 63).to_be_bytes()).await.unwrap();
    let mut conn = Connection::new(stream);
    match conn.recv::<Response>().await.unwrap() {
        Some(Response::Error(e)) => assert!(e.message.contains("unreadable frame"), "{e:?}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_closed(&mut conn.into_inner()).await;
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
    assert_refused(garbage, Codec::Bincode, "must be an mdl Hello").await;

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
    // Bad magic: refused with the reason, then closed.
    let mut conn = Connection::new(raw(&daemon).await);
    conn.send(&Hello {
        magic: *b"nope",
        protocol: 1,
        client_version: "x".into(),
    })
    .await
    .unwrap();
    assert_refused(conn.into_inner(), Codec::Bincode, "not an mdl client").await;
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

    // A first frame that is JSON but not a hello: a refusal saying so, then closed.
    let mut stream = raw(&daemon).await;
    write_raw_frame(&mut stream, br#"{"protocol":1}"#).await;
    assert_refused(stream, Codec::Json, "Hello").await;
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_with_a_reason() {
    let daemon = TestDaemon::start_with(|s| s.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(daemon.client().await);
    }
    let extra = raw(&daemon).await;
    assert_refused(extra, Codec::Bincode, "at most 3 connections").await;
    held.pop();
    // A slot is free again once a client leaves.
    poll_until_serving(&daemon).await;
    held[0].list().await.expect("held connections keep working");
}

async fn poll_until_serving(daemon: &TestDaemon) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(&daemon.socket, "test").await {
            Ok(mut client) => {
                client.list().await.unwrap();
                return;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("no slot freed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_late_hello_is_refused() {
    let daemon = TestDaemon::start().await;
    let mut stream = raw(&daemon).await;
    // Half a header, then silence: refused once the hello time is up.
    stream.write_all(&[0, 0, 0]).await.unwrap();
    assert_refused(stream, Codec::Bincode, "no Hello within").await;
    assert_still_serving(&daemon).await;
}

/// A stream of random and mutated frames (bincode and JSON, before and after a valid
/// handshake) at a running daemon: it keeps answering `ls` throughout and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_hostile_frames_do_not_take_the_daemon_down() {
    use rand::{Rng, SeedableRng};
    let daemon = TestDaemon::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d646c);
    let valid: Vec<Vec<u8>> = [
        mdl_protocol::codec::encode(&Request::List).unwrap(),
        mdl_protocol::codec::encode(&Request::Status(1)).unwrap(),
        mdl_protocol::codec::encode(&Request::Add(mdl_protocol::AddRequest {
            source: "http://127.0.0.1:9/x".into(),
            dry_run: true,
            ..Default::default()
        }))
        .unwrap(),
        br#"{"Status":1}"#.to_vec(),
        br#""List""#.to_vec(),
        br#"{"Add":{"source":"hf://a/b","dry_run":true}}"#.to_vec(),
    ]
    .into();
    let total = 100_000usize;
    let per_connection = 500usize;
    let mut sent = 0usize;
    let mut connection = 0usize;
    while sent < total {
        connection += 1;
        let mut stream = raw(&daemon).await;
        let json = connection.is_multiple_of(2);
        // Every third connection first completes a valid handshake, so the mutated frames
        // reach the request decoder too.
        if connection.is_multiple_of(3) {
            let hello = if json {
                br#"{"magic":[109,100,108,0],"protocol":1,"client_version":"fuzz"}"#.to_vec()
            } else {
                mdl_protocol::codec::encode(&Hello::new("fuzz")).unwrap()
            };
            write_raw_frame(&mut stream, &hello).await;
        }
        let mut batch = Vec::new();
        for _ in 0..per_connection {
            let mut payload = valid[rng.gen_range(0..valid.len())].clone();
            match rng.gen_range(0..4) {
                0 => payload = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
                1 => {
                    for _ in 0..rng.gen_range(1..4) {
                        if !payload.is_empty() {
                            let at = rng.gen_range(0..payload.len());
                            payload[at] = rng.gen();
                        }
                    }
                }
                2 => payload.truncate(rng.gen_range(0..=payload.len())),
                _ => payload.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>())),
            }
            // Now and then a lying length header.
            let len = if rng.gen_ratio(1, 50) {
                rng.gen::<u64>()
            } else {
                payload.len() as u64
            };
            batch.extend_from_slice(&len.to_be_bytes());
            batch.extend_from_slice(&payload);
        }
        sent += per_connection;
        // The daemon may close the connection early (it distrusts a bad bincode frame):
        // write what it takes, read what it answers, move on.
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&batch)).await;
        let mut sink = vec![0u8; 1 << 16];
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut sink)).await;
        drop(stream);
        if connection.is_multiple_of(20) {
            assert_still_serving(&daemon).await;
        }
    }
    assert!(sent >= total);
    assert_still_serving(&daemon).await;
}
