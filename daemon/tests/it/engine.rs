//! The download engine against servers that misbehave on purpose.

use std::time::{Duration, Instant};

use mdl_protocol::{ErrorKind, FileState, JobState};
use testkit::daemon::TestDaemon;
use testkit::{pseudo_random_bytes, Behavior, Fault, FileServer};

use crate::add_url;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn plain_download_is_verified_and_named_from_the_url() {
    let server = FileServer::start().await;
    let file = server.add(
        "/models/tiny.bin",
        pseudo_random_bytes(3 * MIB as usize + 17, 1),
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let path = daemon.downloads.join("tiny.bin");
    assert_eq!(std::fs::read(&path).unwrap().len() as u64, file.len);
    assert_eq!(done.files[0].path, path.display().to_string());
    assert_eq!(done.files[0].sha256.as_deref(), Some(file.sha256.as_str()));
    assert_eq!(done.bytes_done, file.len);
    assert_eq!(done.bytes_total, Some(file.len));
    // No partial file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&daemon.downloads)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[tokio::test]
async fn connection_reset_mid_body_resumes_without_refetching() {
    let server = FileServer::start().await;
    let data = pseudo_random_bytes(8 * MIB as usize, 2);
    let file = server.add("/reset.bin", data);
    server.push_faults(
        "/reset.bin",
        [Fault::ResetAfter(3 * MIB), Fault::ResetAfter(2 * MIB)],
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let stats = server.stats("/reset.bin");
    let refetched = stats.body_bytes_sent - file.len;
    let checkpoint = daemon.settings().engine.checkpoint_bytes;
    assert!(
        refetched <= checkpoint,
        "re-fetched {refetched} bytes, more than one checkpoint ({checkpoint})"
    );
    // The resumed requests asked for the rest with Range and If-Range.
    let resumed: Vec<_> = stats.log.iter().filter(|r| r.range.is_some()).collect();
    assert!(resumed.len() >= 2, "{:#?}", stats.log);
    assert!(resumed
        .iter()
        .all(|r| r.if_range.is_some() && r.status == 206));
}

#[tokio::test]
async fn server_that_ignores_range_restarts_cleanly() {
    let server = FileServer::start().await;
    let file = server.add("/norange.bin", pseudo_random_bytes(4 * MIB as usize, 3));
    server.set_behavior(
        "/norange.bin",
        Behavior {
            no_ranges: true,
            responses: vec![Fault::ResetAfter(2 * MIB)],
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = crate::expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("norange.bin"),
        &file.sha256,
    )
    .await;
    assert!(
        done.files[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("does not support ranges"),
        "{done:#?}"
    );
}

#[tokio::test]
async fn changed_etag_between_attempts_never_splices_versions() {
    let server = FileServer::start().await;
    let old = pseudo_random_bytes(4 * MIB as usize, 4);
    let new = pseudo_random_bytes(4 * MIB as usize, 5);
    let file = server.add("/moving.bin", old);
    let busy = Fault::Status {
        code: 503,
        headers: vec![("Retry-After".into(), "1".into())],
        body: String::new(),
    };
    server.push_faults("/moving.bin", [Fault::ResetAfter(MIB + 5), busy]);
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &daemon.downloads, None).await;
    // Swap the content while the client waits out the 503's Retry-After.
    testkit::daemon::poll_until(Duration::from_secs(10), || async {
        server.stats("/moving.bin").requests >= 2
    })
    .await;
    server.set_body("/moving.bin", new.clone());
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let got = std::fs::read(daemon.downloads.join("moving.bin")).unwrap();
    assert!(
        got == new.as_ref(),
        "the file must be entirely the new version"
    );
    let log = server.stats("/moving.bin").log;
    // The resume carried If-Range with the old ETag and got the whole new file back.
    assert!(
        log.iter().any(|r| r.if_range.is_some() && r.status == 200),
        "{log:#?}"
    );
}

#[tokio::test]
async fn transient_503_then_success() {
    let server = FileServer::start().await;
    let file = server.add("/busy.bin", pseudo_random_bytes(100_000, 6));
    server.push_faults(
        "/busy.bin",
        [
            Fault::Status {
                code: 503,
                headers: vec![],
                body: "busy".into(),
            },
            Fault::Status {
                code: 502,
                headers: vec![],
                body: "bad gateway".into(),
            },
        ],
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(server.stats("/busy.bin").requests, 3);
}

#[tokio::test]
async fn rate_limited_429_waits_for_retry_after() {
    let server = FileServer::start().await;
    let file = server.add("/limited.bin", pseudo_random_bytes(10_000, 7));
    server.push_faults(
        "/limited.bin",
        [Fault::Status {
            code: 429,
            headers: vec![("Retry-After".into(), "1".into())],
            body: "slow down".into(),
        }],
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let started = Instant::now();
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    // The backoff alone would be ~20 ms; Retry-After asked for a full second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn persistent_rate_limit_fails_with_its_kind() {
    let server = FileServer::start().await;
    let file = server.add("/always429.bin", pseudo_random_bytes(10, 8));
    let fault = Fault::Status {
        code: 429,
        headers: vec![("Retry-After".into(), "0".into())],
        body: String::new(),
    };
    server.push_faults("/always429.bin", std::iter::repeat_n(fault, 20));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &daemon.downloads, None).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.error.unwrap().kind, ErrorKind::RateLimited);
}

#[tokio::test]
async fn not_found_and_auth_fail_without_retrying() {
    let server = FileServer::start().await;
    server.add("/secret.bin", pseudo_random_bytes(10, 9));
    server.push_faults(
        "/secret.bin",
        [Fault::Status {
            code: 401,
            headers: vec![],
            body: String::new(),
        }],
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let missing = add_url(
        &mut client,
        &server.url("/missing.bin"),
        &daemon.downloads,
        None,
    )
    .await;
    let secret = add_url(
        &mut client,
        &server.url("/secret.bin"),
        &daemon.downloads,
        None,
    )
    .await;
    let missing = daemon.wait_finished(missing.id).await;
    let secret = daemon.wait_finished(secret.id).await;
    assert_eq!(missing.error.unwrap().kind, ErrorKind::NotFound);
    assert_eq!(secret.error.unwrap().kind, ErrorKind::Auth);
    assert_eq!(server.stats("/secret.bin").requests, 1);
}

#[tokio::test]
async fn wrong_sha256_fails_and_leaves_nothing_at_the_final_path() {
    let server = FileServer::start().await;
    let file = server.add("/corrupt.bin", pseudo_random_bytes(500_000, 10));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let wrong = "0".repeat(64);
    let job = add_url(&mut client, &file.url, &daemon.downloads, Some(&wrong)).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let error = done.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Integrity);
    assert_eq!(error.kind.exit_code(), 7);
    assert!(error.message.contains(&file.sha256), "{}", error.message);
    assert!(!daemon.downloads.join("corrupt.bin").exists());
    assert_eq!(
        std::fs::read_dir(&daemon.downloads).unwrap().count(),
        0,
        "no partial file either"
    );
    assert_eq!(done.files[0].state, FileState::Failed);
}

#[tokio::test]
async fn content_disposition_traversal_stays_inside_the_destination() {
    let server = FileServer::start().await;
    let file = server.add("/dl", pseudo_random_bytes(1000, 11));
    server.set_behavior(
        "/dl",
        Behavior {
            content_disposition: Some(r#"attachment; filename="../../x""#.into()),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let dest = daemon.downloads.join("inner/deeper");
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &dest, Some(&file.sha256)).await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert!(dest.join("x").exists());
    assert!(!daemon.downloads.join("x").exists());
    assert!(!daemon.downloads.join("inner/x").exists());
}

#[tokio::test]
async fn rfc5987_name_is_used() {
    let server = FileServer::start().await;
    let file = server.add("/api/download/42", pseudo_random_bytes(1000, 12));
    server.set_behavior(
        "/api/download/42",
        Behavior {
            content_disposition: Some(
                r#"attachment; filename="plain.bin"; filename*=UTF-8''mod%C3%A8le.safetensors"#
                    .into(),
            ),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &daemon.downloads, None).await;
    assert_eq!(
        daemon.wait_finished(job.id).await.state,
        JobState::Completed
    );
    assert!(daemon.downloads.join("modèle.safetensors").exists());
}

#[tokio::test]
async fn stalled_connection_is_dropped_and_resumed() {
    let server = FileServer::start().await;
    let file = server.add("/stall.bin", pseudo_random_bytes(2 * MIB as usize, 13));
    server.push_faults("/stall.bin", [Fault::StallAfter(MIB)]);
    let daemon =
        TestDaemon::start_with(|s| s.engine.stall_timeout = Duration::from_millis(500)).await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let log = server.stats("/stall.bin").log;
    assert_eq!(log.len(), 2);
    assert!(
        log[1].range.is_some(),
        "the second request resumes: {log:#?}"
    );
}

#[tokio::test]
async fn same_destination_joins_or_completes_at_once() {
    let server = FileServer::start().await;
    let file = server.add("/same.bin", pseudo_random_bytes(200_000, 14));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let request = mdl_protocol::AddRequest {
        source: file.url.clone(),
        dest: Some(daemon.downloads.display().to_string()),
        paused: true,
        ..Default::default()
    };
    let first = client.add(request.clone()).await.unwrap();
    let joined = client.add(request.clone()).await.unwrap();
    assert_eq!(joined.outcome, mdl_protocol::AddOutcome::Joined);
    assert_eq!(joined.job.id, first.job.id);
    client
        .resume(mdl_protocol::Target::Job(first.job.id))
        .await
        .unwrap();
    assert_eq!(
        daemon.wait_finished(first.job.id).await.state,
        JobState::Completed
    );
    let requests_before = server.stats("/same.bin").requests;
    let again = client
        .add(mdl_protocol::AddRequest {
            paused: false,
            ..request.clone()
        })
        .await
        .unwrap();
    assert_eq!(again.outcome, mdl_protocol::AddOutcome::AlreadyComplete);
    assert_eq!(again.job.state, JobState::Completed);
    assert_ne!(again.job.id, first.job.id);
    assert_eq!(
        server.stats("/same.bin").requests,
        requests_before,
        "nothing downloaded again"
    );
    // A copy that changed on disk (stamped off the scheduler's task) is not taken as verified.
    let path = std::path::PathBuf::from(&again.job.files[0].path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    let changed = client
        .add(mdl_protocol::AddRequest {
            paused: true,
            ..request
        })
        .await
        .unwrap();
    assert_ne!(
        changed.outcome,
        mdl_protocol::AddOutcome::AlreadyComplete,
        "{changed:#?}"
    );
}

/// Measure a download's rate after its first MiB (so start-up does not count).
async fn measured_rate(daemon: &TestDaemon, id: u64, len: u64) -> f64 {
    let first = daemon
        .wait_job(id, Duration::from_secs(30), |j| j.bytes_done >= MIB)
        .await;
    let start = Instant::now();
    let done = daemon.wait_finished(id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    (len - first.bytes_done) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test]
async fn global_bandwidth_limit_holds_within_ten_percent_and_persists() {
    let server = FileServer::start().await;
    let file = server.add(
        "/limited-global.bin",
        pseudo_random_bytes(7 * MIB as usize, 31),
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let limit = 2_000_000u64;
    let info = client.set_bandwidth_limit(None, Some(limit)).await.unwrap();
    assert_eq!(info.bandwidth_limit, Some(limit));
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    let rate = measured_rate(&daemon, job.id, file.len).await;
    assert!(
        (rate - limit as f64).abs() <= limit as f64 * 0.10,
        "rate {rate:.0} B/s vs limit {limit}"
    );
    drop(client);
    let daemon = daemon.restart().await;
    let mut client = daemon.client().await;
    assert_eq!(
        client.daemon_status().await.unwrap().bandwidth_limit,
        Some(limit),
        "kept across restarts"
    );
    client.set_bandwidth_limit(None, None).await.unwrap();
}

#[tokio::test]
async fn per_job_limit_applies_while_running() {
    let server = FileServer::start().await;
    let file = server.add(
        "/limited-job.bin",
        pseudo_random_bytes(8 * MIB as usize, 32),
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = client
        .add(mdl_protocol::AddRequest {
            source: file.url.clone(),
            dest: Some(daemon.downloads.display().to_string()),
            paused: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let limit = 3_000_000u64;
    client
        .set_bandwidth_limit(Some(job.id), Some(limit))
        .await
        .unwrap();
    client
        .resume(mdl_protocol::Target::Job(job.id))
        .await
        .unwrap();
    let rate = measured_rate(&daemon, job.id, file.len).await;
    assert!(
        (rate - limit as f64).abs() <= limit as f64 * 0.10,
        "rate {rate:.0} B/s vs limit {limit}"
    );
}

#[tokio::test]
async fn a_416_on_resume_after_a_restart_starts_the_file_over_cleanly() {
    let server = FileServer::start().await;
    let file = server.add("/r416.bin", pseudo_random_bytes(4 * MIB as usize, 71));
    server.set_behavior(
        "/r416.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(4 * MIB),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    daemon
        .wait_job(job.id, Duration::from_secs(20), |j| j.bytes_done >= MIB)
        .await;
    drop(client);
    // After the restart the server claims our range is not satisfiable (its copy changed size
    // under the same name): the partial file must be dropped and fetched again, never spliced.
    // (Faults apply to new requests; the one in flight is not affected.)
    let fault = Fault::Status {
        code: 416,
        headers: vec![("Content-Range".into(), format!("bytes */{}", file.len / 2))],
        body: String::new(),
    };
    server.push_faults("/r416.bin", [fault]);
    let daemon = daemon.restart().await;
    crate::expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("r416.bin"),
        &file.sha256,
    )
    .await;
    let log = server.stats("/r416.bin").log;
    let after_416 = log
        .iter()
        .skip_while(|r| r.status != 416)
        .nth(1)
        .expect("a request after the 416");
    assert!(
        after_416.range.is_none() && after_416.status == 200,
        "started over: {log:#?}"
    );
}
