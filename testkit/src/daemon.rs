//! The test daemon helper: runs the real daemon ([`mdld::run`]) in-process on a unique temporary
//! socket and data directory, with fast retry settings, and gives tests a connected client and
//! poll-until helpers (no sleeps).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mdl_protocol::{Client, JobId, JobInfo, JobState};
use mdld::Settings;
use tokio_util::sync::CancellationToken;

/// A daemon running inside the test process.
pub struct TestDaemon {
    /// The socket it listens on.
    pub socket: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// A scratch directory for downloads.
    pub downloads: PathBuf,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    settings: Settings,
    _dir: Option<tempfile::TempDir>,
}

/// Settings for tests: fast retries, short stall timeout, small checkpoints, in `dir`.
pub fn test_settings(dir: &Path) -> Settings {
    let mut settings = Settings::new(dir.join("run/mdld.sock"), dir.join("data"));
    settings.download_dir = dir.join("downloads");
    settings.heartbeat_interval = Duration::from_millis(500);
    settings.progress_interval = Duration::from_millis(50);
    settings.engine.backoff_base = Duration::from_millis(20);
    settings.engine.backoff_max = Duration::from_millis(200);
    settings.engine.stall_timeout = Duration::from_secs(2);
    settings.engine.checkpoint_bytes = 1024 * 1024;
    settings.engine.checkpoint_interval = Duration::from_millis(200);
    settings.engine.max_attempts = 5;
    settings
}

impl TestDaemon {
    /// Start a daemon with [`test_settings`] in a fresh temporary directory.
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    /// Start a daemon with [`test_settings`] changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(dir.path());
        adjust(&mut settings);
        let mut daemon = Self::start_settings(settings).await;
        daemon._dir = Some(dir);
        daemon
    }

    /// Start a daemon with exactly these settings (e.g. to restart on the same data dir).
    pub async fn start_settings(settings: Settings) -> TestDaemon {
        std::fs::create_dir_all(&settings.download_dir).expect("download dir");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(mdld::run(settings.clone(), shutdown.clone()));
        let daemon = TestDaemon {
            socket: settings.socket.clone(),
            data_dir: settings.data_dir.clone(),
            downloads: settings.download_dir.clone(),
            shutdown,
            task: Some(task),
            settings,
            _dir: None,
        };
        poll_until(Duration::from_secs(10), || async {
            daemon.try_client().await.is_some()
        })
        .await;
        daemon
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn try_client(&self) -> Option<Client> {
        Client::connect(&self.socket, "testkit").await.ok()
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.socket, "testkit")
            .await
            .expect("connect to the test daemon")
    }

    /// Stop the daemon gracefully and wait for `run` to return; keeps the temp dir alive so it
    /// can be restarted with [`TestDaemon::restart`].
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("daemon task").expect("daemon run");
        }
    }

    /// Stop and start again on the same socket and data directory.
    pub async fn restart(mut self) -> TestDaemon {
        self.stop().await;
        let dir = self._dir.take();
        let mut daemon = Self::start_settings(self.settings.clone()).await;
        daemon._dir = dir;
        daemon
    }

    /// Poll the job until `done` holds (or panic after `timeout`, showing the job).
    pub async fn wait_job(
        &self,
        id: JobId,
        timeout: Duration,
        done: impl Fn(&JobInfo) -> bool,
    ) -> JobInfo {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut client = self.client().await;
        loop {
            let job = client.status(id).await.expect("status");
            if done(&job) {
                return job;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for job {id}: {job:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the job is finished (completed, failed or cancelled).
    pub async fn wait_finished(&self, id: JobId) -> JobInfo {
        self.wait_job(id, Duration::from_secs(60), |j| j.state.is_finished())
            .await
    }

    /// Wait until the job reaches `state`.
    pub async fn wait_state(&self, id: JobId, state: JobState) -> JobInfo {
        self.wait_job(id, Duration::from_secs(60), |j| j.state == state)
            .await
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Poll `check` every 20 ms until it returns true; panic after `timeout`.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
