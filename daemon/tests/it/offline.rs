//! Offline mode: `--offline` (the `offline` option), `HF_HUB_OFFLINE=1`, `MDL_OFFLINE=1` and
//! `offline = true` resolve from the local caches and completed downloads only, open no
//! connection (a listener that counts every accepted connection stands in for the hub, the
//! URL's host and the proxy), and fail with a message that lists what is missing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, Client, ErrorKind, JobInfo, JobState};
use testkit::daemon::TestDaemon;
use testkit::fileserver::FileServer;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::{pseudo_random_bytes, sha256_hex};

/// A loopback listener that counts the connections it accepts (and closes them).
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, count)
}

fn repo() -> HfRepo {
    HfRepo::model("acme/tiny").with_files(vec![
        HfFile::regular("config.json", "{\"hidden\": 8}\n"),
        HfFile::regular("tokenizer.json", "{\"vocab\": []}\n"),
        HfFile::lfs("model.safetensors", pseudo_random_bytes(128 * 1024, 11)),
    ])
}

async fn add(
    client: &mut Client,
    source: &str,
    vars: &[(&str, &str)],
    adjust: impl FnOnce(&mut AddRequest),
) -> JobInfo {
    let mut request = AddRequest {
        source: source.to_string(),
        env: env(vars),
        ..Default::default()
    };
    adjust(&mut request);
    client.add(request).await.expect("add").job
}

fn offline_option(r: &mut AddRequest) {
    r.options.push(("offline".into(), "1".into()));
}

/// Download `hf://acme/tiny` (only `include`, if given) into `cache` from a live mock.
async fn fill_cache(daemon: &TestDaemon, cache: &Path, include: &[&str]) -> String {
    let mock = HfMock::start().await;
    let repo = repo();
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo);
    let mut client = daemon.client().await;
    let cache_s = cache.display().to_string();
    let job = add(
        &mut client,
        "hf://acme/tiny",
        &[
            ("HF_ENDPOINT", &mock.endpoint()),
            ("HF_HUB_CACHE", &cache_s),
        ],
        |r| r.include = include.iter().map(|s| s.to_string()).collect(),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    commit
}

#[tokio::test]
async fn hugging_face_offline_serves_the_cache_and_opens_no_connection() {
    let daemon = TestDaemon::start().await;
    let cache = daemon.downloads.join("hub");
    let commit = fill_cache(&daemon, &cache, &["*.json"]).await;
    let (endpoint, connections) = counting_listener().await;
    let cache_s = cache.display().to_string();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", cache_s.as_str()),
        ("HTTPS_PROXY", endpoint.as_str()),
        ("HTTP_PROXY", endpoint.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let mut client = daemon.client().await;

    // The cached snapshot (the two JSON files an earlier download fetched) is the answer,
    // as huggingface_hub gives it offline.
    let job = add(&mut client, "hf://acme/tiny", &vars, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.revision.as_deref(), Some(commit.as_str()));
    assert_eq!(done.files.len(), 2, "{done:#?}");

    // With --dest the cached files are copied out and verified (by their blob names).
    let out = daemon.downloads.join("out");
    let job = add(&mut client, "hf://acme/tiny", &vars, |r| {
        r.dest = Some(out.display().to_string());
    })
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        "{\"hidden\": 8}\n"
    );

    // What the cache does not have fails at once, saying so and what to do.
    let job = add(
        &mut client,
        "hf://acme/tiny/model.safetensors",
        &vars,
        |_| {},
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let error = done.error.unwrap();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.message.starts_with("offline:"), "{}", error.message);
    assert!(
        error.message.contains("model.safetensors"),
        "{}",
        error.message
    );
    let job = add(&mut client, "hf://acme/other", &vars, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    let message = done.error.unwrap().message;
    assert!(
        message.contains("acme/other") && message.contains("not in the Hugging Face cache"),
        "{message}"
    );

    // A blob gone from under its snapshot link is listed as missing.
    let folder = cache.join("models--acme--tiny");
    let link = folder
        .join("snapshots")
        .join(&commit)
        .join("tokenizer.json");
    let blob = folder
        .join("blobs")
        .join(std::fs::read_link(&link).unwrap().file_name().unwrap());
    std::fs::remove_file(&blob).unwrap();
    let job = add(&mut client, "hf://acme/tiny", &vars, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let message = done.error.unwrap().message;
    assert!(
        message.contains("1 file(s)") && message.contains("tokenizer.json"),
        "{message}"
    );

    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "offline jobs opened connections"
    );
}

#[tokio::test]
async fn urls_offline_come_from_completed_downloads_only() {
    let server = FileServer::start().await;
    let body = pseudo_random_bytes(64 * 1024, 21);
    let sha = sha256_hex(&body);
    server.add("/w.bin", body.clone());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let first = daemon.downloads.join("first");
    let job = crate::add_url(&mut client, &server.url("/w.bin"), &first, Some(&sha)).await;
    crate::expect_verified(&daemon, job.id, &first.join("w.bin"), &sha).await;

    let (host, connections) = counting_listener().await;
    // MDL_OFFLINE from the job's environment, and the --offline option: the same bytes come
    // from the completed download; anything else is missing.
    let second = daemon.downloads.join("second");
    let job = add(
        &mut client,
        &format!("{host}/w.bin"),
        &[("MDL_OFFLINE", "1")],
        |r| {
            r.dest = Some(second.display().to_string());
            r.sha256 = Some(sha.clone());
        },
    )
    .await;
    crate::expect_verified(&daemon, job.id, &second.join("w.bin"), &sha).await;
    let job = add(&mut client, &format!("{host}/other.bin"), &[], |r| {
        r.dest = Some(second.display().to_string());
        offline_option(r);
    })
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let error = done.error.unwrap();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.message.contains("other.bin"), "{}", error.message);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "offline jobs opened connections"
    );
}

#[tokio::test]
async fn offline_in_the_config_and_a_job_that_overrides_it() {
    let (host, connections) = counting_listener().await;
    let daemon = TestDaemon::start_with(|s| s.engine.network.global.offline = Some(true)).await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("d");
    let job = crate::add_url(&mut client, &format!("{host}/x.bin"), &dest, None).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    assert!(done.error.unwrap().message.starts_with("offline:"));
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // MDL_OFFLINE=0 from the caller says online: it connects (and the listener hangs up).
    let job = add(
        &mut client,
        &format!("{host}/y.bin"),
        &[("MDL_OFFLINE", "0")],
        |r| {
            r.dest = Some(dest.display().to_string());
        },
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    assert!(connections.load(Ordering::SeqCst) > 0);
}
