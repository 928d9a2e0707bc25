//! `mdlctl daemon start|stop|status`: manage the daemon itself. None of these autostart a
//! daemon implicitly: `status` exits 9 when none runs, `stop` succeeds when none runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mdl_protocol::endpoint::{self, LockFile};
use mdl_protocol::{Client, ClientError, ErrorKind};
use serde_json::json;

use super::Ctx;
use crate::cli::DaemonCommand;
use crate::daemon_spawn;
use crate::exit::Failure;
use crate::output::{daemon_info_text, emit, emit_json, health_text};

/// How long `stop` waits for the daemon to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `daemon ...`.
pub async fn run(ctx: &Ctx, command: DaemonCommand) -> Result<()> {
    match command {
        DaemonCommand::Start => start(ctx).await,
        DaemonCommand::Stop => stop(ctx).await,
        DaemonCommand::Status => status(ctx).await,
    }
}

/// `daemon status`: the running daemon's info; exit 9 when none answers.
async fn status(ctx: &Ctx) -> Result<()> {
    let mut client = match ctx.connect_running().await {
        Ok(client) => client,
        Err(e) if daemon_spawn::is_absent(&e) => {
            let lock = endpoint::socket_lock_path(&ctx.socket);
            let why = match LockFile::read_owner(&lock).filter(|_| LockFile::is_held(&lock)) {
                Some(owner) => format!(
                    "mdld (pid {}) holds {} but does not answer: it is starting up or shutting \
                     down",
                    owner.pid,
                    ctx.socket.display()
                ),
                None => "mdld is not running".to_string(),
            };
            return Err(anyhow::Error::new(e).context(why));
        }
        Err(e) => return Err(e.into()),
    };
    let info = client.daemon_status().await?;
    // A daemon older than these requests answers with an error: no report then.
    let store = client.store_health().await.ok();
    let health = client.health().await.ok();
    if ctx.json {
        let mut value = serde_json::to_value(&info)?;
        if let Some(map) = value.as_object_mut() {
            if let Some(store) = &store {
                map.insert("store".into(), serde_json::to_value(store)?);
            }
            map.insert("health".into(), serde_json::to_value(&health)?);
        }
        emit_json(&value)
    } else {
        let mut text = daemon_info_text(&info).trim_end().to_string();
        if let Some(store) = &store {
            text.push_str(&store_health_text(store));
        }
        if let Some(health) = &health {
            text.push_str(&health_text(health));
        }
        emit(text.trim_end())
    }
}

/// The store's problems, loudly, for `daemon status` (empty when the store is healthy).
fn store_health_text(health: &mdl_protocol::StoreHealth) -> String {
    let mut text = String::new();
    if let Some(aside) = &health.moved_aside {
        text.push_str(&format!(
            "\nWARNING: the store could not be opened ({}); it was moved to {aside} and mdld started with an empty one",
            health.open_error.as_deref().unwrap_or("unknown error")
        ));
    }
    for record in &health.damaged {
        text.push_str(&format!(
            "\nWARNING: damaged store record {} skipped: {}",
            record.key, record.message
        ));
    }
    for lost in &health.lost {
        text.push_str(&format!(
            "\nWARNING: job {} was lost from the store: {} -> {}",
            lost.id, lost.source, lost.dest
        ));
        for part in &lost.partial_files {
            text.push_str(&format!("\n  partial file left on disk: {part}"));
        }
    }
    if let Some(error) = &health.write_error {
        text.push_str(&format!(
            "\nWARNING: the store cannot write ({error}); running jobs are paused until space is back"
        ));
    }
    text
}

/// `daemon start`: start one unless one answers, and wait until it does.
async fn start(ctx: &Ctx) -> Result<()> {
    let (mut client, started) = match ctx.connect_running().await {
        Ok(client) => (client, None),
        Err(e) if daemon_spawn::is_absent(&e) => {
            let started = daemon_spawn::start(&ctx.socket, ctx.socket_explicit).await?;
            (started.client, Some(started.log))
        }
        Err(e) => return Err(e.into()),
    };
    let info = client.daemon_status().await?;
    if ctx.json {
        return emit_json(&info);
    }
    match started {
        Some(log) => emit(format_args!(
            "started mdld {} (pid {}) on {}; log: {}",
            info.version,
            info.pid,
            info.socket,
            log.display()
        )),
        None => emit(format_args!(
            "mdld {} is already running (pid {}) on {}",
            info.version, info.pid, info.socket
        )),
    }
}

