//! `mdld`, the mdl download daemon, as a library: [`run`] is the whole daemon, so tests run it
//! in-process on a temporary socket and data directory.
//!
//! # A tour
//! * [`server`] accepts connections on the per-user socket, checks the version handshake, and
//!   forwards each request to the scheduler (or streams events to a subscriber).
//! * [`scheduler`] owns all mutable state: the sled [`store`] (jobs, files with their byte-range
//!   maps, the priority queue) and the set of running jobs. [`handlers`] implement the requests
//!   on that state.
//! * [`runner`] runs one job: [`sources`] resolve it into files, the [`engine`] fetches each
//!   file (Range resume, retries, hashing while writing, durable checkpoints) and
//!   [`engine::finalize`] verifies and renames it into place.
//! * [`settings`] is the one settings tree; [`ranges`] the byte-range sets.
//! * [`watch`] watches the disk: the drop folder, completed files, the config file.

pub mod engine;
pub mod handlers;
pub mod job;
pub mod layout;
pub mod memory;
pub mod ranges;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod settings;
pub mod sources;
pub mod store;
pub mod watch;

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mdl_protocol::endpoint::{self, LocalListener, LockFile, Owner, SocketClaim};
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// The lock file in the data directory that a daemon holds while it uses the store; it
/// records the daemon's pid and socket, so a second daemon can say who is in the way.
pub const DATA_LOCK_FILE: &str = "mdld.lock";

/// How long a starting daemon waits for a lock whose holder does not answer: that daemon is
/// most likely still checkpointing on its way out (bounded by `shutdown_grace`).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Run the daemon until `shutdown` is cancelled (by a signal, a shutdown request, or a test),
/// then checkpoint every running download, flush the store and return.
///
/// Start-up takes the data directory's lock and opens the store before it touches the socket,
/// so a daemon that cannot have the store never removes anyone's socket; it then claims the
/// socket ([`SocketClaim`]), treats a socket file as stale only when a connect fails, and
/// binds. At the end the store is closed first, then the socket is unlinked (if it is still
/// the one this daemon bound), then the locks are released: whoever gets the lock next finds
/// the store free.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    prepare_data_dir(&settings)?;
    // Locals drop in reverse order: the socket claim (unlinking the socket) before this lock.
    let _data_lock = lock_data_dir(&settings).await?;

    let settings = std::sync::Arc::new(settings);
    let engine =
        engine::Engine::new(settings.engine.clone()).context("cannot set up the HTTP client")?;
    let (scheduler, runner_rx) =
        scheduler::Scheduler::open(settings.clone(), engine.clone(), shutdown.clone())
            .context("cannot open the store")?;
    let (_socket_claim, listener) = claim_socket(&settings).await?;
    tracing::info!(socket = %settings.socket.display(), data_dir = %settings.data_dir.display(), "mdld ready");

    let (handle, mut scheduler_task) = scheduler.spawn(runner_rx);
    let dashboard = start_dashboard(&settings, &shutdown).await;
    let services = handlers::Services {
        scheduler: handle,
        engine,
        settings: std::sync::Arc::new(settings::Live::new((*settings).clone())),
        shutdown: shutdown.clone(),
    };
    let watchers = watch::spawn(services.clone());
    let server = server::serve(listener, services);
    tokio::pin!(server);
    // The scheduler owns every job: if its task dies, the daemon must not live on as a zombie
    // that answers "shutting down" forever. Stop serving and fail, so the next `mdlctl` starts
    // a fresh daemon.
    tokio::select! {
        () = &mut server => {}
        ended = &mut scheduler_task => {
            shutdown.cancel();
            server.await;
            return match ended {
                Err(e) if e.is_panic() => Err(anyhow::anyhow!("the scheduler task panicked: {e}")),
                Err(e) => Err(anyhow::anyhow!("the scheduler task failed: {e}")),
                Ok(()) if shutdown.is_cancelled() => Ok(()),
                Ok(()) => Err(anyhow::anyhow!("the scheduler stopped unexpectedly")),
            };
        }
    }
    scheduler_task.await.context("the scheduler task failed")?;
    watchers.stop().await;
    if let Some(task) = dashboard {
        let _ = task.await;
    }
    tracing::info!("mdld stopped");
    Ok(())
}

/// With `[ui] enabled`, serve the dashboard ([`mdl_web`], a client of our own socket) until
/// `shutdown`. A dashboard that cannot start is logged and the daemon runs without it.
async fn start_dashboard(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !settings.ui.enabled {
        return None;
    }
    let config = mdl_web::WebConfig {
        listen: settings.ui.listen.clone(),
        socket: settings.socket.clone(),
        data_dir: settings.data_dir.clone(),
    };
    match mdl_web::Dashboard::bind(config).await {
        Ok(dashboard) => {
            // The sign-in link is a credential: `mdlctl ui` asks the dashboard for one.
            tracing::info!(url = %dashboard.base_url(), "dashboard ready; `mdlctl ui` opens it");
            let shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = dashboard.serve(shutdown).await {
                    tracing::warn!("the dashboard stopped: {e}");
                }
            }))
        }
        Err(e) => {
            tracing::warn!("not serving the dashboard: {e}");
            None
        }
    }
}

