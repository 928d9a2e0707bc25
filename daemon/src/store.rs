//! The durable state: jobs, their files and byte-range maps, and the priority queue, in sled.
//!
//! Trees:
//! * `jobs`: job id (u64 big-endian) → [`JobRecord`];
//! * `files`: job id ++ file index (u64 ++ u32, big-endian) → [`FileRecord`], including the
//!   file's byte-range checkpoint;
//! * `queue`: inverted priority ++ sequence (u32 ++ u64, big-endian) → job id. Iterating the
//!   tree in key order gives "higher priority first, FIFO within a priority". It holds every
//!   job that may run (queued or running); it is an index, rebuilt from `jobs` when the store
//!   opens, so it can never disagree with the records after a crash;
//! * `meta`: the id counter and runtime settings that survive restarts;
//! * `by_destination`: a 16-byte digest of a job's [`DestinationKey`] ++ job id → nothing: which
//!   jobs download a source to a destination (duplicate detection in `add`);
//! * `by_sha256`: verified sha256 (32 bytes) ++ job id ++ file index → nothing (dedupe);
//! * `owners`: a 16-byte digest of a final path → job id ++ file index: which completed file
//!   holds each final path (a second job never replaces another's verified file);
//! * `views`: job id → the [`mdl_protocol::JobInfo`] of a job that cannot run (finished,
//!   failed, paused...), in the protocol's binary encoding after an 8-byte checksum, or nothing
//!   (empty) while it is out of date. A listing of 100k finished jobs reads these alone, and
//!   sends them as they are, instead of reading, decoding and encoding every job and file
//!   record (one sled value of ~250 bytes a job instead of ~1.2 KB of JSON in two trees).
//!
//! `by_destination`, `by_sha256` and `owners` are indexes that hold ids, never records: memory
//! does not grow with the history, and records are read from sled when needed. An index entry
//! is written before the record it points to (sled recovers a prefix of its log), and entries
//! may be stale (a hash collision, a record changed or removed since): every lookup checks the
//! record. A store without the indexes (written before they existed) gets them rebuilt once
//! when it opens; `meta/index_format` records that they are complete.
//!
//! A view is never stale, even after a crash: before a settled job's records change, its view
//! is emptied (marked out of date), and it is built again from the records once they are
//! written. sled recovers a prefix of its log, so a full view that survives a crash was built
//! from the records that survived. An empty view is read from the records instead; the full
//! check after a crash builds the missing ones. `meta/views_format` holds the layout and the
//! protocol version the views are encoded in: a daemon of another one builds them all again.
//!
//! Every record is an envelope `{"schema": N, "record": {...}}` in JSON: the schema number
//! lets a newer daemon migrate old records, and JSON lets new optional fields default.
//! Golden records in `daemon/tests/fixtures/store/` pin the format.
//!
//! Only the scheduler owns a [`Store`]; nothing else writes to it.

use std::path::Path;

use mdl_protocol::{FileState, JobId, JobState};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::job::{FileRecord, JobRecord};

/// The schema version of every record this daemon writes. Schema 2 stores a job's parsed
/// source and layout (schema 1 kept them as `mdl.*` options beside the source text).
pub const SCHEMA_VERSION: u32 = 2;

/// Brings a job record written under an older schema (given) up to [`SCHEMA_VERSION`], in its
/// JSON form. Supplied by the layer that knows how to parse sources, so the store stays below
/// it; records are upgraded when read, and rewritten in the new form when the store opens.
pub type Upgrade = fn(schema: u32, record: &mut serde_json::Value) -> Result<(), String>;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption, or another process holds the lock).
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be encoded or decoded.
    #[error("store record {key} is unreadable: {message}")]
    Record {
        /// Which record.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Another process holds the store's lock.
    #[error("the store {dir} is in use by another mdld{}; stop it first (`mdlctl daemon stop`, or use another --data-dir)", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The store directory.
        dir: String,
        /// The pid that holds it, if it left its pid file.
        pid: Option<u32>,
    },
    /// Making the store's files durable failed.
    #[error("cannot sync the store's files: {0}")]
    Sync(#[source] std::io::Error),
    /// A record was written by a newer daemon.
    #[error("store record {key} has schema {found}, this daemon reads up to {SCHEMA_VERSION}; upgrade mdld")]
    Schema {
        /// Which record.
        key: String,
        /// Its schema version.
        found: u32,
    },
}

/// A record as stored: `{"schema": N, "record": {...}, "sum": "..."}`. `sum` (since 0.1.0) is
/// the first 8 bytes of the sha256 of the record's JSON text, in hex: a damaged record is
/// recognised as such instead of decoding into something else. Older records have none.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    schema: u32,
    #[serde(borrow)]
    record: &'a serde_json::value::RawValue,
    #[serde(default)]
    sum: Option<String>,
}

/// The checksum of a record's JSON text.
fn record_sum(json: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(json.as_bytes())[..8])
}

/// The parts of an envelope laid out exactly as [`encode_record`] writes it: the schema, the
/// record's JSON text and its checksum (16 hex digits); `None` for any other layout (which the
/// JSON path reads, or rejects with the reason).
fn split_envelope(bytes: &[u8]) -> Option<(u32, &[u8], &[u8])> {
    /// `,"sum":"` + 16 hex digits + `"}`.
    const TAIL: usize = 8 + 16 + 2;
    let rest = bytes.strip_prefix(b"{\"schema\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let schema = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"record\":")?;
    let (record, tail) = rest.split_at(rest.len().checked_sub(TAIL)?);
    let sum = tail.strip_prefix(b",\"sum\":\"")?.strip_suffix(b"\"}")?;
    Some((schema, record, sum))
}

/// Whether `sum` (hex) is the checksum of `record`, without allocating.
fn sum_matches(record: &[u8], sum: &[u8]) -> bool {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(record);
    let mut hex = [0u8; 16];
    hex::encode_to_slice(&digest[..8], &mut hex).is_ok() && hex == sum
}

/// Encode a record in its envelope.
pub fn encode_record<T: Serialize>(record: &T) -> Vec<u8> {
    let json = serde_json::to_string(record).expect("records always serialize");
    let sum = record_sum(&json);
    format!("{{\"schema\":{SCHEMA_VERSION},\"record\":{json},\"sum\":\"{sum}\"}}").into_bytes()
}

/// Decode a record from its envelope, checking the schema version.
pub fn decode_record<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    decode_upgraded(key, bytes, |_, _| Ok(())).map(|(record, _)| record)
}

/// Decode a job record, upgrading one of an older schema with `upgrade`.
pub fn decode_job(key: &str, bytes: &[u8], upgrade: Upgrade) -> Result<JobRecord, StoreError> {
    decode_upgraded(key, bytes, upgrade).map(|(record, _)| record)
}

/// Decode a record, upgrading it from an older schema; also returns the schema it had.
fn decode_upgraded<T: DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    upgrade: impl Fn(u32, &mut serde_json::Value) -> Result<(), String>,
) -> Result<(T, u32), StoreError> {
    let unreadable = |message: String| StoreError::Record {
        key: key.into(),
        message,
    };
    // The common case: an envelope as `encode_record` writes it, whose checksum matches, is
    // taken apart by position (no scan of the record's text before it is decoded).
    if let Some((SCHEMA_VERSION, record, sum)) = split_envelope(bytes) {
        if sum_matches(record, sum) {
            let record = serde_json::from_slice(record).map_err(|e| unreadable(e.to_string()))?;
            return Ok((record, SCHEMA_VERSION));
        }
    }
    let envelope: RawEnvelope =
        serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
    if let Some(sum) = &envelope.sum {
        if *sum != record_sum(envelope.record.get()) {
            return Err(unreadable(
                "checksum mismatch: the record is damaged".into(),
            ));
        }
    }
    if envelope.schema > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            key: key.into(),
            found: envelope.schema,
        });
    }
    if envelope.schema == SCHEMA_VERSION {
        // The common case, straight from the text (no intermediate JSON value).
        let record =
            serde_json::from_str(envelope.record.get()).map_err(|e| unreadable(e.to_string()))?;
        return Ok((record, envelope.schema));
    }
    let mut record: serde_json::Value =
        serde_json::from_str(envelope.record.get()).map_err(|e| unreadable(e.to_string()))?;
    upgrade(envelope.schema, &mut record).map_err(unreadable)?;
    let record = serde_json::from_value(record).map_err(|e| unreadable(e.to_string()))?;
    Ok((record, envelope.schema))
}

