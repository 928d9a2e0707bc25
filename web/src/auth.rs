//! Who may talk to the dashboard, and the checks every request passes first.
//!
//! * **The token.** A random 256-bit token in `<data dir>/web-token` (mode 0600, in the 0700
//!   data directory): `Authorization: Bearer <token>` authenticates scripts and web backends.
//! * **Launch links.** [`Auth::mint_launch`] makes a one-time token, good for
//!   [`LAUNCH_TTL`]; `GET /login?t=<it>` spends it and sets the session cookie
//!   (`HttpOnly; SameSite=Strict`), so the browser never sees the long-lived token and a link
//!   left in a terminal's scrollback is useless once opened.
//! * **DNS rebinding.** A `Host` header that is not a loopback name or address (or an address
//!   the server was explicitly told to listen on) is refused with 403 before anything else.
//! * **CSRF.** A state-changing request (anything but GET / HEAD) whose `Origin` is not the
//!   dashboard's own, or which a browser marks as cross-site, is refused with 403; a
//!   cookie-authenticated one must carry the dashboard's `Origin`.
//! * **Headers.** Every response carries a strict `Content-Security-Policy` (scripts and styles
//!   from the dashboard only, `frame-ancestors 'none'`), `X-Frame-Options: DENY`, `nosniff`,
//!   `Referrer-Policy: no-referrer` and `Cache-Control: no-store`; no CORS header is ever sent.
//!
//! The sessions and pending launch tokens kept here are the only state of the web crate; they
//! are credentials, not download state, and vanish with the process.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use crate::error::ApiError;
use crate::AppState;

/// The token file's name inside the data directory.
pub const TOKEN_FILE: &str = "web-token";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "mdl_session";

/// How long a launch link stays valid.
pub const LAUNCH_TTL: Duration = Duration::from_secs(600);

/// At most this many sessions are kept; the oldest is forgotten first.
const MAX_SESSIONS: usize = 256;

/// The `Content-Security-Policy` of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The path of the token file in `data_dir`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// 32 random bytes from the OS, as 64 hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Read the dashboard's token from `data_dir`, creating it (mode 0600) when missing or empty.
/// A file readable by others has its mode tightened.
pub fn load_or_create_token(data_dir: &Path) -> io::Result<String> {
    #[cfg(unix)]
    mdl_protocol::endpoint::ensure_private_dir(data_dir)?;
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir)?;
    let path = token_path(data_dir);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if file.metadata()?.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                }
            }
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            let token = text.trim();
            if token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Ok(token.to_string());
            }
            // Empty or damaged: write a new one below.
            drop(file);
            std::fs::remove_file(&path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = random_hex();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// The dashboard's credentials: the long-lived token, pending launch tokens and sessions.
pub struct Auth {
    token: String,
    launch: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<(HashSet<String>, Vec<String>)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(***)")
    }
}

impl Auth {
    /// Credentials around the long-lived `token`.
    pub fn new(token: String) -> Self {
        Auth {
            token,
            launch: Mutex::new(HashMap::new()),
            sessions: Mutex::new((HashSet::new(), Vec::new())),
        }
    }

    /// A new one-time launch token, valid for [`LAUNCH_TTL`].
    pub fn mint_launch(&self) -> String {
        let token = random_hex();
        let mut launch = self.launch.lock().expect("launch tokens");
        let now = Instant::now();
        launch.retain(|_, expires| *expires > now);
        launch.insert(token.clone(), now + LAUNCH_TTL);
        token
    }

    /// Spend a launch token: a new session id when it was pending and fresh.
    pub fn redeem_launch(&self, candidate: &str) -> Option<String> {
        let expires = self
            .launch
            .lock()
            .expect("launch tokens")
            .remove(candidate)?;
        if expires < Instant::now() {
            return None;
        }
        let session = random_hex();
        let mut guard = self.sessions.lock().expect("sessions");
        let (set, order) = &mut *guard;
        if order.len() >= MAX_SESSIONS {
            let oldest = order.remove(0);
            set.remove(&oldest);
        }
        set.insert(session.clone());
        order.push(session.clone());
        Some(session)
    }

    /// How a request authenticates, if it does.
    pub fn check(&self, headers: &HeaderMap) -> Option<Via> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().ok()?;
            let given = value.strip_prefix("Bearer ")?.trim();
            return constant_time_eq(given.as_bytes(), self.token.as_bytes())
                .then_some(Via::Bearer);
        }
        let session = session_cookie(headers)?;
        let guard = self.sessions.lock().expect("sessions");
        guard.0.contains(&session).then_some(Via::Cookie)
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The session cookie.
    Cookie,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// The `Set-Cookie` value for a new session.
