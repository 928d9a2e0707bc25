//! The writer thread of one file download, and the hasher thread behind it.
//!
//! Receivers hand the writer the chunks hyper received, tagged with their offset (no copy:
//! they are reference-counted [`Bytes`]); it writes them to the partial file with one
//! positioned vectored write, records the written ranges, and passes the same buffers on to a
//! hasher thread. The hasher hashes the file in order as the contiguous prefix grows (straight
//! from the buffers that were written when they arrive in order, otherwise by reading the
//! prefix back from the page cache). Receiving, writing and hashing thus run side by side on
//! their own threads, each bounded by a queue (backpressure, flat memory).
//!
//! A checkpoint marker makes everything written before it durable (`fdatasync`, on a syncer
//! thread of its own so it never stalls the writes) and then reports the ranges as a
//! [`FileCheckpoint`]: the store never records a byte range that a power cut could lose.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::sidecar::Sidecar;
use crate::job::FileCheckpoint;
use crate::ranges::RangeSet;

/// Receives durable checkpoints from the writer thread.
pub trait CheckpointSink: Send + Sync {
    /// Every range in `checkpoint` is on stable storage.
    fn durable(&self, checkpoint: FileCheckpoint);
}

/// Which digests to compute besides sha256.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashPlan {
    /// Compute md5 too.
    pub md5: bool,
    /// Compute the git blob sha1 too; needs the file's length up front.
    pub git_sha1_len: Option<u64>,
}

/// The digests of a complete file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// The file's length.
    pub len: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
    /// md5, lowercase hex, if asked for.
    pub md5: Option<String>,
    /// git blob sha1, lowercase hex, if asked for.
    pub git_sha1: Option<String>,
}

/// Buffers the hasher may lag behind the writer (each at most one write buffer).
const HASH_QUEUE_DEPTH: usize = 8;

enum Message {
    Write { offset: u64, data: Chunks },
    Preallocate(u64),
    Checkpoint(FileCheckpoint),
    Truncate,
    Finish(oneshot::Sender<io::Result<Digests>>),
}

/// Hands data of one connection to the writer thread; many may exist for one file.
#[derive(Clone)]
pub struct WriterSender {
    tx: mpsc::Sender<Message>,
}

impl WriterSender {
    /// Queue `data` to be written at `offset`. Fails when the writer thread stopped (its error
    /// surfaces through the [`WriterHandle`]).
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), WriterGone> {
        self.write_chunks(offset, vec![data]).await
    }

    /// Queue consecutive `chunks` (as received) to be written from `offset` on, in one write.
    pub async fn write_chunks(&self, offset: u64, chunks: Chunks) -> Result<(), WriterGone> {
        self.tx
            .send(Message::Write {
                offset,
                data: chunks,
            })
            .await
            .map_err(|_| WriterGone)
    }

    /// How full the writer thread's queue is now: 0 empty, 1 full (senders wait).
    pub fn queue_fill(&self) -> f64 {
        let max = self.tx.max_capacity().max(1);
        1.0 - self.tx.capacity() as f64 / max as f64
    }
}

/// Consecutive buffers of one write, as the network delivered them.
pub type Chunks = Vec<Bytes>;

/// The total length of `chunks`.
pub fn chunks_len(chunks: &[Bytes]) -> u64 {
    chunks.iter().map(|c| c.len() as u64).sum()
}

/// The writer thread stopped (after an I/O error, which its handle reports).
#[derive(Debug, Clone, Copy)]
pub struct WriterGone;

/// The async side's handle to a writer thread, or to a small file kept in memory until it is
/// complete (see [`WriterHandle::lazy`]).
pub struct WriterHandle {
    tx: Option<mpsc::Sender<Message>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// A small fresh file not handed to a thread yet.
    inline: Option<Box<Inline>>,
}

/// A new file's first bytes, held in memory while it may still turn out to be small: a file
/// that is complete within `max` bytes (and [`super::WRITE_AFTER`]) is written, synced and
/// hashed in one blocking call, with no writer, hasher or syncer thread and no sidecar.
/// Anything else (more bytes, a slow link, a checkpoint of bytes, a segmented download) starts
/// the threads and replays what is held, so nothing is lost or reordered.
struct Inline {
    path: std::path::PathBuf,
    plan: HashPlan,
    sink: Arc<dyn CheckpointSink>,
    queue_depth: usize,
    /// Where the sidecar goes (and the boot id) once the threads start.
    sidecar: Option<(std::path::PathBuf, String)>,
    max: u64,
    /// The validators of the last checkpoint.
    validators: FileCheckpoint,
    /// Writes held, in the order they came.
    pending: Vec<(u64, Chunks)>,
    len: u64,
    first_at: Option<std::time::Instant>,
}

