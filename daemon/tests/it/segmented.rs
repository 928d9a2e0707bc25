//! Segmented downloads: several Range connections per file, resume of every segment, the
//! fallback to one stream, and the per-host connection cap across jobs.

use std::time::{Duration, Instant};

use mdl_protocol::JobState;
use testkit::daemon::TestDaemon;
use testkit::{pseudo_random_bytes, Behavior, Fault, FileServer, ServedFile};

use crate::add_url;

const MIB: u64 = 1024 * 1024;

/// A CDN that caps every connection at `rate` bytes per second.
fn capped(rate: u64) -> Behavior {
    Behavior {
        rate_limit_bytes_per_sec: Some(rate),
        ..Default::default()
    }
}

fn segmented(settings: &mut mdld::Settings, segments: u32) {
    settings.engine.segment_threshold = MIB;
    settings.engine.segments = segments;
    settings.engine.min_segment = 512 * 1024;
}

/// Queue `file` (saved as `name`) with its sha256, wait for it to complete and check the bytes
/// on disk; returns how long it took from the add.
async fn download_verified(daemon: &TestDaemon, file: &ServedFile, name: &str) -> Duration {
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
    let elapsed = started.elapsed();
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        testkit::sha256_hex(&std::fs::read(daemon.downloads.join(name)).unwrap()),
        file.sha256
    );
    elapsed
}

#[tokio::test]
async fn a_capped_connection_is_beaten_by_several_segments() {
    let server = FileServer::start().await;
    let file = server.add("/seg.bin", pseudo_random_bytes(16 * MIB as usize, 41));
    server.set_behavior("/seg.bin", capped(4 * MIB));
    let daemon = TestDaemon::start_with(|s| segmented(s, 4)).await;
    let elapsed = download_verified(&daemon, &file, "seg.bin").await;
    // One connection would need 4 s.
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    assert!(
        server.max_in_flight() >= 3,
        "max in flight {}",
        server.max_in_flight()
    );
    let stats = server.stats("/seg.bin");
    let wasted = stats.body_bytes_sent - file.len;
    assert!(wasted <= 2 * MIB, "{wasted} bytes fetched twice");
    assert!(
        stats
            .log
            .iter()
            .skip(1)
            .all(|r| r.range.is_some() && r.if_range.is_some()),
        "{:#?}",
        stats.log
    );
}

#[tokio::test]
async fn a_segmented_download_resumes_every_segment_after_a_restart() {
    let server = FileServer::start().await;
    let file = server.add(
        "/resume-seg.bin",
        pseudo_random_bytes(32 * MIB as usize, 42),
    );
    server.set_behavior("/resume-seg.bin", capped(4 * MIB));
    let daemon = TestDaemon::start_with(|s| segmented(s, 4)).await;
    let mut client = daemon.client().await;
    let job = add_url(
        &mut client,
        &file.url,
        &daemon.downloads,
        Some(&file.sha256),
    )
    .await;
    daemon
        .wait_job(job.id, Duration::from_secs(30), |j| {
            j.bytes_done >= 10 * MIB
        })
        .await;
    drop(client);
    let requests_before = server.stats("/resume-seg.bin").log.len();
    let daemon = daemon.restart().await;
    crate::expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("resume-seg.bin"),
        &file.sha256,
    )
    .await;
    let stats = server.stats("/resume-seg.bin");
    let refetched = stats.body_bytes_sent - file.len;
    assert!(refetched <= 3 * MIB, "re-fetched {refetched} bytes");
    // After the restart several segments picked up where they were, none from byte 0.
    let starts: Vec<u64> = stats.log[requests_before..]
        .iter()
        .filter_map(|r| r.range.as_deref())
        .map(|r| {
            r.trim_start_matches("bytes=")
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        starts.len() >= 2 && starts.iter().all(|&s| s > 0),
        "{starts:?}"
    );
}

