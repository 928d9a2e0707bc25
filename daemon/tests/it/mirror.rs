//! A shared mirror for many hosts: the real `olah` mirror in front of the Hugging Face mock,
//! and two daemons (separate data directories and caches, as on two hosts) that list olah
//! first and the hub second. The second download is served from olah's cache (the hub sees
//! each file once); with olah stopped, both fall back to the hub. The same for an nginx proxy
//! cache with the config `docs/mirrors.md` ships (`docs/nginx-hf-mirror.conf.template`), its
//! placeholders filled in as the doc says.
//!
//! A missing olah or nginx skips its test with the reason, except under `CI=true`, where it
//! fails (`scripts/test.sh` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::external::{self, skip_unless_ci, Process};
use crate::forwarded_env as env;
use mdl_protocol::{AddRequest, JobState};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::pseudo_random_bytes;

fn repo(name: &str) -> HfRepo {
    HfRepo::model(format!("acme/{name}")).with_files(vec![
        HfFile::regular("config.json", format!("{{\"name\": \"{name}\"}}\n")),
        weights(),
    ])
}

/// The LFS file of every test repo.
fn weights() -> HfFile {
    HfFile::lfs("model.safetensors", pseudo_random_bytes(256 * 1024, 31))
}

/// `olah-cli`: `MDL_OLAH`, else the venv `scripts/test.sh` makes, else `PATH`.
fn olah_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MDL_OLAH").map(PathBuf::from) {
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/labs-venv/bin/olah-cli");
    if venv.is_file() {
        return Some(venv);
    }
    external::find_program("olah-cli")
}

fn host_port(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_string()
}

fn start_olah(dir: &Path, mock: &HfMock) -> Option<Process> {
    let program = olah_program()?;
    let port = external::free_port();
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--hf-scheme", "http"])
        .args(["--hf-netloc", &host_port(&mock.endpoint())])
        .args(["--hf-lfs-netloc", &host_port(&mock.cdn_endpoint())])
        .args(["--mirror-netloc", &format!("127.0.0.1:{port}")])
        .args(["--mirror-lfs-netloc", &format!("127.0.0.1:{port}")])
        .arg("--repos-path")
        .arg(dir.join("repos"))
        .arg("--log-path")
        .arg(dir.join("logs"));
    Some(external::spawn("olah", command, dir, port))
}

/// Two daemons, as on two hosts: each its own data directory and cache, both listing the
/// mirror first and the hub second.
async fn two_hosts(mirror: &str, hub: &str) -> [TestDaemon; 2] {
    let endpoints = vec![mirror.to_string(), hub.to_string()];
    let a = endpoints.clone();
    let first = TestDaemon::start_with(move |s| s.engine.sources.hf_endpoints = a).await;
    let second = TestDaemon::start_with(move |s| s.engine.sources.hf_endpoints = endpoints).await;
    [first, second]
}

async fn download(daemon: &TestDaemon, source: &str) -> mdl_protocol::JobInfo {
    let cache = daemon.downloads.join("hub");
    let mut client = daemon.client().await;
    let job = client
        .add(AddRequest {
            source: source.to_string(),
            env: env(&[("HF_HUB_CACHE", &cache.display().to_string())]),
            ..Default::default()
        })
        .await
        .expect("add")
        .job;
    let done = daemon.wait_finished(job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    for file in &done.files {
        let bytes = std::fs::read(&file.path).unwrap();
        assert_eq!(
            Some(testkit::sha256_hex(&bytes)),
            file.sha256.clone(),
            "{}",
            file.path
        );
    }
    done
}

/// Requests the mock (Hub and CDN) saw for `path` of `repo` (resolve and CDN downloads).
fn hub_downloads(mock: &HfMock, needle: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains(needle))
        .count()
}

/// The mirror sees each file once for both hosts; with the mirror down both use the hub.
async fn check_shared_mirror(
    mock: &HfMock,
    mirror: &str,
    mut stop_mirror: impl FnMut(),
    served_by: &str,
) {
    mock.add_repo(repo("shared"));
    mock.add_repo(repo("later"));
    let [first, second] = two_hosts(mirror, &mock.endpoint()).await;
    let done = download(&first, "hf://acme/shared").await;
    assert!(
        done.files
            .iter()
            .all(|f| f.endpoint.as_deref().is_some_and(|e| e.contains(served_by))),
        "the first host was served through the mirror: {done:#?}"
    );
    let config_fetches = hub_downloads(mock, "/acme/shared/resolve/");
    assert!(config_fetches >= 1, "{:#?}", mock.requests());
    mock.clear_requests();
    let done = download(&second, "hf://acme/shared").await;
    assert!(done
        .files
        .iter()
        .all(|f| f.endpoint.as_deref().is_some_and(|e| e.contains(served_by))));
    let cdn_bytes_again: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET" && (r.path_and_query.contains("/resolve/") || r.body_bytes_sent > 0)
        })
        .collect();
    assert!(
        cdn_bytes_again.is_empty(),
        "the second host's files came from the mirror's cache, not the hub: {cdn_bytes_again:#?}"
    );

    // The mirror goes away: both hosts fall back to the hub for a new repository.
    stop_mirror();
    for daemon in [&first, &second] {
        let done = download(daemon, "hf://acme/later").await;
        assert!(
            done.files
                .iter()
                .all(|f| !f.endpoint.as_deref().unwrap_or("").contains(served_by)),
            "{done:#?}"
        );
    }
}

