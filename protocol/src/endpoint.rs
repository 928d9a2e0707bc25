//! Where the daemon listens, and how both sides bind and connect.
//!
//! On Unix the endpoint is a socket file, by default `$XDG_RUNTIME_DIR/mdl/mdld.sock`. Where
//! `XDG_RUNTIME_DIR` is not set (macOS, containers, ssh sessions without logind) it is
//! `$TMPDIR/mdl-$UID/mdld.sock` (`/tmp` when `TMPDIR` is unset). A missing directory is created
//! with mode 0700; an existing one must be a real directory (not a symlink) owned by the current
//! user that neither group nor others can write, and mdl refuses it otherwise instead of changing
//! its mode. The socket itself has mode 0600, so only its owner can connect. On Windows it is the
//! named pipe `\\.\pipe\mdl-<user>`. [`SOCKET_ENV`] (`MDL_SOCKET`) or the command line's
//! `--socket` override the default.
//!
//! # Who owns the socket
//! A daemon first takes a [`SocketClaim`]: an exclusive lock on the file `<socket>.lock` beside
//! the socket ([`socket_lock_path`]), which records its pid, socket and data directory (an
//! [`Owner`]). Only the claim's holder removes a stale socket file or binds, so two daemons
//! starting at once cannot unlink each other's socket; at exit the holder unlinks the socket
//! only while it is still the file it bound (same inode). The lock file stays behind, so a
//! client that finds no daemon can still learn which data directory last served the socket
//! ([`LockFile::read_owner`]), and the lock is free exactly when no daemon holds the socket
//! ([`LockFile::is_held`]).

use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::ListenerOptions;

/// The environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "MDL_SOCKET";

/// The socket's file name inside the runtime directory.
pub const SOCKET_FILE_NAME: &str = "mdld.sock";

/// A connected local-socket stream (Unix socket or named pipe).
pub type LocalStream = Stream;

/// A listening local socket.
pub type LocalListener = Listener;

/// The per-user runtime directory mdl uses for its socket (see the module docs).
pub fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mdl");
    }
    fallback_runtime_dir()
}

#[cfg(unix)]
fn fallback_runtime_dir() -> PathBuf {
    let tmp = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    PathBuf::from(tmp).join(format!("mdl-{}", rustix::process::getuid().as_raw()))
}

#[cfg(not(unix))]
fn fallback_runtime_dir() -> PathBuf {
    std::env::temp_dir().join("mdl")
}

/// The endpoint to use: `explicit` (from `--socket`), else `MDL_SOCKET`, else the default.
pub fn resolve_socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    default_socket_path()
}

/// The default endpoint, without overrides.
#[cfg(unix)]
pub fn default_socket_path() -> PathBuf {
    default_runtime_dir().join(SOCKET_FILE_NAME)
}

/// The default endpoint, without overrides: a per-user named pipe.
#[cfg(windows)]
pub fn default_socket_path() -> PathBuf {
    let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".into());
    PathBuf::from(format!(r"\\.\pipe\mdl-{user}"))
}

/// Connect to the daemon's endpoint (no handshake; see [`crate::Client`]).
pub async fn connect(path: &Path) -> io::Result<LocalStream> {
    Stream::connect(name_for(path)?).await
}

/// The lock file beside `socket` that a daemon holds while it owns the socket
/// (`mdld.sock` → `mdld.sock.lock`).
pub fn socket_lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Who holds (or last held) a daemon's lock file: the record inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The daemon's process id.
    pub pid: u32,
    /// The socket it listens on.
    pub socket: PathBuf,
    /// Its data directory (queue and state).
    pub data_dir: PathBuf,
}

impl Owner {
    /// This process as the owner of `socket` with `data_dir` (paths made absolute).
    pub fn this_process(socket: &Path, data_dir: &Path) -> Owner {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        Owner {
            pid: std::process::id(),
            socket: absolute(socket),
            data_dir: absolute(data_dir),
        }
    }

    /// The record as written to the lock file: `pid N`, `socket PATH`, `data_dir PATH` lines.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("pid {}\n", self.pid).into_bytes();
        for (key, path) in [("socket", &self.socket), ("data_dir", &self.data_dir)] {
            out.extend_from_slice(key.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&path_bytes(path));
            out.push(b'\n');
        }
        out
    }

    /// Parse a record; `None` for anything incomplete (e.g. read while being written).
    fn decode(bytes: &[u8]) -> Option<Owner> {
        let (mut pid, mut socket, mut data_dir) = (None, None, None);
        // Only whole lines count: what follows the last newline may be cut short.
        let complete = &bytes[..bytes.iter().rposition(|b| *b == b'\n')?];
        for line in complete.split(|b| *b == b'\n') {
            let Some(space) = line.iter().position(|b| *b == b' ') else {
                continue;
            };
            let (key, value) = (&line[..space], &line[space + 1..]);
            match key {
                b"pid" => pid = std::str::from_utf8(value).ok()?.parse().ok(),
                b"socket" => socket = Some(path_from_bytes(value)),
                b"data_dir" => data_dir = Some(path_from_bytes(value)),
                _ => {}
            }
        }
        Some(Owner {
            pid: pid?,
            socket: socket?,
            data_dir: data_dir?,
        })
    }
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// An exclusive advisory lock (`flock`) on a small file that records its [`Owner`]. The lock
/// ends when this value is dropped or the process exits, however it exits; the file stays.
#[derive(Debug)]
pub struct LockFile {
    _file: std::fs::File,
}