/// `daemon stop`: ask the daemon to shut down and wait until it is gone: the socket does not
/// answer, the daemon let go of the socket's lock (it has closed its store and removed the
/// socket), and on Linux its process has exited. So the next command can start a daemon at
/// once. A daemon that speaks another protocol version cannot be asked; on Linux it gets
/// SIGTERM instead (its pid comes from the socket's peer credentials).
async fn stop(ctx: &Ctx) -> Result<()> {
    let pid = match ctx.connect_running().await {
        Ok(mut client) => {
            let pid = client.daemon_status().await?.pid;
            client
                .shutdown()
                .await
                .context("asking mdld to shut down")?;
            pid
        }
        Err(e) if daemon_spawn::is_absent(&e) => {
            return if ctx.json {
                emit_json(&json!({ "stopped": false, "running": false }))
            } else {
                emit("mdld is not running")
            };
        }
        Err(ClientError::Incompatible(message)) => terminate_incompatible(ctx, &message)?,
        Err(e) => return Err(e.into()),
    };
    wait_until_gone(ctx, pid).await?;
    if ctx.json {
        emit_json(&json!({ "stopped": true, "pid": pid }))
    } else {
        emit(format_args!("stopped mdld (pid {pid})"))
    }
}

/// Poll until the daemon is gone (see [`stop`]).
async fn wait_until_gone(ctx: &Ctx, pid: u32) -> Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    let lock = endpoint::socket_lock_path(&ctx.socket);
    loop {
        let answering = match Client::connect(&ctx.socket, daemon_spawn::CLIENT_VERSION).await {
            Err(e) => !daemon_spawn::is_absent(&e),
            // Still answering, or half-way through closing: keep polling.
            Ok(_) => true,
        };
        if !answering && !LockFile::is_held(&lock) && process_exited(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                ErrorKind::Other,
                format!(
                    "mdld (pid {pid}) on {} has not exited {} s after the shutdown request",
                    ctx.socket.display(),
                    STOP_TIMEOUT.as_secs()
                ),
            )
            .with_hint(format!(
                "it may still be saving state; check its log, or end it with 'kill {pid}'"
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when process `pid` has exited (or is a zombie nobody reaped yet). A daemon running
/// inside this process (tests) counts as exited: its lock tells instead.
#[cfg(target_os = "linux")]
fn process_exited(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else {
        return true;
    };
    match rustix::process::test_kill_process(raw) {
        // EPERM: the pid now belongs to another user's process, so ours is gone.
        Err(_) => true,
        Ok(()) => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                Some(state == 'Z' || state == 'X')
            })
            .unwrap_or(false),
    }
}

/// Elsewhere the socket's lock is the signal: it is released when the daemon's `run` returns
/// or its process ends.
#[cfg(not(target_os = "linux"))]
fn process_exited(_pid: u32) -> bool {
    true
}

/// Send SIGTERM to the daemon listening on the socket (it speaks another protocol version, so
/// it cannot be asked); returns its pid.
#[cfg(target_os = "linux")]
fn terminate_incompatible(ctx: &Ctx, message: &str) -> Result<u32> {
    use rustix::process::{getuid, kill_process, Signal};
    let stream = std::os::unix::net::UnixStream::connect(&ctx.socket)
        .with_context(|| format!("connecting to {}", ctx.socket.display()))?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)
        .with_context(|| format!("asking who listens on {}", ctx.socket.display()))?;
    if peer.uid != getuid() {
        return Err(Failure::new(
            ErrorKind::Unreachable,
            format!(
                "the daemon on {} belongs to another user; not stopping it",
                ctx.socket.display()
            ),
        )
        .into());
    }
    ctx.debug(
        1,
        format_args!(
            "{message}; sending SIGTERM to pid {}",
            peer.pid.as_raw_nonzero()
        ),
    );
    kill_process(peer.pid, Signal::TERM).with_context(|| {
        format!(
            "sending SIGTERM to mdld (pid {})",
            peer.pid.as_raw_nonzero()
        )
    })?;
    Ok(peer.pid.as_raw_nonzero().get() as u32)
}

/// Elsewhere an incompatible daemon has to be ended by hand.
#[cfg(not(target_os = "linux"))]
fn terminate_incompatible(_ctx: &Ctx, message: &str) -> Result<u32> {
    Err(Failure::new(ErrorKind::Unreachable, message.to_string())
        .with_hint(
            "end the old daemon's process (e.g. 'pkill -x mdld'), then run the command again",
        )
        .into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::process_exited;

    #[test]
    fn a_process_counts_as_exited_once_it_is_dead_or_a_zombie() {
        assert!(process_exited(std::process::id()), "an in-process daemon");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(!process_exited(child.id()));
        child.kill().unwrap();
        // Killed but not reaped yet: a zombie, gone for our purposes.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(process_exited(child.id()));
        child.wait().unwrap();
        assert!(process_exited(child.id()));
    }
}
