//! `mdlctl daemon start|stop|status`: manage the daemon itself. None of these autostart a
//! daemon implicitly: `status` exits 9 when none runs, `stop` succeeds when none runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mdl_protocol::{Client, ClientError, ErrorKind};
use serde_json::json;

use super::Ctx;
use crate::cli::DaemonCommand;
use crate::daemon_spawn;
use crate::exit::Failure;
use crate::output::{daemon_info_text, emit, emit_json, health_text};

/// How long `stop` waits for the socket to stop answering.
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
            return Err(anyhow::Error::new(e).context("mdld is not running"))
        }
        Err(e) => return Err(e.into()),
    };
    let info = client.daemon_status().await?;
    // An older daemon does not know `Health`: show what it does know.
    let health = client.health().await.ok();
    if ctx.json {
        let mut value = serde_json::to_value(&info)?;
        value["health"] = serde_json::to_value(&health)?;
        emit_json(&value)
    } else {
        let mut text = daemon_info_text(&info);
        if let Some(health) = &health {
            text.push_str(&health_text(health));
        }
        emit(text.trim_end())
    }
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

/// `daemon stop`: ask the daemon to shut down and wait until its socket stops answering. A
/// daemon that speaks another protocol version cannot be asked; on Linux it gets SIGTERM
/// instead (its pid comes from the socket's peer credentials).
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

/// Poll the socket until nothing answers on it.
async fn wait_until_gone(ctx: &Ctx, pid: u32) -> Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match Client::connect(&ctx.socket, daemon_spawn::CLIENT_VERSION).await {
            Err(e) if daemon_spawn::is_absent(&e) => return Ok(()),
            // Still answering, or half-way through closing: keep polling.
            Ok(_) | Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                ErrorKind::Other,
                format!(
                    "mdld (pid {pid}) still answers on {} {} s after the shutdown request",
                    ctx.socket.display(),
                    STOP_TIMEOUT.as_secs()
                ),
            )
            .with_hint(format!(
                "it may still be saving state; check its log, or end it with 'kill {pid}'"
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