pub fn session_set_cookie(session: &str) -> String {
    format!("{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/")
}

/// The host part of a `Host` header (`name`, `1.2.3.4`, `[::1]`, each with an optional port).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// True when `host` (a `Host` header) names this machine's loopback interface, or one of the
/// addresses the server was explicitly told to listen on.
pub fn host_allowed(host: &str, extra: &[IpAddr]) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || extra.contains(&ip),
        Err(_) => false,
    }
}

/// The layer every request passes: Host, then Origin, then credentials; and the security
/// headers on every response, refusals included.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = match check_request(&state, &request) {
        Ok(()) => next.run(request).await,
        // A person who opens the page without a session learns how to get one.
        Err(err) if err.kind == "unauthenticated" && !request.uri().path().starts_with("/api/") => {
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                crate::assets::SIGN_IN_HTML,
            )
                .into_response()
        }
        Err(err) => err.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn check_request(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    // 1. DNS rebinding: the name the browser used must be ours.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &state.extra_hosts) {
        return Err(ApiError::forbidden(format!(
            "the Host header {host:?} is not a loopback name or address; the dashboard answers \
             only to localhost, 127.0.0.1 and [::1] (protection against DNS rebinding)"
        )));
    }
    // 2. CSRF: a state-changing request must come from the dashboard's own page.
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !safe {
        if let Some(origin) = origin {
            let ours = format!("http://{host}");
            if !origin.eq_ignore_ascii_case(&ours) {
                return Err(ApiError::forbidden(format!(
                    "a request from {origin} may not change anything here; only the \
                     dashboard's own page ({ours}) may (protection against cross-site requests)"
                )));
            }
        }
        let site = headers
            .get("sec-fetch-site")
            .and_then(|s| s.to_str().ok())
            .unwrap_or("none");
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::forbidden(format!(
                "the browser marks this request as {site}; only the dashboard's own page may \
                 change anything here (protection against cross-site requests)"
            )));
        }
    }
    // 3. Credentials (the login route spends a launch token instead).
    if request.uri().path() == "/login" {
        return Ok(());
    }
    match state.auth.check(headers) {
        Some(Via::Bearer) => Ok(()),
        Some(Via::Cookie) if safe || origin.is_some() => Ok(()),
        Some(Via::Cookie) => Err(ApiError::forbidden(
            "a state-changing request with the session cookie must carry the dashboard's Origin \
             header (protection against cross-site requests)",
        )),
        None => Err(ApiError::unauthenticated()),
    }
}

/// `GET /login?t=<launch token>`: spend the token, set the session cookie and go to the page.
///
/// The reply is a page that moves on with `<meta http-equiv="refresh">` instead of a redirect,
/// so the next request is a same-site navigation that carries the `SameSite=Strict` cookie even
/// when the link was opened from another application.
pub async fn login(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let given = query.get("t").map(String::as_str).unwrap_or("");
    match state.auth.redeem_launch(given) {
        Some(session) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0; url=/\">\
                 <title>mdl</title><p><a href=\"/\">Open the mdl dashboard</a>",
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&session_set_cookie(&session)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><meta charset=utf-8><title>mdl</title>\
             <h1>This dashboard link was already used or has expired</h1>\
             <p>Run <code>mdlctl ui</code> again for a new link. \
             (此链接已被使用或已过期，请重新运行 <code>mdlctl ui</code> 获取新链接。)</p>",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_only() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
            "app.localhost:3",
        ] {
            assert!(host_allowed(ok, &[]), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:80",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[fe80::1]:80",
        ] {
            assert!(!host_allowed(bad, &[]), "{bad}");
        }
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(host_allowed("192.168.1.5:8080", &[lan]));
    }

    #[test]
    fn launch_tokens_are_one_time() {
        let auth = Auth::new("t".repeat(64));
        let launch = auth.mint_launch();
        let session = auth.redeem_launch(&launch).expect("first use");
        assert!(auth.redeem_launch(&launch).is_none(), "second use");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("a=b; {SESSION_COOKIE}={session}").parse().unwrap(),
        );
        assert_eq!(auth.check(&headers), Some(Via::Cookie));
        headers.insert(header::COOKIE, "mdl_session=nope".parse().unwrap());
        assert_eq!(auth.check(&headers), None);
    }

    #[cfg(unix)]
    #[test]
    fn token_file_is_owner_only_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_create_token(&data).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(&data))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&data).unwrap(), first);
    }
}
