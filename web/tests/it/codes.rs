//! HTTP status codes: 404 for an unknown job, 409 for a request the job's state does not
//! allow, 413 for a body too large, 405 for a wrong method, 400 for a bad query; every one
//! with the JSON `{kind, message, hint}` body.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::Web;

async fn body_of(response: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["kind"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body.get("hint").is_some(), "{body}");
    body
}

#[tokio::test]
async fn an_unknown_job_is_404_on_every_job_route() {
    let web = Web::start().await;
    let http = web.http();
    let url = |path: &str| web.url(&format!("/api/v1/jobs/424242{path}"));
    let requests = [
        http.get(url("")),
        http.post(url("/pause")),
        http.post(url("/resume")),
        http.post(url("/cancel")),
        http.post(url("/priority")).json(&json!({"priority": 1})),
        http.delete(url("")),
    ];
    for request in requests {
        let response = request.bearer_auth(&web.token).send().await.unwrap();
        let body = body_of(response, StatusCode::NOT_FOUND, "not_found").await;
        assert!(
            body["message"].as_str().unwrap().contains("424242"),
            "{body}"
        );
        assert!(
            body["hint"].as_str().unwrap().contains("/api/v1/jobs"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_request_the_jobs_state_does_not_allow_is_409() {
    let web = Web::start().await;
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": "http://127.0.0.1:9/held.bin", "paused": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    // A paused job cannot be removed (it is not finished).
    let removed = web
        .http()
        .delete(web.url(&format!("/api/v1/jobs/{id}")))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    let body = body_of(removed, StatusCode::CONFLICT, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("cancel it"),
        "{body}"
    );
    // Cancelled, it cannot be cancelled or paused again.
    let cancelled = web
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let again = web
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    body_of(again, StatusCode::CONFLICT, "conflict").await;
    let pause = web
        .post(&format!("/api/v1/jobs/{id}/pause"), json!({}))
        .await;
    body_of(pause, StatusCode::CONFLICT, "conflict").await;
    // Now it can go.
    let removed = web
        .http()
        .delete(web.url(&format!("/api/v1/jobs/{id}")))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_input_is_400_413_405_as_json() {
    let web = Web::start().await;
    // Not a job id; a query that does not parse.
    body_of(
        web.get("/api/v1/jobs/abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let query = web
        .http()
        .delete(web.url("/api/v1/jobs?delete_files=maybe"))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    body_of(query, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Too large a body.
    let big = "x".repeat(mdl_web::api::MAX_BODY + 1);
    let large = web.post("/api/v1/plan", json!({ "source": big })).await;
    body_of(large, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    // A method the route does not take, inside and outside the API.
    let wrong = web
        .http()
        .put(web.url("/api/v1/jobs"))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    body_of(wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    // Not JSON.
    let form = web
        .http()
        .post(web.url("/api/v1/jobs"))
        .bearer_auth(&web.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("source=x")
        .send()
        .await
        .unwrap();
    body_of(form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request").await;
    // No token: 401; a foreign Host: 403 (tested in depth in `security`).
    let anonymous = web
        .http()
        .get(web.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    body_of(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}
