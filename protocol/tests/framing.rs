//! Framing and codec edge cases: caps checked before allocating, truncation, garbage.

use mdl_protocol::connection::{encode_frame, MAX_FRAME_LEN};
use mdl_protocol::{codec, Connection, ProtocolError, Request, Response};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_length_of_two_to_the_63_is_refused_without_allocating() {
    let (mut tx, rx) = tokio::io::duplex(64);
    let mut conn = Connection::new(rx);
    tx.write_all(&(1u64 << 63).to_be_bytes()).await.unwrap();
    // If the decoder tried to reserve 2^63 bytes the test process would abort; it must
    // instead fail as soon as it has read the header.
    let err = conn.recv::<Request>().await.unwrap_err();
    assert!(matches!(err, ProtocolError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn a_frame_just_over_the_cap_is_refused() {
    let (mut tx, rx) = tokio::io::duplex(64);
    let mut conn = Connection::new(rx);
    tx.write_all(&(MAX_FRAME_LEN as u64 + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(conn.recv::<Request>().await.is_err());
}

#[tokio::test]
async fn clean_eof_between_frames_is_none_and_mid_frame_is_an_error() {
    let (tx, rx) = tokio::io::duplex(1024);
    drop(tx);
    let mut conn = Connection::new(rx);
    assert!(conn.recv::<Request>().await.unwrap().is_none());

    let (mut tx, rx) = tokio::io::duplex(1024);
    let frame = encode_frame(&Request::Status(5)).unwrap();
    tx.write_all(&frame[..frame.len() - 1]).await.unwrap();
    drop(tx);
    let mut conn = Connection::new(rx);
    assert!(conn.recv::<Request>().await.is_err());
}

#[tokio::test]
async fn garbage_payloads_are_decode_errors() {
    let (mut tx, rx) = tokio::io::duplex(1024);
    tx.write_all(&4u64.to_be_bytes()).await.unwrap();
    tx.write_all(&[0xfe, 0xff, 0xff, 0xff]).await.unwrap();
    let mut conn = Connection::new(rx);
    assert!(matches!(
        conn.recv::<Request>().await,
        Err(ProtocolError::Codec(_))
    ));
}

#[test]
fn trailing_bytes_and_oversized_inner_lengths_are_rejected() {
    let mut payload = codec::encode(&Request::List).unwrap();
    payload.push(0);
    assert!(codec::decode::<Request>(&payload).is_err());
    // A Vec claiming 2^60 elements inside a tiny payload must not allocate.
    let mut bogus = codec::encode(&Response::Jobs(vec![])).unwrap();
    bogus.truncate(1);
    bogus.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    assert!(codec::decode::<Response>(&bogus).is_err());
}

#[tokio::test]
async fn round_trip_over_a_stream() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut left = Connection::new(a);
    let mut right = Connection::new(b);
    left.send(&Request::Status(77)).await.unwrap();
    assert_eq!(
        right.recv::<Request>().await.unwrap(),
        Some(Request::Status(77))
    );
}

#[tokio::test]
async fn the_first_frame_picks_the_codec_for_the_whole_connection() {
    use mdl_protocol::handshake::Hello;
    use mdl_protocol::Codec;
    for codec in [Codec::Json, Codec::Bincode] {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = Connection::with_codec(a, codec);
        let mut server = Connection::detecting(b);
        client.send(&Hello::new("t")).await.unwrap();
        assert_eq!(server.recv::<Hello>().await.unwrap(), Some(Hello::new("t")));
        assert_eq!(server.codec(), codec);
        server.send(&Response::Ok).await.unwrap();
        assert_eq!(client.recv::<Response>().await.unwrap(), Some(Response::Ok));
        client.send(&Request::Status(u64::MAX)).await.unwrap();
        assert_eq!(
            server.recv::<Request>().await.unwrap(),
            Some(Request::Status(u64::MAX))
        );
    }
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_and_the_next_frame_still_reads() {
    use mdl_protocol::connection::encode_frame_with;
    use mdl_protocol::Codec;
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let mut conn = Connection::with_codec(rx, Codec::Json);
    for bad in [
        &b"{\"Status\": "[..],
        b"{\"Nope\":1}",
        b"[1,2]",
        b"\xff\xfe",
    ] {
        tx.write_all(&(bad.len() as u64).to_be_bytes())
            .await
            .unwrap();
        tx.write_all(bad).await.unwrap();
        assert!(matches!(
            conn.recv::<Request>().await,
            Err(ProtocolError::Codec(_))
        ));
    }
    tx.write_all(&encode_frame_with(Codec::Json, &Request::List).unwrap())
        .await
        .unwrap();
    assert_eq!(conn.recv::<Request>().await.unwrap(), Some(Request::List));
}
