//! `mdlctl endpoint`: a hub's endpoint set from the command line is shown (text and `--json`),
//! kept by the daemon across a restart, refused when it is no URL, and reset to the config
//! file's.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn mdlctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mdlctl"))
}

fn mdlctl(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(mdlctl_bin());
    cmd.arg("--socket").arg(dir.join("run/mdld.sock"));
    cmd.env("MDL_DATA_DIR", dir.join("data"));
    cmd.env("MDL_CONFIG", dir.join("config.toml"));
    cmd.env(
        "MDL_DAEMON_BIN",
        mdlctl_bin().with_file_name(format!("mdld{}", std::env::consts::EXE_SUFFIX)),
    );
    cmd.env_remove("HF_ENDPOINT");
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn hf(list: &serde_json::Value) -> &serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|h| h["hub"] == "hf")
        .unwrap()
}

#[test]
fn endpoint_set_show_keep_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let set = mdlctl(
        dir.path(),
        &["endpoint", "set", "hf", "https://hf-mirror.com"],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("hf ")
            && l.contains("https://hf-mirror.com, then https://huggingface.co")),
        "{text}"
    );

    let refused = mdlctl(dir.path(), &["endpoint", "set", "hf", "hf-mirror.com"]);
    assert_eq!(refused.status.code(), Some(2), "not a URL is a usage error");
    let unknown = mdlctl(dir.path(), &["endpoint", "reset", "nohub"]);
    assert_eq!(unknown.status.code(), Some(2));

    // Kept across a restart of the daemon.
    assert!(mdlctl(dir.path(), &["daemon", "stop"]).status.success());
    let show = mdlctl(dir.path(), &["--json", "endpoint", "show"]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        hf(&list)["endpoints"],
        serde_json::json!(["https://hf-mirror.com"])
    );
    assert_eq!(hf(&list)["origin"], "runtime");

    let reset = mdlctl(dir.path(), &["--json", "endpoint", "reset", "hf"]);
    let list: serde_json::Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_eq!(
        hf(&list)["endpoints"],
        serde_json::json!(["https://huggingface.co"])
    );
    assert_eq!(hf(&list)["origin"], "default");
    assert!(mdlctl(dir.path(), &["daemon", "stop"]).status.success());
}
