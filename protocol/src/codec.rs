//! The encodings of a frame's payload, and the one file that names the binary one (bincode 2,
//! through serde).
//!
//! A connection speaks one [`Codec`] for its whole life: bincode (what `mdlctl` and the Rust
//! [`crate::Client`] use) or JSON (for apps in other languages). Both are the serde encoding of
//! the same `Request` / `Response` / `Event` types, so nothing is written twice and the
//! append-only rules hold for both. The daemon picks the codec from the first payload byte of
//! the first frame ([`Codec::detect`]): `{` is JSON, anything else bincode. That cannot be
//! ambiguous: a bincode `Hello` starts with its magic, `m`.
//!
//! Everything else encodes and decodes through this module, so an encoding can only change
//! here, and a change shows up in the golden fixtures.

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

/// How a connection's payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// bincode 2 (standard configuration, varint integers), through serde.
    #[default]
    Bincode,
    /// JSON: serde's encoding of the same types (externally tagged enums, UTF-8, one document
    /// per frame).
    Json,
}

impl Codec {
    /// The codec a connection speaks, from the payload of its first frame: JSON when it starts
    /// with `{`, bincode otherwise.
    pub fn detect(first_payload: &[u8]) -> Codec {
        if first_payload.first() == Some(&b'{') {
            Codec::Json
        } else {
            Codec::Bincode
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Bincode => "bincode",
            Codec::Json => "json",
        }
    }

    /// Encode a value as one frame's payload.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Bincode => encode(value),
            Codec::Json => serde_json::to_vec(value).map_err(|e| CodecError::Encode(e.to_string())),
        }
    }

    /// Decode one frame's payload; the whole payload must be consumed (trailing whitespace is
    /// allowed in JSON).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Bincode => decode(bytes),
            // The frame cap bounds what serde_json can allocate, and its recursion limit
            // bounds nesting.
            Codec::Json => {
                serde_json::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
            }
        }
    }
}

fn config() -> impl bincode::config::Config {
    // The limit stops a length inside a payload (a Vec or String header) from making the
    // decoder allocate more than one frame could ever carry.
    bincode::config::standard().with_limit::<{ MAX_FRAME_LEN }>()
}

/// Encode a value as one frame's payload in bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode one bincode frame's payload; the whole payload must be consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Hello;
    use crate::request::Request;

    #[test]
    fn the_first_byte_picks_the_codec() {
        let bincode_hello = Codec::Bincode.encode(&Hello::new("x")).unwrap();
        let json_hello = Codec::Json.encode(&Hello::new("x")).unwrap();
        assert_eq!(Codec::detect(&bincode_hello), Codec::Bincode);
        assert_eq!(Codec::detect(&json_hello), Codec::Json);
        assert_eq!(Codec::detect(b""), Codec::Bincode);
    }

    #[test]
    fn json_is_serdes_externally_tagged_form() {
        assert_eq!(Codec::Json.encode(&Request::List).unwrap(), br#""List""#);
        assert_eq!(
            Codec::Json.encode(&Request::Status(u64::MAX)).unwrap(),
            br#"{"Status":18446744073709551615}"#
        );
        let back: Request = Codec::Json.decode(b" {\"Cancel\": 3}\n").unwrap();
        assert_eq!(back, Request::Cancel(3));
        assert!(Codec::Json.decode::<Request>(b"{\"Cancel\": 3} x").is_err());
        assert!(Codec::Json
            .decode::<Request>(b"{\"Frobnicate\": 3}")
            .is_err());
    }
}
