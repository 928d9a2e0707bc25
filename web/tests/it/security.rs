//! Every refusal of the security layer, and the headers every response carries.

use reqwest::header;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::Web;

/// The session cookie a launch link sets.
async fn session_cookie(web: &Web) -> String {
    let response = web.http().get(web.launch()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    set.split(';').next().unwrap().to_string()
}

async fn error_kind(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["kind"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn refuses_requests_without_credentials() {
    let web = Web::start().await;
    let response = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_kind(response).await, "unauthenticated");
    // The page and its assets too; a person gets an explanation, not JSON.
    let page = web.http().get(web.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(page.text().await.unwrap().contains("mdlctl ui"));
    let asset = web
        .http()
        .get(web.url("/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refuses_a_wrong_token_or_session() {
    let web = Web::start().await;
    let wrong = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let cookie = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .header(header::COOKIE, "mdl_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), StatusCode::UNAUTHORIZED);
    let ok = web.get("/api/v1/jobs").await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn launch_link_is_one_time_and_sets_a_strict_http_only_cookie() {
    let web = Web::start().await;
    let link = web.launch();
    let first = web.http().get(&link).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let set = first.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("mdl_session="), "{set}");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(
        !set.contains(&web.token),
        "the cookie is not the long-lived token"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    // The cookie authenticates.
    let jobs = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), StatusCode::OK);
    // The same link a second time: refused, and no cookie.
    let second = web.http().get(&link).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert!(second.headers().get(header::SET_COOKIE).is_none());
    // A made-up launch token: refused.
    let made_up = web
        .http()
        .get(web.url("/login?t=deadbeef"))
        .send()
        .await
        .unwrap();
    assert_eq!(made_up.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refuses_a_host_that_is_not_loopback() {
    let web = Web::start().await;
    for host in [
        "evil.example",
        "evil.example:80",
        "localhost.evil.example",
        "10.0.0.1",
    ] {
        let response = web
            .http()
            .get(web.url("/api/v1/jobs"))
            .header(header::HOST, host)
            .bearer_auth(&web.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{host}");
        assert_eq!(error_kind(response).await, "forbidden");
    }
    // Loopback names are fine.
    for host in [
        "localhost",
        &format!("localhost:{}", web.addr.port()),
        "[::1]",
    ] {
        let response = web
            .http()
            .get(web.url("/api/v1/jobs"))
            .header(header::HOST, host)
            .bearer_auth(&web.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn refuses_a_state_change_from_another_origin() {
    let web = Web::start().await;
    let body = json!({"max_concurrent": 2});
    for origin in [
        "http://evil.example",
        "null",
        &format!("http://localhost:{}", web.addr.port() + 1),
    ] {
        let response = web
            .http()
            .patch(web.url("/api/v1/settings"))
            .header(header::ORIGIN, origin)
            .bearer_auth(&web.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(error_kind(response).await, "forbidden");
    }
    // The dashboard's own origin may.
    let response = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .header(header::ORIGIN, &web.base)
        .bearer_auth(&web.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refuses_a_request_the_browser_marks_cross_site() {
    let web = Web::start().await;
    let response = web
        .http()
        .post(web.url("/api/v1/jobs/1/pause"))
        .header("sec-fetch-site", "cross-site")
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_kind(response).await, "forbidden");
}

#[tokio::test]
async fn refuses_a_cookie_state_change_without_origin() {
    let web = Web::start().await;
    let cookie = session_cookie(&web).await;
    let bare = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .header(header::COOKIE, &cookie)
        .json(&json!({"max_concurrent": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    let with_origin = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &web.base)
        .json(&json!({"max_concurrent": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_origin.status(), StatusCode::OK);
}

#[tokio::test]
async fn refuses_a_body_that_is_not_json() {
    // A plain HTML form on another site can only send form encodings.
    let web = Web::start().await;
    let response = web
        .http()
        .post(web.url("/api/v1/jobs"))
        .bearer_auth(&web.token)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("source=https://example.com/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn security_headers_on_every_response_and_no_cors() {
    let web = Web::start().await;
    let cookie = session_cookie(&web).await;
    let ok = web
        .http()
        .get(web.url("/"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    let refused = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    let preflight = web
        .http()
        .request(reqwest::Method::OPTIONS, web.url("/api/v1/jobs"))
        .header(header::ORIGIN, "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        preflight.status().is_client_error(),
        "{}",
        preflight.status()
    );
    for response in [&ok, &refused, &preflight] {
        let headers = response.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert!(
            headers
                .keys()
                .all(|name| !name.as_str().starts_with("access-control-")),
            "no CORS headers: {headers:?}"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn token_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let web = Web::start().await;
    let path = mdl_web::token_path(&web.daemon.data_dir);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    let dir_mode = std::fs::metadata(&web.daemon.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0, "data directory is private");
}

#[test]
fn listens_on_loopback_only_by_default() {
    let config = mdl_web::WebConfig::new("/s".into(), "/d".into());
    assert_eq!(config.listen.len(), 2);
    assert!(config.listen.iter().all(|a| a.ip().is_loopback()));
    assert!(config.listen.iter().any(|a| a.is_ipv6()));
}
