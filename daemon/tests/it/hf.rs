//! Hugging Face sources against the testkit Hub mock (two hosts: Hub and CDN).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, Client, ErrorKind, FileState, JobInfo, JobState, Secret, Target};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo, RepoKind};
use testkit::hubs::Fault;
use testkit::pseudo_random_bytes;

const KIB: usize = 1024;

fn tiny_repo() -> HfRepo {
    HfRepo::model("acme/tiny").with_files(vec![
        HfFile::regular(".gitattributes", "*.safetensors filter=lfs\n"),
        HfFile::regular("config.json", "{\"hidden\": 8}\n"),
        HfFile::regular("onnx/config.json", "{\"onnx\": true}\n"),
        HfFile::lfs("model.safetensors", pseudo_random_bytes(300 * KIB, 7)),
        HfFile::lfs("onnx/model.onnx", pseudo_random_bytes(200 * KIB, 8)),
    ])
}

/// Add `source` with the mock as `HF_ENDPOINT` and `cache` as `HF_HUB_CACHE`.
async fn add(
    client: &mut Client,
    mock: &HfMock,
    source: &str,
    cache: &Path,
    adjust: impl FnOnce(&mut AddRequest),
) -> JobInfo {
    let mut request = AddRequest {
        source: source.to_string(),
        env: env(&[
            ("HF_ENDPOINT", &mock.endpoint()),
            ("HF_HUB_CACHE", &cache.display().to_string()),
            ("HF_HOME", &cache.join("home").display().to_string()),
        ]),
        ..Default::default()
    };
    adjust(&mut request);
    client.add(request).await.expect("add").job
}

fn snapshot(cache: &Path, folder: &str, commit: &str) -> PathBuf {
    cache.join(folder).join("snapshots").join(commit)
}

#[tokio::test]
async fn snapshot_into_the_hub_cache_layout() {
    let mock = HfMock::start().await;
    mock.set_tree_page_size(2); // exercises Link pagination
    let repo = tiny_repo();
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo.clone());
    mock.set_valid_token("hf_goodtoken");
    let daemon = TestDaemon::start().await;
    let cache = daemon.downloads.join("hub");
    let mut client = daemon.client().await;
    let job = add(&mut client, &mock, "hf://acme/tiny", &cache, |r| {
        r.token = Some(Secret("hf_goodtoken".into()));
    })
    .await;
    assert_eq!(job.dest, cache.display().to_string());
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.revision.as_deref(), Some(commit.as_str()));

    let folder = cache.join("models--acme--tiny");
    assert_eq!(
        std::fs::read_to_string(folder.join("refs/main")).unwrap(),
        commit
    );
    let commit_files = &repo.commits[0].files;
    for f in commit_files {
        let blob = folder.join("blobs").join(f.etag());
        assert_eq!(std::fs::read(&blob).unwrap(), f.content, "{}", f.path);
        let link = snapshot(&cache, "models--acme--tiny", &commit).join(&f.path);
        let target = std::fs::read_link(&link).expect("snapshot entry is a symlink");
        assert!(target.is_relative(), "{target:?}");
        let depth = f.path.matches('/').count();
        let expected: PathBuf = std::iter::repeat_n("..", depth + 2)
            .collect::<PathBuf>()
            .join("blobs")
            .join(f.etag());
        assert_eq!(target, expected);
        assert_eq!(std::fs::read(&link).unwrap(), f.content);
    }
    let blobs: Vec<_> = std::fs::read_dir(folder.join("blobs")).unwrap().collect();
    assert_eq!(blobs.len(), commit_files.len());
    // Hashes shown per file; every file verified.
    assert!(done.files.iter().all(|f| f.state == FileState::Completed));
    let lfs = commit_files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .unwrap();
    let shown = done
        .files
        .iter()
        .find(|f| f.path.ends_with(&lfs.etag()))
        .unwrap();
    assert_eq!(shown.sha256.as_deref(), Some(lfs.sha256().as_str()));
    assert_eq!(
        shown.endpoint.as_deref(),
        Some(mock.cdn_endpoint().as_str())
    );

    // The token went to the Hub, never to the CDN (which would have answered 400).
    let requests = mock.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == "cdn").collect();
    assert!(!cdn.is_empty());
    assert!(
        cdn.iter().all(|r| !r.has_header("authorization")),
        "{cdn:#?}"
    );
    assert!(requests
        .iter()
        .filter(|r| r.host == "hub" && r.path().contains("/resolve/"))
        .all(|r| r.header("authorization") == Some("Bearer hf_goodtoken")));
    assert!(requests
        .iter()
        .any(|r| r.path_and_query.contains("cursor=")));

    // A second add of the same commit fetches nothing: blobs are shared.
    mock.clear_requests();
    let again = add(&mut client, &mock, "hf://acme/tiny@main", &cache, |r| {
        r.include = vec!["*.json".into()];
    })
    .await;
    let again = daemon.wait_finished(again.id).await;
    assert_eq!(again.state, JobState::Completed, "{again:#?}");
    assert!(mock
        .requests()
        .iter()
        .all(|r| !r.path().contains("/resolve/") && r.host != "cdn"));
}