#[tokio::test]
async fn a_server_that_refuses_ranges_gets_one_stream() {
    let server = FileServer::start().await;
    let file = server.add("/one.bin", pseudo_random_bytes(6 * MIB as usize, 43));
    server.set_behavior(
        "/one.bin",
        Behavior {
            no_ranges: true,
            ..capped(16 * MIB)
        },
    );
    let daemon = TestDaemon::start_with(|s| segmented(s, 4)).await;
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
    assert_eq!(server.max_in_flight(), 1);
    assert_eq!(server.stats("/one.bin").requests, 1);
    assert!(
        done.files[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("single stream"),
        "{done:#?}"
    );
}

/// A file whose every connection is capped gets more connections than it started with, up to
/// `max_segments`, and is verified as usual.
#[tokio::test]
async fn capped_connections_grow_towards_max_segments() {
    let server = FileServer::start().await;
    let file = server.add("/grow.bin", pseudo_random_bytes(24 * MIB as usize, 44));
    server.set_behavior("/grow.bin", capped(2 * MIB));
    let daemon = TestDaemon::start_with(|s| {
        segmented(s, 2);
        s.engine.max_segments = 6;
    })
    .await;
    let elapsed = download_verified(&daemon, &file, "grow.bin").await;
    // Two connections would need 6 s; the growth adds connections after about 0.7 s.
    let peak = server.max_in_flight();
    assert!((4..=6).contains(&peak), "max in flight {peak}");
    assert!(elapsed < Duration::from_millis(5000), "took {elapsed:?}");
    let wasted = server.stats("/grow.bin").body_bytes_sent - file.len;
    assert!(wasted <= 2 * MIB, "{wasted} bytes fetched twice");
}

/// A host that sets its own `segments` keeps that count: no growth past it.
#[tokio::test]
async fn a_host_with_its_own_segment_count_does_not_grow() {
    let server = FileServer::start().await;
    let file = server.add("/pinned.bin", pseudo_random_bytes(12 * MIB as usize, 45));
    server.set_behavior("/pinned.bin", capped(2 * MIB));
    let host = server.addr().to_string();
    let daemon = TestDaemon::start_with(|s| {
        segmented(s, 2);
        s.engine.max_segments = 8;
        s.engine.hosts.insert(
            host,
            mdld::settings::HostSettings {
                segments: Some(3),
                ..Default::default()
            },
        );
    })
    .await;
    download_verified(&daemon, &file, "pinned.bin").await;
    assert_eq!(server.max_in_flight(), 3);
}

#[tokio::test]
async fn the_per_host_cap_holds_across_jobs() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start_with(|s| {
        segmented(s, 4);
        s.engine.max_connections_per_host = 3;
        s.max_concurrent = 3;
    })
    .await;
    let mut client = daemon.client().await;
    let mut jobs = Vec::new();
    for i in 0..3 {
        let path = format!("/cap{i}.bin");
        let file = server.add(&path, pseudo_random_bytes(6 * MIB as usize, 50 + i));
        server.set_behavior(&path, capped(4 * MIB));
        jobs.push(
            add_url(
                &mut client,
                &file.url,
                &daemon.downloads,
                Some(&file.sha256),
            )
            .await
            .id,
        );
    }
    for id in jobs {
        assert_eq!(daemon.wait_finished(id).await.state, JobState::Completed);
    }
    assert_eq!(
        server.max_in_flight(),
        3,
        "three jobs of four segments each shared three connections"
    );
}

/// A first connection that goes quiet right after its first bytes (the burst-then-pause of a
/// capped server such as nginx's `limit_rate`, at its extreme) is split when the probe's time
/// is up, not only when its next chunk arrives (here: only after the stall is detected).
#[tokio::test]
async fn the_split_probe_decides_on_time_when_the_first_connection_pauses() {
    let server = FileServer::start().await;
    let file = server.add("/pause.bin", pseudo_random_bytes(8 * MIB as usize, 43));
    server.set_behavior(
        "/pause.bin",
        Behavior {
            responses: vec![Fault::StallAfter(256 * 1024)],
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start_with(|s| {
        segmented(s, 4);
        s.engine.stall_min = Duration::from_secs(3);
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
    while server.stats("/pause.bin").requests < 2 {
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "no second connection within 1.5 s: the split waited for the stalled connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        testkit::sha256_hex(&std::fs::read(daemon.downloads.join("pause.bin")).unwrap()),
        file.sha256
    );
}