#[tokio::test]
async fn two_hosts_share_an_olah_mirror_and_fall_back_to_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let mock = HfMock::start().await;
    let Some(mut olah) = start_olah(dir.path(), &mock) else {
        return skip_unless_ci("mirror", "olah is not installed");
    };
    let mirror = olah.url();
    let port = format!("127.0.0.1:{}", olah.port);
    check_shared_mirror(&mock, &mirror, || olah.stop(), &port).await;
}

/// The nginx config the docs ship, its placeholders filled in as `docs/mirrors.md` says
/// (`envsubst` of exactly these four names).
fn nginx_mirror_config(listen: u16, hub: &str, cdn_hosts: &str, cache_dir: &Path) -> String {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/nginx-hf-mirror.conf.template"),
    )
    .expect("docs/nginx-hf-mirror.conf.template");
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/mirrors.md"))
            .expect("docs/mirrors.md");
    assert!(
        doc.contains(&template),
        "docs/mirrors.md shows the config file verbatim"
    );
    let filled = template
        .replace("${MIRROR_LISTEN}", &format!("127.0.0.1:{listen}"))
        .replace("${HF_UPSTREAM}", hub)
        .replace("${HF_CDN_HOSTS}", cdn_hosts)
        .replace("${CACHE_DIR}", &cache_dir.display().to_string());
    assert!(
        !filled.contains("${"),
        "a placeholder the doc does not name: {filled}"
    );
    filled
}

/// nginx as the current user, in its own prefix under `dir` (pid, logs, temp paths), with the
/// docs' server block included in a minimal `nginx.conf`.
fn start_nginx(dir: &Path, mock: &HfMock) -> Option<Process> {
    let program = external::find_program("nginx")?;
    let port = external::free_port();
    // The mock's CDN, as a regex (without capturing groups, as the doc asks).
    let cdn_hosts = host_port(&mock.cdn_endpoint()).replace('.', "\\.");
    let server = nginx_mirror_config(port, &mock.endpoint(), &cdn_hosts, &dir.join("cache"));
    std::fs::write(dir.join("hf-mirror.conf"), server).unwrap();
    // Workers of a root master switch to `user`; keep them the current user's.
    let user = if external::is_root() {
        "user root root;\n"
    } else {
        ""
    };
    let d = dir.display();
    let conf = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/hf-mirror.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut check = Command::new(&program);
    check
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    let out = check.output().expect("nginx -t");
    assert!(
        out.status.success(),
        "nginx refuses the docs' config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut command = Command::new(program);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"]);
    // nginx's workers outlive a killed master: it is stopped with SIGTERM.
    Some(external::spawn("nginx", command, dir, port).graceful())
}

#[tokio::test]
async fn two_hosts_share_an_nginx_proxy_cache_and_fall_back_to_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let mock = HfMock::start().await;
    let Some(mut nginx) = start_nginx(dir.path(), &mock) else {
        return skip_unless_ci("nginx mirror", "nginx is not installed");
    };
    let mirror = nginx.url();
    let port = format!("127.0.0.1:{}", nginx.port);
    mock.add_repo(repo("metadata"));
    // huggingface_hub's HEAD metadata through the mirror, answered by the Hub (a miss) and
    // then from nginx's cache: the 302 keeps X-Repo-Commit / X-Linked-Etag / X-Linked-Size,
    // and its Location leads to the mirror's CDN path.
    let lfs = weights();
    let cdn_path = format!("/__cdn/http/{}/", host_port(&mock.cdn_endpoint()));
    for round in ["miss", "hit"] {
        let head = raw_head(nginx.port, "/acme/metadata/resolve/main/model.safetensors").await;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("{round}: no {name} in {head}"))
        };
        assert!(head.starts_with("HTTP/1.1 302"), "{round}: {head}");
        assert_eq!(
            header("X-Linked-Etag"),
            format!("\"{}\"", lfs.sha256()),
            "{round}"
        );
        assert_eq!(
            header("X-Linked-Size"),
            lfs.content.len().to_string(),
            "{round}"
        );
        assert_eq!(header("X-Repo-Commit").len(), 40, "{round}: {head}");
        assert!(
            header("Location").starts_with(&format!("{mirror}{cdn_path}")),
            "{round}: {head}"
        );
        if round == "miss" {
            mock.clear_requests();
        }
    }
    assert!(
        !mock
            .requests()
            .iter()
            .any(|r| r.path_and_query.contains("/acme/metadata/")),
        "the second HEAD came from nginx's cache: {:#?}",
        mock.requests()
    );
    check_shared_mirror(&mock, &mirror, || nginx.stop(), &port).await;
    // The CDN served the weights once for both hosts (the first one's fetch through nginx).
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap_or_default();
    assert!(
        log.contains("/__cdn/"),
        "downloads went through the CDN path: {log}"
    );
}

/// A raw `HEAD` to `127.0.0.1:port` (HTTP/1.1, no redirects followed): the response head.
async fn raw_head(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = String::new();
    stream.read_to_string(&mut head).await.unwrap();
    head
}