/// The key of a job in the `queue` tree: higher priority first, then FIFO.
pub fn queue_key(priority: i32, seq: u64) -> [u8; 12] {
    let shifted = (priority as i64 - i32::MIN as i64) as u32;
    let inverted = u32::MAX - shifted;
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&inverted.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key of a job's file record in the `files` tree: the job id, then the file's index.
pub fn file_key(id: JobId, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// True for states whose jobs sit in the queue index.
pub fn is_runnable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Queued | JobState::Running | JobState::Verifying
    )
}

/// What makes two downloads the same: source, destination directory and file name.
pub type DestinationKey = (String, std::path::PathBuf, Option<String>);

/// The destination key of a job.
pub fn destination_key(job: &JobRecord) -> DestinationKey {
    (
        job.source.trim().to_string(),
        job.dest_dir.clone(),
        job.file_name.clone(),
    )
}

/// sled's files on disk, to fsync after its flush, and the journal of added jobs.
struct SledFiles {
    dir: std::path::PathBuf,
    /// The log (`db`), kept open.
    log: std::fs::File,
    /// The journal (`store.journal`), appended to and synced with the store.
    journal: std::sync::Mutex<std::fs::File>,
}

/// One line of the journal: which jobs were added (with what is needed to add them again)
/// and removed. sled can lose records silently when its log is damaged; the journal says
/// which jobs must exist, so the loss is found and reported.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JournalLine {
    Added {
        id: JobId,
        source: String,
        dest: String,
    },
    Removed {
        id: JobId,
    },
}

fn journal_path(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("journal")
}

impl SledFiles {
    fn open(dir: &Path) -> Result<SledFiles, StoreError> {
        let log = std::fs::File::open(dir.join("db")).map_err(StoreError::Sync)?;
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal_path(dir))
            .map_err(StoreError::Sync)?;
        Ok(SledFiles {
            dir: dir.to_path_buf(),
            log,
            journal: std::sync::Mutex::new(journal),
        })
    }

    fn append(&self, line: &JournalLine) -> Result<(), StoreError> {
        use std::io::Write;
        let mut text = serde_json::to_vec(line).expect("journal lines serialize");
        text.push(b'\n');
        self.journal
            .lock()
            .expect("journal lock")
            .write_all(&text)
            .map_err(StoreError::Sync)
    }

    /// fdatasync the log (`File::sync_data`: fdatasync on Linux, `F_FULLFSYNC` on macOS,
    /// `FlushFileBuffers` on Windows), the journal, then any blob files and the directories.
    fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        self.journal.lock().expect("journal lock").sync_data()?;
        let blobs = self.dir.join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            let mut any = false;
            for entry in entries.flatten() {
                std::fs::File::open(entry.path())?.sync_data()?;
                any = true;
            }
            if any {
                sync_directory(&blobs)?;
            }
        }
        Ok(())
    }
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// sled's page cache. Its default (1 GiB) lets the cache grow with the history; records are
/// small and read one at a time, so a modest cache keeps the daemon light (the OS page cache
/// still holds the file).
pub const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;

/// The version of the index trees (`by_destination`, `by_sha256`, `owners`) recorded in
/// `meta/index_format` once they are complete; a store without it gets them rebuilt.
const INDEX_FORMAT: u32 = 1;
/// The meta key of the last job id given (u64 big-endian).
const META_NEXT_ID: &str = "next_id";
/// The meta key of [`INDEX_FORMAT`].
const META_INDEX_FORMAT: &str = "index_format";
/// The layout of a `views` value (checksum, then encoding); bumped when it changes.
const VIEWS_LAYOUT: u32 = 1;
/// The meta key of `[VIEWS_LAYOUT, protocol version]` the `views` tree was built with (a
/// change to [`mdl_protocol::JobInfo`]'s fields bumps the protocol version).
const META_VIEWS_FORMAT: &str = "views_format";
/// What `meta/views_format` holds once the views are built by this daemon.
const VIEWS_FORMAT: [u32; 2] = [VIEWS_LAYOUT, mdl_protocol::PROTOCOL_VERSION];
/// Key of the mark a clean close leaves: `[SCHEMA_VERSION, INDEX_FORMAT]` of the daemon that
/// closed the store with every write flushed.
const META_CLOSED_CLEANLY: &str = "closed_cleanly";

fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY)
        .flush_every_ms(Some(500));
    // sled may panic on some damaged snapshots instead of returning an error.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open())) {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Record {
            key: "sled".into(),
            message: "sled panicked while opening the store (damaged snapshot or log)".into(),
        }),
    }
}

/// An error of the file system around the store (full, over quota, not allowed), not damage
/// in it: the store must not be moved aside for it.
fn is_environment_error(error: &StoreError) -> bool {
    let io = match error {
        StoreError::Sled(sled::Error::Io(e)) | StoreError::Sync(e) => e,
        _ => return false,
    };
    matches!(
        io.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::ReadOnlyFilesystem
    ) || matches!(io.raw_os_error(), Some(28) | Some(122))
}

fn is_lock_error(error: &StoreError) -> bool {
    matches!(error, StoreError::Sled(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock"))
}

/// The first 16 bytes of the sha256 of `parts`, each ended by a NUL (index keys).
fn digest16(parts: &[&[u8]]) -> [u8; 16] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0u8]);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize()[..16]);
    out
}

/// The `by_destination` prefix of a destination key.
fn destination_digest(key: &DestinationKey) -> [u8; 16] {
    let name = match &key.2 {
        Some(name) => [b"=".as_slice(), name.as_bytes()].concat(),
        None => b"-".to_vec(),
    };
    digest16(&[
        key.0.as_bytes(),
        key.1.as_os_str().as_encoded_bytes(),
        &name,
    ])
}

/// The `by_sha256` prefix of a sha256: its 32 bytes (or, for text that is not 64 hex digits,
/// a digest of it).
fn sha256_prefix(sha256: &str) -> Vec<u8> {
    match hex::decode(sha256) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => digest16(&[b"text", sha256.as_bytes()]).to_vec(),
    }
}

/// The `owners` key of a final path.
fn owner_key(path: &Path) -> [u8; 16] {
    digest16(&[path.as_os_str().as_encoded_bytes()])
}

/// A (job, file index) pair as 12 bytes.
fn decode_file_ref(bytes: &[u8]) -> Option<(JobId, u32)> {
    let id = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let index = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some((id, index))
}

/// The jobs with ids above `after` (all with `None`), by id, decoded one at a time.
fn jobs_after(
    jobs: &sled::Tree,
    meta: &sled::Tree,
    upgrade: Upgrade,
    after: Option<JobId>,
) -> impl Iterator<Item = Result<JobRecord, StoreError>> + 'static {
    values_by_id_after(jobs, meta, after).map(move |entry| {
        let (id, value) = entry?;
        decode_job(&format!("jobs/{id}"), &value, upgrade)
    })
}

/// The values of a tree keyed by job id, for the ids above `after` (all with `None`) up to the
/// last one given, by id.
///
/// Read by one point lookup per id, not by a scan: sled keeps every page an iterator reads in
/// memory whatever its cache's capacity (a scan of the views of 100k jobs, 25 MB, left
/// ~30 MiB resident; the same lookups ~5 MiB, in about the same time). A lookup of an id
/// without a value (a removed job; a runnable one in `views`) costs about a microsecond.
fn values_by_id_after(
    tree: &sled::Tree,
    meta: &sled::Tree,
    after: Option<JobId>,
) -> impl Iterator<Item = Result<(JobId, sled::IVec), StoreError>> + 'static {
    let tree = tree.clone();
    let first = after.map_or(1, |id| id.saturating_add(1));
    let (last, error) = match last_id(meta) {
        Ok(last) => (last, None),
        Err(e) => (0, Some(Err(e))),
    };
    error.into_iter().chain(
        (first..=last).filter_map(move |id| match tree.get(id.to_be_bytes()) {
            Ok(Some(value)) => Some(Ok((id, value))),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        }),
    )
}

