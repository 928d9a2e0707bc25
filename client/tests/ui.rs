//! `mdlctl ui` with the real binaries: the first line of stdout is a working one-time link; a
//! second `mdlctl ui` on the same address gets a new link from the running dashboard; Ctrl-C
//! stops it. `mdld` is found beside `mdlctl` (`scripts/test.sh` builds every binary first).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mdlctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mdlctl"))
}

fn mdld_bin() -> PathBuf {
    let path = mdlctl_bin().with_file_name(format!("mdld{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build the workspace first",
        path.display()
    );
    path
}

/// A child process killed on drop (so a failing test leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mdlctl(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(mdlctl_bin());
    cmd.arg("--socket").arg(dir.join("run/mdld.sock"));
    cmd.env("MDL_DATA_DIR", dir.join("data"));
    cmd.env("MDL_CONFIG", dir.join("config.toml"));
    cmd.env("MDL_DAEMON_BIN", mdld_bin());
    cmd.stdin(Stdio::null());
    cmd
}

/// `GET path` on `port`: the status line and the headers, lowercased.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let head = reply.split("\r\n\r\n").next().unwrap().to_string();
    let status = head.lines().next().unwrap().to_string();
    (status, head.to_ascii_lowercase())
}

fn path_of(url: &str, port: u16) -> String {
    let prefix = format!("http://127.0.0.1:{port}");
    assert!(url.starts_with(&prefix), "{url}");
    let path = url[prefix.len()..].to_string();
    assert!(path.starts_with("/login?t="), "{url}");
    path
}

#[test]
fn ui_prints_a_one_time_link_first_and_reuses_a_running_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");

    // The first `ui` starts the daemon (autostart) and serves the dashboard.
    let mut child = mdlctl(dir.path())
        .args(["ui", "--no-open", "--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ui = Running(child);
    let mut first_line = String::new();
    BufReader::new(stdout).read_line(&mut first_line).unwrap();
    let link = path_of(first_line.trim(), port);

    let (status, headers) = get(port, &link);
    assert!(status.contains(" 200 "), "{status}");
    assert!(headers.contains("set-cookie: mdl_session="), "{headers}");
    assert!(headers.contains("samesite=strict") && headers.contains("httponly"));
    // One-time: the same link again is refused.
    let (status, _) = get(port, &link);
    assert!(status.contains(" 401 "), "{status}");

    // A second `ui` on the same address asks the running dashboard for a new link and exits.
    let second = mdlctl(dir.path())
        .args(["--json", "ui", "--no-open", "--listen", &listen])
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let again = path_of(reply["url"].as_str().unwrap(), port);
    assert_ne!(again, link);
    let (status, _) = get(port, &again);
    assert!(status.contains(" 200 "), "{status}");

    // Ctrl-C stops the dashboard cleanly.
    let pid = ui.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let mut ui = ui;
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = ui.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mdlctl ui did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");

    // Stop the autostarted daemon.
    let stop = mdlctl(dir.path())
        .args(["daemon", "stop"])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
}
