//! The writer thread of one file download.
//!
//! Receivers hand it buffers tagged with their offset; it writes them to the partial file with
//! positioned writes, records the written ranges, and hashes the file in order as the contiguous
//! prefix grows (straight from the buffer when it arrives in order, otherwise by reading the
//! prefix back from the page cache). Hashing thus runs off the tasks that receive bytes.
//!
//! A checkpoint marker makes everything written before it durable (`fdatasync`) and then
//! reports the ranges as a [`FileCheckpoint`]: the store never records a byte range that a
//! power cut could lose.

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

enum Message {
    Write { offset: u64, data: Bytes },
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
        self.tx
            .send(Message::Write { offset, data })
            .await
            .map_err(|_| WriterGone)
    }
}

/// The writer thread stopped (after an I/O error, which its handle reports).
#[derive(Debug, Clone, Copy)]
pub struct WriterGone;

/// The async side's handle to a writer thread.
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
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
    hashed: u64,
    hashers: Hashers,
    syncer: Syncer,
    /// The validators of the last checkpoint, for the checkpoint written when a write fails.
    validators: FileCheckpoint,
    /// Where the written ranges go at once (no fsync), if the boot is known.
    sidecar: Option<Sidecar>,
}

/// Makes checkpoints durable on its own thread, so `fdatasync` never stalls the writes behind
/// it. `fdatasync` flushes every dirty page of the file, so all ranges written before a
/// checkpoint was queued are on disk when the sink hears of it. Checkpoints queued while a
/// sync runs collapse into the newest one.
struct Syncer {
    /// The file and sink, until the thread is started with them.
    pending_start: Option<(File, Arc<dyn CheckpointSink>)>,
    sink: Arc<dyn CheckpointSink>,
    tx: Option<std::sync::mpsc::Sender<(u64, FileCheckpoint)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    error: Arc<std::sync::Mutex<Option<io::Error>>>,
    /// Bumped by a truncate: checkpoints of the bytes thrown away are never reported.
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

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
        }
    }

    fn start(&mut self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let Some((file, sink)) = self.pending_start.take() else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::channel::<(u64, FileCheckpoint)>();
        let (thread_error, thread_epoch) = (self.error.clone(), self.epoch.clone());
        let thread = std::thread::Builder::new()
            .name("mdl-sync".into())
            .spawn(move || {
                while let Ok(mut item) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        item = newer;
                    }
                    if item.0 != thread_epoch.load(Ordering::SeqCst) {
                        continue;
                    }
                    // A checkpoint of validators alone (no bytes yet) has nothing to make durable.
                    if item.1.ranges.covered() > 0 {
                        if let Err(e) = file.sync_data() {
                            *thread_error.lock().expect("sync error lock") = Some(e);
                            return;
                        }
                    }
                    if item.0 == thread_epoch.load(Ordering::SeqCst) {
                        sink.durable(item.1);
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
            let _ = tx.send((epoch, checkpoint));
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
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        write_all_at(&self.file, data, offset)?;
        self.ranges.insert(offset, offset + data.len() as u64);
        self.record_written()?;
        if offset == self.hashed {
            self.hashers.update(data);
            self.hashed += data.len() as u64;
        }
        self.catch_up_hash()
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

    /// Hash whatever part of the contiguous prefix the in-order path has not seen, reading it
    /// back from the file (the page cache, normally).
    fn catch_up_hash(&mut self) -> io::Result<()> {
        let prefix = self.ranges.contiguous_prefix();
        if prefix <= self.hashed {
            return Ok(());
        }
        let mut reader = &self.file;
        reader.seek(SeekFrom::Start(self.hashed))?;
        let mut buf = vec![0u8; 1 << 20];
        while self.hashed < prefix {
            let want = ((prefix - self.hashed) as usize).min(buf.len());
            reader.read_exact(&mut buf[..want])?;
            self.hashers.update(&buf[..want]);
            self.hashed += want as u64;
        }
        Ok(())
    }
}

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
        let mut state = WriterState {
            file,
            ranges: existing.ranges.clone(),
            hashed: 0,
            hashers: Hashers::new(plan),
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
            tx,
            thread: Some(thread),
        })
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
        self.catch_up_hash()?;
        while let Some(message) = rx.blocking_recv() {
            match message {
                Message::Write { offset, data } => self.write(offset, &data)?,
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
                    self.file.set_len(0)?;
                    self.hashed = 0;
                    self.hashers = Hashers::new(self.hashers.plan);
                }
                Message::Finish(reply) => {
                    let result =
                        self.syncer
                            .drain()
                            .and_then(|()| self.file.sync_all())
                            .map(|()| {
                                let hashers = std::mem::replace(
                                    &mut self.hashers,
                                    Hashers::new(HashPlan::default()),
                                );
                                hashers.finish(self.hashed)
                            });
                    let _ = reply.send(result);
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl WriterHandle {
    /// A cloneable sender for the data of several connections (segments) of this file.
    pub fn sender(&self) -> WriterSender {
        WriterSender {
            tx: self.tx.clone(),
        }
    }

    async fn send(&mut self, message: Message) -> io::Result<()> {
        if self.tx.send(message).await.is_err() {
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
        self.send(Message::Write { offset, data }).await
    }

    /// Queue a checkpoint: after everything queued so far is durable, the sink gets the ranges
    /// together with these validators.
    pub async fn checkpoint(&mut self, validators: FileCheckpoint) -> io::Result<()> {
        self.send(Message::Checkpoint(validators)).await
    }

    /// Reserve `len` bytes for the file where the filesystem allows (without changing its
    /// length), so a full disk shows up now rather than in the middle of the download.
    pub async fn preallocate(&mut self, len: u64) -> io::Result<()> {
        self.send(Message::Preallocate(len)).await
    }

    /// Throw away every byte (the server sent another version).
    pub async fn truncate(&mut self) -> io::Result<()> {
        self.send(Message::Truncate).await
    }

    /// Wait for every write, sync the file, and return the digests of its contiguous prefix.
    pub async fn finish(mut self) -> io::Result<Digests> {
        let (reply, rx) = oneshot::channel();
        self.send(Message::Finish(reply)).await?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.join_error()),
        }
    }

    /// Stop the thread after what is queued, and surface any write error.
    pub async fn close(mut self) -> io::Result<()> {
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
}