/// The last job id given (0 before the first).
fn last_id(meta: &sled::Tree) -> Result<JobId, StoreError> {
    Ok(meta
        .get(META_NEXT_ID)?
        .and_then(|b| b.as_ref().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// One job's record.
fn job_of(jobs: &sled::Tree, upgrade: Upgrade, id: JobId) -> Result<Option<JobRecord>, StoreError> {
    match jobs.get(id.to_be_bytes())? {
        Some(bytes) => Ok(Some(decode_job(&format!("jobs/{id}"), &bytes, upgrade)?)),
        None => Ok(None),
    }
}

/// A job's file records, by index: indexes `0..n` are written together (a resolve, or an
/// add that is complete already), so they are read one point lookup each, up to the first
/// index that has none. A prefix scan finds the same records, but every sled iterator starts
/// with a copy of the leaf it reads: a listing of 100k jobs left ~4 MiB more resident.
fn files_of(files: &sled::Tree, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
    let mut records = Vec::new();
    for index in 0u32.. {
        let Some(bytes) = files.get(file_key(id, index))? else {
            break;
        };
        records.push(decode_record(&format!("files/{id}"), &bytes)?);
    }
    Ok(records)
}

/// The first 8 bytes of the sha256 of a view's encoding.
fn view_sum(encoded: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&sha2::Sha256::digest(encoded)[..8]);
    sum
}

/// A job's view as the `views` tree holds it: checksum, then encoding.
fn encode_view(info: &mdl_protocol::JobInfo) -> Option<Vec<u8>> {
    let encoded = mdl_protocol::codec::encode(info).ok()?;
    Some([view_sum(&encoded).as_slice(), &encoded].concat())
}

/// A view read from the `views` tree whose checksum matches: the encoding of a
/// [`mdl_protocol::JobInfo`], to send as it is.
pub struct View(sled::IVec);

impl View {
    /// A value of the `views` tree, if it is a view (not empty) and intact.
    pub fn checked(value: sled::IVec) -> Option<View> {
        let (sum, encoded) = value.split_at_checked(8)?;
        (!encoded.is_empty() && sum == view_sum(encoded)).then_some(View(value))
    }

    /// The job's encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.0[8..]
    }
}

/// A read-only view of the `jobs` and `files` trees ([`Store::reader`]): it sees every write
/// the store makes, and can make none. For reads too long for the store's owner to do in one
/// turn (a listing of every finished job), done beside it.
#[derive(Clone)]
pub struct RecordReader {
    jobs: sled::Tree,
    files: sled::Tree,
    views: sled::Tree,
    meta: sled::Tree,
    upgrade: Upgrade,
}

impl RecordReader {
    /// As [`Store::files`].
    pub fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        files_of(&self.files, id)
    }

    /// One job.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        job_of(&self.jobs, self.upgrade, id)
    }

    /// The jobs that cannot run with ids above `after` (all with `None`), by id, with their
    /// views; `None` for a view that is out of date (or damaged): the caller reads that job
    /// from its records, which may show it runnable or gone by now. By point lookups (see
    /// [`values_by_id_after`]).
    pub fn views_after(
        &self,
        after: Option<JobId>,
    ) -> impl Iterator<Item = Result<(JobId, Option<View>), StoreError>> + 'static {
        values_by_id_after(&self.views, &self.meta, after)
            .map(|entry| entry.map(|(id, value)| (id, View::checked(value))))
    }
}

/// The sled store.
pub struct Store {
    /// Upgrades job records of older schemas.
    upgrade: Upgrade,
    /// sled's files and the journal, synced after each flush.
    files_on_disk: std::sync::Arc<SledFiles>,
    /// What opening the store found and repaired.
    health: mdl_protocol::StoreHealth,
    /// The store's directory (to open it again).
    dir: std::path::PathBuf,
    /// A reopen failed: the handles are a placeholder's (see [`Store::reopen`]).
    detached: bool,
    db: sled::Db,
    jobs: sled::Tree,
    files: sled::Tree,
    queue: sled::Tree,
    meta: sled::Tree,
    /// Index: destination digest ++ job id.
    by_destination: sled::Tree,
    /// Index: sha256 ++ job id ++ file index.
    by_sha256: sled::Tree,
    /// Index: final path digest → job id ++ file index.
    owners: sled::Tree,
    /// Job id → the view of a job that cannot run, or empty while it is out of date.
    views: sled::Tree,
    /// Settled jobs whose views a file write emptied since the last [`Store::refresh_views`].
    stale_views: std::sync::Mutex<std::collections::BTreeSet<JobId>>,
}

