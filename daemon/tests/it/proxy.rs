//! Proxies, through a real tinyproxy on loopback: the job's forwarded variables, the config's
//! per-hub `proxy`, a proxy that wants credentials (which never show), proxies that refuse,
//! and `socks5h://` (names resolved by the proxy).

use std::sync::{Arc, Mutex};

use crate::external::{self, skip};
use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, ErrorKind, JobInfo, JobState};
use testkit::daemon::TestDaemon;
use testkit::fileserver::FileServer;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::{pseudo_random_bytes, sha256_hex};

async fn add_via(
    daemon: &TestDaemon,
    url: &str,
    sha256: &str,
    vars: &[(&str, &str)],
) -> mdl_protocol::JobInfo {
    let mut client = daemon.client().await;
    client
        .add(AddRequest {
            source: url.to_string(),
            dest: Some(daemon.downloads.display().to_string()),
            sha256: Some(sha256.to_string()),
            env: env(vars),
            ..Default::default()
        })
        .await
        .expect("add")
        .job
}

/// Everything a person or a log could see of a job, as text.
fn shown(job: &JobInfo) -> String {
    format!("{job:?} {}", serde_json::to_string(job).unwrap())
}

#[tokio::test]
async fn a_download_goes_through_the_proxy_the_job_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = external::tinyproxy(dir.path(), "") else {
        return skip("proxy", "tinyproxy is not installed");
    };
    let server = FileServer::start().await;
    let body = pseudo_random_bytes(200 * 1024, 3);
    server.add("/w.bin", body.clone());
    let daemon = TestDaemon::start().await;
    // Lowercase and uppercase forms both count; the job's own variables are what the daemon
    // (which has none) uses.
    let job = add_via(
        &daemon,
        &server.url("/w.bin"),
        &sha256_hex(&body),
        &[("http_proxy", &proxy.url())],
    )
    .await;
    crate::expect_verified(
        &daemon,
        job.id,
        &daemon.downloads.join("w.bin"),
        &sha256_hex(&body),
    )
    .await;
    let log = server.stats("/w.bin").log;
    assert!(
        log.iter()
            .all(|r| r.header("via").is_some_and(|v| v.contains("tinyproxy"))),
        "every request came through tinyproxy: {log:#?}"
    );
    assert!(
        proxy.output().contains("GET http://127.0.0.1"),
        "{}",
        proxy.output()
    );
}

