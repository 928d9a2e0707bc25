//! `mdlctl token`: a hub token set from stdin is stored by the daemon and listed as set, never
//! shown; `clear` removes it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn mdlctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mdlctl"))
}

fn mdlctl(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(mdlctl_bin());
    cmd.arg("--socket").arg(dir.join("run/mdld.sock"));
    cmd.env("MDL_DATA_DIR", dir.join("data"));
    cmd.env("MDL_CONFIG", dir.join("config.toml"));
    cmd.env(
        "MDL_DAEMON_BIN",
        mdlctl_bin().with_file_name(format!("mdld{}", std::env::consts::EXE_SUFFIX)),
    );
    cmd
}

#[test]
fn token_set_from_stdin_ls_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let mut set = mdlctl(dir.path())
        .args(["token", "set", "hf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(b"hf_from_stdin\n")
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hf") && stdout.contains("set"), "{stdout}");
    assert!(!stdout.contains("hf_from_stdin"));

    let ls = mdlctl(dir.path())
        .args(["--json", "token", "ls"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(list[0], serde_json::json!({"hub": "hf", "set": true}));

    let empty = mdlctl(dir.path())
        .args(["token", "set", "ms"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        empty.status.code(),
        Some(2),
        "an empty stdin is a usage error"
    );
    let unknown = mdlctl(dir.path())
        .args(["token", "clear", "nohub"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));

    let clear = mdlctl(dir.path())
        .args(["--json", "token", "clear", "hf"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&clear.stdout).unwrap();
    assert_eq!(list[0], serde_json::json!({"hub": "hf", "set": false}));

    let stop = mdlctl(dir.path())
        .args(["daemon", "stop"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(stop.status.success());
}
