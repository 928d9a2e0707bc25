//! Starting `mdld` on demand when no daemon answers on the socket.
//!
//! Which binary: [`DAEMON_BIN_ENV`] (`MDL_DAEMON_BIN`) when set (an explicit override, used by
//! tests and unusual installs), else the `mdld` beside mdlctl's own executable, else `mdld` on
//! `PATH`. The daemon runs detached in its own process group with stdin closed and its output
//! appended to `mdld.log` in the data directory; mdlctl then polls the socket for up to
//! [`START_TIMEOUT`]. Every failure here is [`ErrorKind::Unreachable`] (exit 9) and names the
//! paths involved.
//!
//! Which data directory ([`choose_data_dir`]): a daemon started with the wrong one would show
//! an empty queue and keep the right one from starting later, so mdlctl only starts one where
//! it knows: `MDL_DATA_DIR` when set (the daemon reads it too), else the one recorded beside
//! the socket by the daemon that last served it (passed as `--data-dir`), else, for the
//! default socket only, the default data directory. For any other socket it says how to
//! start the daemon instead.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use mdl_protocol::endpoint::{self, LockFile};
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

/// The data directory an autostarted daemon uses, and how it learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirChoice {
    /// `MDL_DATA_DIR` is set; the daemon reads the same variable.
    Env(PathBuf),
    /// Recorded beside the socket by the daemon that last served it; passed as `--data-dir`.
    Recorded(PathBuf),
    /// The default socket, so the default data directory (the daemon may still take another
    /// one from its config file).
    Default(PathBuf),
}

impl DataDirChoice {
    /// The directory (where the log goes).
    pub fn path(&self) -> &Path {
        match self {
            DataDirChoice::Env(dir)
            | DataDirChoice::Recorded(dir)
            | DataDirChoice::Default(dir) => dir,
        }
    }
}

/// Which data directory a daemon started for `socket` gets (see the module docs), or why
/// none can be started. `socket_explicit`: it came from `--socket` / `MDL_SOCKET`.
pub fn choose_data_dir(socket: &Path, socket_explicit: bool) -> Result<DataDirChoice, Failure> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    choose_data_dir_from(
        socket,
        var(DATA_DIR_ENV).map(PathBuf::from),
        LockFile::read_owner(&endpoint::socket_lock_path(socket)).map(|owner| owner.data_dir),
        !socket_explicit || socket == endpoint::default_socket_path(),
        data_dir_from(|name| {
            if name == DATA_DIR_ENV {
                None
            } else {
                var(name)
            }
        }),
    )
}

/// [`choose_data_dir`] with its inputs passed in (for tests).
fn choose_data_dir_from(
    socket: &Path,
    env: Option<PathBuf>,
    recorded: Option<PathBuf>,
    default_socket: bool,
    default_dir: Option<PathBuf>,
) -> Result<DataDirChoice, Failure> {
    if let Some(dir) = env {
        return Ok(DataDirChoice::Env(dir));
    }
    if let Some(dir) = recorded {
        return Ok(DataDirChoice::Recorded(dir));
    }
    if default_socket {
        return default_dir.map(DataDirChoice::Default).ok_or_else(|| {
            Failure::new(
                ErrorKind::Unreachable,
                format!("cannot start mdld: no data directory for it (set {DATA_DIR_ENV} or HOME)"),
            )
        });
    }
    Err(Failure::new(
        ErrorKind::Unreachable,
        format!(
            "no daemon answers on {} and mdlctl does not know which data directory belongs to \
             that socket, so it starts none (one with the wrong data directory would show an \
             empty queue)",
            socket.display()
        ),
    )
    .with_hint(format!(
        "start it yourself (mdld --socket {} --data-dir DIR), or set {DATA_DIR_ENV}=DIR and \
         mdlctl starts it",
        socket.display()
    )))
}

/// mdl's data directory in the environment `var`: `$MDL_DATA_DIR`, else
/// `$XDG_DATA_HOME/mdl`, else `~/.local/share/mdl`. `None` when not even `HOME` is set.
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
    let data_dir = choose_data_dir(socket, pass_socket)?;
    let bin = locate_daemon()?;
    let log = Log::open(data_dir.path())?;
    let child = spawn_daemon(&bin, socket, pass_socket, &data_dir, &log)?;
    wait_until_answering(socket, child, bin, log).await
}

