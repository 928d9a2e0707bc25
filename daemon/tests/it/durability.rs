//! Durability in-process: stalls found in seconds (single stream and segments) without cutting
//! a slow link, and dedupe that re-hashes what it reuses and never hard-links unless asked.
//! (`kill -9` and the strace test run the real binaries: `client/tests/killloop.rs`.)

use std::time::{Duration, Instant};

use mdl_protocol::JobState;
use testkit::daemon::TestDaemon;
use testkit::{pseudo_random_bytes, Behavior, Fault, FileServer};

use crate::{add_url, expect_verified};

const MIB: usize = 1024 * 1024;

/// The default stall rule (`max(5 s, 20 × gap)`, at most 60 s) instead of the tests' 2 s.
fn default_stalls(settings: &mut mdld::Settings) {
    let defaults = mdld::settings::EngineSettings::default();
    settings.engine.stall_timeout = defaults.stall_timeout;
    settings.engine.stall_min = defaults.stall_min;
}

#[tokio::test]
async fn a_server_that_hangs_mid_body_is_replaced_within_seconds() {
    let server = FileServer::start().await;
    let file = server.add("/hang.bin", pseudo_random_bytes(2 * MIB, 1));
    server.push_faults("/hang.bin", [Fault::StallAfter(700_000)]);
    let daemon = TestDaemon::start_with(default_stalls).await;
    let mut client = daemon.client().await;
    let started = Instant::now();
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("hang.bin"),
        &file.sha256,
    )
    .await;
    let took = started.elapsed();
    let stats = server.stats("/hang.bin");
    eprintln!(
        "hung mid-body: recovered in {:.2} s, {} requests",
        took.as_secs_f64(),
        stats.requests
    );
    assert!(took < Duration::from_secs(9), "took {took:?}");
    assert!(took >= Duration::from_secs(4), "cut before 5 s: {took:?}");
    assert_eq!(stats.requests, 2);
}

#[tokio::test]
async fn a_stalled_segment_is_taken_over_at_once() {
    let server = FileServer::start().await;
    let file = server.add("/seg-hang.bin", pseudo_random_bytes(24 * MIB, 2));
    server.set_behavior(
        "/seg-hang.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(8 * MIB as u64),
            responses: vec![Fault::Normal, Fault::StallAfter(300_000)],
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start_with(|s| {
        default_stalls(s);
        s.engine.segments = 4;
        s.engine.segment_threshold = MIB as u64;
        s.engine.single_stream_above = 1024 * MIB as u64;
    })
    .await;
    let mut client = daemon.client().await;
    let started = Instant::now();
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("seg-hang.bin"),
        &file.sha256,
    )
    .await;
    let took = started.elapsed();
    eprintln!("a stalled segment: done in {:.2} s", took.as_secs_f64());
    // About 1 s of transfer, plus 5 s before the stalled range moves on.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn a_fifty_kilobyte_per_second_link_is_never_cut() {
    let server = FileServer::start().await;
    let file = server.add("/slow.bin", pseudo_random_bytes(300_000, 3));
    server.set_behavior(
        "/slow.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(50_000),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start_with(default_stalls).await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("slow.bin"),
        &file.sha256,
    )
    .await;
    assert_eq!(
        server.stats("/slow.bin").requests,
        1,
        "one connection, never cut"
    );
}

#[cfg(unix)]
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test]
async fn dedupe_rehashes_the_copy_and_never_hard_links_by_default() {
    let server = FileServer::start().await;
    let file = server.add("/same.bin", pseudo_random_bytes(MIB, 4));
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let first_dir = daemon.downloads.join("first");
    let first = first_dir.join("same.bin");
    let job = add_url(&mut client, &file.url, &first_dir, Some(&file.sha256)).await;
    expect_verified(&daemon, job.id, &first, &file.sha256).await;
    assert_eq!(server.stats("/same.bin").requests, 1);

    // An intact copy is reused (no request), as a copy of its own, not a hard link.
    let second_dir = daemon.downloads.join("second");
    let job = add_url(&mut client, &file.url, &second_dir, Some(&file.sha256)).await;
    let second = second_dir.join("same.bin");
    expect_verified(&daemon, job.id, &second, &file.sha256).await;
    assert_eq!(server.stats("/same.bin").requests, 1, "reused, not fetched");
    #[cfg(unix)]
    assert_ne!(inode(&first), inode(&second), "no hard link by default");

    // Damage the first copy and put its size and modification time back exactly: the stamp
    // still matches, the re-hash does not, so the bytes are downloaded again.
    let modified = std::fs::metadata(&first).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&first)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::remove_file(&second).unwrap();
    let third_dir = daemon.downloads.join("third");
    let job = add_url(&mut client, &file.url, &third_dir, Some(&file.sha256)).await;
    let done = expect_verified(&daemon, job.id, &third_dir.join("same.bin"), &file.sha256).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        server.stats("/same.bin").requests,
        2,
        "a damaged copy is never reused"
    );
}