impl Store {
    /// Open (or create) the store in `dir`, and rebuild the queue index from the job records
    /// (job records of an older schema are upgraded with `upgrade` and rewritten). Jobs that
    /// were running when the daemon stopped are queued again.
    ///
    /// A store that does not open is moved aside (`store.broken-<time>`) and an empty one
    /// started; records that do not decode are set aside in the `damaged` tree; jobs the
    /// journal knows but the store lost are listed with their partial files. All of it is
    /// logged loudly and reported by [`Store::health`]. Only a lock held by another process
    /// is an error.
    pub fn open(dir: &Path, upgrade: Upgrade) -> Result<Store, StoreError> {
        let mut health = mdl_protocol::StoreHealth::default();
        let db = match open_sled(dir) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                return Err(StoreError::Locked {
                    dir: dir.display().to_string(),
                    pid: std::fs::read_to_string(dir.with_extension("pid"))
                        .ok()
                        .and_then(|p| p.trim().parse().ok()),
                })
            }
            Err(e) if is_environment_error(&e) => {
                tracing::error!(store = %dir.display(), "cannot open the store: {e}");
                return Err(e);
            }
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = dir.with_extension(format!("broken-{stamp}"));
                std::fs::rename(dir, &aside).map_err(StoreError::Sync)?;
                tracing::error!(
                    store = %dir.display(),
                    moved_to = %aside.display(),
                    "THE STORE IS DAMAGED and cannot be opened ({e}); it was moved aside and \
                     mdld starts with an empty store; jobs it held are listed as lost"
                );
                health.moved_aside = Some(aside.display().to_string());
                health.open_error = Some(e.to_string());
                open_sled(dir)?
            }
        };
        let _ = std::fs::write(dir.with_extension("pid"), std::process::id().to_string());
        let mut store = Store {
            jobs: db.open_tree("jobs")?,
            files: db.open_tree("files")?,
            queue: db.open_tree("queue")?,
            meta: db.open_tree("meta")?,
            by_destination: db.open_tree("by_destination")?,
            by_sha256: db.open_tree("by_sha256")?,
            owners: db.open_tree("owners")?,
            views: db.open_tree("views")?,
            stale_views: Default::default(),
            upgrade,
            files_on_disk: std::sync::Arc::new(SledFiles::open(dir)?),
            health: Default::default(),
            dir: dir.to_path_buf(),
            detached: false,
            db,
        };
        store.health = health;
        if store.take_clean_close()? {
            store.requeue_interrupted()?;
        } else {
            store.rebuild_queue()?;
        }
        store.find_lost(dir)?;
        Ok(store)
    }

    /// Leave the mark of a clean close: every write is flushed and the indexes agree with
    /// the records, so the next open (of a daemon of the same schema) need not read every
    /// record again. Flushes; the caller writes nothing after it.
    pub async fn mark_closed_cleanly(&self) -> Result<(), StoreError> {
        self.put_meta(META_CLOSED_CLEANLY, &[SCHEMA_VERSION, INDEX_FORMAT])?;
        self.flush().await
    }

    /// Whether the store was closed cleanly by a daemon that wrote what this one writes;
    /// the mark is taken away either way, so a crash from now on means a full check at the
    /// next open (sled recovers a prefix of its log: a later write that survives implies
    /// the mark's removal did).
    fn take_clean_close(&mut self) -> Result<bool, StoreError> {
        let mark = self
            .get_meta::<[u32; 2]>(META_CLOSED_CLEANLY)
            .ok()
            .flatten();
        if mark.is_some() {
            self.meta.remove(META_CLOSED_CLEANLY)?;
        }
        let indexes_current = matches!(
            self.get_meta::<u32>(META_INDEX_FORMAT),
            Ok(Some(INDEX_FORMAT))
        ) && self.views_current();
        Ok(mark == Some([SCHEMA_VERSION, INDEX_FORMAT]) && indexes_current)
    }

    /// After a clean close: the jobs that were running when it closed are queued again. The
    /// queue index holds every runnable job, so only those records are read (a store of
    /// 100k finished jobs opens without reading them: sled keeps every page a walk touches).
    fn requeue_interrupted(&mut self) -> Result<(), StoreError> {
        for id in self.queue_order()? {
            let Some(mut job) = self.get_job(id)? else {
                continue;
            };
            if matches!(job.state, JobState::Running | JobState::Verifying) {
                job.state = JobState::Queued;
                self.put_job(&job)?;
            }
        }
        Ok(())
    }

    /// Close the store and open it again, as a restart would (queue rebuilt, health checked
    /// again). After one failed write sled refuses every later one until it is reopened (its
    /// error is sticky), so this is how a store recovers once its full disk has space again.
    /// Writes that were never flushed are gone, exactly as after a crash: nothing that was
    /// acknowledged.
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        let (dir, upgrade) = (self.dir.clone(), self.upgrade);
        // sled holds its lock until its last handle is gone: every handle is swapped for one of
        // an empty in-memory store first, then dropped.
        let placeholder = sled::Config::new().temporary(true).open()?;
        for (tree, name) in [
            (&mut self.jobs, "jobs"),
            (&mut self.files, "files"),
            (&mut self.queue, "queue"),
            (&mut self.meta, "meta"),
            (&mut self.by_destination, "by_destination"),
            (&mut self.by_sha256, "by_sha256"),
            (&mut self.owners, "owners"),
            (&mut self.views, "views"),
        ] {
            drop(std::mem::replace(tree, placeholder.open_tree(name)?));
        }
        drop(std::mem::replace(&mut self.db, placeholder));
        // sled's flusher thread lets go of the lock a moment after the last handle.
        let mut attempt = 0;
        let reopened = loop {
            match Store::open(&dir, upgrade) {
                Err(e) if is_lock_error(&e) || matches!(e, StoreError::Locked { .. }) => {
                    attempt += 1;
                    if attempt >= 50 {
                        break Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match reopened {
            Ok(store) => {
                *self = store;
                Ok(())
            }
            Err(e) => {
                // Reads see an empty store and every flush fails until a reopen succeeds.
                self.detached = true;
                Err(e)
            }
        }
    }

    /// True while a [`Store::reopen`] has not succeeded: nothing written now is kept.
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// What opening the store found and repaired.
    pub fn health(&self) -> &mdl_protocol::StoreHealth {
        &self.health
    }

    /// Move a record that does not decode out of `tree` into the `damaged` tree, and report it.
    fn set_aside(
        &mut self,
        tree: &str,
        key: &[u8],
        value: &[u8],
        message: String,
    ) -> Result<(), StoreError> {
        let name = match (tree, key.len()) {
            ("files", 12) => format!(
                "files/{}/{}",
                u64::from_be_bytes(key[..8].try_into().expect("8 bytes")),
                u32::from_be_bytes(key[8..].try_into().expect("4 bytes"))
            ),
            ("jobs", 8) => format!(
                "jobs/{}",
                u64::from_be_bytes(key.try_into().expect("8 bytes"))
            ),
            _ => format!("{tree}/{key:?}"),
        };
        tracing::error!(record = %name, "DAMAGED STORE RECORD skipped and set aside: {message}");
        let damaged = self.db.open_tree("damaged")?;
        damaged.insert(name.as_bytes(), value)?;
        match tree {
            "files" => self.files.remove(key)?,
            _ => self.jobs.remove(key)?,
        };
        self.health
            .damaged
            .push(mdl_protocol::DamagedRecord { key: name, message });
        Ok(())
    }

    /// Check every record, rebuild the queue index, and (once, for a store written before
    /// them) the id indexes. Streams through the trees: memory holds ids, never all records.
    fn rebuild_queue(&mut self) -> Result<(), StoreError> {
        let rebuild = !matches!(
            self.get_meta::<u32>(META_INDEX_FORMAT),
            Ok(Some(INDEX_FORMAT))
        );
        if rebuild {
            tracing::info!("building the store's indexes (once)");
            self.by_destination.clear()?;
            self.by_sha256.clear()?;
            self.owners.clear()?;
        }
        let views_current = self.views_current();
        if !views_current {
            tracing::info!("building the views of the finished jobs (once)");
            self.views.clear()?;
        }
        let mut bad = Vec::new();
        for entry in self.files.iter() {
            let (key, value) = entry?;
            let file: FileRecord = match decode_record("files", &value) {
                Ok(file) => file,
                Err(e) => {
                    bad.push(("files", key.to_vec(), value.to_vec(), e.to_string()));
                    continue;
                }
            };
            if let (true, Some((id, index))) = (rebuild, decode_file_ref(&key)) {
                self.index_sha256(id, index, &file)?;
            }
        }
        self.queue.clear()?;
        // Jobs to write again: running ones (queued again) and ones of an older schema.
        let mut rewrite = Vec::new();
        for entry in self.jobs.iter() {
            let (key, value) = entry?;
            let (job, schema) = match decode_upgraded::<JobRecord>(
                &format!("jobs/{key:?}"),
                &value,
                self.upgrade,
            ) {
                Ok(decoded) => decoded,
                Err(e) => {
                    bad.push(("jobs", key.to_vec(), value.to_vec(), e.to_string()));
                    continue;
                }
            };
            if rebuild {
                self.index_destination(&job)?;
                if job.state == JobState::Completed {
                    for entry in self.decodable_files(job.id) {
                        let (_, index, file) = entry?;
                        if let (FileState::Completed, Some(rel)) = (file.state, &file.rel_path) {
                            self.set_owner(&job.dest_dir.join(rel), job.id, index)?;
                        }
                    }
                }
            }
            if matches!(job.state, JobState::Running | JobState::Verifying)
                || schema < SCHEMA_VERSION
            {
                rewrite.push(job.id);
            }
            if is_runnable(job.state) {
                self.queue
                    .insert(queue_key(job.priority, job.seq), &job.id.to_be_bytes())?;
                self.views.remove(key)?;
            } else if !views_current || self.views.get(&key)?.and_then(View::checked).is_none() {
                // Built after a crash, or by a daemon of another protocol version.
                self.write_view(&job)?;
            }
        }
        for (tree, key, value, message) in bad {
            self.set_aside(tree, &key, &value, message)?;
        }
        // A view whose job is gone (set aside just now, or removed before a crash).
        for key in self.views.iter().keys() {
            let key = key?;
            if !self.jobs.contains_key(&key)? {
                self.views.remove(key)?;
            }
        }
        if !views_current {
            self.put_meta(META_VIEWS_FORMAT, &VIEWS_FORMAT)?;
        }
        for id in rewrite {
            let Some(mut job) = self.get_job(id)? else {
                continue;
            };
            if matches!(job.state, JobState::Running | JobState::Verifying) {
                job.state = JobState::Queued;
            }
            self.put_job(&job)?;
        }
        if rebuild {
            self.put_meta(META_INDEX_FORMAT, &INDEX_FORMAT)?;
        }
        Ok(())
    }

    /// Compare the journal of added jobs with the records: report the jobs that are gone
    /// (with their partial files), keep the id counter above every id ever given, and
    /// compact the journal.
    fn find_lost(&mut self, dir: &Path) -> Result<(), StoreError> {
        // Two passes over the file, holding ids only (the journal grows with the history).
        let lines = || {
            use std::io::BufRead;
            std::fs::File::open(journal_path(dir))
                .into_iter()
                .flat_map(|file| std::io::BufReader::new(file).lines())
                .map_while(Result::ok)
                // A line torn by a crash: its job was never acknowledged.
                .filter_map(|line| serde_json::from_str::<JournalLine>(&line).ok())
        };
        let mut expected = std::collections::BTreeSet::new();
        for line in lines() {
            match line {
                JournalLine::Added { id, .. } => expected.insert(id),
                JournalLine::Removed { id } => expected.remove(&id),
            };
        }
        let max_id = expected.last().copied().unwrap_or(0);
        let counter = last_id(&self.meta)?;
        if counter < max_id {
            tracing::error!(
                counter,
                max_id,
                "the store's id counter went back; restoring it"
            );
            self.meta.insert(META_NEXT_ID, &max_id.to_be_bytes())?;
        }
        // Compact: only the jobs that exist stay in the journal.
        let tmp = journal_path(dir).with_extension("journal.tmp");
        let mut kept =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(StoreError::Sync)?);
        for line in lines() {
            let JournalLine::Added { id, source, dest } = line else {
                continue;
            };
            if !expected.remove(&id) {
                continue;
            }
            if self.jobs.contains_key(id.to_be_bytes())? {
                use std::io::Write;
                let line = JournalLine::Added { id, source, dest };
                let mut text = serde_json::to_vec(&line).expect("journal lines serialize");
                text.push(b'\n');
                kept.write_all(&text).map_err(StoreError::Sync)?;
                continue;
            }
            let prefix = format!(".mdl-{id}-");
            let partial_files: Vec<String> = std::fs::read_dir(&dest)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.starts_with(&prefix) && name.ends_with(".part")
                })
                .map(|e| e.path().display().to_string())
                .collect();
            tracing::error!(
                job = id,
                source = %crate::job::redact_url(&source),
                dest = %dest,
                partial_files = ?partial_files,
                "LOST JOB: the store no longer holds this job; add it again (its partial files are listed)"
            );
            self.health.lost.push(mdl_protocol::LostJob {
                id,
                source: crate::job::redact_url(&source),
                dest,
                partial_files,
            });
        }
        if !self.health.lost.is_empty()
            || !self.health.damaged.is_empty()
            || self.health.moved_aside.is_some()
        {
            // Keep the report beside the store: the next start no longer finds the losses.
            let report = dir.with_extension(format!("recovery-{}.json", crate::job::now_ms()));
            let _ = std::fs::write(
                &report,
                serde_json::to_vec_pretty(&self.health).unwrap_or_default(),
            );
        }
        drop(
            kept.into_inner()
                .map_err(|e| StoreError::Sync(e.into_error()))?,
        );
        std::fs::rename(&tmp, journal_path(dir)).map_err(StoreError::Sync)?;
        self.files_on_disk = std::sync::Arc::new(SledFiles::open(dir)?);
        Ok(())
    }

    /// The next job id (persistent, strictly increasing, starting at 1).
    pub fn next_id(&self) -> Result<JobId, StoreError> {
        let value = self.meta.update_and_fetch(META_NEXT_ID, |old| {
            let current = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((current + 1).to_be_bytes().to_vec())
        })?;
        let bytes: [u8; 8] = value
            .as_deref()
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8]);
        Ok(u64::from_be_bytes(bytes))
    }

    fn index_destination(&self, job: &JobRecord) -> Result<(), StoreError> {
        let key = [
            destination_digest(&destination_key(job)).as_slice(),
            &job.id.to_be_bytes(),
        ]
        .concat();
        self.by_destination.insert(key, &[])?;
        Ok(())
    }

    /// The ids of the jobs that download `key`, oldest first.
    pub fn jobs_for_destination(&self, key: &DestinationKey) -> Result<Vec<JobId>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .by_destination
            .scan_prefix(destination_digest(key))
            .keys()
        {
            let entry = entry?;
            let Some(id) = entry
                .get(16..24)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            // The index may be stale (or collide): the record decides.
            if self
                .get_job(id)?
                .is_some_and(|job| destination_key(&job) == *key)
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Write a job record and keep the queue index and the job's view in step with it.
    pub fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.index_destination(job)?;
        let key = job.id.to_be_bytes();
        let had_view = self.empty_view(job.id)?;
        if !self.jobs.contains_key(key)? {
            self.files_on_disk.append(&JournalLine::Added {
                id: job.id,
                source: job.source.clone(),
                dest: job.dest_dir.display().to_string(),
            })?;
        }
        if let Some(old) = self.jobs.insert(key, encode_record(job))? {
            let old = decode_job(&format!("jobs/{}", job.id), &old, self.upgrade)?;
            if old.priority != job.priority || !is_runnable(job.state) {
                self.queue.remove(queue_key(old.priority, old.seq))?;
            }
        }
        if is_runnable(job.state) {
            self.queue.insert(queue_key(job.priority, job.seq), &key)?;
            if had_view {
                self.views.remove(key)?;
            }
        } else {
            self.write_view(job)?;
        }
        Ok(())
    }

    /// Whether the views were built with this daemon's layout and protocol version.
    fn views_current(&self) -> bool {
        matches!(
            self.get_meta::<[u32; 2]>(META_VIEWS_FORMAT),
            Ok(Some(VIEWS_FORMAT))
        )
    }

    /// Mark a job's view out of date before its records change (see the module's doc);
    /// whether it had one.
    fn empty_view(&self, id: JobId) -> Result<bool, StoreError> {
        let key = id.to_be_bytes();
        match self.views.get(key)? {
            Some(view) if !view.is_empty() => {
                self.views.insert(key, &[])?;
                Ok(true)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// Build the view of a job that cannot run from its records as stored now. One whose file
    /// records do not decode keeps an empty view: a listing reads it from the records.
    fn write_view(&self, job: &JobRecord) -> Result<(), StoreError> {
        let view = files_of(&self.files, job.id)
            .ok()
            .and_then(|files| encode_view(&crate::job::job_info(job, &files, &[])))
            .unwrap_or_default();
        self.views.insert(job.id.to_be_bytes(), view)?;
        self.stale_views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        Ok(())
    }

    /// Build again the views that file writes emptied since the last call (the scheduler calls
    /// it before each flush: a job's files are written one by one, its view once).
    pub fn refresh_views(&self) -> Result<(), StoreError> {
        let stale =
            std::mem::take(&mut *self.stale_views.lock().unwrap_or_else(|e| e.into_inner()));
        for id in stale {
            if let Some(job) = self.get_job(id)? {
                if !is_runnable(job.state) {
                    self.write_view(&job)?;
                }
            }
        }
        Ok(())
    }

    /// One job.
    pub fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        job_of(&self.jobs, self.upgrade, id)
    }

    /// Every job, by id.
    pub fn all_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode_job(&format!("jobs/{key:?}"), &value, self.upgrade)
            })
            .collect()
    }

    /// The jobs with ids above `after` (all with `None`), by id, decoded one at a time.
    pub fn jobs_after(
        &self,
        after: Option<JobId>,
    ) -> impl Iterator<Item = Result<JobRecord, StoreError>> + 'static {
        jobs_after(&self.jobs, &self.meta, self.upgrade, after)
    }

    /// A read-only view of the job and file records, for a long read beside the store's owner.
    pub fn reader(&self) -> RecordReader {
        RecordReader {
            jobs: self.jobs.clone(),
            files: self.files.clone(),
            views: self.views.clone(),
            meta: self.meta.clone(),
            upgrade: self.upgrade,
        }
    }

    /// The runnable jobs' ids in run order.
    pub fn queue_order(&self) -> Result<Vec<JobId>, StoreError> {
        self.queue_ids().collect()
    }

    /// The runnable jobs' ids in run order, read lazily (the iterator does not borrow the
    /// store, and sees writes made while it runs as sled's iterators do).
    pub fn queue_ids(&self) -> impl Iterator<Item = Result<JobId, StoreError>> + 'static {
        self.queue.iter().values().map(|v| {
            let v = v?;
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Record {
                key: "queue".into(),
                message: "bad job id".into(),
            })?;
            Ok(u64::from_be_bytes(bytes))
        })
    }

    fn index_sha256(&self, id: JobId, index: u32, file: &FileRecord) -> Result<(), StoreError> {
        if let Some(sha) = &file.verified_sha256 {
            let key = [sha256_prefix(sha).as_slice(), &file_key(id, index)].concat();
            self.by_sha256.insert(key, &[])?;
        }
        Ok(())
    }

    /// The files (job, index) once verified with this sha256, oldest first. Entries may be
    /// stale: the caller checks the file record.
    pub fn files_with_sha256(&self, sha256: &str) -> Result<Vec<(JobId, u32)>, StoreError> {
        let prefix = sha256_prefix(sha256);
        let mut found = Vec::new();
        for key in self.by_sha256.scan_prefix(&prefix).keys() {
            let key = key?;
            found.extend(decode_file_ref(&key[prefix.len()..]));
        }
        Ok(found)
    }

    /// Record that the completed file (job, index) holds the final path `path`.
    pub fn set_owner(&self, path: &Path, id: JobId, index: u32) -> Result<(), StoreError> {
        self.owners.insert(owner_key(path), &file_key(id, index))?;
        Ok(())
    }

    /// The completed file (job, index) last recorded at the final path `path`, if any. It may
    /// be stale: the caller checks the records.
    pub fn owner_of(&self, path: &Path) -> Result<Option<(JobId, u32)>, StoreError> {
        Ok(self
            .owners
            .get(owner_key(path))?
            .and_then(|v| decode_file_ref(&v)))
    }

    /// One file record.
    pub fn get_file(&self, id: JobId, index: u32) -> Result<Option<FileRecord>, StoreError> {
        match self.files.get(file_key(id, index))? {
            Some(bytes) => Ok(Some(decode_record(&format!("files/{id}/{index}"), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Write one file record.
    pub fn put_file(&self, id: JobId, index: u32, file: &FileRecord) -> Result<(), StoreError> {
        self.index_sha256(id, index, file)?;
        if self.empty_view(id)? {
            self.stale_views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
        }
        self.files
            .insert(file_key(id, index), encode_record(file))?;
        Ok(())
    }

    /// The files of a job, by index.
    pub fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        files_of(&self.files, id)
    }

    /// A job's file records that decode, with their keys and indexes; one that does not
    /// decode is skipped (what it would have indexed is found by the lookups' record checks).
    fn decodable_files(
        &self,
        id: JobId,
    ) -> impl Iterator<Item = Result<(sled::IVec, u32, FileRecord), StoreError>> + '_ {
        self.files
            .scan_prefix(id.to_be_bytes())
            .filter_map(|entry| {
                let (key, value) = match entry {
                    Ok(entry) => entry,
                    Err(e) => return Some(Err(e.into())),
                };
                let file = decode_record::<FileRecord>("files", &value).ok()?;
                let (_, index) = decode_file_ref(&key)?;
                Some(Ok((key, index, file)))
            })
    }

    /// Remove a job and its files.
    pub fn delete_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.empty_view(job.id)?;
        let key = [
            destination_digest(&destination_key(job)).as_slice(),
            &job.id.to_be_bytes(),
        ]
        .concat();
        self.by_destination.remove(key)?;
        for entry in self.decodable_files(job.id) {
            let (key, index, file) = entry?;
            if let Some(sha) = &file.verified_sha256 {
                self.by_sha256
                    .remove([sha256_prefix(sha).as_slice(), &key].concat())?;
            }
            if let Some(rel) = &file.rel_path {
                let path = job.dest_dir.join(rel);
                if self.owner_of(&path)? == Some((job.id, index)) {
                    self.owners.remove(owner_key(&path))?;
                }
            }
        }
        self.queue.remove(queue_key(job.priority, job.seq))?;
        self.jobs.remove(job.id.to_be_bytes())?;
        self.files_on_disk
            .append(&JournalLine::Removed { id: job.id })?;
        for key in self.files.scan_prefix(job.id.to_be_bytes()).keys() {
            self.files.remove(key?)?;
        }
        self.views.remove(job.id.to_be_bytes())?;
        Ok(())
    }

    /// A runtime setting that survives restarts.
    pub fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.meta.get(name)? {
            Some(bytes) => Ok(Some(decode_record(&format!("meta/{name}"), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Set a runtime setting that survives restarts.
    pub fn put_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        self.meta.insert(name, encode_record(value))?;
        Ok(())
    }

    /// Make every write so far durable: sled's flush, then an fsync of its files (sled writes
    /// its log with `sync_file_range` on Linux, which flushes neither the drive's cache nor
    /// the file's size, and its blob files with no sync at all).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flush_owned().await
    }

    /// [`Store::flush`] as a future that does not borrow the store: its owner goes on reading
    /// and writing while the flush runs. It makes durable at least every write made before
    /// this call; a write made while it runs may or may not be in it (flush again for those).
    pub fn flush_owned(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let db = self.db.clone();
        let files = self.files_on_disk.clone();
        let detached = self.detached;
        async move {
            if detached {
                return Err(StoreError::Sync(std::io::Error::other(
                    "the store is not open (reopening it failed); retrying",
                )));
            }
            db.flush_async().await?;
            tokio::task::spawn_blocking(move || files.sync())
                .await
                .map_err(|e| StoreError::Sync(std::io::Error::other(e.to_string())))?
                .map_err(StoreError::Sync)
        }
    }

    /// Make every write so far durable, blocking.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.files_on_disk.sync().map_err(StoreError::Sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn job(id: JobId, priority: i32, seq: u64) -> JobRecord {
        let url = format!("http://127.0.0.1/{id}");
        let request = mdl_protocol::AddRequest {
            source: url.clone(),
            priority,
            ..Default::default()
        };
        let source = crate::job::Source::Url(url);
        JobRecord {
            id,
            seq,
            ..JobRecord::from_add(&request, source, Default::default(), "/tmp".into())
        }
    }

    #[test]
    fn queue_orders_by_priority_then_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        for (id, prio) in [
            (1, 0),
            (2, 5),
            (3, 0),
            (4, -2),
            (5, 5),
            (6, i32::MAX),
            (7, i32::MIN),
        ] {
            store.put_job(&job(id, prio, id)).unwrap();
        }
        assert_eq!(store.queue_order().unwrap(), vec![6, 2, 5, 1, 3, 4, 7]);
    }

    #[test]
    fn priority_change_and_finish_update_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        store.put_job(&job(1, 0, 1)).unwrap();
        store.put_job(&job(2, 0, 2)).unwrap();
        let mut second = job(2, 10, 2);
        store.put_job(&second).unwrap();
        assert_eq!(store.queue_order().unwrap(), vec![2, 1]);
        second.state = JobState::Completed;
        store.put_job(&second).unwrap();
        assert_eq!(store.queue_order().unwrap(), vec![1]);
    }

    #[test]
    fn queue_and_running_jobs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
            let mut running = job(1, 0, 1);
            running.state = JobState::Running;
            store.put_job(&running).unwrap();
            store.put_job(&job(2, 3, 2)).unwrap();
            let mut paused = job(3, 9, 3);
            paused.state = JobState::Paused;
            store.put_job(&paused).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        assert_eq!(store.queue_order().unwrap(), vec![2, 1]);
        assert_eq!(store.get_job(1).unwrap().unwrap().state, JobState::Queued);
        // Ids 1 to 3 are taken (the journal knows them even though the counter was never
        // used): the counter never gives them again.
        assert_eq!(store.next_id().unwrap(), 4);
        assert_eq!(store.next_id().unwrap(), 5);
    }

    #[test]
    fn the_sha256_index_is_rebuilt_on_open_and_forgets_removed_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        {
            let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
            store.put_job(&job(1, 0, 1)).unwrap();
            let mut file = FileRecord::new("http://h/f".into());
            file.verified_sha256 = Some(sha.clone());
            store.put_file(1, 0, &file).unwrap();
            store
                .put_file(1, 1, &FileRecord::new("http://h/g".into()))
                .unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        assert_eq!(store.files_with_sha256(&sha).unwrap(), vec![(1, 0)]);
        assert!(store
            .files_with_sha256(&"cd".repeat(32))
            .unwrap()
            .is_empty());
        store
            .delete_job(&store.get_job(1).unwrap().unwrap())
            .unwrap();
        assert!(store.files_with_sha256(&sha).unwrap().is_empty());
    }

    #[test]
    fn a_store_without_the_index_trees_gets_them_rebuilt_once() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "ef".repeat(32);
        let mut done = job(1, 0, 1);
        done.state = JobState::Completed;
        let key = destination_key(&done);
        {
            let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
            store.put_job(&done).unwrap();
            store.put_job(&job(2, 0, 2)).unwrap();
            let mut file = FileRecord::new("http://h/f".into());
            file.state = FileState::Completed;
            file.rel_path = Some("f.bin".into());
            file.verified_sha256 = Some(sha.clone());
            store.put_file(1, 0, &file).unwrap();
            // What a store written before the index trees looks like: no trees, no marker.
            for name in ["by_destination", "by_sha256", "owners"] {
                assert!(store.db.drop_tree(name).unwrap(), "{name}");
            }
            store.meta.remove(META_INDEX_FORMAT).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        assert_eq!(store.jobs_for_destination(&key).unwrap(), vec![1]);
        assert_eq!(store.files_with_sha256(&sha).unwrap(), vec![(1, 0)]);
        assert_eq!(
            store.owner_of(&done.dest_dir.join("f.bin")).unwrap(),
            Some((1, 0))
        );
        assert_eq!(
            store.get_meta::<u32>(META_INDEX_FORMAT).unwrap(),
            Some(INDEX_FORMAT)
        );
        // Only once: a later open trusts the indexes it finds (an entry removed by hand
        // stays removed).
        store.owners.clear().unwrap();
        store.flush_blocking().unwrap();
        drop(store);
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        assert_eq!(store.owner_of(&done.dest_dir.join("f.bin")).unwrap(), None);
    }

    #[test]
    fn index_lookups_check_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), |_, _| Ok(())).unwrap();
        let first = job(1, 0, 1);
        store.put_job(&first).unwrap();
        let key = destination_key(&first);
        // A stale entry (a job that is gone) and one whose record has another destination
        // (what a digest collision would look like) under the same prefix.
        for id in [7u64, 2] {
            let entry = [destination_digest(&key).as_slice(), &id.to_be_bytes()].concat();
            store.by_destination.insert(entry, &[]).unwrap();
        }
        store.put_job(&job(2, 0, 2)).unwrap();
        assert_eq!(store.jobs_for_destination(&key).unwrap(), vec![1]);
        assert_eq!(
            store
                .jobs_for_destination(&destination_key(&job(2, 0, 2)))
                .unwrap(),
            vec![2]
        );
        // Removing a job forgets its entries; the other job's stay.
        store.delete_job(&first).unwrap();
        assert!(store.jobs_for_destination(&key).unwrap().is_empty());
        assert_eq!(
            store.by_destination.len(),
            3,
            "the stale 7, the colliding 2 and job 2's own entry"
        );
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let err =
            decode_record::<JobRecord>("jobs/1", br#"{"schema": 99, "record": {}}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade mdld"), "{err}");
    }

    #[test]
    fn an_envelope_is_read_by_position_only_when_it_is_laid_out_as_written_and_intact() {
        let record = job(3, 1, 3);
        let bytes = encode_record(&record);
        let (schema, text, sum) = split_envelope(&bytes).unwrap();
        assert_eq!(schema, SCHEMA_VERSION);
        assert_eq!(text, serde_json::to_string(&record).unwrap().as_bytes());
        assert!(sum_matches(text, sum));
        let same = |read: JobRecord| serde_json::to_string(&read).unwrap();
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(same(decode_record("jobs/3", &bytes).unwrap()), json);
        // The same record laid out differently (spaces, another key order) is read by the JSON
        // path, to the same record.
        let spaced = format!(
            "{{ \"sum\": \"{}\", \"record\": {json}, \"schema\": {SCHEMA_VERSION} }}",
            record_sum(&json)
        );
        assert!(split_envelope(spaced.as_bytes()).is_none());
        assert_eq!(
            same(decode_record("jobs/3", spaced.as_bytes()).unwrap()),
            json
        );
        // Damage anywhere is caught, by either path: in the record, in the sum, a cut tail.
        let mut damaged = bytes.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x01;
        let mut bad_sum = bytes.clone();
        let at = bad_sum.len() - 4;
        bad_sum[at] = if bad_sum[at] == b'0' { b'1' } else { b'0' };
        for bad in [
            damaged,
            bad_sum,
            bytes[..bytes.len() - 3].to_vec(),
            Vec::new(),
        ] {
            assert!(decode_record::<JobRecord>("jobs/3", &bad).is_err());
        }
        // Short or foreign bytes are no envelope (no panic on any length).
        for n in 0..40 {
            let _ = split_envelope(&bytes[..n]);
        }
        assert!(split_envelope(b"{\"schema\":2,\"record\":").is_none());
        assert!(split_envelope(b"{\"schema\":99999999999,\"record\":{}").is_none());
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::tests::job;
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(dir, |_, _| Ok(())).unwrap()
    }

    /// Open once the last handle of an earlier store is gone: an async flush leaves sled's
    /// thread pool holding one for a moment after it returned.
    pub(super) fn open_when_released(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(dir, |_, _| Ok(())) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result.unwrap(),
            }
        }
    }

    #[test]
    fn reopen_in_the_same_process_takes_the_lock_again_and_keeps_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let mut store = open(&store_dir);
        let mut running = job(1, 0, 1);
        running.state = JobState::Running;
        store.put_job(&running).unwrap();
        store.flush_blocking().unwrap();
        store.put_job(&job(2, 0, 2)).unwrap();
        store
            .reopen()
            .expect("sled's lock is let go and taken again");
        assert!(!store.is_detached());
        // As after a restart: the running job is queued again.
        assert_eq!(store.get_job(1).unwrap().unwrap().state, JobState::Queued);
        assert_eq!(store.queue_order().unwrap()[0], 1);
        store.put_job(&job(3, 0, 3)).unwrap();
        store.flush_blocking().unwrap();
        drop(store);
        assert!(open(&store_dir).get_job(3).unwrap().is_some());
    }

    /// Damage job 2's record in place (its checksum no longer matches).
    fn damage_job_2(store: &Store) {
        let mut bytes = store
            .jobs
            .get(2u64.to_be_bytes())
            .unwrap()
            .unwrap()
            .to_vec();
        let at = bytes.iter().position(|&b| b == b'1').unwrap();
        bytes[at] = b'7';
        store.jobs.insert(2u64.to_be_bytes(), bytes).unwrap();
        store.flush_blocking().unwrap();
    }

    #[tokio::test]
    async fn a_clean_close_lets_the_next_open_skip_the_full_check_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let store = open_when_released(&store_dir);
            let mut running = job(1, 5, 1);
            running.state = JobState::Running;
            store.put_job(&running).unwrap();
            store.put_job(&job(2, 0, 2)).unwrap();
            let mut done = job(3, 0, 3);
            done.state = JobState::Completed;
            store.put_job(&done).unwrap();
            store.mark_closed_cleanly().await.unwrap();
        }
        {
            // Opened without the walk: the running job is queued again all the same, the
            // queue order holds, and the mark is gone.
            let store = open_when_released(&store_dir);
            assert_eq!(store.get_job(1).unwrap().unwrap().state, JobState::Queued);
            assert_eq!(store.queue_order().unwrap(), vec![1, 2]);
            assert_eq!(
                store.get_meta::<[u32; 2]>(META_CLOSED_CLEANLY).unwrap(),
                None
            );
            assert!(store.health().damaged.is_empty());
            // Damaged while open, then a crash (no clean close).
            damage_job_2(&store);
        }
        // The crash is noticed: every record is checked again, and the damage is found.
        let store = open_when_released(&store_dir);
        assert_eq!(store.health().damaged.len(), 1, "{:?}", store.health());
        assert_eq!(store.queue_order().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_clean_close_mark_of_another_schema_or_index_format_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let store = open_when_released(&store_dir);
            store.put_job(&job(1, 0, 1)).unwrap();
            store.put_job(&job(2, 0, 2)).unwrap();
            store.mark_closed_cleanly().await.unwrap();
            store
                .put_meta(META_CLOSED_CLEANLY, &[SCHEMA_VERSION - 1, INDEX_FORMAT])
                .unwrap();
            damage_job_2(&store);
        }
        let store = open_when_released(&store_dir);
        assert_eq!(store.health().damaged.len(), 1, "{:?}", store.health());
    }

    #[test]
    fn a_damaged_record_is_set_aside_and_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let store = open(&store_dir);
            store.put_job(&job(1, 0, 1)).unwrap();
            store.put_job(&job(2, 0, 2)).unwrap();
            // Flip a byte inside job 2's record: the checksum catches it.
            damage_job_2(&store);
        }
        let store = open(&store_dir);
        let health = store.health();
        assert_eq!(health.damaged.len(), 1, "{health:?}");
        assert_eq!(health.damaged[0].key, "jobs/2");
        assert!(health.damaged[0].message.contains("checksum"), "{health:?}");
        assert_eq!(store.all_jobs().unwrap().len(), 1);
        // Job 2 is gone from the records, so the journal reports it lost too.
        assert_eq!(
            health.lost.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn lost_jobs_are_listed_with_their_partial_files_and_ids_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let dest = dir.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join(".mdl-3-0.part"), b"partial").unwrap();
        {
            let store = open(&store_dir);
            for id in 1..=3 {
                assert_eq!(store.next_id().unwrap(), id);
                let mut record = job(id, 0, id);
                record.dest_dir = dest.clone();
                store.put_job(&record).unwrap();
            }
            store
                .delete_job(&store.get_job(1).unwrap().unwrap())
                .unwrap();
            // What a damaged log does: records vanish without a word, the counter goes back.
            store.jobs.remove(3u64.to_be_bytes()).unwrap();
            store.meta.insert("next_id", &1u64.to_be_bytes()).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = open(&store_dir);
        let lost = &store.health().lost;
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].id, 3);
        assert_eq!(
            lost[0].partial_files,
            vec![dest.join(".mdl-3-0.part").display().to_string()]
        );
        assert_eq!(store.next_id().unwrap(), 4, "ids are never given twice");
    }

    #[test]
    fn a_store_that_cannot_open_is_moved_aside_and_a_held_lock_names_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let store = open(&store_dir);
            store.put_job(&job(1, 0, 1)).unwrap();
            store.flush_blocking().unwrap();
            let err = Store::open(&store_dir, |_, _| Ok(())).err().unwrap();
            let text = err.to_string();
            assert!(
                text.contains(&format!("pid {}", std::process::id())),
                "{text}"
            );
        }
        // Garbage where sled keeps its config: it cannot open.
        std::fs::write(store_dir.join("conf"), b"\xff\xff garbage").unwrap();
        let store = open(&store_dir);
        let health = store.health();
        let aside = health.moved_aside.clone().expect("moved aside");
        assert!(aside.contains("store.broken-"), "{aside}");
        assert!(Path::new(&aside).exists());
        assert!(store.all_jobs().unwrap().is_empty());
        assert_eq!(
            health.lost.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![1]
        );
    }
}