/// The started daemon's log file, and where this run's output starts in it.
struct Log {
    file: File,
    path: PathBuf,
    start: u64,
}

impl Log {
    /// Create the data directory (owner-only) if needed and open `mdld.log` for appending.
    fn open(dir: &Path) -> Result<Log, Failure> {
        let unreachable = |message: String| Failure::new(ErrorKind::Unreachable, message);
        create_private_dir(dir).map_err(|e| {
            unreachable(format!(
                "cannot start mdld: cannot create {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(LOG_FILE_NAME);
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| {
            unreachable(format!(
                "cannot start mdld: cannot open {}: {e}",
                path.display()
            ))
        })?;
        // Remember where this run's output starts, to quote it if the daemon dies.
        let start = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Log { file, path, start })
    }
}

/// `create_dir_all` with mode 0700 for what it creates (the daemon checks the directory).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Run `bin` detached: its own process group, stdin closed, output into the log.
fn spawn_daemon(
    bin: &Path,
    socket: &Path,
    pass_socket: bool,
    data_dir: &DataDirChoice,
    log: &Log,
) -> Result<Child> {
    let mut command = Command::new(bin);
    if pass_socket {
        command
            .arg("--socket")
            .arg(std::path::absolute(socket).unwrap_or(socket.to_path_buf()));
    }
    if let DataDirChoice::Recorded(dir) = data_dir {
        command.arg("--data-dir").arg(dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.file.try_clone()?)
        .stderr(log.file.try_clone()?);
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C in this terminal must not reach the daemon.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command.spawn().map_err(|e| {
        Failure::new(
            ErrorKind::Unreachable,
            format!("cannot start {}: {e}", bin.display()),
        )
        .into()
    })
}

/// Poll the socket until the started daemon (or one that won a start race) answers; fail
/// when ours exits first (quoting its output) or after [`START_TIMEOUT`].
async fn wait_until_answering(
    socket: &Path,
    mut child: Child,
    bin: PathBuf,
    log: Log,
) -> Result<Started> {
    let pid = child.id();
    let started = |client| Started {
        client,
        pid,
        bin: bin.clone(),
        log: log.path.clone(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match Client::connect(socket, CLIENT_VERSION).await {
            Ok(client) => return Ok(started(client)),
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            // Another daemon may have won a start race; then ours exited and theirs answers.
            if let Ok(client) = Client::connect(socket, CLIENT_VERSION).await {
                return Ok(started(client));
            }
            return Err(exited_early(&bin, socket, &log, status).into());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                ErrorKind::Unreachable,
                format!(
                    "mdld ({}, pid {pid}) did not answer on {} within {} s; its output is in {}",
                    bin.display(),
                    socket.display(),
                    START_TIMEOUT.as_secs(),
                    log.path.display()
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The error for a daemon that exited before answering, with the end of its output.
fn exited_early(bin: &Path, socket: &Path, log: &Log, status: std::process::ExitStatus) -> Failure {
    let tail = log_tail(&log.path, log.start, 8);
    Failure::new(
        ErrorKind::Unreachable,
        format!(
            "mdld ({}) exited ({status}) before answering on {}; its output is in {}{}",
            bin.display(),
            socket.display(),
            log.path.display(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n{tail}")
            }
        ),
    )
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
    fn a_daemon_is_started_only_where_its_data_directory_is_known() {
        let s = Path::new("/run/x.sock");
        let dir = |d: &str| Some(PathBuf::from(d));
        let choose = |env, recorded, default_socket| {
            choose_data_dir_from(
                s,
                env,
                recorded,
                default_socket,
                dir("/home/u/.local/share/mdl"),
            )
        };
        assert_eq!(
            choose(dir("/env"), dir("/rec"), false).unwrap(),
            DataDirChoice::Env("/env".into())
        );
        assert_eq!(
            choose(None, dir("/rec"), true).unwrap(),
            DataDirChoice::Recorded("/rec".into())
        );
        assert_eq!(
            choose(None, None, true).unwrap(),
            DataDirChoice::Default("/home/u/.local/share/mdl".into())
        );
        let err = choose(None, None, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreachable);
        assert!(err.message.contains("/run/x.sock"), "{}", err.message);
        assert!(err.message.contains("does not know"), "{}", err.message);
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
