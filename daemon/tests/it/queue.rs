//! The persistent priority queue: order, limits, pause / resume / cancel, restarts.

use std::time::Duration;

use mdl_protocol::{AddRequest, Event, JobState, Target};
use testkit::daemon::{poll_until, TestDaemon};
use testkit::{pseudo_random_bytes, Behavior, FileServer};

use crate::add_url;

fn paused_add(url: String, dest: &std::path::Path, priority: i32) -> AddRequest {
    AddRequest {
        source: url,
        dest: Some(dest.display().to_string()),
        priority,
        paused: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn jobs_run_by_priority_then_fifo() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start_with(|s| s.max_concurrent = 1).await;
    let mut client = daemon.client().await;
    let mut ids = Vec::new();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)] {
        let file = server.add(
            &format!("/{name}.bin"),
            pseudo_random_bytes(1000, (priority + 100) as u64),
        );
        ids.push(
            client
                .add(paused_add(file.url, &daemon.downloads, priority))
                .await
                .unwrap()
                .job
                .id,
        );
    }
    let mut events = daemon.client().await.subscribe().await.unwrap();
    client.resume(Target::All).await.unwrap();
    let mut started = Vec::new();
    while started.len() < ids.len() {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::Started(job)) => started.push(job.id),
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
    // b(5), d(5), a(0), c(0), e(-1)
    assert_eq!(started, vec![ids[1], ids[3], ids[0], ids[2], ids[4]]);
}

#[tokio::test]
async fn queue_survives_a_restart_in_order() {
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let mut ids = Vec::new();
    for priority in [1, 3, 2] {
        let url = format!("http://127.0.0.1:9/f{priority}.bin");
        ids.push(
            client
                .add(paused_add(url, &daemon.downloads, priority))
                .await
                .unwrap()
                .job
                .id,
        );
    }
    client.set_concurrency(2).await.unwrap();
    drop(client);
    let daemon = daemon.restart().await;
    let mut client = daemon.client().await;
    let jobs = client.list().await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert!(jobs.iter().all(|j| j.state == JobState::Paused));
    assert_eq!(
        client.daemon_status().await.unwrap().max_concurrent,
        2,
        "runtime settings persist"
    );
    // Resumed after the restart, they are queued in priority order.
    client.resume(Target::All).await.unwrap();
    client.pause(Target::All).await.unwrap();
    let next = client
        .add(paused_add(
            "http://127.0.0.1:9/x".into(),
            &daemon.downloads,
            0,
        ))
        .await
        .unwrap();
    assert!(
        next.job.id > *ids.iter().max().unwrap(),
        "ids keep increasing across restarts"
    );
}

