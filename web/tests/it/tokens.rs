//! Hub tokens: stored by the daemon (never shown again), used for that hub's jobs only.

use std::time::Duration;

use mdl_protocol::JobInfo;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::FileServer;

use crate::{eventually, Web};

async fn put_token(web: &Web, hub: &str, token: &str) -> reqwest::Response {
    web.http()
        .put(web.url(&format!("/api/v1/tokens/{hub}")))
        .bearer_auth(&web.token)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

async fn finished(web: &Web, id: u64) -> JobInfo {
    eventually(Duration::from_secs(30), "the job to finish", || async {
        let job: JobInfo = web
            .get(&format!("/api/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        job.state.is_finished().then_some(job)
    })
    .await
}

#[tokio::test]
async fn a_stored_hub_token_opens_a_gated_model_and_goes_nowhere_else() {
    let hub = HfMock::start().await;
    hub.add_repo(
        HfRepo::model("acme/gated")
            .gated(true)
            .with_files(vec![HfFile::regular("config.json", "{}\n")]),
    );
    hub.set_valid_token("hf_stored_token");
    let files = FileServer::start().await;
    let plain = files.add("/plain.bin", b"plain".to_vec());
    let endpoint = hub.endpoint();
    let daemon = TestDaemon::start_with(|s| s.engine.sources.hf_endpoints = vec![endpoint]).await;
    let web = Web::with_daemon(daemon).await;
    let dest = web.daemon.downloads.join("gated");
    let body = json!({"source": "hf://acme/gated", "dest": dest.display().to_string()});

    // Without a token the preview says what to do.
    let refused = web.post("/api/v1/plan", body.clone()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["kind"], "auth");
    assert!(
        error["message"].as_str().unwrap().contains("gated"),
        "{error}"
    );

    // Store a token: the list says it is set, and never shows it.
    let unknown = put_token(&web, "nohub", "x").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let set = put_token(&web, "hf", "hf_stored_token").await;
    assert_eq!(set.status(), StatusCode::OK);
    let list = web.get("/api/v1/tokens").await.text().await.unwrap();
    assert!(!list.contains("hf_stored_token"), "{list}");
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0], json!({"hub": "hf", "set": true}));
    assert_eq!(list[1], json!({"hub": "ms", "set": false}));

    // Now the preview and the download work.
    let plan = web.post("/api/v1/plan", body.clone()).await;
    assert_eq!(plan.status(), StatusCode::OK);
    let added: Value = web.post("/api/v1/jobs", body).await.json().await.unwrap();
    let done = finished(&web, added["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(done.state.as_str(), "completed", "{done:#?}");
    // The job record does not keep the token; the hub saw it.
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some("Bearer hf_stored_token")));

    // A plain URL job never carries a hub's token.
    let added: Value = web
        .post("/api/v1/jobs", json!({"source": plain.url}))
        .await
        .json()
        .await
        .unwrap();
    let done = finished(&web, added["jobs"][0]["id"].as_u64().unwrap()).await;
    assert_eq!(done.state.as_str(), "completed");
    assert!(files
        .stats("/plain.bin")
        .log
        .iter()
        .all(|r| r.header("authorization").is_none()));

    // Removed: gone from the list.
    let cleared: Value = web
        .http()
        .delete(web.url("/api/v1/tokens/hf"))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared[0], json!({"hub": "hf", "set": false}));
}
