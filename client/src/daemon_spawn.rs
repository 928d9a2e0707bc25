//! Starting `mdld` on demand when no daemon answers on the socket.
//!
//! Which binary: [`DAEMON_BIN_ENV`] (`MDL_DAEMON_BIN`) when set (an explicit override, used by
//! tests and unusual installs), else the `mdld` beside mdlctl's own executable, else `mdld` on
//! `PATH`. The daemon runs detached in its own process group with stdin closed and its output
//! appended to `mdld.log` in the data directory ([`data_dir`]); mdlctl then polls the socket for
//! up to [`START_TIMEOUT`]. Every failure here is [`ErrorKind::Unreachable`] (exit 9) and names
//! the paths involved.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use mdl_protocol::{Client, ClientError, ErrorKind};

use crate::exit::Failure;

/// Environment variable naming the daemon binary to start, overriding the lookup.
pub const DAEMON_BIN_ENV: &str = "MDL_DAEMON_BIN";

/// Environment variable naming mdl's data directory (where `mdld.log` goes).
pub const DATA_DIR_ENV: &str = "MDL_DATA_DIR";

/// The daemon binary's file name.
pub const DAEMON_NAME: &str = "mdld";

/// The log file the started daemon writes to, inside the data directory.
pub const LOG_FILE_NAME: &str = "mdld.log";

/// How long to wait for a started daemon to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to poll the socket while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The version string this client sends in the handshake.
pub const CLIENT_VERSION: &str = concat!("mdlctl/", env!("CARGO_PKG_VERSION"));

/// True when a connect error means "nobody listens there" (no socket file, or a stale one),
/// the only case in which starting a daemon can help.
pub fn is_absent(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Connect { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
    )
}

/// mdl's data directory: `$MDL_DATA_DIR`, else `$XDG_DATA_HOME/mdl`, else
/// `~/.local/share/mdl`. `None` when not even `HOME` is set.
pub fn data_dir() -> Option<PathBuf> {
    data_dir_from(|name| std::env::var_os(name))
}

