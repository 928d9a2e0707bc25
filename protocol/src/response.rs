//! Messages from the daemon to a client: one [`Response`] per request, or a stream of events on
//! a subscribed connection.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::types::{ErrorKind, JobInfo};

/// Every reply the daemon can send. Append-only: add new variants at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The request was carried out.
    Ok,
    /// The request failed; the connection stays usable.
    Error(ErrorReply),
    /// A job was queued, joined or found complete.
    Added(AddReply),
    /// One job.
    Job(JobInfo),
    /// Several jobs.
    Jobs(Vec<JobInfo>),
    /// A pushed event on a subscribed connection.
    Event(Event),
    /// The daemon's own status.
    Daemon(DaemonInfo),
    /// The plan of a dry run.
    Plan(PlanInfo),
    /// Which hubs have a stored token.
    HubTokens(Vec<HubTokenInfo>),
    /// Part of a list too large for one frame: more jobs follow, and the reply ends with
    /// `Jobs` holding the last part. A client joins the parts in order. Appended.
    JobsPart(Vec<JobInfo>),
    /// The store's health (reply to [`crate::Request::StoreHealth`]). Appended in 0.1.0.
    StoreHealth(StoreHealth),
    /// What the daemon watches and how it is (the reply to `Health`).
    Health(HealthInfo),
    /// The replies to an `AddMany`, one per source in order: each is what `Add` replies for
    /// it (`Added`, `Jobs` for a search source, or `Error`). Appended.
    AddedMany(Vec<Response>),
    /// Every hub's endpoints (the reply to `HubEndpoints` and `SetHubEndpoints`). Appended.
    HubEndpoints(Vec<HubEndpointsInfo>),
}

/// The endpoints of one hub, as jobs queued from now on use them. URLs are shown with any
/// user name and password replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubEndpointsInfo {
    /// The hub: `hf`, `ms` or `civitai`.
    pub hub: String,
    /// The endpoints tried in order (the official one is tried after them when it is not in
    /// the list).
    pub endpoints: Vec<String>,
    /// The hub's official endpoint.
    pub official: String,
    /// Where the list comes from: `default` (the official endpoint), `config` (the config
    /// file's `[sources]` table) or `runtime` (set with `mdlctl endpoint` or the dashboard).
    pub origin: String,
    /// The endpoint variable in mdld's own environment (`HF_ENDPOINT`, ...), which is tried
    /// before the list, if it is set.
    pub environment: Option<String>,
}

/// Whether the daemon keeps a token for a hub (the token itself never leaves the daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubTokenInfo {
    /// The hub: `hf`, `ms` or `civitai`.
    pub hub: String,
    /// A token is stored.
    pub set: bool,
}

/// A typed error on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure (decides the client's exit code).
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl ErrorReply {
    /// An error reply of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What an add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddOutcome {
    /// A new job was queued.
    Created,
    /// The same destination was already queued or running: the add joined that job.
    Joined,
    /// The same destination was already downloaded and verified: completed at once.
    AlreadyComplete,
}

/// The reply to an add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddReply {
    /// What the add did.
    pub outcome: AddOutcome,
    /// The job (new, joined, or completed).
    pub job: JobInfo,
}

/// The daemon's own status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's package version.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// Its process id.
    pub pid: u32,
    /// The socket it listens on.
    pub socket: String,
    /// Its data directory.
    pub data_dir: String,
    /// How many jobs may run at once.
    pub max_concurrent: u32,
    /// The global bandwidth limit in bytes per second, if any.
    pub bandwidth_limit: Option<u64>,
    /// Jobs running now.
    pub running: u32,
    /// Jobs waiting.
    pub queued: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
}

/// One file of a dry-run plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// The path inside the source (repository path, or the file name).
    pub path: String,
    /// Where it would be saved.
    pub dest: String,
    /// Its size, if the source says.
    pub size: Option<u64>,
    /// Its sha256, if the source says.
    pub sha256: Option<String>,
    /// Bytes still to fetch (0 when a verified copy is already there).
    pub bytes_to_fetch: Option<u64>,
}

/// What an add would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// The source, without credentials.
    pub source: String,
    /// The resolved revision / version, for hub sources.
    pub revision: Option<String>,
    /// The files.
    pub files: Vec<PlannedFile>,
}

/// What the daemon found wrong with its store when it started, what it did about it, and
/// whether the store accepts writes now. Empty lists and `None`s mean a healthy store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// The store could not be opened and was moved here; the daemon started with an empty one.
    pub moved_aside: Option<String>,
    /// Why the store could not be opened.
    pub open_error: Option<String>,
    /// Records that failed to decode or to pass their checksum: skipped (kept aside in the
    /// store's `damaged` tree), never silently dropped.
    pub damaged: Vec<DamagedRecord>,
    /// Jobs the store should hold (by its journal of added jobs) but does not.
    pub lost: Vec<LostJob>,
    /// Set while the store cannot write (e.g. the data directory is full): why. Running jobs
    /// are paused and the daemon retries by itself.
    pub write_error: Option<String>,
}

/// A store record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedRecord {
    /// Which record (`jobs/7`, `files/7/0`).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// A job whose record is gone from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostJob {
    /// Its id.
    pub id: u64,
    /// Its source, to add it again.
    pub source: String,
    /// Its destination directory.
    pub dest: String,
    /// Partial files of it still on disk.
    pub partial_files: Vec<String>,
}

/// The health of what the daemon watches on disk (the reply to `Request::Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    /// Completed files present exactly as verified.
    pub files_intact: u64,
    /// Completed files gone from disk.
    pub files_missing: u64,
    /// Completed files whose size, time stamp or bytes changed.
    pub files_modified: u64,
    /// True once the start-up check of every completed file has finished.
    pub startup_check_done: bool,
    /// How changes are noticed: `notify` (file-system events), `poll` (a network file
    /// system, or events unavailable), `notify+poll`, or `off`.
    pub watch_mode: String,
    /// The polling interval in milliseconds, where polling is used.
    pub poll_interval_ms: u64,
    /// `manual` (`mdlctl verify` repairs) or `auto` (the daemon re-queues damaged files).
    pub repair: String,
    /// The drop folder, if one is set.
    pub watch_dir: Option<String>,
    /// Why the drop folder is not being watched, if it is not.
    pub watch_dir_error: Option<String>,
    /// Files queued from the drop folder since the daemon started.
    pub dropped_queued: u64,
    /// Files from the drop folder refused as invalid since the daemon started.
    pub dropped_invalid: u64,
    /// The config file the daemon reads, if any.
    pub config_file: Option<String>,
    /// When the config file was last applied (milliseconds since the Unix epoch).
    pub config_loaded_ms: Option<u64>,
    /// Why the last edit of the config file was refused (the previous settings stay).
    pub config_error: Option<String>,
}
