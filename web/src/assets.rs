//! The page, compiled into the binary: nothing is fetched from the internet, so the dashboard
//! works offline. Plain HTML, CSS and JavaScript (English and Simplified Chinese, picked from
//! the browser's language, with a switch).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The page itself.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Every other asset: name, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../assets/icon.svg"),
    ),
];

/// `GET /`.
pub async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset {name:?}"),
        )
        .into_response(),
    }
}

/// The page a browser gets without a session: how to get one (401).
pub const SIGN_IN_HTML: &str = "<!doctype html><meta charset=utf-8><title>mdl</title>\
<h1>Open the mdl dashboard from its link</h1>\
<p>Run <code>mdlctl ui</code> and open the link it prints (it signs this browser in).</p>\
<p>请运行 <code>mdlctl ui</code> 并打开它显示的链接（用于登录此浏览器）。</p>";
