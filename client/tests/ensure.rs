//! `mdlctl ensure`: the real client binary against an in-process test daemon and a local file
//! server. Files present and intact are left alone; missing and corrupt ones are queued; md5
//! and sha256 checksums both work.

use std::process::Command;

use serde_json::Value;
use testkit::daemon::TestDaemon;
use testkit::{pseudo_random_bytes, sha256_hex, FileServer};

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

async fn ensure(daemon: &TestDaemon, manifest: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdlctl"));
    cmd.arg("--socket")
        .arg(&daemon.socket)
        .arg("--json")
        .arg("ensure")
        .arg(manifest)
        .args(extra)
        .env_remove("CIVITAI_ENDPOINT");
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap(), value)
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_queues_only_what_is_missing_or_corrupt() {
    let server = FileServer::start().await;
    let daemon = TestDaemon::start().await;
    let a = pseudo_random_bytes(4000, 1).to_vec();
    let b = pseudo_random_bytes(3000, 2).to_vec();
    let c = pseudo_random_bytes(2000, 3).to_vec();
    server.add("/repo/a.bin", a.clone());
    server.add("/repo/b.bin", b.clone());
    let c_url = server.add("/other/c.bin", c.clone()).url;
    let base = format!(
        "{}/repo",
        server.add("/x", vec![0u8]).url.trim_end_matches("/x")
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
dir = "models"
[[models]]
name = "one"
dir = "one"
base_url = "{base}"
[[models.files]]
path = "a.bin"
checksum = "{}"
[[models.files]]
path = "b.bin"
checksum = "{}"
[[models]]
name = "two"
dir = "two"
[[models.files]]
url = "{c_url}"
checksum = "{}"
save_as = "c-renamed.bin"
"#,
            sha256_hex(&a),
            md5_hex(&b),
            sha256_hex(&c)
        ),
    )
    .unwrap();
    let one = dir.path().join("models/one");
    let two = dir.path().join("models/two");
    // a.bin present and intact; b.bin missing; c corrupt.
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    std::fs::write(one.join("a.bin"), &a).unwrap();
    let mut bad = c.clone();
    bad[5] ^= 1;
    std::fs::write(two.join("c-renamed.bin"), &bad).unwrap();

    let (code, report) = ensure(&daemon, &manifest, &["--wait"]).await;
    assert_eq!(code, 0, "{report:#}");
    let models = report.as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "one");
    assert_eq!(models[0]["ready"], true, "{report:#}");
    assert_eq!(models[0]["files"][0]["status"], "present");
    assert_eq!(models[0]["files"][1]["status"], "completed");
    assert_eq!(models[1]["files"][0]["status"], "completed");
    assert_eq!(std::fs::read(one.join("b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(two.join("c-renamed.bin")).unwrap(), c);
    // Only the missing and corrupt files were fetched.
    assert_eq!(daemon.client().await.list().await.unwrap().len(), 2);

    // Everything is ready now: nothing queued.
    let (code, report) = ensure(&daemon, &manifest, &[]).await;
    assert_eq!(code, 0);
    assert!(report
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["ready"] == true));
    assert_eq!(daemon.client().await.list().await.unwrap().len(), 2);

    // Corrupt b.bin (same size, right after its download): queued again and repaired.
    let mut bad = b.clone();
    bad[0] ^= 1;
    std::fs::write(one.join("b.bin"), &bad).unwrap();
    let (code, report) = ensure(&daemon, &manifest, &["--wait"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report[0]["ready"], true, "{report:#}");
    assert_eq!(std::fs::read(one.join("b.bin")).unwrap(), b);
}
