//! Hub endpoints and health over HTTP: `GET/PUT/DELETE /endpoints`, `PATCH /settings` with
//! `endpoints`, `GET /health`, `POST /verify`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};

use crate::{eventually, Web};

async fn put(web: &Web, hub: &str, body: Value) -> reqwest::Response {
    web.http()
        .put(web.url(&format!("/api/v1/endpoints/{hub}")))
        .bearer_auth(&web.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn hub<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|h| h["hub"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

#[tokio::test]
async fn endpoints_are_read_set_redacted_and_reset_over_http() {
    let web = Web::start().await;
    let list: Value = web.get("/api/v1/endpoints").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(
        hub(&list, "hf"),
        &json!({"hub": "hf", "endpoints": ["https://huggingface.co"],
                "official": "https://huggingface.co", "origin": "default", "environment": null})
    );

    // The preset mirror.
    let set = put(&web, "hf", json!({"endpoints": ["https://hf-mirror.com"]})).await;
    assert_eq!(set.status(), StatusCode::OK);
    let list: Value = set.json().await.unwrap();
    assert_eq!(
        hub(&list, "hf")["endpoints"],
        json!(["https://hf-mirror.com"])
    );
    assert_eq!(hub(&list, "hf")["origin"], "runtime");

    // A private mirror: the password is stored, never shown.
    let private = put(
        &web,
        "ms",
        json!({"endpoints": ["https://me:hunter2@ms-mirror.example"]}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!private.contains("hunter2"), "{private}");
    let list: Value = serde_json::from_str(&private).unwrap();
    assert_eq!(
        hub(&list, "ms")["endpoints"],
        json!(["https://***@ms-mirror.example"])
    );
    let settings = web.get("/api/v1/settings").await.text().await.unwrap();
    assert!(!settings.contains("hunter2"), "{settings}");

    // Refused: not a URL, an unknown hub, an unknown field; nothing changes.
    for (name, body) in [
        ("hf", json!({"endpoints": ["hf-mirror.com"]})),
        ("hf", json!({"endpoints": []})),
        ("nohub", json!({"endpoints": ["https://x.example"]})),
        ("hf", json!({"urls": ["https://x.example"]})),
    ] {
        let refused = put(&web, name, body.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["kind"], "invalid_request");
    }

    // PATCH /settings: several hubs at once; null is the config file's list.
    let patched = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .bearer_auth(&web.token)
        .json(&json!({"endpoints": {"hf": null, "civitai": ["https://civitai-mirror.example"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let settings: Value = patched.json().await.unwrap();
    let list = &settings["endpoints"];
    assert_eq!(hub(list, "hf")["origin"], "default");
    assert_eq!(
        hub(list, "civitai")["endpoints"],
        json!(["https://civitai-mirror.example"])
    );
    let bad = web
        .http()
        .patch(web.url("/api/v1/settings"))
        .bearer_auth(&web.token)
        .json(&json!({"endpoints": ["https://x.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // DELETE: back to the default; the daemon agrees.
    let reset: Value = web
        .http()
        .delete(web.url("/api/v1/endpoints/ms"))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hub(&reset, "ms")["origin"], "default");
    let direct = web.daemon.client().await.hub_endpoints().await.unwrap();
    assert_eq!(serde_json::to_value(&direct).unwrap(), reset);
}

#[tokio::test]
async fn a_download_after_put_uses_the_new_endpoint() {
    let hub = HfMock::start().await;
    hub.add_repo(
        HfRepo::model("acme/mirrored").with_files(vec![HfFile::regular("config.json", "{}\n")]),
    );
    // The configured endpoint answers nothing: only the one set over HTTP can serve it.
    let daemon = TestDaemon::start_with(|s| {
        s.engine.sources.hf_endpoints = vec!["http://127.0.0.1:9".into()];
    })
    .await;
    let web = Web::with_daemon(daemon).await;
    let set = put(&web, "hf", json!({"endpoints": [hub.endpoint()]})).await;
    assert_eq!(set.status(), StatusCode::OK);
    let dest = web.daemon.downloads.join("mirrored");
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": "hf://acme/mirrored", "dest": dest.display().to_string()}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    let state = eventually(Duration::from_secs(30), "the job to finish", || async {
        let job: Value = web
            .get(&format!("/api/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        let state = job["state"].as_str().unwrap().to_string();
        matches!(state.as_str(), "completed" | "failed" | "cancelled").then_some(job)
    })
    .await;
    assert_eq!(state["state"], "completed", "{state}");
    assert!(!hub.requests().is_empty());
}

#[tokio::test]
async fn health_shows_modified_files_and_verify_repairs_them() {
    let files = testkit::FileServer::start().await;
    let served = files.add("/weights.bin", testkit::pseudo_random_bytes(64 * 1024, 5));
    let web = Web::start().await;
    let health: Value = web.get("/api/v1/health").await.json().await.unwrap();
    assert_eq!(health["store"]["write_error"], Value::Null);
    assert_eq!(health["store"]["lost"], json!([]));
    assert_eq!(health["watch"]["files_modified"], 0);

    let dest = web.daemon.downloads.join("health");
    let added: Value = web
        .post(
            "/api/v1/jobs",
            json!({"source": served.url, "dest": dest.display().to_string(), "sha256": served.sha256}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = added["jobs"][0]["id"].as_u64().unwrap();
    let job = web.daemon.wait_finished(id).await;
    assert_eq!(job.state.as_str(), "completed");
    eventually(
        Duration::from_secs(20),
        "the file to be watched",
        || async {
            let h: Value = web.get("/api/v1/health").await.json().await.unwrap();
            (h["watch"]["files_intact"] == 1).then_some(())
        },
    )
    .await;
    std::fs::write(&job.files[0].path, b"changed by someone").unwrap();
    eventually(
        Duration::from_secs(30),
        "the change to be noticed",
        || async {
            let h: Value = web.get("/api/v1/health").await.json().await.unwrap();
            (h["watch"]["files_modified"] == 1).then_some(())
        },
    )
    .await;

    // Verify & repair: the job is queued again and the file comes back verified.
    let verify = web
        .http()
        .post(web.url("/api/v1/verify"))
        .bearer_auth(&web.token)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), StatusCode::OK);
    let queued: Value = verify.json().await.unwrap();
    assert_eq!(queued[0]["id"], id, "{queued}");
    eventually(Duration::from_secs(30), "the repaired file", || async {
        let h: Value = web.get("/api/v1/health").await.json().await.unwrap();
        let bytes = std::fs::read(&job.files[0].path).ok()?;
        (h["watch"]["files_modified"] == 0 && testkit::sha256_hex(&bytes) == served.sha256)
            .then_some(())
    })
    .await;
}
