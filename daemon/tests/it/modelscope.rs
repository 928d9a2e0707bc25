//! ModelScope sources against the testkit mock (API host + OSS storage host).

use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, ErrorKind, JobState, Secret};
use testkit::daemon::TestDaemon;
use testkit::hubs::modelscope::{MsFile, MsMock, MsModel};
use testkit::pseudo_random_bytes;

fn model() -> MsModel {
    MsModel::new("acme/tiny.v2").with_files(vec![
        MsFile::new("configuration.json", "{\"framework\": \"pytorch\"}\n"),
        MsFile::lfs("onnx/model.onnx", pseudo_random_bytes(200 * 1024, 4)),
        MsFile::lfs("weights.bin", pseudo_random_bytes(100 * 1024, 5)),
    ])
}

#[tokio::test]
async fn listing_and_download_into_dest_with_include() {
    let mock = MsMock::start().await;
    mock.add_model(model());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("ms");
    let job = client
        .add(AddRequest {
            source: "ms://acme/tiny.v2".into(),
            dest: Some(dest.display().to_string()),
            exclude: vec!["weights.*".into()],
            env: env(&[("MODELSCOPE_ENDPOINT", &mock.endpoint())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.revision.as_deref(), Some("master"));
    assert!(dest.join(".gitattributes").exists());
    assert!(dest.join("configuration.json").exists());
    assert_eq!(
        std::fs::read(dest.join("onnx/model.onnx")).unwrap(),
        pseudo_random_bytes(200 * 1024, 4)
    );
    assert!(!dest.join("weights.bin").exists());
    let oss = mock.oss_endpoint();
    assert!(done
        .files
        .iter()
        .all(|f| f.sha256.is_some() && f.endpoint.as_deref() == Some(oss.as_str())));
}

#[tokio::test]
async fn sha256_mismatch_is_an_integrity_error() {
    let mock = MsMock::start().await;
    mock.add_model(
        MsModel::new("acme/bad")
            .without_gitattributes()
            .with_files(vec![MsFile::new("w.bin", "bytes").with_wrong_sha256()]),
    );
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("bad");
    let job = client
        .add(AddRequest {
            source: "ms://acme/bad".into(),
            dest: Some(dest.display().to_string()),
            env: env(&[("MODELSCOPE_ENDPOINT", &mock.endpoint())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let failed = daemon.wait_finished(job.id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:#?}");
    assert_eq!(failed.error.unwrap().kind, ErrorKind::Integrity);
    assert!(!dest.join("w.bin").exists());
}

#[tokio::test]
async fn private_model_needs_the_token_as_cookie_and_bearer() {
    let mock = MsMock::start().await;
    mock.add_model(model().private(true));
    mock.set_valid_token("ms-secret-token");
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let dest = daemon.downloads.join("private");
    let add = |token: Option<&str>| AddRequest {
        source: "ms://acme/tiny.v2".into(),
        dest: Some(dest.display().to_string()),
        env: {
            let mut e = env(&[("MODELSCOPE_ENDPOINT", &mock.endpoint())]);
            if let Some(t) = token {
                e.push(("MODELSCOPE_API_TOKEN".into(), Secret(t.into())));
            }
            e
        },
        ..Default::default()
    };
    let job = client.add(add(None)).await.unwrap().job;
    let failed = daemon.wait_finished(job.id).await;
    let error = failed.error.expect("error");
    assert_eq!(error.kind, ErrorKind::Auth, "{error:?}");
    assert!(
        error.message.contains("MODELSCOPE_API_TOKEN"),
        "{}",
        error.message
    );

    mock.clear_requests();
    let job = client.add(add(Some("ms-secret-token"))).await.unwrap().job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let requests = mock.requests();
    let api: Vec<_> = requests.iter().filter(|r| r.host == "api").collect();
    assert!(api.iter().all(|r| r
        .header("cookie")
        .is_some_and(|c| c.contains("m_session_id=ms-secret-token"))
        && r.header("authorization") == Some("Bearer ms-secret-token")));
    let oss: Vec<_> = requests.iter().filter(|r| r.host == "oss").collect();
    assert!(!oss.is_empty());
    assert!(oss
        .iter()
        .all(|r| !r.has_header("cookie") && !r.has_header("authorization")));
}

#[tokio::test]
async fn default_cache_layout() {
    let mock = MsMock::start().await;
    mock.add_model(model());
    let daemon = TestDaemon::start().await;
    let mut client = daemon.client().await;
    let cache = daemon.downloads.join("mscache");
    let job = client
        .add(AddRequest {
            source: format!("{}/models/acme/tiny.v2/files", mock.endpoint()),
            include: vec!["*.json".into()],
            env: env(&[
                ("MODELSCOPE_ENDPOINT", &mock.endpoint()),
                ("MODELSCOPE_CACHE", &cache.display().to_string()),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    assert_eq!(job.dest, cache.display().to_string());
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        std::fs::read_to_string(cache.join("models/acme/tiny___v2/configuration.json")).unwrap(),
        "{\"framework\": \"pytorch\"}\n"
    );
}
