//! Real external components the labs tests run on loopback (tinyproxy, nginx, olah), each a
//! child process that is killed (by its own pid) and reaped when its guard drops.
//! `scripts/test.sh` installs them; a test whose component is missing says why it skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process, killed and reaped on drop.
pub struct Process {
    child: Child,
    /// Its combined stdout / stderr.
    pub log: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    name: &'static str,
    /// Stopped with `SIGTERM` first (a master process that must stop its workers, as nginx's
    /// do not die with their master), then killed.
    graceful: bool,
}

impl Process {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop it now (as its guard dropping would).
    pub fn stop(&mut self) {
        if self.graceful && matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop it with `SIGTERM` (then `SIGKILL` after 10 s) rather than `SIGKILL` at once.
    pub fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on port {}", self.name, self.port)
    }
}

/// The path of `program` on `PATH` (and the sbin directories, where nginx lives), if any.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Print why a test skips (cargo shows it with `--nocapture`, and in the failure output).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why} (scripts/test.sh installs it)");
}

/// [`skip`], except under `CI=true`, where a missing component is a failure: CI must run
/// every test (`scripts/test.sh` installs what they need).
pub fn skip_unless_ci(test: &str, why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false" || v == "0"),
        "{test}: {why}, and CI=true needs it (scripts/test.sh installs it)"
    );
    skip(test, why);
}

/// A free loopback port (bound and released; the component binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `command` (logging into `dir/NAME.log`) and wait until `port` accepts connections.
pub fn spawn(name: &'static str, mut command: Command, dir: &Path, port: u16) -> Process {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut process = Process {
        child,
        log,
        port,
        name,
        graceful: false,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("{name} exited with {status}: {}", process.output());
        }
        if Instant::now() > deadline {
            let output = process.output();
            process.stop();
            panic!("{name} did not listen on {port}: {output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

/// A tinyproxy on loopback. `extra` adds config lines (`BasicAuth user pw`, `Deny ...`).
pub fn tinyproxy(dir: &Path, extra: &str) -> Option<Process> {
    let program = find_program("tinyproxy")?;
    let port = free_port();
    let config = dir.join(format!("tinyproxy-{port}.conf"));
    // tinyproxy drops root to `User`; as any other user it keeps its own.
    let user = if is_root() {
        "User nobody\nGroup nogroup\n"
    } else {
        ""
    };
    let allow = if extra.contains("Allow ") {
        ""
    } else {
        "Allow 127.0.0.1\n"
    };
    std::fs::write(
        &config,
        format!(
            "{user}Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nLogLevel Connect\n{allow}{extra}\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(program);
    command.arg("-d").arg("-c").arg(&config);
    Some(spawn("tinyproxy", command, dir, port))
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
        })
}
