//! The one file that names the binary encoding (bincode 2, through serde).
//!
//! Everything else encodes and decodes through [`encode`] and [`decode`], so the encoding can
//! only change here, and a change shows up in the golden fixtures.

use serde::{de::DeserializeOwned, Serialize};

use crate::connection::MAX_FRAME_LEN;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The bytes are not a valid message of the expected type.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The bytes decoded but left bytes unread: the peer sent something else.
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    // The limit stops a length inside a payload (a Vec or String header) from making the
    // decoder allocate more than one frame could ever carry.
    bincode::config::standard().with_limit::<{ MAX_FRAME_LEN }>()
}

/// Encode a value as one frame's payload.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode one frame's payload; the whole payload must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}
