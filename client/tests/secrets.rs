//! A token never leaves home and never shows: the real `mdld` at the most verbose logging
//! (`-vv` and `MDL_LOG=trace`, hyper and reqwest included) runs Hugging Face jobs with a
//! distinctive token through a redirect to a second host (the CDN), a paginated tree whose
//! next link points at a third host, a 401, a 404 and a 500. Then the token string must appear
//! nowhere: not in the daemon's log, not in `ls`, `status` or `watch` output, not in any error,
//! and not in any request the second and third hosts received.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::FileServer;

/// The token; long and unusual, so that a match anywhere is a leak, not a coincidence.
const TOKEN: &str = "hf_Z3cr3tT0k3nThatMustNeverLeak9q";
/// A password in an endpoint's and a source's userinfo, which must never show either.
const PASSWORD: &str = "MirrorPassw0rdNeverShown";

fn mdlctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mdlctl"))
}

fn mdld_bin() -> PathBuf {
    mdlctl_bin().with_file_name(format!("mdld{}", std::env::consts::EXE_SUFFIX))
}

/// mdlctl on the test's socket, with the job's environment (token, endpoint, cache).
fn mdlctl(dir: &Path, hub: &str, args: &[&str]) -> Output {
    Command::new(mdlctl_bin())
        .arg("--socket")
        .arg(dir.join("run/mdld.sock"))
        .args(args)
        .env("MDL_DATA_DIR", dir.join("data"))
        .env("HF_ENDPOINT", hub)
        .env("HF_TOKEN", TOKEN)
        .env("HF_HUB_CACHE", dir.join("hub"))
        .env("HF_HOME", dir.join("hf-home"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn add(dir: &Path, hub: &str, source: &str, seen: &mut String) -> u64 {
    let out = mdlctl(dir, hub, &["--json", "add", source]);
    seen.push_str(&text(&out));
    assert!(out.status.success(), "add {source}: {}", text(&out));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    job["id"].as_u64().unwrap()
}

/// Wait until the job is finished; returns its status JSON and adds every output to `seen`.
fn finished(dir: &Path, hub: &str, id: u64, seen: &mut String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = mdlctl(dir, hub, &["--json", "status", &id.to_string()]);
        seen.push_str(&text(&out));
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        if ["completed", "failed", "cancelled"].contains(&job["state"].as_str().unwrap()) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_appears_nowhere_and_goes_only_to_the_hub() {
    let mock = HfMock::start().await;
    mock.set_valid_token(TOKEN);
    mock.set_tree_page_size(1);
    mock.add_repo(HfRepo::model("acme/open").with_files(vec![
        HfFile::regular("config.json", "{}\n"),
        HfFile::lfs(
            "model.safetensors",
            testkit::pseudo_random_bytes(64 * 1024, 3),
        ),
    ]));
    mock.add_repo(HfRepo::model("acme/paged").with_files(vec![
        HfFile::regular("a.json", "{}\n"),
        HfFile::regular("b.json", "[]\n"),
    ]));
    mock.add_repo(
        HfRepo::model("acme/private")
            .private(true)
            .with_files(vec![HfFile::regular("x.json", "{}\n")]),
    );
    let third = FileServer::start().await;
    let hub = mock.endpoint();

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(
        dir.join("config.toml"),
        "[engine]\nmax_attempts = 2\nbackoff_base_ms = 10\nbackoff_max_ms = 20\n",
    )
    .unwrap();
    let log_path = dir.join("mdld.log");
    let mut daemon = Command::new(mdld_bin())
        .arg("-vv")
        .arg("--socket")
        .arg(dir.join("run/mdld.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("MDL_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mdlctl(dir, &hub, &["daemon", "status"]).status.success() {
            assert!(Instant::now() < deadline, "mdld did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // `watch` follows every event of the run below.
        let watch = Command::new(mdlctl_bin())
            .arg("--socket")
            .arg(dir.join("run/mdld.sock"))
            .args(["--json", "watch"])
            .env("MDL_DATA_DIR", dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();

        // 1. A download through the Hub's redirect to the CDN (the second host).
        let open = add(dir, &hub, "hf://acme/open", &mut seen);
        let job = finished(dir, &hub, open, &mut seen);
        assert_eq!(job["state"], "completed", "{job:#}");

        // 2. A tree whose next page is on a third host: refused, not followed.
        mock.set_tree_next_link_base(Some(third.url("").trim_end_matches('/')));
        let paged = add(dir, &hub, "hf://acme/paged", &mut seen);
        let job = finished(dir, &hub, paged, &mut seen);
        assert_eq!(job["state"], "failed", "{job:#}");
        let message = job["error"]["message"].as_str().unwrap();
        assert!(message.contains("another server"), "{message}");
        mock.set_tree_next_link_base(None);

        // 3. A 401 (the token has no access to a private repo), a 404 and a 500.
        for (source, setup) in [
            ("hf://acme/private", None),
            ("hf://acme/missing", None),
            ("hf://acme/open@main", Some(500)),
        ] {
            if let Some(status) = setup {
                for _ in 0..4 {
                    mock.inject_hub_status(status);
                }
            }
            let id = add(dir, &hub, source, &mut seen);
            let job = finished(dir, &hub, id, &mut seen);
            seen.push_str(&job.to_string());
        }

        // 4. Userinfo in an endpoint (a mirror that refuses connections) and in a source.
        let mirror = format!("http://mirror:{PASSWORD}@127.0.0.1:1");
        let id = add(dir, &mirror, "hf://acme/open@main", &mut seen);
        let job = finished(dir, &mirror, id, &mut seen);
        assert_eq!(job["state"], "failed", "{job:#}");
        seen.push_str(&job.to_string());
        let source = third
            .url("/missing.bin?token=abc")
            .replace("http://", &format!("http://user:{PASSWORD}@"));
        let out = mdlctl(
            dir,
            &hub,
            &[
                "--json",
                "add",
                &source,
                "--dest",
                dir.join("plain").to_str().unwrap(),
            ],
        );
        seen.push_str(&text(&out));
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = job["id"].as_u64().unwrap();
        let job = finished(dir, &hub, id, &mut seen);
        assert_eq!(job["state"], "failed", "{job:#}");
        seen.push_str(&job.to_string());

        for args in [
            &["--json", "ls"][..],
            &["ls"][..],
            &["--json", "daemon", "status"][..],
        ] {
            let out = mdlctl(dir, &hub, args);
            seen.push_str(&text(&out));
        }
        let out = mdlctl(dir, &hub, &["daemon", "stop"]);
        seen.push_str(&text(&out));
        let watched = watch.wait_with_output().unwrap();
        let watched = text(&watched);
        assert!(watched.contains("\"completed\""), "{watched}");
        seen.push_str(&watched);
    }));
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("TRACE"),
        "the daemon did not log at trace level"
    );
    assert!(!log.contains(TOKEN), "the token is in the daemon's log");
    assert!(
        !seen.contains(TOKEN),
        "the token is in mdlctl's output:\n{seen}"
    );
    assert!(
        !log.contains(PASSWORD),
        "a userinfo password is in the daemon's log"
    );
    assert!(
        !seen.contains(PASSWORD),
        "a userinfo password is in mdlctl's output:\n{seen}"
    );
    let requests = mock.requests();
    let cdn: Vec<_> = requests.iter().filter(|r| r.host == "cdn").collect();
    assert!(!cdn.is_empty(), "the CDN served nothing");
    for request in cdn {
        assert!(
            !format!("{:?}", request.headers).contains(TOKEN),
            "the CDN received the token: {request:#?}"
        );
    }
    // The third host was never even asked, so it cannot have seen the token.
    let tree = format!(
        "/api/models/acme/paged/tree/{}",
        mock.commit_sha(
            testkit::hubs::huggingface::RepoKind::Model,
            "acme/paged",
            "main"
        )
        .unwrap()
    );
    assert_eq!(third.stats(&tree).requests, 0, "{:#?}", third.stats(&tree));
    // The Hub itself did get it (the test would prove nothing if no request carried it).
    assert!(requests
        .iter()
        .any(|r| r.host == "hub" && format!("{:?}", r.headers).contains(TOKEN)));
}
