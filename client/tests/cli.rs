//! End-to-end checks of the real `mdlctl` binary that need no daemon: exit codes, where errors
//! go, and autostart failures (with `MDL_DAEMON_BIN` forcing which daemon binary is tried, since
//! cargo builds a real `mdld` beside `mdlctl`).

use std::path::Path;
use std::process::{Command, Output};

/// `mdlctl` with a clean environment for mdl: no inherited socket, data dir or daemon override.
fn mdlctl(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mdlctl"));
    command
        .args(args)
        .env_remove("MDL_SOCKET")
        .env_remove("MDL_DATA_DIR")
        .env_remove("MDL_DAEMON_BIN")
        .env("NO_COLOR", "1");
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run mdlctl");
    (
        status.code().expect("mdlctl exited by a signal"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// An environment in which no daemon runs and none can be found: a socket in a fresh temp
/// dir, a data dir there too, an empty PATH directory, and `MDL_DAEMON_BIN` set to `daemon`.
fn isolated(command: &mut Command, tmp: &Path, daemon: &Path) {
    let empty = tmp.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    command
        .env("MDL_SOCKET", tmp.join("run/mdld.sock"))
        .env("MDL_DATA_DIR", tmp.join("data"))
        .env("PATH", &empty)
        .env("MDL_DAEMON_BIN", daemon);
}

#[test]
fn daemon_status_without_a_daemon_exits_9() {
    for json in [false, true] {
        let mut args = vec!["--socket", "/nonexistent/dir/x.sock", "daemon", "status"];
        if json {
            args.insert(0, "--json");
        }
        let (code, stdout, stderr) = run(&mut mdlctl(&args));
        assert_eq!(code, 9, "stderr: {stderr}");
        assert_eq!(stdout, "", "errors never go to stdout");
        assert!(
            stderr.starts_with("error: mdld is not running\n"),
            "{stderr}"
        );
        assert!(
            stderr.contains("caused by: cannot connect to mdld at /nonexistent/dir/x.sock"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: is mdld running?"), "{stderr}");
    }
}

#[test]
fn daemon_stop_without_a_daemon_succeeds() {
    let (code, stdout, stderr) = run(&mut mdlctl(&[
        "--socket",
        "/nonexistent/dir/x.sock",
        "daemon",
        "stop",
    ]));
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout.trim(), "mdld is not running");
}

#[test]
fn bad_checksums_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["add", "https://example.com/a.bin", "--sha256", "abc"][..],
        &["add", "https://example.com/a.bin", "--md5", "zz"],
        &["add", ""],
    ] {
        let mut command = mdlctl(args);
        isolated(&mut command, tmp.path(), Path::new("/nonexistent/mdld"));
        let (code, stdout, stderr) = run(&mut command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
}

#[test]
fn unknown_subcommand_exits_2() {
    let (code, _, stderr) = run(&mut mdlctl(&["frobnicate"]));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn completions_are_printed() {
    let (code, stdout, stderr) = run(&mut mdlctl(&["completions", "bash"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("mdlctl"), "{stdout}");
}

#[test]
fn autostart_without_a_daemon_binary_exits_9_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = mdlctl(&["--json", "ls"]);
    isolated(&mut command, tmp.path(), Path::new("/nonexistent/mdld"));
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 9, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("/nonexistent/mdld"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[cfg(unix)]
#[test]
fn autostart_reports_a_daemon_that_exits_at_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let args_file = tmp.path().join("args");
    let fake = tmp.path().join("fake-mdld");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\necho 'fatal: cannot bind the socket' >&2\nexit 3\n",
            args_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = tmp.path().join("run/mdld.sock");

    let mut command = mdlctl(&["--socket", socket.to_str().unwrap(), "status", "1"]);
    isolated(&mut command, tmp.path(), &fake);
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 9, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("exited"), "{stderr}");
    assert!(
        stderr.contains("fatal: cannot bind the socket"),
        "the daemon's output is quoted: {stderr}"
    );
    let log = tmp.path().join("data/mdld.log");
    assert!(stderr.contains(&log.display().to_string()), "{stderr}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("fatal: cannot bind"));
    // The explicitly chosen socket is passed on.
    let passed = std::fs::read_to_string(&args_file).unwrap();
    assert_eq!(
        passed.lines().collect::<Vec<_>>(),
        ["--socket", socket.to_str().unwrap()]
    );
}

#[cfg(unix)]
#[test]
fn autostart_on_a_socket_of_unknown_data_directory_starts_nothing_and_says_how() {
    // Before the fix, mdlctl started mdld with the default data directory here: the user's
    // queue seemed gone, and the daemon that owned the socket could not start again.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ran = tmp.path().join("ran");
    let fake = tmp.path().join("fake-mdld");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\nexit 3\n", ran.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = tmp.path().join("elsewhere/mdld.sock");
    let mut command = mdlctl(&["--socket", socket.to_str().unwrap(), "ls"]);
    command
        .env("HOME", tmp.path().join("home"))
        .env_remove("XDG_DATA_HOME")
        .env("MDL_DAEMON_BIN", &fake);
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 9, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("does not know which data directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "hint: start it yourself (mdld --socket {}",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(!ran.exists(), "no daemon was started");
    assert!(!tmp.path().join("home").exists(), "nothing written to HOME");
}
