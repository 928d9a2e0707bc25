//! Config reload: when the config file changes (a `notify` event on its directory, so an
//! editor's save-by-rename counts too) or the daemon gets SIGHUP, the file is read again and
//! the keys that can change at runtime apply at once (see [`Settings::reload`] for the list).
//! An unreadable or invalid file changes nothing: the reason is logged and shown by `mdlctl
//! daemon status` until a valid edit.
//!
//! Where the settings live: the handlers' `Settings` and the engine's `EngineSettings` are
//! each one [`crate::settings::Live`] value, swapped whole here and nowhere else; the
//! concurrency and the bandwidth limit go through the scheduler
//! ([`crate::scheduler::Scheduler::apply_file_values`]: a value set with `mdlctl` wins until
//! the file changes that key), and so do the hub endpoints
//! ([`crate::scheduler::Scheduler::apply_hub_endpoints`]); the drop folder and the integrity watcher follow a
//! `tokio::sync::watch` channel of the settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::disk::DiskWatcher;
use crate::handlers::Services;
use crate::job::now_ms;
use crate::settings::Settings;

/// Read the config file again and apply it; returns whether it was valid.
pub async fn apply(services: &Services, tx: &watch::Sender<Arc<Settings>>) -> bool {
    let current = services.settings.get();
    let next = match tokio::task::spawn_blocking(move || current.reload()).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!("config reload failed: {e}");
            return false;
        }
    };
    match next {
        Ok(next) => {
            // The hub endpoints in force are the scheduler's to put in place (the file's, with
            // the lists set at runtime over them), below: until then the ones in force stay.
            let mut engine = next.engine.clone();
            engine.sources = services.engine.settings().sources.clone();
            services.engine.reload(&engine);
            services.settings.set(next.clone());
            let values = next.from_file.clone();
            let base = next.engine.sources.clone();
            let applied = services
                .call(move |s| {
                    let applied = s.apply_file_values(&values)?;
                    s.apply_hub_endpoints(&base)?;
                    s.report_watch(|w| {
                        w.config_loaded_ms = Some(now_ms());
                        w.config_error = None;
                        w.repair = next.repair.as_str().to_string();
                    });
                    Ok(applied)
                })
                .await
                .unwrap_or_default();
            tracing::info!(changed = ?applied, "config reloaded");
            let _ = tx.send(services.settings.get());
            true
        }
        Err(e) => {
            tracing::warn!("config not reloaded, the previous settings stay: {e}");
            let message = e.to_string();
            let _ = services
                .call(move |s| {
                    s.report_watch(|w| w.config_error = Some(message));
                    Ok(())
                })
                .await;
            false
        }
    }
}

/// Watch the config file (and SIGHUP) until `shutdown`.
pub async fn run(
    services: Services,
    tx: watch::Sender<Arc<Settings>>,
    shutdown: CancellationToken,
) {
    let settings = services.settings.get();
    let shown = settings
        .config_file
        .as_ref()
        .map(|p| p.display().to_string());
    let repair = settings.repair.as_str().to_string();
    let _ = services
        .call(move |s| {
            s.report_watch(|w| {
                w.config_file = shown;
                w.config_loaded_ms = Some(now_ms());
                w.repair = repair;
            });
            Ok(())
        })
        .await;
    let file: Option<PathBuf> = settings.config_file.clone();
    let (mut disk, mut changes) = DiskWatcher::new(
        Duration::from_millis(300),
        settings.poll_interval,
        settings.force_poll,
    );
    if let Some(dir) = file.as_ref().and_then(|f| f.parent()) {
        if let Err(e) = disk.watch(dir) {
            tracing::warn!(dir = %dir.display(), "cannot watch the config file's directory ({e}); SIGHUP still reloads");
        }
    }
    let mut hangups = hangups();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(batch) = changes.recv() => {
                let ours = batch.iter().any(|c| c.paths.iter().any(|p| Some(p) == file.as_ref()));
                if ours {
                    apply(&services, &tx).await;
                }
            }
            Some(()) = hangups.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                apply(&services, &tx).await;
            }
        }
    }
}

/// SIGHUP, as a channel (never fires where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                use futures::StreamExt;
                while signals.next().await.is_some() {
                    if tx.send(()).await.is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