/// [`data_dir`] with the environment passed in (for tests).
fn data_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| {
        var(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    var(DATA_DIR_ENV)
        .or_else(|| var("XDG_DATA_HOME").map(|dir| dir.join("mdl")))
        .or_else(|| var("HOME").map(|home| home.join(".local/share/mdl")))
}

/// Find the daemon binary (see the module docs for the order).
pub fn locate_daemon() -> Result<PathBuf, Failure> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    locate_daemon_in(
        std::env::var_os(DAEMON_BIN_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        exe_dir,
        std::env::var_os("PATH"),
    )
}

/// [`locate_daemon`] with its inputs passed in (for tests).
fn locate_daemon_in(
    explicit: Option<PathBuf>,
    exe_dir: Option<PathBuf>,
    path_var: Option<OsString>,
) -> Result<PathBuf, Failure> {
    let not_found = |message: String| {
        Failure::new(ErrorKind::Unreachable, message).with_hint(format!(
            "install mdld beside mdlctl or on PATH, set {DAEMON_BIN_ENV}, or start the daemon \
             yourself (mdld --socket PATH)"
        ))
    };
    if let Some(bin) = explicit {
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(not_found(format!(
                "no daemon answers and cannot start one: {DAEMON_BIN_ENV}={} is not an \
                 executable file",
                bin.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Some(dir) = exe_dir {
        let candidate = dir.join(DAEMON_NAME);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    let path_var = path_var.unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(DAEMON_NAME);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    tried.push(format!(
        "{DAEMON_NAME} on PATH ({})",
        path_var.to_string_lossy()
    ));
    Err(not_found(format!(
        "no daemon answers and cannot start one: mdld not found (looked for {})",
        tried.join(" and ")
    )))
}

/// True for a regular file we may execute.
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// A daemon this call started, connected.
pub struct Started {
    /// A connection to it, past the handshake.
    pub client: Client,
    /// Its process id.
    pub pid: u32,
    /// The binary that was run.
    pub bin: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

/// Start a daemon for `socket` and wait until it answers. `pass_socket`: the socket was chosen
/// explicitly (`--socket` / `MDL_SOCKET`), so tell the daemon too.
///
/// If another mdlctl starts one at the same moment, ours exits (its socket is taken) and we
/// connect to theirs.
pub async fn start(socket: &Path, pass_socket: bool) -> Result<Started> {
    let unreachable = |message: String| Failure::new(ErrorKind::Unreachable, message);
    let bin = locate_daemon()?;
    let dir = data_dir().ok_or_else(|| {
        unreachable(format!(
            "cannot start mdld: no data directory for its log (set {DATA_DIR_ENV} or HOME)"
        ))
    })?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        unreachable(format!(
            "cannot start mdld: cannot create {}: {e}",
            dir.display()
        ))
    })?;
    let log_path = dir.join(LOG_FILE_NAME);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| {
            unreachable(format!(
                "cannot start mdld: cannot open {}: {e}",
                log_path.display()
            ))
        })?;
    // Remember where this run's output starts, to quote it if the daemon dies.
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let mut command = Command::new(&bin);
    if pass_socket {
        command
            .arg("--socket")
            .arg(std::path::absolute(socket).unwrap_or(socket.to_path_buf()));
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C in this terminal must not reach the daemon.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .map_err(|e| unreachable(format!("cannot start {}: {e}", bin.display())))?;
    let pid = child.id();

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match Client::connect(socket, CLIENT_VERSION).await {
            Ok(client) => {
                return Ok(Started {
                    client,
                    pid,
                    bin,
                    log: log_path,
                })
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            // Another daemon may have won a start race; then ours exited and theirs answers.
            if let Ok(client) = Client::connect(socket, CLIENT_VERSION).await {
                return Ok(Started {
                    client,
                    pid,
                    bin,
                    log: log_path,
                });
            }
            let tail = log_tail(&log_path, log_start, 8);
            return Err(unreachable(format!(
                "mdld ({}) exited ({status}) before answering on {}; its output is in {}{}",
                bin.display(),
                socket.display(),
                log_path.display(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(":\n{tail}")
                }
            ))
            .into());
        }
        if Instant::now() >= deadline {
            return Err(unreachable(format!(
                "mdld ({}, pid {pid}) did not answer on {} within {} s; its output is in {}",
                bin.display(),
                socket.display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            ))
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The last `lines` lines written to the log since byte `from`, indented, for an error message.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        if file.seek(SeekFrom::Start(from)).is_ok() {
            // At most 64 KiB: enough for a few lines of a startup failure.
            let _ = file.take(64 * 1024).read_to_string(&mut text);
        }
    }
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..]
        .iter()
        .map(|line| format!("  | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn data_dir_lookup_order() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all = [
            ("MDL_DATA_DIR", "/d"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(data_dir_from(env(&all)), Some(PathBuf::from("/d")));
        assert_eq!(data_dir_from(env(&all[1..])), Some(PathBuf::from("/x/mdl")));
        assert_eq!(
            data_dir_from(env(&all[2..])),
            Some(PathBuf::from("/h/.local/share/mdl"))
        );
        assert_eq!(
            data_dir_from(env(&[("MDL_DATA_DIR", ""), ("HOME", "/h")])),
            Some("/h/.local/share/mdl".into())
        );
        assert_eq!(data_dir_from(env(&[])), None);
    }

    #[test]
    fn daemon_lookup_order() {
        let tmp = tempfile::tempdir().unwrap();
        let beside = tmp.path().join("bin");
        let on_path = tmp.path().join("path");
        std::fs::create_dir_all(&beside).unwrap();
        std::fs::create_dir_all(&on_path).unwrap();
        let path_var = Some(OsString::from(&on_path));

        // Nothing anywhere: the error names both places.
        let err = locate_daemon_in(None, Some(beside.clone()), path_var.clone()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreachable);
        assert!(
            err.message
                .contains(&beside.join("mdld").display().to_string()),
            "{}",
            err.message
        );
        assert!(
            err.message.contains(&on_path.display().to_string()),
            "{}",
            err.message
        );

        make_executable(&on_path.join("mdld"));
        assert_eq!(
            locate_daemon_in(None, Some(beside.clone()), path_var.clone()).unwrap(),
            on_path.join("mdld")
        );
        make_executable(&beside.join("mdld"));
        assert_eq!(
            locate_daemon_in(None, Some(beside.clone()), path_var.clone()).unwrap(),
            beside.join("mdld")
        );

        // The override wins, and is not second-guessed when it is wrong.
        let missing = tmp.path().join("nope/mdld");
        let err = locate_daemon_in(Some(missing.clone()), Some(beside), path_var).unwrap_err();
        assert!(
            err.message.contains(&missing.display().to_string()),
            "{}",
            err.message
        );
    }

    #[test]
    fn only_missing_or_refused_sockets_count_as_absent() {
        let connect = |kind: std::io::ErrorKind| ClientError::Connect {
            path: "/s".into(),
            source: kind.into(),
        };
        assert!(is_absent(&connect(std::io::ErrorKind::NotFound)));
        assert!(is_absent(&connect(std::io::ErrorKind::ConnectionRefused)));
        assert!(!is_absent(&connect(std::io::ErrorKind::PermissionDenied)));
        assert!(!is_absent(&ClientError::Incompatible("x".into())));
    }

    #[test]
    fn log_tail_quotes_only_this_run() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("mdld.log");
        std::fs::write(&log, "old run\n").unwrap();
        let start = std::fs::metadata(&log).unwrap().len();
        std::fs::write(&log, "old run\nline 1\n\nline 2\nline 3\n").unwrap();
        assert_eq!(log_tail(&log, start, 2), "  | line 2\n  | line 3");
        assert_eq!(log_tail(&tmp.path().join("missing"), 0, 2), "");
    }
}