/// Create the data directory (0700) or check an existing one (ours, not writable by others),
/// and make the store's own directory owner-only.
fn prepare_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let data_dir = &settings.data_dir;
    #[cfg(unix)]
    endpoint::ensure_private_dir(data_dir)
        .with_context(|| format!("cannot use the data directory {}", data_dir.display()))?;
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir)?;
    let store_dir = settings.store_dir();
    private_store_dir(&store_dir)
        .with_context(|| format!("cannot use the store directory {}", store_dir.display()))
}

/// The store holds tokens and signed URLs, and sled creates its files with the default umask:
/// its directory is created 0700, and an existing one (mdl's own, inside a checked data
/// directory; older versions left it 0755) is tightened to 0700.
#[cfg(unix)]
fn private_store_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return std::fs::DirBuilder::new().mode(0o700).create(dir);
        }
        meta => meta?,
    };
    if !meta.is_dir() || meta.uid() != rustix::process::getuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a directory of yours (a symlink, a file, or owned by another user)",
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_store_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Take the data directory's lock ([`DATA_LOCK_FILE`]), waiting a little for a daemon that is
/// shutting down; refuse clearly when another daemon uses the directory.
async fn lock_data_dir(settings: &Settings) -> anyhow::Result<LockFile> {
    let path = settings.data_dir.join(DATA_LOCK_FILE);
    let owner = Owner::this_process(&settings.socket, &settings.data_dir);
    wait_for_lock(&path, &settings.socket, || LockFile::acquire(&path, &owner))
        .await
        .map_err(|wait| {
            let what = format!("the data directory {}", settings.data_dir.display());
            wait.into_error(&settings.socket, &what, &path)
        })
}

/// Claim the socket, remove a stale socket file (one nobody answers on) and bind.
async fn claim_socket(settings: &Settings) -> anyhow::Result<(SocketClaim, LocalListener)> {
    let socket = &settings.socket;
    let lock_path = endpoint::socket_lock_path(socket);
    let mut claim = wait_for_lock(&lock_path, socket, || {
        SocketClaim::acquire(socket, &settings.data_dir)
    })
    .await
    .map_err(|wait| {
        wait.into_error(
            socket,
            &format!("the socket {}", socket.display()),
            &lock_path,
        )
    })?;
    // With the claim held, only a daemon of an older mdl (one without claims) can answer here.
    if endpoint::connect(socket).await.is_ok() {
        bail!(
            "another mdld is already running on {} (stop it with `mdlctl daemon stop`)",
            socket.display()
        );
    }
    endpoint::remove_stale_socket(socket)
        .with_context(|| format!("cannot remove the stale socket {}", socket.display()))?;
    let listener = claim
        .bind()
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    Ok((claim, listener))
}

/// Why a lock could not be taken.
enum LockWait {
    /// A daemon answers: on our socket, or on the socket recorded by the lock's holder.
    Answering {
        socket: std::path::PathBuf,
        pid: Option<u32>,
    },
    /// The holder did not let go within [`LOCK_WAIT`] and answers nowhere.
    Held(Option<Owner>),
    /// Taking it failed for another reason (permissions, a bad directory).
    Failed(io::Error),
}

impl LockWait {
    /// The error for the user: who is in the way and how to get rid of them.
    fn into_error(self, socket: &Path, what: &str, lock_path: &Path) -> anyhow::Error {
        match self {
            LockWait::Answering {
                socket: theirs,
                pid,
            } => {
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                if theirs == socket {
                    anyhow::anyhow!(
                        "another mdld{pid} is already running on {} (stop it with `mdlctl \
                         daemon stop`)",
                        socket.display()
                    )
                } else {
                    anyhow::anyhow!(
                        "another mdld{pid} is already running with {what}, on {} (stop it \
                         with `mdlctl --socket {} daemon stop`)",
                        theirs.display(),
                        theirs.display()
                    )
                }
            }
            LockWait::Held(Some(owner)) => anyhow::anyhow!(
                "another mdld (pid {}, socket {}) is using {what} and did not answer or exit \
                 within {} s; stop it (`kill {}`) and start again",
                owner.pid,
                owner.socket.display(),
                LOCK_WAIT.as_secs(),
                owner.pid
            ),
            LockWait::Held(None) => anyhow::anyhow!(
                "another process holds {} (the lock on {what}) and did not let go within {} s",
                lock_path.display(),
                LOCK_WAIT.as_secs()
            ),
            LockWait::Failed(e) => anyhow::Error::new(e).context(format!("cannot use {what}")),
        }
    }
}

/// Try `take` until it gets the lock at `lock_path`. While the lock is held, stop early when a
/// daemon answers on `socket` or on the holder's socket; give up after [`LOCK_WAIT`].
async fn wait_for_lock<T>(
    lock_path: &Path,
    socket: &Path,
    mut take: impl FnMut() -> io::Result<T>,
) -> Result<T, LockWait> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match take() {
            Ok(taken) => return Ok(taken),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(LockWait::Failed(e)),
        }
        let owner = LockFile::read_owner(lock_path);
        let mut probes = vec![socket.to_path_buf()];
        let ours = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
        probes.extend(
            owner
                .as_ref()
                .map(|o| o.socket.clone())
                .filter(|theirs| *theirs != ours),
        );
        for probe in probes {
            if endpoint::connect(&probe).await.is_ok() {
                let pid = owner.as_ref().map(|o| o.pid);
                return Err(LockWait::Answering { socket: probe, pid });
            }
        }
        if Instant::now() >= deadline {
            return Err(LockWait::Held(owner));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
