//! Hub endpoints set at runtime (`SetHubEndpoints`): validated, used by the next add, kept
//! across a restart, given back to the config file when the file changes that hub's key.

use std::path::PathBuf;
use std::time::Duration;

use mdl_protocol::{AddRequest, ErrorKind, HubEndpointsInfo, JobState};
use testkit::daemon::{poll_until, TestDaemon};
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};

async fn hub_with_model() -> HfMock {
    let hub = HfMock::start().await;
    hub.add_repo(HfRepo::model("acme/tiny").with_files(vec![
        HfFile::regular("config.json", "{\"tiny\": true}\n"),
        HfFile::lfs(
            "model.safetensors",
            testkit::pseudo_random_bytes(64 * 1024, 7),
        ),
    ]));
    hub
}

fn hf(list: &[HubEndpointsInfo]) -> &HubEndpointsInfo {
    list.iter().find(|h| h.hub == "hf").expect("hf listed")
}

/// Download `hf://acme/tiny` into a fresh folder; returns the finished job's state.
async fn download(daemon: &TestDaemon, folder: &str) -> JobState {
    let mut client = daemon.client().await;
    let added = client
        .add(AddRequest {
            source: "hf://acme/tiny".into(),
            dest: Some(daemon.downloads.join(folder).display().to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    daemon.wait_finished(added.job.id).await.state
}

fn served_by(hub: &HfMock) -> usize {
    hub.requests().iter().filter(|r| r.host == "hub").count()
}

#[tokio::test]
async fn an_endpoint_set_at_runtime_is_used_by_the_next_add_and_kept_across_a_restart() {
    let configured = hub_with_model().await;
    let mirror = hub_with_model().await;
    let endpoint = configured.endpoint();
    let daemon =
        TestDaemon::start_with(|s| s.engine.sources.hf_endpoints = vec![endpoint.clone()]).await;
    let mut client = daemon.client().await;
    let before = client.hub_endpoints().await.unwrap();
    assert_eq!(hf(&before).endpoints, [configured.endpoint()]);
    assert_eq!(hf(&before).origin, "config");
    assert_eq!(hf(&before).official, "https://huggingface.co");

    // Refused: not an absolute web URL, an unknown hub; the password is never echoed.
    for (hub, url) in [
        ("hf", "hf-mirror.com"),
        ("hf", "ftp://mirror.example"),
        ("gitlab", "https://mirror.example"),
        ("hf", "https://me:hunter2@mirror.example/?x=1"),
    ] {
        let err = client
            .set_hub_endpoints(hub, Some(vec![url.to_string()]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{url}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    // Set: the reply shows it; the next add goes to the mirror, not the configured hub.
    let set = client
        .set_hub_endpoints("hf", Some(vec![format!("{}/", mirror.endpoint())]))
        .await
        .unwrap();
    assert_eq!(hf(&set).endpoints, [mirror.endpoint()]);
    assert_eq!(hf(&set).origin, "runtime");
    assert_eq!(download(&daemon, "one").await, JobState::Completed);
    assert!(served_by(&mirror) > 0);
    assert_eq!(served_by(&configured), 0, "the configured hub is not asked");

    // A page URL on the new endpoint is recognised as a Hugging Face model.
    let plan = client
        .request(&mdl_protocol::Request::Add(AddRequest {
            source: format!("{}/acme/tiny", mirror.endpoint()),
            dest: Some(daemon.downloads.join("plan").display().to_string()),
            dry_run: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    match plan {
        mdl_protocol::Response::Plan(plan) => assert_eq!(plan.files.len(), 2, "{plan:?}"),
        other => panic!("a plan of the model, got {other:?}"),
    }

    // Kept across a restart.
    let daemon = daemon.restart().await;
    let mut client = daemon.client().await;
    let after = client.hub_endpoints().await.unwrap();
    assert_eq!(hf(&after).endpoints, [mirror.endpoint()]);
    assert_eq!(hf(&after).origin, "runtime");
    let asked = served_by(&mirror);
    assert_eq!(download(&daemon, "two").await, JobState::Completed);
    assert!(served_by(&mirror) > asked);
    assert_eq!(served_by(&configured), 0);

    // Reset: back to the configured list, for the next add.
    let reset = client.set_hub_endpoints("hf", None).await.unwrap();
    assert_eq!(hf(&reset).endpoints, [configured.endpoint()]);
    assert_eq!(hf(&reset).origin, "config");
    assert_eq!(download(&daemon, "three").await, JobState::Completed);
    assert!(served_by(&configured) > 0);
}

/// How long a config edit may take to be noticed.
const NOTICE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_config_edit_of_that_hub_wins_over_the_runtime_list_and_others_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[sources]\nhf_endpoints = [\"http://127.0.0.1:9/file-one\"]\n",
    )
    .unwrap();
    let loaded =
        mdld::Settings::load(None, Some(dir.path().join("ignored")), Some(config.clone())).unwrap();
    let daemon = TestDaemon::start_with(|s| {
        *s = s.with_runtime_keys_of(&loaded);
        s.config_file = loaded.config_file.clone();
    })
    .await;
    let mut client = daemon.client().await;
    assert_eq!(
        hf(&client.hub_endpoints().await.unwrap()).endpoints,
        ["http://127.0.0.1:9/file-one"]
    );
    client
        .set_hub_endpoints("hf", Some(vec!["https://hf-mirror.com".into()]))
        .await
        .unwrap();

    // An edit of another key leaves the runtime list in force.
    std::fs::write(
        &config,
        "max_concurrent = 3\n[sources]\nhf_endpoints = [\"http://127.0.0.1:9/file-one\"]\n",
    )
    .unwrap();
    poll_until(NOTICE, || async {
        daemon
            .client()
            .await
            .daemon_status()
            .await
            .unwrap()
            .max_concurrent
            == 3
    })
    .await;
    let kept = client.hub_endpoints().await.unwrap();
    assert_eq!(hf(&kept).endpoints, ["https://hf-mirror.com"]);
    assert_eq!(hf(&kept).origin, "runtime");

    // The file changes hf_endpoints: the file's list wins again.
    std::fs::write(
        &config,
        "max_concurrent = 3\n[sources]\nhf_endpoints = [\"http://127.0.0.1:9/file-two\"]\n",
    )
    .unwrap();
    poll_until(NOTICE, || async {
        let list = daemon.client().await.hub_endpoints().await.unwrap();
        hf(&list).endpoints == ["http://127.0.0.1:9/file-two"]
    })
    .await;
    assert_eq!(hf(&client.hub_endpoints().await.unwrap()).origin, "config");
}
