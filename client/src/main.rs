//! `mdlctl`, the command-line client of the mdl download daemon.
//!
//! `main` only parses the command line, runs the command and maps its error to an exit code
//! (see [`exit`]); each subcommand lives in its own file under [`commands`].

mod cli;
mod commands;
mod daemon_spawn;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Parse errors exit 2 (help and --version exit 0) inside clap.
    let cli = cli::Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(commands::run(cli)));
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        // stdout was closed early (`mdlctl ls | head`): nothing more to say.
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::from(exit::OK),
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(exit::code_for_error(&err))
        }
    }
}
