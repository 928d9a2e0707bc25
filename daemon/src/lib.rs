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
pub mod ranges;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod settings;
pub mod sources;
pub mod store;
pub mod watch;

use anyhow::{bail, Context};
use mdl_protocol::endpoint;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

/// Run the daemon until `shutdown` is cancelled (by a signal, a shutdown request, or a test),
/// then checkpoint every running download, flush the store and return.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    endpoint::ensure_private_dir(&settings.data_dir).with_context(|| {
        format!(
            "cannot use the data directory {}",
            settings.data_dir.display()
        )
    })?;
    #[cfg(not(unix))]
    std::fs::create_dir_all(&settings.data_dir)?;

    if endpoint::connect(&settings.socket).await.is_ok() {
        bail!(
            "another mdld is already running on {} (stop it with `mdlctl daemon stop`)",
            settings.socket.display()
        );
    }
    endpoint::remove_stale_socket(&settings.socket).with_context(|| {
        format!(
            "cannot remove the stale socket {}",
            settings.socket.display()
        )
    })?;

    let settings = std::sync::Arc::new(settings);
    let engine =
        engine::Engine::new(settings.engine.clone()).context("cannot set up the HTTP client")?;
    let (scheduler, runner_rx) =
        scheduler::Scheduler::open(settings.clone(), engine.clone(), shutdown.clone())
            .context("another mdld may be using this data directory")?;
    let listener = endpoint::bind(&settings.socket)
        .with_context(|| format!("cannot listen on {}", settings.socket.display()))?;
    tracing::info!(socket = %settings.socket.display(), data_dir = %settings.data_dir.display(), "mdld ready");

    let (handle, mut scheduler_task) = scheduler.spawn(runner_rx);
    let services = handlers::Services {
        scheduler: handle,
        engine,
        settings: std::sync::Arc::new(settings::Live::new((*settings).clone())),
        shutdown: shutdown.clone(),
    };
    let watchers = watch::spawn(services.clone());
    let server = server::serve(listener, services, settings.heartbeat_interval);
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
    tracing::info!("mdld stopped");
    Ok(())
}
