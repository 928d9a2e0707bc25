//! The JSON routes against the real daemon: the same job objects as `mdlctl --json ls`.

use std::time::Duration;

use mdl_protocol::JobInfo;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{pseudo_random_bytes, Behavior, FileServer};

use crate::{eventually, Web};

async fn job_of(web: &Web, id: u64) -> JobInfo {
    let response = web.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_job_from_add_to_verified_file() {
    let files = FileServer::start().await;
    let served = files.add("/model.bin", pseudo_random_bytes(256 * 1024, 1));
    let web = Web::start().await;
    let dest = web.daemon.downloads.join("api");
    let response = web
        .post(
            "/api/v1/jobs",
            json!({
                "source": served.url,
                "dest": dest.display().to_string(),
                "sha256": served.sha256,
                "paused": true,
                "priority": 3,
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let added: Value = response.json().await.unwrap();
    assert_eq!(added["outcome"], "created");
    let job: JobInfo = serde_json::from_value(added["jobs"][0].clone()).unwrap();
    assert_eq!(job.state.as_str(), "paused");
    assert_eq!(job.priority, 3);

    // The list holds the same objects as the protocol's List (what `mdlctl --json ls` prints).
    let listed: Vec<JobInfo> = web.get("/api/v1/jobs").await.json().await.unwrap();
    let direct = web.daemon.client().await.list().await.unwrap();
    assert_eq!(listed, direct);

    let changed: JobInfo = web
        .post(
            &format!("/api/v1/jobs/{}/priority", job.id),
            json!({"priority": 7}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(changed.priority, 7);

    let resumed = web
        .post(&format!("/api/v1/jobs/{}/resume", job.id), json!({}))
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let done = eventually(Duration::from_secs(30), "the job to complete", || async {
        let job = job_of(&web, job.id).await;
        job.state.is_finished().then_some(job)
    })
    .await;
    assert_eq!(done.state.as_str(), "completed", "{done:#?}");
    assert_eq!(
        done.files[0].sha256.as_deref(),
        Some(served.sha256.as_str())
    );
    assert_eq!(
        testkit::sha256_hex(&std::fs::read(&done.files[0].path).unwrap()),
        served.sha256
    );

    // Forget it: 204, then it is gone.
    let removed = web
        .http()
        .delete(web.url(&format!("/api/v1/jobs/{}", job.id)))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let gone = web.get(&format!("/api/v1/jobs/{}", job.id)).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pause_resume_and_cancel_a_running_job() {
    let files = FileServer::start().await;
    let served = files.add("/slow.bin", pseudo_random_bytes(4 * 1024 * 1024, 2));
    files.set_behavior(
        "/slow.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(1024 * 1024),
            ..Default::default()
        },
    );
    let web = Web::start().await;
    let dest = web.daemon.downloads.join("slow");
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": served.url, "dest": dest.display().to_string()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    eventually(Duration::from_secs(20), "bytes to arrive", || async {
        (job_of(&web, id).await.bytes_done > 0).then_some(())
    })
    .await;
    // The reply is the job right after the request; a running job stops a moment later.
    let pausing = web
        .post(&format!("/api/v1/jobs/{id}/pause"), json!({}))
        .await;
    assert_eq!(pausing.status(), StatusCode::OK);
    let paused = eventually(Duration::from_secs(10), "the job to pause", || async {
        let job = job_of(&web, id).await;
        (job.state.as_str() == "paused").then_some(job)
    })
    .await;
    let resumed = web
        .post(&format!("/api/v1/jobs/{id}/resume"), json!({}))
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    eventually(Duration::from_secs(10), "the job to run again", || async {
        let job = job_of(&web, id).await;
        (job.state.as_str() == "running" && job.bytes_done > paused.bytes_done).then_some(())
    })
    .await;
    let cancelling = web
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelling.status(), StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "the job to be cancelled",
        || async { (job_of(&web, id).await.state.as_str() == "cancelled").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn plan_lists_files_and_what_is_present() {
    let files = FileServer::start().await;
    let served = files.add("/weights.safetensors", pseudo_random_bytes(1000, 3));
    let web = Web::start().await;
    let response = web
        .post(
            "/api/v1/plan",
            json!({"source": served.url, "sha256": served.sha256}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let plan: mdl_protocol::PlanInfo = response.json().await.unwrap();
    assert_eq!(plan.files.len(), 1);
    assert!(
        plan.files[0].dest.ends_with("weights.safetensors"),
        "{plan:?}"
    );
    // Nothing was queued.
    let jobs: Vec<JobInfo> = web.get("/api/v1/jobs").await.json().await.unwrap();
    assert!(jobs.is_empty());
}

#[tokio::test]
async fn errors_are_json_with_kind_message_and_hint() {
    let web = Web::start().await;
    // A malformed checksum: the daemon's validation, as 400 invalid_request.
    let bad = web
        .post(
            "/api/v1/jobs",
            json!({"source": "http://127.0.0.1:9/x", "sha256": "abc"}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["kind"], "invalid_request");
    assert!(
        body["message"].as_str().unwrap().contains("sha256"),
        "{body}"
    );
    // An unknown field is a typo, not silently ignored.
    let typo = web.post("/api/v1/jobs", json!({"sorce": "x"})).await;
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    // Not a job id.
    let not_id = web.get("/api/v1/jobs/abc").await;
    assert_eq!(not_id.status(), StatusCode::BAD_REQUEST);
    // An unknown route.
    let route = web.get("/api/v1/nope").await;
    assert_eq!(route.status(), StatusCode::NOT_FOUND);
    assert_eq!(route.json::<Value>().await.unwrap()["kind"], "not_found");
    // A file the server does not have: the job fails with not_found, which the page explains.
    let files = FileServer::start().await;
    let added: Value = web
        .post("/api/v1/jobs", json!({"source": files.url("/missing.bin")}))
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    let failed = eventually(Duration::from_secs(20), "the job to fail", || async {
        let job = job_of(&web, id).await;
        job.state.is_finished().then_some(job)
    })
    .await;
    assert_eq!(failed.state.as_str(), "failed");
    assert_eq!(failed.error.unwrap().kind.as_str(), "not_found");
}

#[tokio::test]
async fn an_unreachable_daemon_is_503_with_a_hint() {
    let mut web = Web::start().await;
    web.daemon.stop().await;
    let response = web.get("/api/v1/jobs").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "unreachable");
    assert!(body["hint"].as_str().unwrap().contains("mdlctl"), "{body}");
}

#[tokio::test]
async fn status_and_settings() {
    let web = Web::start().await;
    let status: Value = web.get("/api/v1/status").await.json().await.unwrap();
    assert_eq!(
        status["data_dir"],
        web.daemon.data_dir.display().to_string()
    );
    let changed = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .bearer_auth(&web.token)
        .json(&json!({"max_concurrent": 5, "bandwidth_limit": 2_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let settings: Value = web.get("/api/v1/settings").await.json().await.unwrap();
    assert_eq!(settings["max_concurrent"], 5);
    assert_eq!(settings["bandwidth_limit"], 2_000_000);
    assert_eq!(settings["endpoints"][0]["hub"], "hf");
    let cleared: Value = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .bearer_auth(&web.token)
        .json(&json!({"bandwidth_limit": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["bandwidth_limit"], Value::Null);
    let unknown = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .bearer_auth(&web.token)
        .json(&json!({"colour": "blue"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}
