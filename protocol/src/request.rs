//! Messages from a client to the daemon: one [`Request`] per frame after the handshake.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::types::JobId;

/// A secret value (an access token). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself; call this only where it is sent to the service it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every request a client can make. Append-only: add new variants at the end.
// Requests are short-lived and moved once; boxing `Add` would only complicate every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Queue a download (replies `Added`, or `Plan` for a dry run).
    Add(AddRequest),
    /// All jobs, queued first in run order, then finished ones (replies `Jobs`).
    List,
    /// One job (replies `Job`).
    Status(JobId),
    /// Hold a job or all jobs, keeping their bytes (replies `Ok`).
    Pause(Target),
    /// Let a held job or all held jobs run again (replies `Ok`).
    Resume(Target),
    /// Stop a job for good and remove its partial files (replies `Ok`).
    Cancel(JobId),
    /// Change a job's priority (replies `Job`).
    SetPriority(SetPriorityRequest),
    /// Forget finished jobs (replies `Ok`).
    Remove(RemoveRequest),
    /// Turn this connection into an event stream (replies `Event`s, first a snapshot).
    Subscribe,
    /// The daemon's version, pid, limits and counters (replies `Daemon`).
    DaemonStatus,
    /// Ask the daemon to shut down gracefully (replies `Ok` before it stops).
    Shutdown,
    /// Change how many jobs may run at once (replies `Daemon`).
    SetConcurrency(u32),
    /// Set or clear a bandwidth limit, global or per job (replies `Daemon`).
    SetBandwidthLimit(BandwidthLimitRequest),
    /// Re-hash finished files and queue the damaged ones again (replies `Jobs`).
    Verify(VerifyRequest),
    /// Set or clear the access token the daemon keeps for one hub (replies `HubTokens`).
    SetHubToken(HubTokenRequest),
    /// Which hubs have a stored token, never the tokens themselves (replies `HubTokens`).
    HubTokens,
    /// What the daemon found wrong with its store and repaired at start, and whether it is
    /// writing now (answered with [`crate::Response::StoreHealth`]). Appended in 0.1.0.
    StoreHealth,
    /// The health of what the daemon watches: completed files intact / missing / modified,
    /// the drop folder, the config file and its last reload (replies `Health`).
    Health,
    /// Queue several downloads at once (replies `AddedMany`, one reply per source in order,
    /// each what `Add` would reply). Every job it queues is made durable by one store write
    /// before the reply: the way to queue thousands of sources quickly. Appended.
    AddMany(Vec<AddRequest>),
    /// The endpoints of every hub, as jobs queued from now on use them (replies
    /// `HubEndpoints`). Appended.
    HubEndpoints,
    /// Set one hub's endpoints at runtime, or go back to the config file's (replies
    /// `HubEndpoints`). Kept across restarts until the config file changes that hub's key.
    /// Appended.
    SetHubEndpoints(HubEndpointsRequest),
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Add(_) => "add",
            Request::List => "list",
            Request::Status(_) => "status",
            Request::Pause(_) => "pause",
            Request::Resume(_) => "resume",
            Request::Cancel(_) => "cancel",
            Request::SetPriority(_) => "set_priority",
            Request::Remove(_) => "remove",
            Request::Subscribe => "subscribe",
            Request::DaemonStatus => "daemon_status",
            Request::Shutdown => "shutdown",
            Request::SetConcurrency(_) => "set_concurrency",
            Request::SetBandwidthLimit(_) => "set_bandwidth_limit",
            Request::Verify(_) => "verify",
            Request::SetHubToken(_) => "set_hub_token",
            Request::HubTokens => "hub_tokens",
            Request::StoreHealth => "store_health",
            Request::Health => "health",
            Request::AddMany(_) => "add_many",
            Request::HubEndpoints => "hub_endpoints",
            Request::SetHubEndpoints(_) => "set_hub_endpoints",
        }
    }
}

/// Which jobs a pause / resume applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// One job.
    Job(JobId),
    /// Every job that the operation applies to.
    All,
}