impl LockFile {
    /// Take the lock on `path` (created with mode 0600) and write `owner` into it. Fails with
    /// [`io::ErrorKind::WouldBlock`] while another process (or another `LockFile` in this one)
    /// holds it; [`LockFile::read_owner`] then says who.
    pub fn acquire(path: &Path, owner: &Owner) -> io::Result<LockFile> {
        use std::io::Write;
        let mut file = open_lock_file(path, true)?;
        #[cfg(unix)]
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::WouldBlock {
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is locked by another process", path.display()),
                    )
                } else {
                    e
                }
            },
        )?;
        // One write of the whole record, then cut what an older, longer record left.
        let record = owner.encode();
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&record, 0)?;
        }
        #[cfg(not(unix))]
        file.write_all(&record)?;
        file.set_len(record.len() as u64)?;
        file.flush()?;
        Ok(LockFile { _file: file })
    }

    /// The record in the lock file at `path`: the current holder while [`LockFile::is_held`],
    /// else the last one. `None` when there is no (complete) record.
    pub fn read_owner(path: &Path) -> Option<Owner> {
        Owner::decode(&std::fs::read(path).ok()?)
    }

    /// True while some process holds the lock on `path`.
    #[cfg(unix)]
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = open_lock_file(path, false) else {
            return false;
        };
        // A shared lock is refused exactly while someone holds the exclusive one; ours ends
        // when `file` is closed.
        matches!(
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK
        )
    }

    /// Without `flock`, nobody is known to hold it.
    #[cfg(not(unix))]
    pub fn is_held(_path: &Path) -> bool {
        false
    }
}

/// Open a lock file without following a symlink at its place.
fn open_lock_file(path: &Path, create: bool) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(create).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

/// The daemon's exclusive right to its socket path (see the module docs): the lock on
/// [`socket_lock_path`], and after [`SocketClaim::bind`] the identity of the socket file it
/// created, which it unlinks when dropped if the file at the path is still that one.
#[derive(Debug)]
pub struct SocketClaim {
    socket: PathBuf,
    // Named pipes on Windows leave no file to unlink.
    #[cfg_attr(not(unix), allow(dead_code))]
    bound: Option<FileId>,
    // Dropped after `Drop::drop` ran, so the socket is unlinked while the claim still holds.
    _lock: Option<LockFile>,
}

/// Device, inode and change time of a file: a socket file replaced by another one differs in
/// one of them (an inode number can be reused at once, its change time makes that visible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

#[cfg(unix)]
fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

impl SocketClaim {
    /// Check (or create) the socket's directory and take the lock beside the socket, recording
    /// this process and `data_dir`. [`io::ErrorKind::WouldBlock`] while another daemon holds it.
    pub fn acquire(socket: &Path, data_dir: &Path) -> io::Result<SocketClaim> {
        #[cfg(unix)]
        let lock = {
            ensure_socket_dir(socket_dir(socket))?;
            Some(LockFile::acquire(
                &socket_lock_path(socket),
                &Owner::this_process(socket, data_dir),
            )?)
        };
        // A named pipe has no directory for a lock file; the pipe itself is exclusive once
        // bound (the first instance).
        #[cfg(not(unix))]
        let lock = {
            let _ = data_dir;
            None
        };
        Ok(SocketClaim {
            socket: socket.to_path_buf(),
            bound: None,
            _lock: lock,
        })
    }

    /// The socket path this claim is for.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Bind the socket with mode 0600. The caller must have checked that no daemon answers
    /// there and removed a stale socket file ([`remove_stale_socket`]).
    pub fn bind(&mut self) -> io::Result<LocalListener> {
        #[cfg(unix)]
        {
            let listener = bind_private(&self.socket, FileMode::Fchmod)?;
            self.bound = Some(file_id(&self.socket)?);
            Ok(listener)
        }
        #[cfg(not(unix))]
        {
            ListenerOptions::new()
                .name(name_for(&self.socket)?)
                .create_tokio()
        }
    }
}

