//! `mdld`: the mdl download daemon. Runs in the foreground until SIGTERM or SIGINT.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The mdl download daemon: a persistent priority queue and a verifying download engine.
#[derive(Parser, Debug)]
#[command(name = "mdld", version, about)]
struct Args {
    /// The socket to listen on [env: MDL_SOCKET; default: $XDG_RUNTIME_DIR/mdl/mdld.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where the queue and state live [env: MDL_DATA_DIR; default: $XDG_DATA_HOME/mdl]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML config file [env: MDL_CONFIG; default: $XDG_CONFIG_HOME/mdl/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); MDL_LOG overrides (tracing filter syntax).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> std::process::ExitCode {
    mdld::memory::use_one_arena();
    mdld::memory::page_out_code_after_startup();
    let args = Args::parse();
    let default_level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MDL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default_level},sled=warn,hyper=info,reqwest=info"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let settings = match mdld::Settings::load(args.socket, args.data_dir, args.config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone())?;
        mdld::run(settings, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancel `shutdown` on SIGTERM or SIGINT (Ctrl-C on Windows).
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use futures::StreamExt;
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
        tokio::spawn(async move {
            if let Some(signal) = signals.next().await {
                tracing::info!(signal, "shutting down");
                shutdown.cancel();
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            shutdown.cancel();
        }
    });
    Ok(())
}