#[cfg(test)]
mod view_tests {
    use super::tests::job;
    use super::*;
    use mdl_protocol::JobInfo;

    /// A store whose id counter says ids up to 10 were given (listings read up to it).
    fn open(dir: &Path) -> Store {
        let store = Store::open(dir, |_, _| Ok(())).unwrap();
        store
            .meta
            .insert(META_NEXT_ID, &10u64.to_be_bytes())
            .unwrap();
        store
    }

    /// A job's entry in the `views` tree: `None` without one, `Some(None)` out of date.
    fn view(store: &Store, id: JobId) -> Option<Option<JobInfo>> {
        store
            .reader()
            .views_after(id.checked_sub(1))
            .map(Result::unwrap)
            .find(|(found, _)| *found == id)
            .map(|(_, view)| view.map(|v| mdl_protocol::codec::decode(v.encoded()).unwrap()))
    }

    /// What a listing must show for a job: its view built from the records as stored now.
    fn from_records(store: &Store, id: JobId) -> JobInfo {
        let job = store.get_job(id).unwrap().unwrap();
        crate::job::job_info(&job, &store.files(id).unwrap(), &[])
    }

    fn file(name: &str) -> FileRecord {
        FileRecord {
            rel_path: Some(name.into()),
            size: Some(10),
            ..FileRecord::new(format!("http://127.0.0.1/{name}"))
        }
    }