#[tokio::test]
async fn a_hub_proxy_from_the_config_applies_to_that_hub_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = external::tinyproxy(dir.path(), "") else {
        return skip("proxy", "tinyproxy is not installed");
    };
    let mock = HfMock::start().await;
    mock.add_repo(HfRepo::model("acme/tiny").with_files(vec![
        HfFile::regular("config.json", "{}\n"),
        HfFile::lfs("model.safetensors", pseudo_random_bytes(64 * 1024, 5)),
    ]));
    let server = FileServer::start().await;
    server.add("/plain.bin", &b"plain bytes"[..]);
    let proxy_url = proxy.url();
    let daemon = TestDaemon::start_with(|s| {
        s.engine.network.huggingface.proxy = Some(mdl_protocol::Secret(proxy_url));
    })
    .await;
    let cache = daemon.downloads.join("hub");
    let mut client = daemon.client().await;
    let job = client
        .add(AddRequest {
            source: "hf://acme/tiny".into(),
            env: env(&[
                ("HF_ENDPOINT", &mock.endpoint()),
                ("HF_HUB_CACHE", &cache.display().to_string()),
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let through = proxy.output();
    assert!(
        through.contains("/api/models/acme/tiny/revision/main"),
        "{through}"
    );
    assert!(through.contains("/resolve/"), "{through}");
    // A plain URL is no Hugging Face job: it goes direct.
    let plain = add_via(
        &daemon,
        &server.url("/plain.bin"),
        &sha256_hex(b"plain bytes"),
        &[],
    )
    .await;
    let done = daemon.wait_finished(plain.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert!(!proxy.output().contains("/plain.bin"));
    assert!(server.stats("/plain.bin").log[0].header("via").is_none());
}

#[tokio::test]
async fn proxy_credentials_are_sent_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = external::tinyproxy(dir.path(), "BasicAuth alice s3cret-pw") else {
        return skip("proxy", "tinyproxy is not installed");
    };
    let server = FileServer::start().await;
    server.add("/a.bin", &b"through an authenticating proxy"[..]);
    let sha = sha256_hex(b"through an authenticating proxy");
    let daemon = TestDaemon::start().await;
    let with_auth = format!("http://alice:s3cret-pw@127.0.0.1:{}", proxy.port);
    let job = add_via(
        &daemon,
        &server.url("/a.bin"),
        &sha,
        &[("HTTP_PROXY", &with_auth)],
    )
    .await;
    let done = crate::expect_verified(&daemon, job.id, &daemon.downloads.join("a.bin"), &sha).await;
    assert!(!shown(&done).contains("s3cret-pw"), "{done:#?}");

    // Wrong credentials: the proxy refuses them (tinyproxy answers 401, others 407); the job
    // fails at once as an auth error that names the proxy without its password.
    server.add("/b.bin", &b"never fetched"[..]);
    let wrong = format!("http://alice:wrong-pw@127.0.0.1:{}", proxy.port);
    let job = add_via(
        &daemon,
        &server.url("/b.bin"),
        &sha256_hex(b"never fetched"),
        &[("HTTP_PROXY", &wrong)],
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let error = done.error.clone().unwrap();
    assert_eq!(error.kind, ErrorKind::Auth, "{error:?}");
    assert!(
        error.message.contains("401") || error.message.contains("407"),
        "{}",
        error.message
    );
    assert!(
        error
            .message
            .contains(&format!("http://***@127.0.0.1:{}", proxy.port)),
        "{}",
        error.message
    );
    assert!(!shown(&done).contains("wrong-pw"), "{done:#?}");
    assert_eq!(server.stats("/b.bin").requests, 0);
}

#[tokio::test]
async fn proxies_that_refuse_fail_the_job_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // Allows nobody on loopback: tinyproxy answers 403 to every request.
    let Some(proxy) = external::tinyproxy(dir.path(), "Allow 10.255.255.1") else {
        return skip("proxy", "tinyproxy is not installed");
    };
    let server = FileServer::start().await;
    server.add("/c.bin", &b"refused"[..]);
    let daemon = TestDaemon::start().await;
    let job = add_via(
        &daemon,
        &server.url("/c.bin"),
        &sha256_hex(b"refused"),
        &[("ALL_PROXY", &proxy.url())],
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let message = done.error.unwrap().message;
    assert!(message.contains("403"), "{message}");
    assert!(message.contains(&proxy.url()), "names the proxy: {message}");
    assert_eq!(server.stats("/c.bin").requests, 0);

    // A proxy that is not there at all: a network failure after the retries, naming it.
    let closed = format!("http://u:closed-pw@127.0.0.1:{}", external::free_port());
    let job = add_via(
        &daemon,
        &server.url("/c.bin"),
        &sha256_hex(b"refused"),
        &[("HTTP_PROXY", &closed)],
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Failed, "{done:#?}");
    let error = done.error.clone().unwrap();
    assert_eq!(error.kind, ErrorKind::Network, "{error:?}");
    assert!(error.message.contains("proxy"), "{}", error.message);
    assert!(!shown(&done).contains("closed-pw"), "{done:#?}");
    // NO_PROXY sends the same host direct.
    let job = add_via(
        &daemon,
        &server.url("/c.bin"),
        &sha256_hex(b"refused"),
        &[("HTTP_PROXY", &closed), ("no_proxy", "localhost,127.0.0.1")],
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
}

/// A minimal SOCKS5 server (no authentication, CONNECT only) that connects every request to
/// 127.0.0.1 and records the host names it was asked for.
async fn socks5_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 2];
                socket.read_exact(&mut head).await?;
                let mut methods = vec![0u8; head[1] as usize];
                socket.read_exact(&mut methods).await?;
                socket.write_all(&[5, 0]).await?;
                let mut request = [0u8; 4];
                socket.read_exact(&mut request).await?;
                let name = match request[3] {
                    3 => {
                        let len = socket.read_u8().await? as usize;
                        let mut name = vec![0u8; len];
                        socket.read_exact(&mut name).await?;
                        String::from_utf8_lossy(&name).to_string()
                    }
                    1 => {
                        let mut ip = [0u8; 4];
                        socket.read_exact(&mut ip).await?;
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    _ => return Ok::<(), std::io::Error>(()),
                };
                let port = socket.read_u16().await?;
                seen.lock().unwrap().push(name);
                let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                socket.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
                tokio::io::copy_bidirectional(&mut socket, &mut upstream).await?;
                Ok(())
            });
        }
    });
    (port, names)
}

#[tokio::test]
async fn socks5h_lets_the_proxy_resolve_names() {
    let (port, names) = socks5_server().await;
    let server = FileServer::start().await;
    server.add("/s.bin", &b"over socks"[..]);
    let daemon = TestDaemon::start().await;
    // A name only the proxy can resolve: the daemon never looks it up itself.
    let url = format!(
        "http://weights.mdl-test.invalid:{}/s.bin",
        server.addr().port()
    );
    let job = add_via(
        &daemon,
        &url,
        &sha256_hex(b"over socks"),
        &[("all_proxy", &format!("socks5h://127.0.0.1:{port}"))],
    )
    .await;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        names.lock().unwrap().as_slice(),
        ["weights.mdl-test.invalid"]
    );
}
