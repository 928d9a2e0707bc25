//! The persistent model of a job and its files, as the store keeps them, and their conversion
//! to the wire views ([`JobInfo`], [`FileInfo`]).

use std::path::PathBuf;

use mdl_protocol::{AddRequest, ErrorInfo, FileInfo, FileState, JobId, JobInfo, JobState, Secret};
use serde::{Deserialize, Serialize};

use crate::ranges::RangeSet;

/// What a job downloads, parsed once when it is added: the job's plan of files is resolved
/// from this, never from the source text again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A plain `http://` or `https://` URL.
    Url(String),
    /// A Hugging Face repository (or a file or folder in one).
    HuggingFace(HfSource),
    /// A ModelScope model repository (or a file or folder in one).
    ModelScope(MsSource),
    /// A Civitai model or version.
    Civitai(CivitaiTarget),
}

/// How a job's files are laid out below its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Files go straight into the destination, under their repository paths or names.
    #[default]
    Plain,
    /// The Hugging Face Hub cache (`models--org--name/blobs`, `snapshots`, `refs`).
    HfCache,
    /// The ModelScope cache (`models/owner/name/...`).
    ModelScopeCache,
    /// Civitai files below a path template (`{type}/{creator}/{name}/{version}` by default)
    /// or a layout preset: the default destination's layout. With an explicit `--dest` a
    /// Civitai file lands in it directly, unless an option asks for a template or layout.
    CivitaiTemplate,
}

/// The kind of a Hub repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepoType {
    /// A model (no URL prefix).
    Model,
    /// A dataset (`datasets/`).
    Dataset,
    /// A space (`spaces/`).
    Space,
}

/// A parsed Hugging Face source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfSource {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `ORG/NAME` (or a bare canonical name).
    pub repo_id: String,
    /// The revision named in the source, if any.
    pub revision: Option<String>,
    /// A file or folder inside the repo, if the source names one.
    pub path: Option<String>,
}

/// A parsed ModelScope source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsSource {
    /// The owner namespace.
    pub owner: String,
    /// The model name.
    pub name: String,
    /// The revision named in the source, if any.
    pub revision: Option<String>,
    /// A file or folder inside the repo.
    pub path: Option<String>,
}

/// What a Civitai source names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CivitaiTarget {
    /// A model, optionally pinned to a version.
    Model {
        /// The model id.
        model: u64,
        /// The version id, if given.
        version: Option<u64>,
    },
    /// A version only (`civitai://version/V`).
    Version(u64),
    /// A search (`civitai://search?...`): the query pairs, `limit` meaning the total count.
    Search(Vec<(String, String)>),
}

/// A job as the store keeps it (without its files, which are kept one record each).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// The source as the user gave it (for display, and to recognise the same add again).
    pub source: String,
    /// What the source names, parsed once at add time.
    pub parsed_source: Source,
    /// How the files are laid out below `dest_dir`.
    pub layout: Layout,
    /// The destination directory (absolute). For hub sources with a cache layout, the cache root.
    pub dest_dir: PathBuf,
    /// Higher runs first.
    pub priority: i32,
    /// Position in the FIFO order within a priority (set at add, never changes).
    pub seq: u64,
    /// Where the job is in its life.
    pub state: JobState,
    /// Why the job failed, or why the daemon paused it.
    pub error: Option<ErrorInfo>,
    /// When the job was added (ms since the epoch).
    pub created_ms: u64,
    /// When the job finished (ms since the epoch).
    pub finished_ms: Option<u64>,
    /// Expected sha256 of a single-file download (lowercase hex).
    pub sha256: Option<String>,
    /// Expected md5 of a single-file download (lowercase hex).
    pub md5: Option<String>,
    /// The name to save a single-file download under, instead of the server's.
    pub file_name: Option<String>,
    /// The hub revision asked for (`--revision`).
    pub revision: Option<String>,
    /// The revision it resolved to (a commit, a version id), once resolved.
    #[serde(default)]
    pub resolved_revision: Option<String>,
    /// Include globs (hub sources).
    pub include: Vec<String>,
    /// Exclude globs (hub sources).
    pub exclude: Vec<String>,
    /// Source-specific options.
    pub options: Vec<(String, String)>,
    /// The token given with the add. The data directory is owner-only.
    pub token: Option<Secret>,
    /// The caller's forwarded environment.
    pub env: Vec<(String, Secret)>,
    /// True once the source has been resolved into files.
    pub resolved: bool,
    /// Number of file records (indices `0..file_count`).
    pub file_count: u32,
    /// Per-job bandwidth limit in bytes per second.
    pub bandwidth_limit: Option<u64>,
}