impl Drop for SocketClaim {
    /// Unlink the socket this claim bound, unless the file at the path is no longer it (e.g. a
    /// newer daemon took over a socket path this one had stopped serving).
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(bound) = self.bound {
            if file_id(&self.socket).ok() == Some(bound) {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }
}

/// How the socket file gets mode 0600.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileMode {
    /// `fchmod` on the socket before `bind` (Linux, FreeBSD ≥ 14.3, OpenBSD): no window at
    /// all. Falls back to [`FileMode::ChmodAfterBind`] where the OS refuses it (macOS).
    Fchmod,
    /// `bind`, then `chmod` the path: only done in a directory nobody else can enter (0700),
    /// so nobody can connect in between.
    ChmodAfterBind,
}

/// Bind `path` so that only its owner can connect (see [`FileMode`]).
#[cfg(unix)]
fn bind_private(path: &Path, mode: FileMode) -> io::Result<LocalListener> {
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    // Unlinking at exit is the claim's job (only while the file is still ours), not the
    // listener's.
    let options = || -> io::Result<ListenerOptions<'_>> {
        Ok(ListenerOptions::new()
            .name(name_for(path)?)
            .reclaim_name(false))
    };
    if mode == FileMode::Fchmod {
        return match options()?.mode(0o600).create_tokio() {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                bind_private(path, FileMode::ChmodAfterBind)
            }
            result => result,
        };
    }
    let dir = socket_dir(path);
    let dir_mode = std::fs::symlink_metadata(dir)?.permissions().mode();
    if dir_mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "this system cannot create a socket with mode 0600 in one step, so the socket's \
                 directory must be accessible to you only (mode 0700); {} has mode {:04o}. Use \
                 a socket path in a private directory (the default is one)",
                dir.display(),
                dir_mode & 0o7777
            ),
        ));
    }
    let listener = options()?.create_tokio()?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        drop(listener);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// The directory a socket path lives in (`.` for a bare file name).
#[cfg(unix)]
fn socket_dir(socket: &Path) -> &Path {
    socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Remove a socket file that no daemon listens on any more (left by a killed daemon). Call it
/// only while holding the [`SocketClaim`] and after a connect failed.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Create the socket's directory with mode 0700 when it is missing; otherwise require a real
/// directory (a symlink is refused: whoever owns it could point it elsewhere later) owned by
/// you that neither group nor others can write. An existing directory is never changed.
#[cfg(unix)]
pub fn ensure_socket_dir(dir: &Path) -> io::Result<()> {
    create_private_if_missing(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link; the socket's directory must be a real directory \
                 (use the path it points to, or another directory)",
                dir.display()
            ),
        ));
    }
    check_owned_dir(dir, &meta, "the socket")
}

/// Create a data directory with mode 0700 when it is missing; otherwise require a directory
/// owned by you that neither group nor others can write (its files are created owner-only, so
/// a 0755 directory is fine). A symlink is followed: it sits in your own directory and moving
/// data to another disk this way is common; the directory it points to is checked. An existing
/// directory is never changed.
#[cfg(unix)]
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    create_private_if_missing(dir)?;
    let meta = std::fs::metadata(dir)?;
    check_owned_dir(dir, &meta, "mdl's state")
}

