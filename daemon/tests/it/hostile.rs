//! Hostile or broken servers never win: a server that accepts and never answers, a metadata
//! answer larger than any real one, a hub file list with paths that would escape the
//! destination.

use std::time::Duration;

use mdl_protocol::{AddRequest, JobState, Secret};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::FileServer;

fn quick_retries(settings: &mut mdld::Settings) {
    settings.engine.response_timeout = Duration::from_millis(500);
    settings.engine.max_attempts = 2;
    settings.engine.backoff_base = Duration::from_millis(10);
    settings.engine.backoff_max = Duration::from_millis(20);
}

#[tokio::test]
async fn a_server_that_never_sends_headers_does_not_hold_the_job() {
    // Accepts connections and reads, but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let daemon = TestDaemon::start_with(quick_retries).await;
    let mut client = daemon.client().await;
    let job = crate::add_url(
        &mut client,
        &format!("http://{addr}/model.bin"),
        &daemon.downloads,
        None,
    )
    .await;
    let done = tokio::time::timeout(Duration::from_secs(20), daemon.wait_finished(job.id))
        .await
        .expect("the job must not hang on a silent server");
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let message = done.error.unwrap().message;
    assert!(message.contains("no response within"), "{message}");
    silent.abort();
}

#[tokio::test]
async fn a_metadata_answer_larger_than_any_real_one_is_refused() {
    let server = FileServer::start().await;
    server.add(
        "/api/models/acme/huge/revision/main",
        vec![b' '; mdld::sources::http_meta::MAX_META_BODY + 1],
    );
    let daemon = TestDaemon::start_with(quick_retries).await;
    let mut client = daemon.client().await;
    let job = client
        .add(AddRequest {
            source: "hf://acme/huge".into(),
            dest: Some(daemon.downloads.display().to_string()),
            env: vec![(
                "HF_ENDPOINT".into(),
                Secret(server.url("").trim_end_matches('/').into()),
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let message = done.error.unwrap().message;
    assert!(message.contains("larger than 32 MiB"), "{message}");
}

#[tokio::test]
async fn hub_paths_that_would_escape_are_refused_naming_the_entry() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim.txt");
    for (bad, why) in [
        (target.display().to_string(), "absolute path"),
        ("../../victim.txt".to_string(), "\"..\" component"),
        ("sub//x.json".to_string(), "empty path component"),
        ("CON.json".to_string(), "Windows reserves"),
    ] {
        let mock = HfMock::start().await;
        mock.add_repo(HfRepo::model("acme/evil").with_files(vec![
            HfFile::regular("ok.json", "{}\n"),
            HfFile::regular(bad.clone(), "pwned\n"),
        ]));
        let daemon = TestDaemon::start().await;
        let dest = daemon.downloads.join("evil");
        let mut client = daemon.client().await;
        let job = client
            .add(AddRequest {
                source: "hf://acme/evil".into(),
                dest: Some(dest.display().to_string()),
                env: vec![("HF_ENDPOINT".into(), Secret(mock.endpoint()))],
                ..Default::default()
            })
            .await
            .unwrap()
            .job;
        let done = daemon.wait_finished(job.id).await;
        assert_eq!(done.state, JobState::Failed, "{bad:?}: {done:#?}");
        let message = done.error.unwrap().message;
        assert!(message.contains(why), "{bad:?}: {message}");
        assert!(
            message.contains(&format!("{bad:?}")),
            "names the entry: {message}"
        );
        assert!(!target.exists(), "{bad:?} wrote outside the destination");
        assert!(
            !dest.join("ok.json").exists(),
            "nothing is fetched from a refused list"
        );
    }
}

#[tokio::test]
async fn a_second_job_never_replaces_another_jobs_verified_file_with_other_bytes() {
    let server = FileServer::start().await;
    let first = testkit::pseudo_random_bytes(4096, 1);
    let second = testkit::pseudo_random_bytes(4096, 2);
    server.add("/a/model.bin", first.clone());
    server.add("/b/model.bin", second.clone());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("same");
    let one = crate::add_url(&mut client, &server.url("/a/model.bin"), &dest, None).await;
    assert_eq!(
        daemon.wait_finished(one.id).await.state,
        JobState::Completed
    );
    // Another URL whose file has the same name in the same directory.
    let two = crate::add_url(&mut client, &server.url("/b/model.bin"), &dest, None).await;
    let done = daemon.wait_finished(two.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let message = done.error.unwrap().message;
    assert!(
        message.contains(&format!("verified download of job {}", one.id))
            && message.contains("--name"),
        "{message}"
    );
    assert_eq!(std::fs::read(dest.join("model.bin")).unwrap(), first);
    // The same bytes under the same name are fine (nothing is replaced by other bytes).
    server.add("/c/model.bin", first.clone());
    let three = crate::add_url(&mut client, &server.url("/c/model.bin"), &dest, None).await;
    assert_eq!(
        daemon.wait_finished(three.id).await.state,
        JobState::Completed
    );
    // And after the first job is removed with its files, the name is free again.
    client.remove(vec![one.id, three.id], true).await.unwrap();
    let again = crate::add_url(&mut client, &server.url("/b/model.bin"), &dest, None).await;
    assert_eq!(
        daemon.wait_finished(again.id).await.state,
        JobState::Completed
    );
    assert_eq!(std::fs::read(dest.join("model.bin")).unwrap(), second);
}

/// With an expected sha256 the runner asks which job owns the final path while the file is
/// still being synced (engine `received`); the answer must protect the other job's file just
/// as the question after verification did, for small (in-memory) and threaded writes alike.
#[tokio::test]
async fn the_owner_question_asked_early_still_protects_another_jobs_file() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    for (n, size) in [(1u64, 4096usize), (2, 3 << 20)] {
        let first = testkit::pseudo_random_bytes(size, 10 * n);
        let second = testkit::pseudo_random_bytes(size, 10 * n + 1);
        let first_sha = testkit::sha256_hex(&first);
        let second_sha = testkit::sha256_hex(&second);
        server.add(&format!("/{n}/a/model.bin"), first.clone());
        server.add(&format!("/{n}/b/model.bin"), second.clone());
        let dest = daemon.downloads.join(format!("early-{n}"));
        let url = |p: &str| server.url(&format!("/{n}/{p}/model.bin"));
        let one = crate::add_url(&mut client, &url("a"), &dest, Some(&first_sha)).await;
        assert_eq!(
            daemon.wait_finished(one.id).await.state,
            JobState::Completed
        );
        let two = crate::add_url(&mut client, &url("b"), &dest, Some(&second_sha)).await;
        let done = daemon.wait_finished(two.id).await;
        assert_eq!(done.state, JobState::Failed, "size {size}: {done:#?}");
        let message = done.error.unwrap().message;
        assert!(
            message.contains(&format!("verified download of job {}", one.id)),
            "{message}"
        );
        assert_eq!(std::fs::read(dest.join("model.bin")).unwrap(), first);
        // The same bytes (and sha256) under the same name install fine.
        server.add(&format!("/{n}/c/model.bin"), first.clone());
        let three = crate::add_url(&mut client, &url("c"), &dest, Some(&first_sha)).await;
        let three = daemon.wait_finished(three.id).await;
        assert_eq!(three.state, JobState::Completed, "{three:#?}");
    }
}
