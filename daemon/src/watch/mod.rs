//! The daemon's eyes on the disk, with `notify` (debounced; polling where events do not
//! arrive, see [`disk`]):
//! * [`dropdir`]: the drop folder (`watch_dir`): request files placed there are queued;
//! * [`integrity`]: completed files that are deleted, truncated or rewritten are marked
//!   `missing` / `modified` (and repaired with `repair = "auto"`); a start-up check in the
//!   background;
//! * [`reload`]: the config file is read again when it changes or on SIGHUP.
//!
//! These sit beside the server: they queue and mark through the handlers and the scheduler's
//! intents, exactly like a client request, so validation and the commit rule stay in one place.

pub mod disk;
pub mod dropdir;
pub mod integrity;
pub mod reload;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handlers::Services;

/// The running watchers.
pub struct Watchers {
    tasks: JoinSet<()>,
}

/// Start the watchers; they stop when `services.shutdown` is cancelled.
pub fn spawn(services: Services) -> Watchers {
    let (tx, rx) = watch::channel(services.settings.get());
    let mut tasks = JoinSet::new();
    let shutdown = services.shutdown.clone();
    tasks.spawn(integrity::run(
        services.clone(),
        rx.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(dropdir::run(services.clone(), rx, shutdown.clone()));
    tasks.spawn(reload::run(services, tx, shutdown));
    Watchers { tasks }
}

impl Watchers {
    /// Wait (briefly) for the watchers to finish after the shutdown, then drop the rest.
    pub async fn stop(mut self) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(2), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}