#[tokio::test]
async fn concurrency_limit_holds_and_nothing_is_refused() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start_with(|s| s.max_concurrent = 2).await;
    let mut client = daemon.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let path = format!("/slow{i}.bin");
        let file = server.add(&path, pseudo_random_bytes(300_000, i));
        server.set_behavior(
            &path,
            Behavior {
                rate_limit_bytes_per_sec: Some(1_000_000),
                ..Default::default()
            },
        );
        ids.push(
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
    let mut max_running = 0;
    loop {
        let jobs = client.list().await.unwrap();
        let running = jobs.iter().filter(|j| j.state == JobState::Running).count();
        max_running = max_running.max(running);
        assert!(running <= 2, "{running} jobs running with a limit of 2");
        if jobs.iter().all(|j| j.state == JobState::Completed) {
            break;
        }
        assert!(
            !jobs.iter().any(|j| j.state == JobState::Failed),
            "{jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(max_running, 2);
}

#[tokio::test]
async fn pause_keeps_bytes_and_resume_continues() {
    let server = FileServer::start().await;
    let file = server.add("/pausable.bin", pseudo_random_bytes(6_000_000, 21));
    server.set_behavior(
        "/pausable.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(4_000_000),
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
        .wait_job(job.id, Duration::from_secs(20), |j| {
            j.bytes_done > 1_500_000
        })
        .await;
    client.pause(Target::Job(job.id)).await.unwrap();
    let paused = daemon.wait_state(job.id, JobState::Paused).await;
    assert!(paused.bytes_done > 1_000_000, "{paused:#?}");
    let part = daemon.downloads.join(format!(".mdl-{}-0.part", job.id));
    assert!(part.exists());
    let sent_before_resume = server.stats("/pausable.bin").body_bytes_sent;
    client.resume(Target::Job(job.id)).await.unwrap();
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let stats = server.stats("/pausable.bin");
    let refetched = stats.body_bytes_sent - file.len;
    assert!(
        refetched <= daemon.settings().engine.checkpoint_bytes,
        "re-fetched {refetched} bytes"
    );
    assert!(stats.log.last().unwrap().range.is_some());
    assert!(stats.body_bytes_sent - sent_before_resume < file.len);
    assert!(!part.exists());
}

#[tokio::test]
async fn cancel_removes_partial_files_and_is_final() {
    let server = FileServer::start().await;
    let file = server.add("/cancel.bin", pseudo_random_bytes(4_000_000, 22));
    server.set_behavior(
        "/cancel.bin",
        Behavior {
            rate_limit_bytes_per_sec: Some(2_000_000),
            ..Default::default()
        },
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let job = add_url(&mut client, &file.url, &daemon.downloads, None).await;
    daemon
        .wait_job(job.id, Duration::from_secs(20), |j| j.bytes_done > 500_000)
        .await;
    client.cancel(job.id).await.unwrap();
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Cancelled);
    poll_until(Duration::from_secs(5), || async {
        std::fs::read_dir(&daemon.downloads).unwrap().count() == 0
    })
    .await;
    let err = client.cancel(job.id).await.unwrap_err();
    assert_eq!(err.kind(), mdl_protocol::ErrorKind::InvalidRequest);
    client.remove(vec![job.id], false).await.unwrap();
    assert_eq!(
        client.status(job.id).await.unwrap_err().kind(),
        mdl_protocol::ErrorKind::InvalidRequest
    );
}

#[tokio::test]
async fn bad_add_requests_get_clear_errors() {
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cases = [
        (
            AddRequest {
                source: "ftp://x/y".into(),
                ..Default::default()
            },
            "unsupported source",
        ),
        (
            AddRequest {
                source: "".into(),
                ..Default::default()
            },
            "empty",
        ),
        (
            AddRequest {
                source: "http://h/f".into(),
                sha256: Some("abc".into()),
                ..Default::default()
            },
            "64 hex",
        ),
        (
            AddRequest {
                source: "http://h/f".into(),
                dest: Some("relative/dir".into()),
                ..Default::default()
            },
            "absolute",
        ),
    ];
    for (request, needle) in cases {
        let err = client.add(request).await.unwrap_err();
        assert_eq!(err.kind(), mdl_protocol::ErrorKind::InvalidRequest);
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(
        client.list().await.unwrap().is_empty(),
        "nothing was queued"
    );
}

#[tokio::test]
async fn priority_change_reorders_the_queue() {
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let a = client
        .add(AddRequest {
            source: "http://127.0.0.1:9/a".into(),
            dest: Some(daemon.downloads.display().to_string()),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    client.pause(Target::All).await.unwrap();
    let b = client
        .add(paused_add(
            "http://127.0.0.1:9/b".into(),
            &daemon.downloads,
            0,
        ))
        .await
        .unwrap()
        .job;
    client.set_concurrency(1).await.unwrap();
    let updated = client.set_priority(b.id, 9).await.unwrap();
    assert_eq!(updated.priority, 9);
    client.resume(Target::All).await.unwrap();
    client.pause(Target::All).await.unwrap();
    let order: Vec<_> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(order.contains(&a.id) && order.contains(&b.id));
}

/// `AddMany` answers every source at its own position when refusals are spread among the
/// queued ones: an empty source, and a destination that cannot be created (below a file),
/// on both sides of a scheduler call's boundary (1000 sources).
#[tokio::test]
async fn add_many_puts_refusals_among_the_queued_replies_in_order() {
    use mdl_protocol::{AddOutcome, Request, Response};
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let blocker = daemon.downloads.join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let below_a_file = blocker.join("sub");
    let refused = |i: usize| i % 7 == 3 || i % 11 == 5;
    let requests: Vec<AddRequest> = (0..1500)
        .map(|i| match i {
            i if i % 7 == 3 => AddRequest {
                source: " ".into(),
                ..Default::default()
            },
            i if i % 11 == 5 => {
                paused_add(format!("http://127.0.0.1:9/x{i}.bin"), &below_a_file, 0)
            }
            i => paused_add(format!("http://127.0.0.1:9/m{i}.bin"), &daemon.downloads, 0),
        })
        .collect();
    let replies = match client.request(&Request::AddMany(requests)).await.unwrap() {
        Response::AddedMany(replies) => replies,
        other => panic!("{other:?}"),
    };
    assert_eq!(replies.len(), 1500);
    for (i, reply) in replies.iter().enumerate() {
        match reply {
            Response::Error(e) if i % 7 == 3 => assert!(e.message.contains("empty"), "{i}: {e:?}"),
            Response::Error(e) if i % 11 == 5 => {
                assert!(
                    e.message.contains("cannot create the destination"),
                    "{i}: {e:?}"
                )
            }
            Response::Added(added) if !refused(i) => {
                assert_eq!(added.outcome, AddOutcome::Created);
                assert!(
                    added.job.source.ends_with(&format!("/m{i}.bin")),
                    "{i}: {}",
                    added.job.source
                );
            }
            other => panic!("source {i}: {other:?}"),
        }
    }
    let queued = (0..1500).filter(|i| !refused(*i)).count();
    assert_eq!(client.list().await.unwrap().len(), queued);
}

/// `AddMany` queues every source with one reply each, in order (an invalid source gets its
/// error, a duplicate joins), durably; a listing longer than a page arrives whole and in
/// order.
#[tokio::test]
async fn add_many_replies_per_source_and_the_listing_pages_through_every_job() {
    use mdl_protocol::{AddOutcome, Request, Response};
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let n = 2500; // several scheduler calls and several listing pages
    let mut requests: Vec<AddRequest> = (0..n)
        .map(|i| paused_add(format!("http://127.0.0.1:9/m{i}.bin"), &daemon.downloads, 0))
        .collect();
    requests.push(AddRequest {
        source: "".into(),
        ..Default::default()
    });
    requests.push(requests[0].clone());
    let replies = match client.request(&Request::AddMany(requests)).await.unwrap() {
        Response::AddedMany(replies) => replies,
        other => panic!("{other:?}"),
    };
    assert_eq!(replies.len(), n + 2);
    let mut ids = Vec::new();
    for reply in &replies[..n] {
        match reply {
            Response::Added(added) => {
                assert_eq!(added.outcome, AddOutcome::Created);
                ids.push(added.job.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(matches!(&replies[n], Response::Error(e) if e.message.contains("empty")));
    assert!(
        matches!(&replies[n + 1], Response::Added(a) if a.outcome == AddOutcome::Joined && a.job.id == ids[0])
    );
    // One more job, that runs (and fails: nothing listens on port 9).
    let queued = client
        .add(AddRequest {
            paused: false,
            ..paused_add("http://127.0.0.1:9/q.bin".into(), &daemon.downloads, 0)
        })
        .await
        .unwrap()
        .job
        .id;
    drop(client);
    let daemon = daemon.restart().await;
    let mut client = daemon.client().await;
    let jobs = client.list().await.unwrap();
    assert_eq!(jobs.len(), n + 1);
    let paused: Vec<_> = jobs.iter().filter(|j| j.id != queued).collect();
    assert_eq!(paused.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert!(paused.iter().all(|j| j.state == JobState::Paused));
    crate::assert_listing_matches_status(&daemon).await;
    // Page by page, the same jobs, in pages of about a thousand (the running one is listed
    // first while it runs and by id once it has failed: it may do so between the listings).
    let mut pages = Vec::new();
    client
        .list_pages(|page| {
            pages.push(page);
            Ok::<(), ()>(())
        })
        .await
        .unwrap()
        .unwrap();
    assert!(pages.len() >= 2, "{} pages", pages.len());
    assert!(pages.iter().all(|p| p.len() < 2000), "a page of every job");
    // Every job once, the paused ones by id (where the running one is depends on its state).
    let lists_every_job = |listed: Vec<u64>| {
        assert_eq!(listed.len(), n + 1);
        assert_eq!(listed.iter().filter(|id| **id == queued).count(), 1);
        let paused: Vec<_> = listed.into_iter().filter(|id| *id != queued).collect();
        assert_eq!(paused, ids);
    };
    lists_every_job(pages.into_iter().flatten().map(|j| j.id).collect());
    // An error from the caller ends the listing after the first page.
    let mut seen = 0;
    let stopped = client
        .list_pages(|page| {
            seen += 1;
            Err(page.len())
        })
        .await
        .unwrap();
    assert!(matches!(stopped, Err(len) if len >= 1000), "{stopped:?}");
    assert_eq!(seen, 1);
    // A subscriber's snapshot is read the same way, page by page (its first frame is a part
    // of one or two pages, not every job), and joins into the same list.
    let mut raw = daemon.client().await;
    match raw.request(&Request::Subscribe).await.unwrap() {
        Response::Event(Event::SnapshotPart(part)) => {
            assert!((1000..2000).contains(&part.len()), "{}", part.len())
        }
        other => panic!("{other:?}"),
    }
    let mut events = daemon.client().await.subscribe().await.unwrap();
    match events.next().await.unwrap() {
        Some(Event::Snapshot(snapshot)) => lists_every_job(snapshot.iter().map(|j| j.id).collect()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bulk_add_reaches_a_subscriber_as_events_or_a_lagged_count_for_every_source() {
    use mdl_protocol::{Request, Response};
    let daemon = TestDaemon::start().await;
    let mut events = daemon.client().await.subscribe().await.unwrap();
    match events.next().await.unwrap() {
        Some(Event::Snapshot(jobs)) => assert!(jobs.is_empty()),
        other => panic!("{other:?}"),
    }
    let n = 2500u64;
    let requests: Vec<AddRequest> = (0..n)
        .map(|i| paused_add(format!("http://127.0.0.1:9/b{i}.bin"), &daemon.downloads, 0))
        .collect();
    let mut client = daemon.client().await;
    let replies = match client.request(&Request::AddMany(requests)).await.unwrap() {
        Response::AddedMany(replies) => replies,
        other => panic!("{other:?}"),
    };
    let last = match replies.last() {
        Some(Response::Added(added)) => added.job.id,
        other => panic!("{other:?}"),
    };
    // Every source is accounted for, as a `Queued` event or in a `Lagged` count; the newest
    // ones arrive as events, in order.
    let (mut queued, mut missed, mut lags) = (Vec::new(), 0, 0);
    while queued.last() != Some(&last) {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Ok(Some(Event::Queued(job)))) => queued.push(job.id),
            Ok(Ok(Some(Event::Lagged { missed: m }))) => {
                missed += m;
                lags += 1;
            }
            Ok(Ok(Some(Event::Heartbeat { .. }))) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(lags >= 1, "2500 events at once must lag a subscriber");
    assert_eq!(queued.len() as u64 + missed, n);
    assert!(queued.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(
        queued.len() >= 1000,
        "the newest bus-full arrive: {}",
        queued.len()
    );
}
