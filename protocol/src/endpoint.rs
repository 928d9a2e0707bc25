//! Where the daemon listens, and how both sides bind and connect.
//!
//! On Unix the endpoint is a socket file, by default `$XDG_RUNTIME_DIR/mdl/mdld.sock`. Where
//! `XDG_RUNTIME_DIR` is not set (macOS, containers, ssh sessions without logind) it is
//! `$TMPDIR/mdl-$UID/mdld.sock` (`/tmp` when `TMPDIR` is unset). The directory is created with
//! mode 0700 and must be owned by the current user; the socket itself is created with mode 0600,
//! so only its owner can connect. On Windows it is the named pipe `\\.\pipe\mdl-<user>`.
//! [`SOCKET_ENV`] (`MDL_SOCKET`) or the command line's `--socket` override the default.

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

/// Bind the endpoint for the daemon: create the private directory (0700, owned by us), and the
/// socket with mode 0600. The caller must have checked that no daemon answers there and
/// removed a stale socket file ([`remove_stale_socket`]).
pub fn bind(path: &Path) -> io::Result<LocalListener> {
    #[cfg(unix)]
    {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            ensure_private_dir(dir)?;
        }
        ListenerOptions::new()
            .name(name_for(path)?)
            .mode(0o600)
            .reclaim_name(true)
            .create_tokio()
    }
    #[cfg(not(unix))]
    {
        ListenerOptions::new().name(name_for(path)?).create_tokio()
    }
}

/// Remove a socket file that no daemon listens on any more (left by a killed daemon).
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

/// Create `dir` with mode 0700 if missing; refuse one owned by another user, and tighten the
/// mode of our own if it is looser.
#[cfg(unix)]
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by you (uid {uid}); refusing to put the socket there",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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
