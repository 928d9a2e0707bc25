//! The contract between `mdld` (the daemon) and its clients (`mdlctl` and other apps).
//!
//! Everything that crosses the local socket is defined here and nowhere else:
//!
//! * [`handshake`]: the first frame of every connection, in a layout that never changes;
//! * [`request`], [`response`], [`event`]: one enum per direction plus pushed events;
//! * [`types`]: the shared vocabulary (job ids, states, error kinds, job and file info);
//! * [`codec`]: bincode or JSON per connection; the only place that names the binary encoding;
//! * [`connection`]: length-prefixed frames with a hard size cap checked before allocating;
//! * [`endpoint`]: where the per-user socket lives and how to bind / connect it;
//! * [`client`]: a small async client for apps that queue downloads;
//! * [`manifest`]: the manifest format (`mdlctl ensure`, the daemon's drop folder), one parser.
//!
//! # Compatibility rules
//! Messages are append-only: new enum variants and new messages are added at the end, existing
//! variants and struct fields are never reordered or removed. A change to an existing struct's
//! fields bumps [`handshake::PROTOCOL_VERSION`]. Golden frames in `tests/fixtures/` pin every
//! released version.

pub mod client;
pub mod codec;
pub mod connection;
pub mod endpoint;
pub mod event;
pub mod handshake;
pub mod manifest;
pub mod request;
pub mod response;
pub mod types;

pub use client::{Client, ClientError, EventStream};
pub use codec::{Codec, EncodedJobs};
pub use connection::{Connection, ProtocolError, MAX_FRAME_LEN};
pub use event::{Event, FileChange, Progress};
pub use handshake::{HandshakeReply, Hello, MAGIC, PROTOCOL_VERSION};
pub use request::{
    forwarded_env, forwarded_env_from, AddRequest, BandwidthLimitRequest, HubEndpointsRequest,
    HubTokenRequest, RemoveRequest, Request, Secret, SetPriorityRequest, Target, VerifyRequest,
    FORWARDED_ENV,
};
pub use response::{
    AddOutcome, AddReply, DaemonInfo, DamagedRecord, ErrorReply, HealthInfo, HubEndpointsInfo,
    HubTokenInfo, LostJob, PlanInfo, PlannedFile, Response, StoreHealth,
};
pub use types::{ErrorInfo, ErrorKind, FileInfo, FileState, JobId, JobInfo, JobState};
