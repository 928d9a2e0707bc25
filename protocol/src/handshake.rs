//! The version handshake: the first frame each way on every connection.
//!
//! The client sends [`Hello`]; the daemon answers [`HandshakeReply`] before it decodes any
//! request. The layout of these two types never changes, whatever the protocol version, so
//! that any two versions can at least tell each other that they differ.

use serde::{Deserialize, Serialize};

/// The magic bytes that open every [`Hello`]: "mdl" and a NUL.
pub const MAGIC: [u8; 4] = *b"mdl\0";

/// The protocol version this crate speaks. Bump it when an existing message changes shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// The client's opening frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`]; anything else is not an mdl client.
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// The client's program name and version, for logs.
    pub client_version: String,
}

impl Hello {
    /// A hello for this crate's protocol version.
    pub fn new(client_version: impl Into<String>) -> Self {
        Hello {
            magic: MAGIC,
            protocol: PROTOCOL_VERSION,
            client_version: client_version.into(),
        }
    }
}

/// The daemon's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// Versions match; requests may follow.
    Welcome {
        /// The protocol version (equal to the client's).
        protocol: u32,
        /// The daemon's package version.
        daemon_version: String,
    },
    /// Versions differ; the daemon closes the connection after this frame.
    Incompatible {
        /// The protocol version the daemon speaks.
        expected: u32,
        /// The protocol version the client sent.
        got: u32,
        /// The daemon's package version.
        daemon_version: String,
    },
    /// The daemon refuses the connection before any request (a first frame that is not a
    /// hello, a frame over the size cap, too many connections, a hello that came too late)
    /// and closes it after this frame. Appended in this protocol version.
    Refused(crate::response::ErrorReply),
}

/// The message a person sees when versions differ, naming both versions and the fix.
pub fn incompatible_message(
    daemon_protocol: u32,
    client_protocol: u32,
    daemon_version: &str,
) -> String {
    format!(
        "the running daemon (mdld {daemon_version}) speaks protocol {daemon_protocol}, this client speaks protocol \
         {client_protocol}; restart the daemon from the same installation as the client \
         (`mdlctl daemon stop` and run the command again)"
    )
}