    #[test]
    fn a_settled_jobs_view_follows_its_records_and_never_outlives_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("store"));
        let mut one = job(1, 0, 1);
        store.put_job(&one).unwrap();
        store.put_file(1, 0, &file("a.bin")).unwrap();
        assert_eq!(view(&store, 1), None, "a runnable job has no view");

        let mut done = file("a.bin");
        done.state = FileState::Completed;
        store.put_file(1, 0, &done).unwrap();
        one.state = JobState::Completed;
        one.finished_ms = Some(7);
        store.put_job(&one).unwrap();
        assert_eq!(view(&store, 1), Some(Some(from_records(&store, 1))));

        // A file written after the job settled: out of date until the next refresh.
        done.note = Some("checked again".into());
        store.put_file(1, 0, &done).unwrap();
        store.put_file(1, 1, &file("b.bin")).unwrap();
        assert_eq!(view(&store, 1), Some(None));
        store.refresh_views().unwrap();
        let fresh = from_records(&store, 1);
        assert_eq!(fresh.files.len(), 2);
        assert_eq!(view(&store, 1), Some(Some(fresh)));

        // Retried: runnable again, so no view; settled again, a new one.
        one.state = JobState::Queued;
        store.put_job(&one).unwrap();
        assert_eq!(view(&store, 1), None);
        one.state = JobState::Failed;
        store.put_job(&one).unwrap();
        assert_eq!(view(&store, 1), Some(Some(from_records(&store, 1))));

        let mut paused = job(2, 0, 2);
        paused.state = JobState::Paused;
        store.put_job(&paused).unwrap();
        assert_eq!(view(&store, 2), Some(Some(from_records(&store, 2))));
        store.delete_job(&paused).unwrap();
        assert_eq!(view(&store, 2), None);
        // A refresh of a job retried meanwhile builds nothing.
        store.put_file(1, 0, &done).unwrap();
        one.state = JobState::Queued;
        store.put_job(&one).unwrap();
        store.refresh_views().unwrap();
        assert_eq!(view(&store, 1), None);
    }

    #[test]
    fn the_full_check_after_a_crash_builds_missing_views_and_drops_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let expected = {
            let store = open(&store_dir);
            for (id, state) in [
                (1, JobState::Completed),
                (2, JobState::Failed),
                (4, JobState::Cancelled),
            ] {
                store.put_file(id, 0, &file(&format!("{id}.bin"))).unwrap();
                let mut settled = job(id, 0, id);
                settled.state = state;
                store.put_job(&settled).unwrap();
            }
            store.put_job(&job(3, 0, 3)).unwrap();
            let expected = [
                from_records(&store, 1),
                from_records(&store, 2),
                from_records(&store, 4),
            ];
            // What a crash can leave: a view never written, one emptied and never rebuilt,
            // one whose job's removal survived without its own.
            store.views.remove(1u64.to_be_bytes()).unwrap();
            store.views.insert(2u64.to_be_bytes(), &[]).unwrap();
            store
                .views
                .insert(9u64.to_be_bytes(), &b"junk"[..])
                .unwrap();
            store.views.insert(3u64.to_be_bytes(), &[]).unwrap();
            // And one damaged on disk.
            let mut damaged = store
                .views
                .get(4u64.to_be_bytes())
                .unwrap()
                .unwrap()
                .to_vec();
            *damaged.last_mut().unwrap() ^= 1;
            store.views.insert(4u64.to_be_bytes(), damaged).unwrap();
            store.flush_blocking().unwrap();
            expected
        };
        let store = open(&store_dir);
        assert_eq!(view(&store, 1), Some(Some(expected[0].clone())));
        assert_eq!(view(&store, 2), Some(Some(expected[1].clone())));
        assert_eq!(view(&store, 4), Some(Some(expected[2].clone())));
        assert_eq!(view(&store, 3), None, "a runnable job's view is dropped");
        assert_eq!(view(&store, 9), None, "a view without its job is dropped");
    }

    #[tokio::test]
    async fn views_of_another_protocol_version_are_built_again_even_after_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let store = open(&store_dir);
            let mut settled = job(1, 0, 1);
            settled.state = JobState::Completed;
            store.put_job(&settled).unwrap();
            // As a daemon of another protocol version would have left them.
            let mut other = from_records(&store, 1);
            other.source = "written by another version".into();
            store
                .views
                .insert(1u64.to_be_bytes(), encode_view(&other).unwrap())
                .unwrap();
            store
                .put_meta(
                    META_VIEWS_FORMAT,
                    &[VIEWS_LAYOUT, mdl_protocol::PROTOCOL_VERSION + 1],
                )
                .unwrap();
            store.mark_closed_cleanly().await.unwrap();
        }
        let store = super::recovery_tests::open_when_released(&store_dir);
        assert_eq!(view(&store, 1), Some(Some(from_records(&store, 1))));
        assert_eq!(
            store.get_meta::<[u32; 2]>(META_VIEWS_FORMAT).unwrap(),
            Some(VIEWS_FORMAT)
        );
    }
}
