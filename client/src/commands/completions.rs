//! `mdlctl completions SHELL`: a completion script on stdout.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::output::emit;

/// Run `completions`.
pub fn run(args: CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "mdlctl", &mut script);
    emit(String::from_utf8_lossy(&script).trim_end())
}