impl Inline {
    /// Write the held bytes, sync the file, and hash them (blocking).
    fn finish(self) -> io::Result<Digests> {
        if let Some(parent) = self.path.parent() {
            super::finalize::create_dir_all_durable(parent)?;
        }
        // Nothing in an existing file is trusted (a lazy writer starts with no ranges).
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        let mut ranges = RangeSet::new();
        for (offset, chunks) in &self.pending {
            let len = write_chunks_at(&file, chunks, *offset)?;
            ranges.insert(*offset, offset + len);
        }
        // The same digests as the threaded path: those of the contiguous prefix.
        let prefix = ranges.contiguous_prefix();
        let mut ordered: Vec<&(u64, Chunks)> = self.pending.iter().collect();
        ordered.sort_by_key(|(offset, _)| *offset);
        let mut hashers = Hashers::new(self.plan);
        let mut hashed = 0u64;
        for (offset, chunks) in ordered {
            let mut at = *offset;
            for chunk in chunks {
                let end = at + chunk.len() as u64;
                if at <= hashed && end > hashed && hashed < prefix {
                    hashers.update(&chunk[(hashed - at) as usize..]);
                    hashed = end;
                }
                at = end;
            }
        }
        file.sync_all()?;
        Ok(hashers.finish(hashed))
    }
}

struct Hashers {
    sha256: Sha256,
    md5: Option<Md5>,
    git_sha1: Option<Sha1>,
    plan: HashPlan,
}

impl Hashers {
    fn new(plan: HashPlan) -> Self {
        let git_sha1 = plan.git_sha1_len.map(|len| {
            let mut h = Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            h
        });
        Hashers {
            sha256: Sha256::new(),
            md5: plan.md5.then(Md5::new),
            git_sha1,
            plan,
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.git_sha1 {
            h.update(data);
        }
    }

    fn finish(self, len: u64) -> Digests {
        Digests {
            len,
            sha256: hex::encode(self.sha256.finalize()),
            md5: self.md5.map(|h| hex::encode(h.finalize())),
            git_sha1: self.git_sha1.map(|h| hex::encode(h.finalize())),
        }
    }
}

/// Hash a whole file on disk with the same hashers the writer uses (sha256, plus md5 and the
/// git blob sha1 as `plan` asks; the git sha1 takes the file's actual length). Blocking: call
/// it from a blocking thread.
pub fn hash_file(path: &std::path::Path, plan: HashPlan) -> io::Result<Digests> {
    use std::io::Read as _;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let plan = HashPlan {
        git_sha1_len: plan.git_sha1_len.map(|_| len),
        ..plan
    };
    let mut hashers = Hashers::new(plan);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hashers.update(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(io::Error::other(format!(
            "{} changed while it was hashed",
            path.display()
        )));
    }
    Ok(hashers.finish(len))
}

struct WriterState {
    file: File,
    ranges: RangeSet,
    hasher: Hasher,
    syncer: Syncer,
    /// The validators of the last checkpoint, for the checkpoint written when a write fails.
    validators: FileCheckpoint,
    /// Where the written ranges go at once (no fsync), if the boot is known.
    sidecar: Option<Sidecar>,
}

enum HashMessage {
    /// These buffers were written at this offset.
    Written { offset: u64, data: Chunks },
    /// The file is about to be truncated: start over, and answer once every earlier buffer is
    /// done with (so no read-back races the truncation).
    Reset(std::sync::mpsc::Sender<()>),
}

/// The hasher thread's state: the ranges written so far and how much of their contiguous
/// prefix is hashed.
struct HashState {
    file: File,
    /// Set when the download stops without finishing: the hashing is not needed any more.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    ranges: RangeSet,
    hashed: u64,
    hashers: Hashers,
}

impl HashState {
    fn run(mut self, rx: std::sync::mpsc::Receiver<HashMessage>) -> io::Result<Digests> {
        self.catch_up()?;
        while let Ok(message) = rx.recv() {
            match message {
                HashMessage::Written { offset, data } => {
                    let mut at = offset;
                    for chunk in &data {
                        if at == self.hashed {
                            self.hashers.update(chunk);
                            self.hashed += chunk.len() as u64;
                        }
                        at += chunk.len() as u64;
                    }
                    self.ranges.insert(offset, at);
                    self.catch_up()?;
                }
                HashMessage::Reset(done) => {
                    self.ranges.clear();
                    self.hashed = 0;
                    self.hashers = Hashers::new(self.hashers.plan);
                    let _ = done.send(());
                }
            }
        }
        Ok(self.hashers.finish(self.hashed))
    }

    /// Hash whatever part of the contiguous prefix the in-order path has not seen, reading it
    /// back from the file (the page cache, normally).
    fn catch_up(&mut self) -> io::Result<()> {
        let prefix = self.ranges.contiguous_prefix();
        if prefix <= self.hashed {
            return Ok(());
        }
        let mut reader = &self.file;
        reader.seek(SeekFrom::Start(self.hashed))?;
        let mut buf = vec![0u8; (prefix - self.hashed).min(1 << 20) as usize];
        while self.hashed < prefix {
            if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io::Error::other("the download stopped"));
            }
            let want = ((prefix - self.hashed) as usize).min(buf.len());
            reader.read_exact(&mut buf[..want])?;
            self.hashers.update(&buf[..want]);
            self.hashed += want as u64;
        }
        Ok(())
    }
}

