//! Events pushed to subscribed clients. A subscriber first gets [`Event::Snapshot`] of all
//! jobs, then changes as they happen, and a [`Event::Heartbeat`] when nothing else happens.
//! Events are for observation only: a client that falls behind gets [`Event::Lagged`] and may
//! ask for a new snapshot; downloads never wait for subscribers.

use serde::{Deserialize, Serialize};

use crate::types::{FileState, JobId, JobInfo};

/// Something that happened in the daemon. Append-only: add new variants at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Every job, sent once when a subscription starts.
    Snapshot(Vec<JobInfo>),
    /// A job was queued.
    Queued(JobInfo),
    /// A job started running.
    Started(JobInfo),
    /// Bytes arrived (throttled to a few updates a second per job).
    Progress(Progress),
    /// A file is being verified.
    Verifying {
        /// The job.
        job: JobId,
        /// The file's final path.
        file: String,
    },
    /// A job completed; every file is verified.
    Completed(JobInfo),
    /// A job failed.
    Failed(JobInfo),
    /// A job was paused (by the user, or by the daemon, e.g. for a full disk).
    Paused(JobInfo),
    /// A paused job was resumed (queued again).
    Resumed(JobInfo),
    /// A job was cancelled.
    Cancelled(JobInfo),
    /// A job was removed from history.
    Removed(JobId),
    /// A job changed otherwise (priority, files resolved).
    Updated(JobInfo),
    /// Nothing happened for a while; the daemon is alive.
    Heartbeat {
        /// The daemon's clock, milliseconds since the Unix epoch.
        unix_ms: u64,
    },
    /// This subscriber fell behind and missed events.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// The daemon is shutting down; no more events on this connection.
    End,
    /// Part of a snapshot (a long one is sent as the daemon reads it, and a part too large for
    /// one frame is split further): more jobs follow, and the snapshot ends with `Snapshot`
    /// holding the last part. A subscriber joins the parts in order. Appended.
    SnapshotPart(Vec<JobInfo>),
    /// A completed file changed on disk (deleted, truncated, rewritten), or was found intact
    /// or repaired again; the job's [`Event::Updated`] follows.
    FileChanged(FileChange),
}

/// A completed file whose integrity state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// The job.
    pub job: JobId,
    /// The file's final path.
    pub path: String,
    /// Its new state: `missing`, `modified`, or `completed` when found intact again.
    pub state: FileState,
    /// What was noticed, for a person.
    pub note: Option<String>,
}

/// A progress update for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The job.
    pub job: JobId,
    /// The file being fetched (final path).
    pub file: String,
    /// Bytes of that file fetched so far.
    pub file_bytes_done: u64,
    /// That file's size, if known.
    pub file_bytes_total: Option<u64>,
    /// Bytes of the whole job fetched so far.
    pub job_bytes_done: u64,
    /// The whole job's size, if known.
    pub job_bytes_total: Option<u64>,
    /// Recent speed in bytes per second.
    pub bytes_per_second: u64,
    /// Estimated seconds left for the job, if known.
    pub eta_seconds: Option<u64>,
}