/// The caller's environment variables a client forwards with every add (in
/// [`AddRequest::env`]), so that the daemon resolves tokens, endpoints and caches as if it had
/// been started in the caller's shell. Every client (mdlctl, the Python package, other apps)
/// forwards the same list.
pub const FORWARDED_ENV: [&str; 24] = [
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HUGGING_FACE_HUB_TOKEN",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_CACHE",
    "CIVITAI_TOKEN",
    "CIVITAI_API_KEY",
    "CIVITAI_ENDPOINT",
    "XDG_CACHE_HOME",
    "HOME",
    // Proxies (lowercase forms too: both are common and the lowercase one wins) and offline
    // mode, so a daemon started without the shell's environment acts as the shell would.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HF_HUB_OFFLINE",
    "MDL_OFFLINE",
];

/// The [`FORWARDED_ENV`] variables set in this process's environment (empty ones left out),
/// ready for [`AddRequest::env`].
pub fn forwarded_env() -> Vec<(String, Secret)> {
    forwarded_env_from(|name| std::env::var(name).ok())
}

/// The [`FORWARDED_ENV`] variables that `lookup` finds set (empty ones left out).
pub fn forwarded_env_from(lookup: impl Fn(&str) -> Option<String>) -> Vec<(String, Secret)> {
    FORWARDED_ENV
        .iter()
        .filter_map(|name| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), Secret(v)))
        })
        .collect()
}

/// Queue a download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AddRequest {
    /// What to download: an `http(s)://` URL or a hub source (`hf://`, `ms://`, `civitai://`, ...).
    pub source: String,
    /// Destination directory (absolute; the client resolves relative paths). `None`: the
    /// source's default layout, or the daemon's download directory.
    pub dest: Option<String>,
    /// Expected sha256 (hex) of a single-file download.
    pub sha256: Option<String>,
    /// Expected md5 (hex) of a single-file download.
    pub md5: Option<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Queue the job paused.
    pub paused: bool,
    /// Revision, branch, tag or version of a hub source.
    pub revision: Option<String>,
    /// Glob patterns of files to include (hub sources).
    pub include: Vec<String>,
    /// Glob patterns of files to exclude (hub sources).
    pub exclude: Vec<String>,
    /// An access token for the source.
    pub token: Option<Secret>,
    /// The caller's relevant environment (tokens, endpoints, cache locations), forwarded so the
    /// daemon acts as if started in the caller's shell. Values may be secrets: never printed.
    pub env: Vec<(String, Secret)>,
    /// Resolve and describe the plan, queue nothing (replies `Plan`).
    pub dry_run: bool,
    /// Source-specific options as key / value pairs (e.g. `format=SafeTensor`, `layout=comfyui`).
    pub options: Vec<(String, String)>,
    /// Save the (single) file under this name instead of the server's.
    pub file_name: Option<String>,
}

/// Change a job's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPriorityRequest {
    /// The job.
    pub id: JobId,
    /// Its new priority.
    pub priority: i32,
}

/// Forget jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// The jobs to forget; an empty list means every finished job.
    pub ids: Vec<JobId>,
    /// Also delete the downloaded files of completed jobs.
    pub delete_files: bool,
}

/// Set or clear a bandwidth limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthLimitRequest {
    /// The job to limit; `None` sets the global limit.
    pub job: Option<JobId>,
    /// Bytes per second; `None` removes the limit.
    pub bytes_per_second: Option<u64>,
}

/// Re-hash finished files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// The jobs to check; empty means every completed job.
    pub ids: Vec<JobId>,
    /// Or the files under these paths.
    pub paths: Vec<String>,
}

/// Set or clear a hub's stored access token. The daemon keeps it owner-only in its data
/// directory and sends it only to that hub, for jobs that carry no token of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubTokenRequest {
    /// The hub: `hf` (Hugging Face), `ms` (ModelScope) or `civitai`.
    pub hub: String,
    /// The token; `None` removes the stored one.
    pub token: Option<Secret>,
}

/// Set one hub's endpoints (mirrors first, then the official endpoint, which is always tried
/// last when it is not in the list), or forget the value set at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubEndpointsRequest {
    /// The hub: `hf` (Hugging Face), `ms` (ModelScope) or `civitai`.
    pub hub: String,
    /// Absolute `http://` or `https://` URLs, tried in order; `None` goes back to the config
    /// file's list (or the official endpoint when the file sets none).
    pub endpoints: Option<Vec<String>>,
}