/// The writer's handle to its hasher thread.
struct Hasher {
    tx: Option<std::sync::mpsc::SyncSender<HashMessage>>,
    thread: Option<std::thread::JoinHandle<io::Result<Digests>>>,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // Not finished: stop reading back, the digest is not wanted.
        if self.thread.is_some() {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Hasher {
    fn spawn(file: File, existing: RangeSet, plan: HashPlan) -> io::Result<Hasher> {
        let (tx, rx) = std::sync::mpsc::sync_channel(HASH_QUEUE_DEPTH);
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = HashState {
            file,
            abandoned: abandoned.clone(),
            ranges: existing,
            hashed: 0,
            hashers: Hashers::new(plan),
        };
        let thread = std::thread::Builder::new()
            .name("mdl-hash".into())
            .spawn(move || state.run(rx))?;
        Ok(Hasher {
            tx: Some(tx),
            thread: Some(thread),
            abandoned,
        })
    }

    fn send(&mut self, message: HashMessage) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The hasher stopped: only after an error (a failed read-back).
            Err(self
                .finish()
                .err()
                .unwrap_or_else(|| io::Error::other("the hasher stopped")))
        }
    }

    /// Wait until everything sent is hashed; the digests of the contiguous prefix.
    fn finish(&mut self) -> io::Result<Digests> {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("hasher thread panicked")),
            None => Err(io::Error::other("the hasher already finished")),
        }
    }
}

/// Makes checkpoints durable on its own thread, so `fdatasync` never stalls the writes behind
/// it. `fdatasync` flushes every dirty page of the file, so all ranges written before a
/// checkpoint was queued are on disk when the sink hears of it. Checkpoints queued while a
/// sync runs collapse into the newest one.
struct Syncer {
    /// The file and sink, until the thread is started with them.
    pending_start: Option<(File, Arc<dyn CheckpointSink>)>,
    sink: Arc<dyn CheckpointSink>,
    tx: Option<std::sync::mpsc::Sender<SyncItem>>,
    thread: Option<std::thread::JoinHandle<()>>,
    error: Arc<std::sync::Mutex<Option<io::Error>>>,
    /// Bumped by a truncate: checkpoints of the bytes thrown away are never reported.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Written bytes not yet handed to [`Syncer::write_back`]: `[start, end)` and their count.
    unflushed: Option<(u64, u64)>,
    unflushed_bytes: u64,
}

/// Work for the syncer thread.
enum SyncItem {
    /// Make everything written so far durable, then report this checkpoint (of this epoch).
    Checkpoint(u64, FileCheckpoint),
    /// Start writing `[start, end)` to the disk (no waiting, nothing reported).
    WriteBack(u64, u64),
}

/// Written bytes of a file are handed to the syncer for early write-back in batches of this
/// many: a file smaller than this (most of a repository's) never starts the syncer thread for
/// it, and a large one sends one message per batch rather than one per write.
const WRITE_BACK_BATCH: u64 = 8 * 1024 * 1024;