impl JobRecord {
    /// The record of an add, before it has an id: queued (or paused), nothing resolved yet.
    /// The caller checks the request; this only copies it.
    pub fn from_add(
        request: &AddRequest,
        parsed_source: Source,
        layout: Layout,
        dest_dir: PathBuf,
    ) -> JobRecord {
        JobRecord {
            id: 0,
            source: request.source.trim().to_string(),
            parsed_source,
            layout,
            dest_dir,
            priority: request.priority,
            seq: 0,
            state: if request.paused {
                JobState::Paused
            } else {
                JobState::Queued
            },
            error: None,
            created_ms: now_ms(),
            finished_ms: None,
            sha256: request.sha256.clone(),
            md5: request.md5.clone(),
            file_name: request.file_name.clone(),
            revision: request.revision.clone(),
            resolved_revision: None,
            include: request.include.clone(),
            exclude: request.exclude.clone(),
            options: request.options.clone(),
            token: request.token.clone(),
            env: request.env.clone(),
            resolved: false,
            file_count: 0,
            bandwidth_limit: None,
        }
    }
}

/// Validators and byte ranges of a partly fetched file: what a resume needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// Byte ranges written and made durable in the partial file.
    pub ranges: RangeSet,
    /// The file's full length as the server reported it.
    pub total: Option<u64>,
    /// The server's ETag for these bytes.
    pub etag: Option<String>,
    /// The server's Last-Modified for these bytes.
    pub last_modified: Option<String>,
}

/// One file of a job as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    /// Where to fetch it.
    pub url: String,
    /// The path relative to the job's destination; `None` until the server names the file.
    pub rel_path: Option<String>,
    /// The expected size, if known before fetching.
    pub size: Option<u64>,
    /// The expected sha256 (lowercase hex).
    pub sha256: Option<String>,
    /// The expected md5 (lowercase hex).
    pub md5: Option<String>,
    /// Where the file is in its life.
    pub state: FileState,
    /// What a resume needs.
    pub checkpoint: FileCheckpoint,
    /// The endpoint that served it.
    pub endpoint: Option<String>,
    /// A remark for a person.
    pub note: Option<String>,
    /// The sha256 computed when it was verified.
    pub verified_sha256: Option<String>,
    /// The size and modification time of the final file when it was verified, to notice
    /// later changes without re-hashing.
    pub verified_stamp: Option<(u64, i64)>,
    /// The sub-second part (nanoseconds) of the modification time in `verified_stamp`, so a
    /// file changed within the second it was verified is noticed too.
    #[serde(default)]
    pub verified_mtime_nanos: Option<u32>,
    /// The expected git blob sha1 (lowercase hex), for small files of git-backed hubs.
    #[serde(default)]
    pub git_sha1: Option<String>,
    /// More relative paths that must show this file once verified (e.g. a Hugging Face
    /// snapshot entry pointing at its blob): a relative symlink, else a hard link, else a copy.
    #[serde(default)]
    pub links: Vec<String>,
    /// Other URLs for the same bytes (mirrors), tried in order when `url` keeps failing.
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// The path inside the source (repository path), for display and plans.
    #[serde(default)]
    pub source_path: Option<String>,
    /// The commit that last touched the file, as the hub lists it (ModelScope's per-file
    /// `Revision`): the ModelScope cache index's key.
    #[serde(default)]
    pub source_revision: Option<String>,
}

