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