impl Syncer {
    /// A syncer whose thread starts with the first checkpoint that covers bytes: a small file
    /// that never needs one costs no thread.
    fn new(file: File, sink: Arc<dyn CheckpointSink>) -> Syncer {
        Syncer {
            pending_start: Some((file, sink.clone())),
            sink,
            tx: None,
            thread: None,
            error: Arc::new(std::sync::Mutex::new(None)),
            epoch: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            unflushed: None,
            unflushed_bytes: 0,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let Some((file, sink)) = self.pending_start.take() else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::channel::<SyncItem>();
        let (thread_error, thread_epoch) = (self.error.clone(), self.epoch.clone());
        let thread = std::thread::Builder::new()
            .name("mdl-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything queued meanwhile: the newest checkpoint, and one range that
                    // covers every write-back asked for.
                    let mut checkpoint = None;
                    let mut write_back: Option<(u64, u64)> = None;
                    let mut next = Some(first);
                    while let Some(item) = next {
                        match item {
                            SyncItem::Checkpoint(epoch, cp) => checkpoint = Some((epoch, cp)),
                            SyncItem::WriteBack(start, end) => {
                                write_back = Some(match write_back {
                                    Some((s, e)) => (s.min(start), e.max(end)),
                                    None => (start, end),
                                })
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    let checkpoint = checkpoint
                        .filter(|(epoch, _)| *epoch == thread_epoch.load(Ordering::SeqCst));
                    // A checkpoint of validators alone (no bytes yet) has nothing to make durable.
                    let syncs = checkpoint
                        .as_ref()
                        .is_some_and(|(_, cp)| cp.ranges.covered() > 0);
                    if syncs {
                        if let Err(e) = file.sync_data() {
                            *thread_error.lock().expect("sync error lock") = Some(e);
                            return;
                        }
                    } else if let Some((start, end)) = write_back {
                        // On this thread, not the writer's: a busy disk may make it wait.
                        start_writeback(&file, start, end - start);
                    }
                    if let Some((epoch, cp)) = checkpoint {
                        if epoch == thread_epoch.load(Ordering::SeqCst) {
                            sink.durable(cp);
                        }
                    }
                }
            })?;
        self.tx = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Queue a checkpoint of `ranges` (already written).
    fn checkpoint(&mut self, checkpoint: FileCheckpoint) -> io::Result<()> {
        self.failed()?;
        if self.thread.is_none() {
            if checkpoint.ranges.covered() == 0 {
                // Nothing to sync and nothing queued ahead of it: report it now.
                self.sink.durable(checkpoint);
                return Ok(());
            }
            self.start()?;
        }
        let epoch = self.epoch.load(std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = &self.tx {
            let _ = tx.send(SyncItem::Checkpoint(epoch, checkpoint));
        }
        Ok(())
    }

    /// `[start, end)` was written: once a batch of such bytes is together, have the syncer
    /// thread start their write-back (see [`start_writeback`]), so the checkpoints' syncs and
    /// the final one find them on the disk already. Only a hint: errors show up in the syncs.
    fn written(&mut self, start: u64, end: u64) -> io::Result<()> {
        self.unflushed = Some(match self.unflushed {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });
        self.unflushed_bytes += end - start;
        if self.unflushed_bytes < WRITE_BACK_BATCH {
            return Ok(());
        }
        let Some((start, end)) = self.unflushed.take() else {
            return Ok(());
        };
        self.unflushed_bytes = 0;
        self.failed()?;
        self.start()?;
        if let Some(tx) = &self.tx {
            let _ = tx.send(SyncItem::WriteBack(start, end));
        }
        Ok(())
    }

    /// Forget queued checkpoints (the file was truncated).
    fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// A sync error, once one happened.
    fn failed(&self) -> io::Result<()> {
        match self.error.lock().expect("sync error lock").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every queued checkpoint is durable and reported.
    fn drain(&mut self) -> io::Result<()> {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.failed()
    }
}

impl WriterState {
    fn write(&mut self, offset: u64, data: Chunks) -> io::Result<()> {
        let len = write_chunks_at(&self.file, &data, offset)?;
        self.syncer.written(offset, offset + len)?;
        self.ranges.insert(offset, offset + len);
        self.record_written()?;
        self.hasher.send(HashMessage::Written { offset, data })
    }

    /// Tell the sidecar what is written now (the data's `pwrite` has returned).
    fn record_written(&mut self) -> io::Result<()> {
        if let Some(sidecar) = &mut self.sidecar {
            let v = &self.validators;
            sidecar.record(
                &self.ranges,
                v.total,
                v.etag.as_deref(),
                v.last_modified.as_deref(),
            )?;
        }
        Ok(())
    }
}

/// Write consecutive `chunks` at `offset` with as few syscalls as the platform allows (one
/// `pwritev` on Unix); returns the bytes written.
#[cfg(unix)]
fn write_chunks_at(file: &File, chunks: &[Bytes], offset: u64) -> io::Result<u64> {
    use std::io::IoSlice;
    let total = chunks_len(chunks);
    if let [one] = chunks {
        write_all_at(file, one, offset)?;
        return Ok(total);
    }
    let mut done = 0u64;
    // The first chunk not fully written, and how much of it is.
    let (mut index, mut within) = (0usize, 0usize);
    while done < total {
        let slices: Vec<IoSlice<'_>> = chunks[index..]
            .iter()
            .enumerate()
            .take(512)
            .map(|(i, c)| IoSlice::new(if i == 0 { &c[within..] } else { &c[..] }))
            .collect();
        let n = match rustix::io::pwritev(file, &slices, offset + done) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        done += n as u64;
        let mut left = n;
        while left > 0 {
            let rest = chunks[index].len() - within;
            if left >= rest {
                left -= rest;
                index += 1;
                within = 0;
            } else {
                within += left;
                left = 0;
            }
        }
        while index < chunks.len() && chunks[index].len() == within {
            index += 1;
            within = 0;
        }
    }
    Ok(total)
}

/// Write consecutive `chunks` at `offset`; returns the bytes written.
#[cfg(not(unix))]
fn write_chunks_at(file: &File, chunks: &[Bytes], offset: u64) -> io::Result<u64> {
    let mut at = offset;
    for chunk in chunks {
        write_all_at(file, chunk, at)?;
        at += chunk.len() as u64;
    }
    Ok(at - offset)
}

/// Start writing `len` bytes at `offset` to the disk now, without waiting for it to complete
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`; it may wait for room in a busy disk's queue, so
/// the syncer thread calls it, never the writer). Only a hint, so errors are ignored:
/// durability still comes from the checkpoints' `fdatasync` and the final `fsync`, which then
/// find most pages written already. Without it the page cache holds a download's bytes until
/// one of those syncs (the machine's dirty limits are far above a file's size), and the final
/// sync writes up to a checkpoint's worth (128 MiB) after the last byte.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // One syscall on our own descriptor; the workspace denies unsafe elsewhere.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes an open descriptor (borrowed from `file` for the call) and
    // integers; it touches no memory of this process.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Start writing bytes to the disk early (no such call on this platform: a no-op).
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Reserve blocks for `len` bytes, keeping the file's size. A filesystem that cannot do it is
/// not an error; a full one is.
#[cfg(target_os = "linux")]
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => Err(e.into()),
        Err(e) => {
            tracing::debug!("preallocation not available: {e}");
            Ok(())
        }
    }
}

/// Reserve blocks for `len` bytes (not available on this platform: a no-op).
#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
pub(super) fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(windows)]
pub(super) fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !data.is_empty() {
        let n = file.seek_write(data, offset)?;
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

impl WriterHandle {
    /// Open (or create) the partial file and start the writer thread. `existing` are the
    /// ranges already in the file from an earlier attempt; their contiguous prefix is hashed
    /// first (read back from disk). No sidecar: written ranges are not recorded between
    /// checkpoints (see [`WriterHandle::spawn_with`]).
    pub fn spawn(
        path: &Path,
        existing: RangeSet,
        plan: HashPlan,
        sink: Arc<dyn CheckpointSink>,
        queue_depth: usize,
    ) -> io::Result<WriterHandle> {
        Self::spawn_with(
            path,
            FileCheckpoint {
                ranges: existing,
                ..Default::default()
            },
            plan,
            sink,
            queue_depth,
            None,
        )
    }

    /// Like [`WriterHandle::spawn`], starting from `existing` (its ranges and validators),
    /// and recording every write in `sidecar` as soon as its `pwrite` returns.
    pub fn spawn_with(
        path: &Path,
        existing: FileCheckpoint,
        plan: HashPlan,
        sink: Arc<dyn CheckpointSink>,
        queue_depth: usize,
        sidecar: Option<Sidecar>,
    ) -> io::Result<WriterHandle> {
        if let Some(parent) = path.parent() {
            super::finalize::create_dir_all_durable(parent)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let (tx, mut rx) = mpsc::channel::<Message>(queue_depth.max(1));
        let syncer = Syncer::new(file.try_clone()?, sink);
        let hasher = Hasher::spawn(file.try_clone()?, existing.ranges.clone(), plan)?;
        let mut state = WriterState {
            file,
            ranges: existing.ranges.clone(),
            hasher,
            syncer,
            validators: existing,
            sidecar,
        };
        let thread = std::thread::Builder::new()
            .name("mdl-writer".into())
            .spawn(move || {
                let result = state.run(&mut rx);
                // Whatever ended the loop, the checkpoints queued so far become durable.
                let drained = state.syncer.drain();
                result.and(drained)
            })?;
        Ok(WriterHandle {
            tx: Some(tx),
            thread: Some(thread),
            inline: None,
        })
    }

    /// A writer for a new file (no ranges yet) that keeps up to `max` bytes in memory and
    /// writes them in one go when the file is complete by then; otherwise it becomes the
    /// threaded writer of [`WriterHandle::spawn_with`], with its sidecar at `sidecar.0` for
    /// boot `sidecar.1`. Nothing is created on disk until then.
    pub fn lazy(
        path: &Path,
        plan: HashPlan,
        sink: Arc<dyn CheckpointSink>,
        queue_depth: usize,
        sidecar: Option<(std::path::PathBuf, String)>,
        max: u64,
    ) -> WriterHandle {
        WriterHandle {
            tx: None,
            thread: None,
            inline: Some(Box::new(Inline {
                path: path.to_path_buf(),
                plan,
                sink,
                queue_depth,
                sidecar,
                max,
                validators: FileCheckpoint::default(),
                pending: Vec::new(),
                len: 0,
                first_at: None,
            })),
        }
    }

    /// Whether the file is still held in memory (no thread started).
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// Start the threads of a lazy writer and hand them what it holds.
    async fn start_threads(&mut self) -> io::Result<()> {
        let Some(inline) = self.inline.take() else {
            return Ok(());
        };
        let Inline {
            path,
            plan,
            sink,
            queue_depth,
            sidecar,
            validators,
            pending,
            ..
        } = *inline;
        let sidecar = match sidecar {
            Some((sidecar_path, boot)) => Some(Sidecar::open(&sidecar_path, boot)?),
            None => None,
        };
        // Nothing on disk is trusted: the replayed writes are the file.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            OpenOptions::new().write(true).open(&path)?.set_len(0)?;
        }
        let WriterHandle { tx, thread, .. } = Self::spawn_with(
            &path,
            FileCheckpoint {
                ranges: RangeSet::new(),
                ..validators
            },
            plan,
            sink,
            queue_depth,
            sidecar,
        )?;
        self.tx = tx;
        self.thread = thread;
        for (offset, chunks) in pending {
            self.send_threaded(Message::Write {
                offset,
                data: chunks,
            })
            .await?;
        }
        Ok(())
    }
}

impl WriterState {
    fn run(&mut self, rx: &mut mpsc::Receiver<Message>) -> io::Result<()> {
        let result = self.serve(rx);
        if result.is_err() {
            // A write failed (a full disk, say): record what did reach the file, so a resume
            // after the cause is fixed loses nothing.
            let mut checkpoint = self.validators.clone();
            checkpoint.ranges = self.ranges.clone();
            let _ = self.syncer.checkpoint(checkpoint);
        }
        result
    }

    fn serve(&mut self, rx: &mut mpsc::Receiver<Message>) -> io::Result<()> {
        while let Some(message) = rx.blocking_recv() {
            match message {
                Message::Write { offset, data } => self.write(offset, data)?,
                Message::Preallocate(len) => preallocate(&self.file, len)?,
                Message::Checkpoint(mut checkpoint) => {
                    checkpoint.ranges = self.ranges.clone();
                    let validators_changed = self.validators.etag != checkpoint.etag
                        || self.validators.total != checkpoint.total
                        || self.validators.last_modified != checkpoint.last_modified;
                    self.validators = checkpoint.clone();
                    if validators_changed {
                        self.record_written()?;
                    }
                    self.syncer.checkpoint(checkpoint)?;
                }
                Message::Truncate => {
                    self.syncer.invalidate();
                    self.validators = FileCheckpoint::default();
                    self.ranges.clear();
                    self.record_written()?;
                    let (done, wait) = std::sync::mpsc::channel();
                    self.hasher.send(HashMessage::Reset(done))?;
                    if wait.recv().is_err() {
                        let error = self.hasher.finish().err();
                        return Err(error.unwrap_or_else(|| io::Error::other("the hasher stopped")));
                    }
                    self.file.set_len(0)?;
                }
                Message::Finish(reply) => {
                    // The file's fsync and the hashing of its last buffers overlap.
                    let synced = self.syncer.drain().and_then(|()| self.file.sync_all());
                    let hashed = self.hasher.finish();
                    let _ = reply.send(synced.and(hashed));
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl WriterHandle {
    /// A cloneable sender for the data of several connections (segments) of this file (a
    /// lazy writer starts its threads first).
    pub async fn sender(&mut self) -> io::Result<WriterSender> {
        self.start_threads().await?;
        match &self.tx {
            Some(tx) => Ok(WriterSender { tx: tx.clone() }),
            None => Err(self.join_error()),
        }
    }

    async fn send(&mut self, message: Message) -> io::Result<()> {
        self.start_threads().await?;
        self.send_threaded(message).await
    }

    /// Send to the writer thread (already started).
    async fn send_threaded(&mut self, message: Message) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(message).await.is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.join_error());
        }
        Ok(())
    }

    /// The writer thread's error after it stopped early.
    fn join_error(&mut self) -> io::Error {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("writer thread panicked"),
            _ => io::Error::other("writer thread stopped"),
        }
    }

    /// Queue `data` to be written at `offset` (waits when the queue is full: backpressure).
    pub async fn write(&mut self, offset: u64, data: Bytes) -> io::Result<()> {
        self.write_chunks(offset, vec![data]).await
    }

    /// Queue consecutive `chunks` (as received) to be written from `offset` on, in one write.
    pub async fn write_chunks(&mut self, offset: u64, chunks: Chunks) -> io::Result<()> {
        if let Some(inline) = &mut self.inline {
            let len = chunks_len(&chunks);
            let fresh = inline
                .first_at
                .is_none_or(|t| t.elapsed() < super::WRITE_AFTER);
            if inline.len + len <= inline.max && fresh {
                inline.len += len;
                inline.first_at.get_or_insert_with(std::time::Instant::now);
                inline.pending.push((offset, chunks));
                return Ok(());
            }
        }
        self.send(Message::Write {
            offset,
            data: chunks,
        })
        .await
    }

    /// Queue a checkpoint: after everything queued so far is durable, the sink gets the ranges
    /// together with these validators.
    pub async fn checkpoint(&mut self, validators: FileCheckpoint) -> io::Result<()> {
        if let Some(inline) = &mut self.inline {
            if inline.pending.is_empty() {
                // No bytes to make durable: the validators alone are reported at once, as the
                // writer thread does.
                let mut checkpoint = validators;
                checkpoint.ranges = RangeSet::new();
                inline.validators = checkpoint.clone();
                inline.sink.durable(checkpoint);
                return Ok(());
            }
        }
        self.send(Message::Checkpoint(validators)).await
    }

    /// Reserve `len` bytes for the file where the filesystem allows (without changing its
    /// length), so a full disk shows up now rather than in the middle of the download.
    pub async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        if self.inline.as_ref().is_some_and(|i| len <= i.max) {
            // Small enough to stay in memory: nothing to reserve ahead.
            return Ok(());
        }
        self.send(Message::Preallocate(len)).await
    }

    /// Throw away every byte (the server sent another version).
    pub async fn truncate(&mut self) -> io::Result<()> {
        if let Some(inline) = &mut self.inline {
            inline.pending.clear();
            inline.len = 0;
            inline.first_at = None;
            inline.validators = FileCheckpoint::default();
            return Ok(());
        }
        self.send(Message::Truncate).await
    }

    /// Wait for every write, sync the file, and return the digests of its contiguous prefix.
    pub async fn finish(mut self) -> io::Result<Digests> {
        if let Some(inline) = self.inline.take() {
            return match tokio::task::spawn_blocking(move || inline.finish()).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::other("the small-file write panicked")),
            };
        }
        let (reply, rx) = oneshot::channel();
        self.send(Message::Finish(reply)).await?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.join_error()),
        }
    }

    /// Stop the thread after what is queued, and surface any write error.
    pub async fn close(mut self) -> io::Result<()> {
        if self.inline.is_some() {
            // Nothing was written, nothing was claimed: the held bytes are let go.
            return Ok(());
        }
        let thread = self.thread.take();
        drop(self.tx);
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(result)) => result,
                _ => Err(io::Error::other("writer thread panicked")),
            }
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<FileCheckpoint>>);
    impl CheckpointSink for Recorder {
        fn durable(&self, checkpoint: FileCheckpoint) {
            self.0.lock().unwrap().push(checkpoint);
        }
    }

    #[tokio::test]
    async fn out_of_order_writes_hash_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let sink = Arc::new(Recorder::default());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let plan = HashPlan {
            md5: true,
            git_sha1_len: Some(data.len() as u64),
        };
        let mut w = WriterHandle::spawn(&path, RangeSet::new(), plan, sink.clone(), 4).unwrap();
        w.write(200_000, Bytes::copy_from_slice(&data[200_000..]))
            .await
            .unwrap();
        w.write(0, Bytes::copy_from_slice(&data[..100_000]))
            .await
            .unwrap();
        w.checkpoint(FileCheckpoint {
            etag: Some("e".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        w.write(100_000, Bytes::copy_from_slice(&data[100_000..200_000]))
            .await
            .unwrap();
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.len, data.len() as u64);
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(digests.md5.unwrap(), hex::encode(Md5::digest(&data)));
        let mut git = Sha1::new();
        git.update(format!("blob {}\0", data.len()).as_bytes());
        git.update(&data);
        assert_eq!(digests.git_sha1.unwrap(), hex::encode(git.finalize()));
        let checkpoints = sink.0.lock().unwrap();
        assert_eq!(
            checkpoints[0].ranges.ranges(),
            &[(0, 100_000), (200_000, 300_000)]
        );
        assert_eq!(checkpoints[0].etag.as_deref(), Some("e"));
    }

    #[tokio::test]
    async fn resume_hashes_the_existing_prefix_and_truncate_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        std::fs::write(&path, b"hello ").unwrap();
        let sink = Arc::new(Recorder::default());
        let mut w = WriterHandle::spawn(
            &path,
            RangeSet::prefix(6),
            HashPlan::default(),
            sink.clone(),
            2,
        )
        .unwrap();
        w.write(6, Bytes::from_static(b"world")).await.unwrap();
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(b"hello world")));

        let mut w =
            WriterHandle::spawn(&path, RangeSet::prefix(11), HashPlan::default(), sink, 2).unwrap();
        w.truncate().await.unwrap();
        w.write(0, Bytes::from_static(b"new")).await.unwrap();
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(b"new")));
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i % 253) as u8).collect()
    }

    /// Split `data` into `n`-byte chunks as the network would deliver them.
    fn chunked(data: &[u8], n: usize) -> Chunks {
        data.chunks(n).map(Bytes::copy_from_slice).collect()
    }

    #[tokio::test]
    async fn a_small_file_is_written_hashed_and_synced_inline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.part");
        let sidecar = dir.path().join("f.written");
        let sink = Arc::new(Recorder::default());
        let data = pattern(100_000);
        let mut w = WriterHandle::lazy(
            &path,
            HashPlan {
                md5: true,
                git_sha1_len: None,
            },
            sink.clone(),
            4,
            Some((sidecar.clone(), "boot".into())),
            1 << 20,
        );
        w.checkpoint(FileCheckpoint {
            etag: Some("e".into()),
            total: Some(data.len() as u64),
            ..Default::default()
        })
        .await
        .unwrap();
        w.preallocate(data.len() as u64).await.unwrap();
        w.write_chunks(0, chunked(&data[..70_000], 7_000))
            .await
            .unwrap();
        w.write_chunks(70_000, chunked(&data[70_000..], 16_384))
            .await
            .unwrap();
        assert!(w.is_inline(), "a small file starts no thread");
        assert!(!path.exists(), "nothing is on disk before the end");
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.len, data.len() as u64);
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(digests.md5.unwrap(), hex::encode(Md5::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(!sidecar.exists(), "an inline file needs no sidecar");
        // The validators were reported at once, with no bytes claimed.
        let checkpoints = sink.0.lock().unwrap();
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(checkpoints[0].etag.as_deref(), Some("e"));
        assert_eq!(checkpoints[0].ranges.covered(), 0);
    }

    #[tokio::test]
    async fn a_file_that_outgrows_memory_moves_to_the_threads_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        // Junk from an earlier attempt that nothing vouches for.
        std::fs::write(&path, vec![7u8; 500_000]).unwrap();
        let sidecar_path = dir.path().join("f.written");
        let sink = Arc::new(Recorder::default());
        let data = pattern(300_000);
        let mut w = WriterHandle::lazy(
            &path,
            HashPlan::default(),
            sink.clone(),
            4,
            Some((sidecar_path.clone(), "boot".into())),
            100_000,
        );
        w.write_chunks(0, chunked(&data[..90_000], 9_000))
            .await
            .unwrap();
        assert!(w.is_inline());
        w.write_chunks(90_000, chunked(&data[90_000..200_000], 10_000))
            .await
            .unwrap();
        assert!(!w.is_inline(), "past the limit the threads take over");
        w.checkpoint(FileCheckpoint::default()).await.unwrap();
        w.write_chunks(200_000, chunked(&data[200_000..], 50_000))
            .await
            .unwrap();
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data, "old junk is gone");
        let written = crate::engine::sidecar::read(&sidecar_path).expect("sidecar");
        assert_eq!(written.ranges.ranges(), &[(0, 300_000)]);
        let checkpoints = sink.0.lock().unwrap();
        assert_eq!(checkpoints.last().unwrap().ranges.ranges(), &[(0, 200_000)]);
    }

    #[tokio::test]
    async fn a_lazy_writer_keeps_what_it_holds_when_the_download_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let sink = Arc::new(Recorder::default());
        let data = pattern(50_000);
        let mut w = WriterHandle::lazy(&path, HashPlan::default(), sink.clone(), 4, None, 1 << 20);
        w.write_chunks(0, chunked(&data, 5_000)).await.unwrap();
        // What fetch does before giving up: a checkpoint, then close.
        w.checkpoint(FileCheckpoint::default()).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let checkpoints = sink.0.lock().unwrap();
        assert_eq!(checkpoints.last().unwrap().ranges.ranges(), &[(0, 50_000)]);
    }

    #[tokio::test]
    async fn a_large_file_is_written_back_early_and_still_checkpointed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let sink = Arc::new(Recorder::default());
        // Several write-back batches, out of order, with a checkpoint between them.
        let data = pattern(3 * WRITE_BACK_BATCH as usize + 12_345);
        let half = data.len() / 2;
        let mut w =
            WriterHandle::spawn(&path, RangeSet::new(), HashPlan::default(), sink.clone(), 4)
                .unwrap();
        for (start, end) in [(half, data.len()), (0, half)] {
            for at in (start..end).step_by(1 << 20) {
                let to = (at + (1 << 20)).min(end);
                w.write(at as u64, Bytes::copy_from_slice(&data[at..to]))
                    .await
                    .unwrap();
            }
            w.checkpoint(FileCheckpoint::default()).await.unwrap();
        }
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let checkpoints = sink.0.lock().unwrap();
        assert_eq!(
            checkpoints.last().unwrap().ranges.ranges(),
            &[(0, data.len() as u64)],
            "the write-back hints never replace or reorder a checkpoint"
        );
    }

    #[test]
    fn vectored_writes_handle_many_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        // More chunks than one pwritev takes, of uneven sizes (some empty).
        let data = pattern(1_300 * 97);
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut n = 0;
        while at < data.len() {
            let len = [97, 0, 500, 1][n % 4].min(data.len() - at);
            chunks.push(Bytes::copy_from_slice(&data[at..at + len]));
            at += len;
            n += 1;
        }
        assert!(chunks.len() > 512, "more than one pwritev takes");
        let written = write_chunks_at(&file, &chunks, 10).unwrap();
        assert_eq!(written, data.len() as u64);
        let back = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&back[10..], &data[..]);
    }

    #[tokio::test]
    async fn truncate_waits_for_the_hasher_and_hashes_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let sink = Arc::new(Recorder::default());
        let old = pattern(2_000_000);
        let mut w =
            WriterHandle::spawn(&path, RangeSet::new(), HashPlan::default(), sink, 4).unwrap();
        // Out of order, so the hasher reads back from the file while the truncate comes.
        w.write(1_000_000, Bytes::copy_from_slice(&old[1_000_000..]))
            .await
            .unwrap();
        w.write(0, Bytes::copy_from_slice(&old[..1_000_000]))
            .await
            .unwrap();
        w.truncate().await.unwrap();
        w.write(0, Bytes::from_static(b"fresh")).await.unwrap();
        let digests = w.finish().await.unwrap();
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(b"fresh")));
        assert_eq!(digests.len, 5);
    }
}
