//! The shared vocabulary of the protocol: job ids, states, error kinds and the job / file views.
//!
//! These types also have a JSON form (used by `mdlctl --json`): enums serialize as snake_case
//! strings. Never add serde attributes that change the shape per value (`skip_serializing_if`,
//! `flatten`, internally tagged enums): the binary codec cannot represent them.

use serde::{Deserialize, Serialize};

/// A job's identifier, unique for the lifetime of a daemon's data directory.
pub type JobId = u64;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free download slot.
    Queued,
    /// Bytes are being fetched.
    Running,
    /// All bytes are here; hashes and sizes are being checked.
    Verifying,
    /// Every file is verified and at its final path.
    Completed,
    /// Stopped by an error that retrying cannot fix (see the job's `error`).
    Failed,
    /// Held by the user (or by a full disk); keeps every byte fetched so far.
    Paused,
    /// Stopped by the user; its partial files are removed.
    Cancelled,
}

impl JobState {
    /// True for states a job never leaves by itself (completed, failed, cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// The lowercase name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Verifying => "verifying",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Where one file of a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Not started yet.
    Pending,
    /// Bytes are being fetched.
    Downloading,
    /// Being hashed and size-checked.
    Verifying,
    /// Verified and at its final path.
    Completed,
    /// Failed (see the job's error).
    Failed,
    /// Was completed, and is gone from disk now (deleted, or its snapshot link is).
    Missing,
    /// Was completed, and its size, time stamp or bytes changed since it was verified.
    Modified,
}

impl FileState {
    /// The lowercase name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Downloading => "downloading",
            FileState::Verifying => "verifying",
            FileState::Completed => "completed",
            FileState::Failed => "failed",
            FileState::Missing => "missing",
            FileState::Modified => "modified",
        }
    }
}

/// The kind of a failure, on the wire. `mdlctl` maps each kind to a documented exit code
/// ([`ErrorKind::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Anything not covered below (exit 1).
    Other,
    /// The request itself is wrong: bad argument, unknown job, conflicting destination (exit 2).
    InvalidRequest,
    /// The server wants credentials, or refused the ones given (exit 3).
    Auth,
    /// The server says the resource does not exist (exit 4).
    NotFound,
    /// Network or server failure that persisted after retries (exit 5).
    Network,
    /// The server kept rate-limiting us after retries (exit 6).
    RateLimited,
    /// A checksum or size did not match (exit 7).
    Integrity,
    /// The destination filesystem is full (exit 8).
    NoSpace,
    /// The daemon cannot be reached or speaks another protocol version (exit 9).
    Unreachable,
    /// A non-retryable failure the server reported (a 4xx other than auth / not found) (exit 5).
    Fatal,
}

impl ErrorKind {
    /// The documented process exit code for this kind of failure: the one table of them
    /// (`mdlctl` exits with it; 0 is success).
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::InvalidRequest => 2,
            ErrorKind::Auth => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Network | ErrorKind::Fatal => 5,
            ErrorKind::RateLimited => 6,
            ErrorKind::Integrity => 7,
            ErrorKind::NoSpace => 8,
            ErrorKind::Unreachable => 9,
        }
    }

    /// The snake_case name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Other => "other",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Network => "network",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Integrity => "integrity",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Fatal => "fatal",
        }
    }
}

/// A failure as a job records it: its kind and a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// What kind of failure (decides the exit code).
    pub kind: ErrorKind,
    /// What happened and, where known, what to do about it. Never contains secrets.
    pub message: String,
}

/// One file of a job, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Where the verified file ends up (absolute).
    pub path: String,
    /// The expected size in bytes, once known.
    pub size: Option<u64>,
    /// Bytes fetched so far (the sum of the fetched byte ranges).
    pub bytes_done: u64,
    /// Where the file is in its life.
    pub state: FileState,
    /// The expected or (once verified) computed sha256, lowercase hex.
    pub sha256: Option<String>,
    /// Which endpoint (scheme and host) served the bytes, once known.
    pub endpoint: Option<String>,
    /// A remark for a person, e.g. "server does not support ranges: single stream".
    pub note: Option<String>,
}

/// A job, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// The source as the user gave it, with any credentials removed.
    pub source: String,
    /// Where the job is in its life.
    pub state: JobState,
    /// Higher runs first; equal priorities run in the order they were added.
    pub priority: i32,
    /// The destination directory.
    pub dest: String,
    /// Bytes fetched so far over all files.
    pub bytes_done: u64,
    /// The total size over all files, once every size is known.
    pub bytes_total: Option<u64>,
    /// Why the job failed or was paused by the daemon, if it was.
    pub error: Option<ErrorInfo>,
    /// The job's files (empty until the source is resolved).
    pub files: Vec<FileInfo>,
    /// When the job was added (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// When the job finished (milliseconds since the Unix epoch).
    pub finished_ms: Option<u64>,
    /// The resolved revision, commit or version of a hub source.
    pub revision: Option<String>,
}