impl FileRecord {
    /// A file not started yet.
    pub fn new(url: String) -> Self {
        FileRecord {
            url,
            rel_path: None,
            size: None,
            sha256: None,
            md5: None,
            state: FileState::Pending,
            checkpoint: FileCheckpoint::default(),
            endpoint: None,
            note: None,
            verified_sha256: None,
            verified_stamp: None,
            verified_mtime_nanos: None,
            git_sha1: None,
            links: Vec::new(),
            fallback_urls: Vec::new(),
            source_path: None,
            source_revision: None,
        }
    }

    /// The size once known (expected or reported by the server).
    pub fn known_size(&self) -> Option<u64> {
        self.size.or(self.checkpoint.total)
    }
}

/// The partial file of file `index` of job `id` inside `dest_dir` (same filesystem as the final
/// path, so the final rename is atomic).
pub fn part_path(dest_dir: &std::path::Path, id: JobId, index: u32) -> PathBuf {
    dest_dir.join(format!(".mdl-{id}-{index}.part"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Remove credentials (`user:password@`) and query strings that look signed from a URL, for
/// display and logs.
pub fn redact_url(url: &str) -> String {
    // Credentials need a userinfo (`@`) or a query (`?`): without either there is nothing to
    // remove, and the text stays as the user gave it (no parse: listings call this per job).
    if !url.contains(['@', '?']) {
        return url.to_string();
    }
    match url::Url::parse(url) {
        // Only web URLs carry credentials this way (`civitai://MODEL@VERSION` is no userinfo).
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => url.to_string(),
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
            }
            let secret_query = parsed.query_pairs().any(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.contains("token")
                    || k.contains("signature")
                    || k.contains("key")
                    || k == "sig"
                    || k.starts_with("x-amz-")
                    || k == "expires"
                    || k == "policy"
            });
            if secret_query {
                parsed.set_query(Some("REDACTED"));
            }
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Build the wire view of a job from its records; `live` adds bytes not yet checkpointed.
pub fn job_info(job: &JobRecord, files: &[FileRecord], live: &[u64]) -> JobInfo {
    let mut bytes_done = 0;
    let mut bytes_total = Some(0u64);
    let file_infos = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let size = f.known_size();
            let done = match f.state {
                FileState::Completed => size.unwrap_or(0),
                _ => live
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .max(f.checkpoint.ranges.covered()),
            };
            bytes_done += done;
            bytes_total = match (bytes_total, size) {
                (Some(t), Some(s)) => Some(t + s),
                _ => None,
            };
            FileInfo {
                path: match &f.rel_path {
                    Some(rel) => job.dest_dir.join(rel).display().to_string(),
                    None => job.dest_dir.display().to_string(),
                },
                size,
                bytes_done: done,
                state: f.state,
                sha256: f.verified_sha256.clone().or_else(|| f.sha256.clone()),
                endpoint: f.endpoint.clone(),
                note: f.note.clone(),
            }
        })
        .collect::<Vec<_>>();
    if file_infos.is_empty() {
        bytes_total = None;
    }
    JobInfo {
        id: job.id,
        source: redact_url(&job.source),
        state: job.state,
        priority: job.priority,
        dest: job.dest_dir.display().to_string(),
        bytes_done,
        bytes_total,
        error: job.error.clone(),
        files: file_infos,
        created_ms: job.created_ms,
        finished_ms: job.finished_ms,
        revision: job
            .resolved_revision
            .clone()
            .or_else(|| job.revision.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_strips_credentials_and_signed_queries() {
        assert_eq!(
            redact_url("https://u:p@h.example/f.bin"),
            "https://h.example/f.bin"
        );
        assert_eq!(
            redact_url("https://cdn.example/f?X-Amz-Signature=abc&X-Amz-Expires=3"),
            "https://cdn.example/f?REDACTED"
        );
        assert_eq!(
            redact_url("https://h.example/f?download=1"),
            "https://h.example/f?download=1"
        );
        assert_eq!(redact_url("civitai://1@10"), "civitai://1@10");
        assert_eq!(redact_url("http://u:p@h/x?token=1"), "http://h/x?REDACTED");
    }
}
