//! `mdlctl ui`: the web dashboard ([`mdl_web`]). Starts the daemon when none runs, then either
//! asks a dashboard that already listens on the address for a new link (one served by `mdld`
//! with `[ui]`, or by another `mdlctl ui`), or serves one in this process until Ctrl-C.
//!
//! The first line of stdout is always the link with its one-time sign-in token (with `--json`,
//! `{"url": ...}`), so scripts and app launchers can read it.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use mdl_protocol::ErrorKind;
use mdl_web::{Dashboard, WebConfig, WebError};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::UiArgs;
use crate::exit::Failure;
use crate::output::{emit, emit_json, note};

/// Run `ui`.
pub async fn run(ctx: &Ctx, args: UiArgs) -> Result<()> {
    let info = ctx.connect().await?.daemon_status().await?;
    let mut config = WebConfig::new(ctx.socket.clone(), info.data_dir.clone().into());
    if let Some(addr) = args.listen {
        config.listen = vec![addr];
    }
    let first = config.listen[0];
    match Dashboard::bind(config).await {
        Ok(dashboard) => {
            let url = dashboard.launch_url();
            announce(ctx, &url, !args.no_open)?;
            note(format_args!(
                "mdlctl: serving the dashboard at {} (press Ctrl-C to stop)",
                dashboard.base_url()
            ));
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
            });
            dashboard.serve(shutdown).await?;
            Ok(())
        }
        Err(WebError::Bind { addr, source }) if source.kind() == std::io::ErrorKind::AddrInUse => {
            let url = running_dashboard(addr, &info.data_dir).await.map_err(|e| {
                Failure::new(
                    ErrorKind::Other,
                    format!("cannot listen on {addr}: it is in use, and {e}"),
                )
                .with_hint("choose another address with --listen 127.0.0.1:PORT")
            })?;
            announce(ctx, &url, !args.no_open)?;
            note(format_args!(
                "mdlctl: the dashboard already runs at http://{first}"
            ));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A new launch link from the dashboard that already listens at `addr`.
async fn running_dashboard(addr: SocketAddr, data_dir: &str) -> Result<String> {
    let path = mdl_web::token_path(std::path::Path::new(data_dir));
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the dashboard token {}", path.display()))?;
    Ok(mdl_web::launch::request_launch(addr, token.trim()).await?)
}

/// Print the link first, then open the browser.
fn announce(ctx: &Ctx, url: &str, open: bool) -> Result<()> {
    if ctx.json {
        emit_json(&serde_json::json!({ "url": url }))?;
    } else {
        emit(url)?;
    }
    if open {
        if let Err(e) = open_browser(url) {
            note(format_args!(
                "mdlctl: could not open a browser ({e}); open the link above"
            ));
        }
    }
    Ok(())
}

/// Hand `url` to the desktop's browser, without waiting for it.
fn open_browser(url: &str) -> std::io::Result<()> {
    let mut command = if cfg!(target_os = "macos") {
        Command::new("open")
    } else if cfg!(windows) {
        let mut c = Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}
