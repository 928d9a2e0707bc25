//! `mdl-web`: the dashboard. A loopback HTTP API, a server-sent-events stream and an embedded
//! web page, all of it a thin adapter over the protocol's `Request` / `Response` / `Event`.
//!
//! Every API request opens a connection to mdld's socket ([`mdl_protocol::Client`]), sends one
//! protocol request and turns the reply into JSON (the same job objects as `mdlctl --json ls`);
//! every event stream reads a feed: one subscribed connection, numbered and kept in a bounded
//! buffer so that a reconnect gets exactly what it missed ([`events`]). Nothing else about
//! jobs is kept here: the daemon owns all state, so the dashboard can be restarted, or run
//! twice, without losing anything.
//!
//! * [`auth`]: the token file, launch links, session cookies, Host / Origin checks, headers;
//! * [`api`]: the JSON routes under `/api/v1`;
//! * [`events`]: `GET /api/v1/events` as `text/event-stream`;
//! * [`assets`]: the page (HTML, CSS, JavaScript, English and Simplified Chinese), compiled in;
//! * [`error`]: errors as `{kind, message, hint}` with fitting status codes;
//! * [`launch`]: asking a dashboard that already runs for a new launch link.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mdl_web::WebError> {
//! let config = mdl_web::WebConfig::new("/run/user/1000/mdl/mdld.sock".into(), "/home/me/.local/share/mdl".into());
//! let dashboard = mdl_web::Dashboard::bind(config).await?;
//! println!("{}", dashboard.launch_url());
//! dashboard.serve(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod assets;
pub mod auth;
pub mod error;
pub mod events;
pub mod launch;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use mdl_protocol::Client;
use tokio_util::sync::CancellationToken;

pub use auth::{load_or_create_token, token_path, Auth, TOKEN_FILE};
pub use error::ApiError;

/// The port the dashboard listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7386;

/// The version string the dashboard sends in the protocol handshake.
pub const CLIENT_VERSION: &str = concat!("mdl-web/", env!("CARGO_PKG_VERSION"));

/// Where the dashboard listens and which daemon it talks to.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The addresses to listen on (default: 127.0.0.1 and ::1 on [`DEFAULT_PORT`]).
    pub listen: Vec<SocketAddr>,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// mdl's data directory, where the token file lives.
    pub data_dir: PathBuf,
}

impl WebConfig {
    /// The default addresses, for the daemon at `socket` with data directory `data_dir`.
    pub fn new(socket: PathBuf, data_dir: PathBuf) -> Self {
        WebConfig {
            listen: default_listen(DEFAULT_PORT),
            socket,
            data_dir,
        }
    }
}

/// 127.0.0.1 and ::1 on `port`.
pub fn default_listen(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

/// What can go wrong starting the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The token file could not be read or written.
    #[error("cannot read or create the dashboard token {path}: {source}")]
    Token {
        /// The token file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (often: another dashboard already listens there).
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the dashboard server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// What every handler shares: where the daemon is, and the credentials.
#[derive(Debug)]
pub struct AppState {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The dashboard's credentials.
    pub auth: Auth,
    /// Non-loopback addresses the server was explicitly told to listen on (accepted as `Host`).
    pub extra_hosts: Vec<IpAddr>,
    /// The dashboard's own base URL (`http://127.0.0.1:PORT`), for launch links.
    pub base_url: String,
    /// The event feeds and their replay buffers ([`events`]).
    pub feeds: events::Feeds,
}

impl AppState {
    /// A fresh connection to the daemon.
    pub async fn client(&self) -> Result<Client, ApiError> {
        Ok(Client::connect(&self.socket, CLIENT_VERSION).await?)
    }

    /// A launch link with a new one-time token.
    pub fn launch_url(&self) -> String {
        format!("{}/login?t={}", self.base_url, self.auth.mint_launch())
    }
}

/// The dashboard, bound and ready to serve.
pub struct Dashboard {
    listeners: Vec<tokio::net::TcpListener>,
    state: Arc<AppState>,
}

impl Dashboard {
    /// Read (or create) the token and bind every address of `config`. An IPv6 default address
    /// on a machine without IPv6 is skipped; any other bind failure is an error.
    pub async fn bind(config: WebConfig) -> Result<Dashboard, WebError> {
        let token = load_or_create_token(&config.data_dir).map_err(|source| WebError::Token {
            path: token_path(&config.data_dir).display().to_string(),
            source,
        })?;
        let mut listeners = Vec::new();
        let mut port = None;
        for (i, addr) in config.listen.iter().enumerate() {
            // The second default address takes the port the first one got (for port 0).
            let mut addr = *addr;
            if addr.port() == 0 {
                if let Some(port) = port {
                    addr.set_port(port);
                }
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    port.get_or_insert(listener.local_addr()?.port());
                    listeners.push(listener);
                }
                Err(e) if i > 0 && addr.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST) => {
                    tracing::info!("not listening on {addr}: {e}");
                }
                Err(source) => return Err(WebError::Bind { addr, source }),
            }
        }
        let first = listeners[0].local_addr()?;
        let extra_hosts = config
            .listen
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect();
        let base_url = format!("http://{}", url_host(first));
        Ok(Dashboard {
            listeners,
            state: Arc::new(AppState {
                socket: config.socket,
                auth: Auth::new(token),
                extra_hosts,
                base_url,
                feeds: events::Feeds::new(),
            }),
        })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The dashboard's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    /// A launch link with a new one-time token (valid for [`auth::LAUNCH_TTL`]).
    pub fn launch_url(&self) -> String {
        self.state.launch_url()
    }

    /// The shared state, which mints launch links after [`Dashboard::serve`] took `self`.
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serve until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), WebError> {
        let app = router(self.state);
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            let app = app.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            });
        }
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(result) => result?,
                Err(e) => return Err(WebError::Serve(std::io::Error::other(e))),
            }
        }
        Ok(())
    }
}

/// `127.0.0.1:PORT` or `[::1]:PORT`, with an unspecified address shown as loopback.
fn url_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", addr.port()),
        _ => addr.to_string(),
    }
}

/// The whole application: page, login, API and events, behind the security layer.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/login", get(auth::login))
        .nest("/api/v1", api::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}
