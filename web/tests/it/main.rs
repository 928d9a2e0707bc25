//! Integration tests of the dashboard: the real daemon in-process (testkit's test daemon), the
//! real web server on `127.0.0.1:0`, and requests over loopback. One test binary, one module
//! per area.

mod api;
mod browser;
mod codes;
mod daemon_ui;
mod endpoints;
mod events;
mod security;
mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mdl_web::{AppState, Dashboard, WebConfig};
use testkit::daemon::TestDaemon;
use tokio_util::sync::CancellationToken;

/// A test daemon with a dashboard in front of it.
pub struct Web {
    /// The daemon.
    pub daemon: TestDaemon,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The long-lived token (from the token file).
    pub token: String,
    /// The server's state (mints launch links).
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
}

impl Web {
    /// A fresh daemon and dashboard.
    pub async fn start() -> Web {
        Self::with_daemon(TestDaemon::start().await).await
    }

    /// A dashboard in front of `daemon`.
    pub async fn with_daemon(daemon: TestDaemon) -> Web {
        let mut config = WebConfig::new(daemon.socket.clone(), daemon.data_dir.clone());
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let dashboard = Dashboard::bind(config).await.expect("bind the dashboard");
        let addr = dashboard.local_addrs()[0];
        let base = dashboard.base_url().to_string();
        let token = std::fs::read_to_string(mdl_web::token_path(&daemon.data_dir))
            .unwrap()
            .trim()
            .to_string();
        let state = dashboard.state();
        let shutdown = CancellationToken::new();
        tokio::spawn(dashboard.serve(shutdown.clone()));
        Web {
            daemon,
            base,
            addr,
            token,
            state,
            shutdown,
        }
    }

    /// A new one-time launch link.
    pub fn launch(&self) -> String {
        self.state.launch_url()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An HTTP client that never follows redirects.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// An authenticated GET.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// An authenticated POST with a JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http()
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