#[tokio::test]
async fn include_exclude_revision_tag_and_commit() {
    let mock = HfMock::start().await;
    let repo = tiny_repo()
        .with_branch(
            "dev",
            vec![HfFile::regular("config.json", "{\"dev\": 1}\n")],
        )
        .with_tag("v1", "main");
    let main_commit = repo.commit_sha("main").unwrap();
    let dev_commit = repo.commit_sha("dev").unwrap();
    mock.add_repo(repo);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;

    // --include / --exclude into --dest.
    let dest = daemon.downloads.join("filtered");
    let job = add(&mut client, &mock, "hf://acme/tiny@v1", &dest, |r| {
        r.dest = Some(dest.display().to_string());
        r.include = vec!["*.json".into(), "onnx/".into()];
        r.exclude = vec!["onnx/config.json".into()];
    })
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.revision.as_deref(), Some(main_commit.as_str()));
    let mut names: Vec<_> = walk(&dest);
    names.sort();
    assert_eq!(names, vec!["config.json", "onnx/model.onnx"]);

    // --revision with a commit id, into the cache.
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/tiny", &cache, |r| {
        r.revision = Some(dev_commit.clone());
    })
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let snap = snapshot(&cache, "models--acme--tiny", &dev_commit);
    assert_eq!(
        std::fs::read_to_string(snap.join("config.json")).unwrap(),
        "{\"dev\": 1}\n"
    );
    // A commit is not a ref: nothing is written under refs/.
    assert!(!cache.join("models--acme--tiny/refs").exists());

    // An unknown revision: NotFound, saying what to check.
    let job = add(&mut client, &mock, "hf://acme/tiny@nope", &cache, |_| {}).await;
    let failed = daemon.wait_finished(job.id).await;
    let error = failed.error.expect("error");
    assert_eq!(error.kind, ErrorKind::NotFound, "{error:?}");
    assert!(error.message.contains("revision"), "{}", error.message);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if !rel.starts_with(".mdl-") {
                    out.push(rel);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn dataset_and_site_urls() {
    let mock = HfMock::start().await;
    let repo = HfRepo::dataset("acme/corpus").with_files(vec![
        HfFile::regular("README.md", "# corpus\n"),
        HfFile::lfs("data/train.parquet", pseudo_random_bytes(64 * KIB, 3)),
    ]);
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    // The Hub's own URL, on the HF_ENDPOINT host, names one folder.
    let url = format!("{}/datasets/acme/corpus/tree/main/data", mock.endpoint());
    let job = add(&mut client, &mock, &url, &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let snap = snapshot(&cache, "datasets--acme--corpus", &commit);
    assert_eq!(walk(&snap), vec!["data/train.parquet"]);
    assert!(mock
        .requests()
        .iter()
        .any(|r| r.path().starts_with("/datasets/acme/corpus/resolve/")));
}

#[tokio::test]
async fn gated_repo_with_and_without_token() {
    let mock = HfMock::start().await;
    mock.add_repo(
        HfRepo::model("acme/gated")
            .gated(true)
            .with_files(vec![HfFile::lfs("w.bin", pseudo_random_bytes(10 * KIB, 1))]),
    );
    mock.set_valid_token("hf_approved");
    mock.add_unapproved_token("hf_unapproved");
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");

    let job = add(&mut client, &mock, "hf://acme/gated", &cache, |_| {}).await;
    let failed = daemon.wait_finished(job.id).await;
    let error = failed.error.expect("error");
    assert_eq!(error.kind, ErrorKind::Auth, "{error:?}");
    let license = format!("{}/acme/gated", mock.endpoint());
    assert!(error.message.contains(&license), "{}", error.message);
    assert!(error.message.contains("HF_TOKEN"), "{}", error.message);

    let job = add(&mut client, &mock, "hf://acme/gated", &cache, |r| {
        r.env
            .push(("HF_TOKEN".into(), Secret("hf_unapproved".into())));
    })
    .await;
    let failed = daemon.wait_finished(job.id).await;
    let error = failed.error.expect("error");
    assert_eq!(error.kind, ErrorKind::Auth, "{error:?}");
    assert!(error.message.contains(&license), "{}", error.message);
    assert!(
        !error.message.contains("hf_unapproved"),
        "{}",
        error.message
    );

    // The token file under HF_HOME is found too.
    let home = cache.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_approved\n").unwrap();
    let job = add(&mut client, &mock, "hf://acme/gated", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
}

#[tokio::test]
async fn small_file_verified_by_git_sha1_and_corruption_fails() {
    let mock = HfMock::start().await;
    mock.add_repo(
        HfRepo::model("acme/small")
            .with_files(vec![HfFile::regular("config.json", "{\"a\": 1}\n")]),
    );
    let daemon = TestDaemon::start_with(|s| s.engine.max_attempts = 2).await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("small");
    mock.inject_hub_fault(Fault::CorruptBody);
    let job = add(&mut client, &mock, "hf://acme/small", &dest, |r| {
        r.dest = Some(dest.display().to_string());
    })
    .await;
    let failed = daemon.wait_finished(job.id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:#?}");
    assert_eq!(failed.error.unwrap().kind, ErrorKind::Integrity);
    assert!(!dest.join("config.json").exists());

    let job = add(&mut client, &mock, "hf://acme/small", &dest, |r| {
        r.dest = Some(dest.display().to_string());
    })
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        std::fs::read_to_string(dest.join("config.json")).unwrap(),
        "{\"a\": 1}\n"
    );
}

#[tokio::test]
async fn expired_signed_url_is_resolved_again_and_the_partial_file_continues() {
    let mock = HfMock::start().await;
    let size = 1024 * KIB;
    let file = HfFile::lfs("big.bin", pseudo_random_bytes(size, 11));
    mock.add_repo(HfRepo::model("acme/big").with_files(vec![file.clone()]));
    mock.set_cdn_throttle(Some(256 * 1024));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/big", &cache, |_| {}).await;
    daemon
        .wait_job(job.id, Duration::from_secs(30), |j| {
            j.bytes_done >= 300 * 1024
        })
        .await;
    client.pause(Target::Job(job.id)).await.unwrap();
    daemon.wait_state(job.id, JobState::Paused).await;
    let sent_before = mock.cdn_body_bytes_sent();
    // Every URL signed so far is dead now.
    mock.expire_signed_urls();
    mock.set_cdn_throttle(None);
    mock.clear_requests();
    client.resume(Target::Job(job.id)).await.unwrap();
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let blob = cache.join("models--acme--big/blobs").join(file.etag());
    assert_eq!(std::fs::read(blob).unwrap(), file.content);
    // The resumed request asked the Hub again and continued with Range from where it was.
    let requests = mock.requests();
    assert!(requests
        .iter()
        .any(|r| r.host == "hub" && r.path().contains("/resolve/")));
    let resumed = requests
        .iter()
        .find(|r| r.host == "cdn" && r.method == "GET")
        .expect("a CDN request after resume");
    let range = resumed.header("range").expect("resumed with Range");
    assert_ne!(range, "bytes=0-", "{range}");
    let refetched = mock.cdn_body_bytes_sent() - sent_before;
    assert!(
        refetched < size as u64,
        "re-fetched {refetched} of {size} bytes"
    );
}

#[tokio::test]
async fn expired_url_mid_stream_is_reresolved() {
    let mock = HfMock::start().await;
    let size = 512 * KIB;
    let file = HfFile::lfs("w.bin", pseudo_random_bytes(size, 12));
    mock.add_repo(HfRepo::model("acme/w").with_files(vec![file.clone()]));
    // The first CDN answer breaks after 100 KiB; the next one is an expired-signature 403.
    mock.inject_cdn_fault(Fault::ResetAfter(100 * KIB as u64));
    mock.inject_cdn_fault(Fault::status(403));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/w", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let cdn_gets: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.host == "cdn" && r.method == "GET")
        .collect();
    assert!(cdn_gets.len() >= 3, "{cdn_gets:#?}");
    let last = cdn_gets.last().unwrap();
    assert!(
        last.header("range").is_some_and(|r| r != "bytes=0-"),
        "{last:#?}"
    );
    assert!(mock.cdn_body_bytes_sent() < 2 * size as u64);
}

#[tokio::test]
async fn range_resume_across_a_daemon_restart() {
    let mock = HfMock::start().await;
    let size = 1024 * KIB;
    let file = HfFile::lfs("r.bin", pseudo_random_bytes(size, 13));
    mock.add_repo(HfRepo::model("acme/r").with_files(vec![file.clone()]));
    mock.set_cdn_throttle(Some(256 * 1024));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/r", &cache, |_| {}).await;
    daemon
        .wait_job(job.id, Duration::from_secs(30), |j| {
            j.bytes_done >= 300 * 1024
        })
        .await;
    mock.set_cdn_throttle(None);
    mock.clear_requests();
    let daemon = daemon.restart().await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let blob = cache.join("models--acme--r/blobs").join(file.etag());
    assert_eq!(std::fs::read(blob).unwrap(), file.content);
    let resumed = mock
        .requests()
        .into_iter()
        .find(|r| r.host == "cdn" && r.method == "GET")
        .expect("a CDN request after the restart");
    assert!(
        resumed.header("range").is_some_and(|r| r != "bytes=0-"),
        "{resumed:#?}"
    );
}

#[tokio::test]
async fn mirror_that_refuses_connections_falls_back() {
    let mock = HfMock::start().await;
    let repo = tiny_repo();
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo);
    let endpoint = mock.endpoint();
    let daemon = TestDaemon::start_with(|s| {
        s.engine.sources.hf_endpoints = vec!["http://127.0.0.1:9".into(), endpoint.clone()];
    })
    .await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let job = client
        .add(AddRequest {
            source: "hf://acme/tiny".into(),
            env: env(&[("HF_HUB_CACHE", &cache.display().to_string())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.revision.as_deref(), Some(commit.as_str()));
    assert!(done
        .files
        .iter()
        .all(|f| f.endpoint.as_deref() == Some(&mock.endpoint())
            || f.endpoint.as_deref() == Some(&mock.cdn_endpoint())));
}

#[tokio::test]
async fn metadata_requests_honour_429_and_retry_after() {
    let mock = HfMock::start().await;
    mock.add_repo(tiny_repo());
    mock.inject_rate_limit(2, 1);
    mock.inject_hub_status(503);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let started = std::time::Instant::now();
    let job = add(&mut client, &mock, "hf://acme/tiny", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    // Two Retry-After: 1 waits (RateLimit t=1 means 2 s each, like huggingface_hub).
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dry_run_plans_without_queueing() {
    let mock = HfMock::start().await;
    let repo = tiny_repo();
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let plan = client
        .plan(AddRequest {
            source: "hf://acme/tiny".into(),
            include: vec!["*.safetensors".into()],
            env: env(&[
                ("HF_ENDPOINT", &mock.endpoint()),
                ("HF_HUB_CACHE", &cache.display().to_string()),
            ]),
            ..Default::default()
        })
        .await
        .expect("plan");
    assert_eq!(plan.revision.as_deref(), Some(commit.as_str()));
    assert_eq!(plan.files.len(), 1);
    let f = &plan.files[0];
    assert_eq!(f.path, "model.safetensors");
    assert_eq!(f.size, Some(300 * KIB as u64));
    assert_eq!(f.bytes_to_fetch, Some(300 * KIB as u64));
    assert!(f.sha256.is_some());
    assert!(f.dest.ends_with(&format!(
        "models--acme--tiny/snapshots/{commit}/model.safetensors"
    )));
    assert!(client.list().await.unwrap().is_empty());
}

/// A dry run resolves and reports, but writes nothing: no `refs/`, no snapshot links (not even
/// for a blob already in the cache), no directories.
#[tokio::test]
async fn dry_run_writes_nothing_in_the_hub_cache() {
    let mock = HfMock::start().await;
    let repo = tiny_repo();
    let commit = repo.commit_sha("main").unwrap();
    mock.add_repo(repo);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let plan_all = |cache: &Path| AddRequest {
        source: "hf://acme/tiny".into(),
        env: env(&[
            ("HF_ENDPOINT", &mock.endpoint()),
            ("HF_HUB_CACHE", &cache.display().to_string()),
        ]),
        ..Default::default()
    };

    // A fresh cache stays absent.
    let plan = client.plan(plan_all(&cache)).await.expect("plan");
    assert_eq!(plan.files.len(), 5);
    assert!(!cache.exists(), "{:?}", walk(&cache));

    // With one blob in the cache, the plan says it is there, and still links nothing.
    let job = add(&mut client, &mock, "hf://acme/tiny", &cache, |r| {
        r.include = vec!["config.json".into()];
    })
    .await;
    assert_eq!(
        daemon.wait_finished(job.id).await.state,
        JobState::Completed
    );
    let folder = cache.join("models--acme--tiny");
    std::fs::remove_dir_all(folder.join("snapshots")).unwrap();
    std::fs::remove_dir_all(folder.join("refs")).unwrap();
    let before = walk(&cache);
    let plan = client.plan(plan_all(&cache)).await.expect("plan");
    let config = plan.files.iter().find(|f| f.path == "config.json").unwrap();
    assert_eq!(config.bytes_to_fetch, Some(0), "{plan:#?}");
    assert_eq!(walk(&cache), before);
    assert!(!folder.join("refs").exists());
    assert!(!snapshot(&cache, "models--acme--tiny", &commit).exists());
}

/// The real `huggingface_hub` (if installed) finds what mdl wrote, offline.
#[tokio::test]
async fn huggingface_hub_reads_the_cache_offline() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!(
            "skipped: python3 with huggingface_hub is not available (pip install huggingface_hub)"
        );
        return;
    }
    let mock = HfMock::start().await;
    mock.add_repo(tiny_repo());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/tiny", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let script = r#"
import os, sys
from huggingface_hub import hf_hub_download, snapshot_download
cache = sys.argv[1]
p = hf_hub_download("acme/tiny", "onnx/config.json", local_files_only=True, cache_dir=cache)
assert open(p).read() == '{"onnx": true}\n', p
d = snapshot_download("acme/tiny", local_files_only=True, cache_dir=cache)
assert os.path.getsize(os.path.join(d, "model.safetensors")) == 300 * 1024
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &cache.display().to_string()])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn repo_kind_prefixes_match_the_mock() {
    assert_eq!(RepoKind::Dataset.url_prefix(), "datasets/");
}

#[tokio::test]
async fn a_repository_of_many_files_keeps_several_in_flight() {
    let mock = HfMock::start().await;
    // 16 LFS files of 128 KiB at 256 KiB/s per connection: one at a time would take 8 s.
    let files: Vec<HfFile> = (0..16)
        .map(|i| {
            HfFile::lfs(
                format!("shards/part-{i:02}.bin"),
                pseudo_random_bytes(128 * KIB, 900 + i),
            )
        })
        .collect();
    mock.add_repo(HfRepo::model("acme/many").with_files(files));
    mock.set_cdn_throttle(Some(256 * KIB as u64));
    let daemon = TestDaemon::start_with(|s| s.engine.files_in_flight = 8).await;
    let cache = daemon.downloads.join("hub");
    let mut client = daemon.client().await;
    let started = std::time::Instant::now();
    let job = add(&mut client, &mock, "hf://acme/many", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    let elapsed = started.elapsed();
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.files.len(), 16);
    assert!(done.files.iter().all(|f| f.state == FileState::Completed));
    assert!(
        elapsed < Duration::from_secs(4),
        "16 throttled files took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_file_settling_after_its_last_byte_does_not_hold_up_the_next() {
    let mock = HfMock::start().await;
    let first = HfFile::lfs("a.bin", pseudo_random_bytes(64 * KIB, 31));
    let second = HfFile::lfs("b.bin", pseudo_random_bytes(64 * KIB, 32));
    let first_blob = first.etag();
    mock.add_repo(HfRepo::model("acme/settle").with_files(vec![first, second]));
    // One file receiving at a time; a.bin is first in the listing.
    let daemon = TestDaemon::start_with(|s| s.engine.files_in_flight = 1).await;
    let cache = daemon.downloads.join("hub");
    // huggingface_hub's lock on a.bin's blob, held as another process installing it would:
    // a.bin has all its bytes but cannot be installed until the lock goes.
    let held = mdld::layout::locks::lock(&mdld::layout::locks::blob_lock_path(
        &cache,
        "models--acme--settle",
        &first_blob,
    ))
    .expect("take the blob lock");
    let mut client = daemon.client().await;
    let job = add(&mut client, &mock, "hf://acme/settle", &cache, |_| {}).await;
    let waiting = daemon
        .wait_job(job.id, Duration::from_secs(20), |j| {
            j.files.len() == 2 && j.files.iter().any(|f| f.state == FileState::Completed)
        })
        .await;
    assert_eq!(
        waiting
            .files
            .iter()
            .find(|f| f.path.ends_with(&first_blob))
            .map(|f| f.state),
        Some(FileState::Verifying),
        "a.bin waits for its lock while b.bin went ahead: {waiting:#?}"
    );
    drop(held);
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert!(done.files.iter().all(|f| f.state == FileState::Completed));
}

#[tokio::test]
async fn the_same_bytes_from_another_source_are_linked_not_downloaded() {
    let weights = pseudo_random_bytes(512 * KIB, 4242);
    // First a plain URL with its sha256.
    let server = testkit::FileServer::start().await;
    let plain = server.add("/mirror/model.safetensors", weights.clone());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let first = crate::add_url(
        &mut client,
        &plain.url,
        &daemon.downloads.join("plain"),
        Some(&plain.sha256),
    )
    .await;
    assert_eq!(
        daemon.wait_finished(first.id).await.state,
        JobState::Completed
    );
    // Then the same weights from the Hub: nothing comes from the CDN.
    let mock = HfMock::start().await;
    mock.add_repo(HfRepo::model("acme/dedupe").with_files(vec![
        HfFile::regular("config.json", "{}\n"),
        HfFile::lfs("model.safetensors", weights.clone()),
    ]));
    let cache = daemon.downloads.join("hub");
    let job = add(&mut client, &mock, "hf://acme/dedupe", &cache, |_| {}).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let reused = done
        .files
        .iter()
        .find(|f| f.sha256.as_deref() == Some(plain.sha256.as_str()))
        .expect("the LFS blob");
    assert_eq!(reused.endpoint.as_deref(), Some("local copy"), "{done:#?}");
    assert_eq!(
        mock.cdn_body_bytes_sent(),
        0,
        "no bytes fetched from the CDN"
    );
    let snapshot_file = std::fs::read_dir(cache.join("models--acme--dedupe/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("model.safetensors");
    assert_eq!(std::fs::read(snapshot_file).unwrap(), weights.as_ref());
}