#[cfg(unix)]
fn create_private_if_missing(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
            {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Refuse a directory that is not a directory, not ours, or writable by group or others.
#[cfg(unix)]
fn check_owned_dir(dir: &Path, meta: &std::fs::Metadata, what: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |message: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
    if !meta.is_dir() {
        return refuse(format!("{} is not a directory", dir.display()));
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return refuse(format!(
            "{} is owned by uid {}, not by you (uid {uid}); refusing to put {what} there",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "{} can be written by {} (mode {:04o}); refusing to put {what} there and leaving \
             its mode alone (`chmod go-w {}` if that is what you want, or choose another \
             directory)",
            dir.display(),
            if meta.mode() & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            },
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn name_for(path: &Path) -> io::Result<interprocess::local_socket::Name<'_>> {
    use interprocess::local_socket::GenericFilePath;
    path.to_fs_name::<GenericFilePath>()
}

#[cfg(windows)]
fn name_for(path: &Path) -> io::Result<interprocess::local_socket::Name<'_>> {
    use interprocess::local_socket::GenericNamespaced;
    let text = path.to_string_lossy();
    let short = text.strip_prefix(r"\\.\pipe\").unwrap_or(&text).to_string();
    short
        .to_ns_name::<GenericNamespaced>()
        .map(|n| n.into_owned())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn dir_with_mode(parent: &Path, name: &str, mode: u32) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn a_missing_socket_dir_is_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_socket_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_existing_socket_dir_is_used_as_it_is() {
        // `--socket ~/x.sock` must not chmod the home directory.
        let tmp = tempfile::tempdir().unwrap();
        let home = dir_with_mode(tmp.path(), "home", 0o755);
        ensure_socket_dir(&home).unwrap();
        assert_eq!(mode(&home), 0o755);
    }

    #[test]
    fn writable_or_symlinked_socket_dirs_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, dir_mode) in [("group", 0o775), ("other", 0o757), ("sticky", 0o1777)] {
            let dir = dir_with_mode(tmp.path(), name, dir_mode);
            let err = ensure_socket_dir(&dir).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains("can be written by"), "{err}");
            assert_eq!(mode(&dir), dir_mode, "{name} was changed");
        }
        let target = dir_with_mode(tmp.path(), "target", 0o755);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = ensure_socket_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(mode(&target), 0o755);
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = ensure_socket_dir(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn data_dirs_may_be_0755_or_symlinks_but_not_writable_by_others() {
        let tmp = tempfile::tempdir().unwrap();
        let created = tmp.path().join("new/data");
        ensure_private_dir(&created).unwrap();
        assert_eq!(mode(&created), 0o700);
        let shared = dir_with_mode(tmp.path(), "shared", 0o755);
        ensure_private_dir(&shared).unwrap();
        assert_eq!(
            mode(&shared),
            0o755,
            "an existing directory is never changed"
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        ensure_private_dir(&link).unwrap();
        let open = dir_with_mode(tmp.path(), "open", 0o777);
        let err = ensure_private_dir(&open).unwrap_err();
        assert!(err.to_string().contains("anyone"), "{err}");
        assert_eq!(mode(&open), 0o777);
    }

    #[test]
    fn owner_records_round_trip_and_partial_ones_are_ignored() {
        let owner = Owner {
            pid: 42,
            socket: "/run/user/1/mdl/mdld.sock".into(),
            data_dir: "/home/u/with space/mdl".into(),
        };
        assert_eq!(Owner::decode(&owner.encode()), Some(owner.clone()));
        let encoded = owner.encode();
        assert_eq!(Owner::decode(&encoded[..encoded.len() - 20]), None);
        assert_eq!(Owner::decode(b""), None);
    }

    #[test]
    fn a_lock_file_is_exclusive_and_keeps_its_record_after_release() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let owner = Owner::this_process(Path::new("s.sock"), Path::new("data"));
        assert!(!LockFile::is_held(&path));
        let lock = LockFile::acquire(&path, &owner).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(LockFile::is_held(&path));
        let err = LockFile::acquire(&path, &owner).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(LockFile::is_held(&path), "a failed attempt keeps the lock");
        assert_eq!(LockFile::read_owner(&path), Some(owner.clone()));
        assert!(owner.data_dir.is_absolute());
        drop(lock);
        assert!(!LockFile::is_held(&path));
        assert_eq!(LockFile::read_owner(&path), Some(owner));
    }

    #[tokio::test]
    async fn chmod_after_bind_gives_0600_but_only_in_a_private_dir() {
        // What macOS gets (it refuses fchmod on an unbound socket); forced here.
        let tmp = tempfile::tempdir().unwrap();
        let private = dir_with_mode(tmp.path(), "private", 0o700);
        let socket = private.join("s.sock");
        let listener = bind_private(&socket, FileMode::ChmodAfterBind).unwrap();
        assert_eq!(mode(&socket), 0o600);
        assert!(connect(&socket).await.is_ok());
        drop(listener);
        let readable = dir_with_mode(tmp.path(), "readable", 0o755);
        let socket = readable.join("s.sock");
        let err = bind_private(&socket, FileMode::ChmodAfterBind).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("0700"), "{err}");
        assert!(!socket.exists());
        // Where fchmod works, a 0755 directory is fine.
        let _listener = bind_private(&socket, FileMode::Fchmod).unwrap();
        assert_eq!(mode(&socket), 0o600);
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_and_unlinks_only_its_own_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/s.sock");
        let data = tmp.path().join("data");
        let mut claim = SocketClaim::acquire(&socket, &data).unwrap();
        assert_eq!(mode(socket.parent().unwrap()), 0o700);
        let err = SocketClaim::acquire(&socket, &data).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let listener = claim.bind().unwrap();
        assert_eq!(mode(&socket), 0o600);
        drop(listener);
        assert!(socket.exists(), "closing the listener does not unlink");
        drop(claim);
        assert!(!socket.exists(), "the claim unlinks its own socket");

        let mut claim = SocketClaim::acquire(&socket, &data).unwrap();
        let listener = claim.bind().unwrap();
        // Someone else's socket now sits at the path.
        std::fs::remove_file(&socket).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        drop(listener);
        drop(claim);
        assert!(socket.exists(), "another socket at the path is left alone");
        let record = LockFile::read_owner(&socket_lock_path(&socket)).unwrap();
        assert_eq!(record.data_dir, std::path::absolute(&data).unwrap());
    }
}
