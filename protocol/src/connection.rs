//! Length-prefixed frames over any byte stream.
//!
//! A frame is an 8-byte big-endian length followed by that many bytes of payload (see
//! [`crate::codec`]). A length above [`MAX_FRAME_LEN`] is refused as soon as the header is read,
//! before anything is allocated for it. Every frame of a connection uses the same [`Codec`]: a
//! client chooses it ([`Connection::with_codec`]); the daemon learns it from the first frame it
//! receives ([`Connection::detecting`]).

use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::codec::{Codec, CodecError};

/// The largest payload a frame may carry: 16 MiB (a listing of many thousands of jobs fits).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The size of a frame's length header in bytes.
pub const LENGTH_HEADER_LEN: usize = 8;

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading or writing the stream failed, a frame was too large, or the stream ended in the
    /// middle of a frame.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame's payload was not the expected message.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A message to send encodes to more than [`MAX_FRAME_LEN`] bytes; nothing was written.
    #[error("message of {0} bytes exceeds the frame cap of {MAX_FRAME_LEN}")]
    TooLarge(usize),
}

/// The frame codec: 8-byte big-endian length, capped at [`MAX_FRAME_LEN`].
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(LENGTH_HEADER_LEN)
        .big_endian()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Encode a message as a complete bincode frame (header and payload), e.g. for golden fixtures.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_frame_with(Codec::Bincode, value)
}

/// Encode a message as a complete frame (header and payload) in `codec`.
pub fn encode_frame_with<T: Serialize>(codec: Codec, value: &T) -> Result<Vec<u8>, CodecError> {
    let payload = codec.encode(value)?;
    let mut frame = Vec::with_capacity(LENGTH_HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// A framed, typed connection over a byte stream.
pub struct Connection<S> {
    framed: Framed<S, LengthDelimitedCodec>,
    codec: Codec,
    /// The codec is not known yet: the first received frame decides it.
    detect: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wrap a stream that speaks bincode.
    pub fn new(stream: S) -> Self {
        Connection::with_codec(stream, Codec::Bincode)
    }

    /// Wrap a stream that speaks `codec` (the client side: it chooses).
    pub fn with_codec(stream: S, codec: Codec) -> Self {
        Connection {
            framed: Framed::new(stream, frame_codec()),
            codec,
            detect: false,
        }
    }

    /// Wrap a stream whose codec the first received frame decides ([`Codec::detect`]): the
    /// daemon's side. Until then [`Connection::codec`] says bincode.
    pub fn detecting(stream: S) -> Self {
        Connection {
            detect: true,
            ..Connection::new(stream)
        }
    }

    /// The codec this connection speaks.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Send one message as one frame and flush it.
    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<(), ProtocolError> {
        let payload = self.codec.encode(value)?;
        self.send_payload(payload).await
    }

    /// Send an encoded payload as one frame, unless it is over the frame cap, and flush it.
    async fn send_payload(&mut self, payload: Vec<u8>) -> Result<(), ProtocolError> {
        if payload.len() > MAX_FRAME_LEN {
            return Err(ProtocolError::TooLarge(payload.len()));
        }
        self.framed.send(bytes::Bytes::from(payload)).await?;
        Ok(())
    }

    /// Send the message `wrap` builds around `jobs` as one frame and flush it, copying the
    /// jobs' bytes as they are in bincode ([`Codec::encode_with_jobs`]).
    pub async fn send_jobs(
        &mut self,
        jobs: &crate::EncodedJobs,
        wrap: impl Fn(Vec<crate::JobInfo>) -> crate::Response,
    ) -> Result<(), ProtocolError> {
        let payload = self.codec.encode_with_jobs(jobs, wrap)?;
        self.send_payload(payload).await
    }

    /// Receive one message. `Ok(None)` on a clean end of stream (between frames); an error on
    /// an end of stream inside a frame, an oversized frame, or a payload that does not decode.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtocolError> {
        match self.framed.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(frame)) => {
                if std::mem::take(&mut self.detect) {
                    self.codec = Codec::detect(&frame);
                }
                Ok(Some(self.codec.decode(&frame)?))
            }
        }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}
