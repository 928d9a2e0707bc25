//! The subcommands, one file each; [`run`] dispatches a parsed command line to them.
//!
//! Every command gets a [`Ctx`] (socket, output mode, verbosity) and returns `Ok(())` or an
//! error whose kind decides the exit code (see [`crate::exit`]).

mod add;
mod cancel;
mod completions;
mod concurrency;
mod daemon;
mod ensure;
mod hub_endpoint;
mod limit;
mod ls;
mod pause;
mod prio;
mod resume;
mod rm;
mod status;
mod token;
mod ui;
mod verify;
mod wait;
mod watch;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use mdl_protocol::{endpoint, Client, ClientError, ErrorKind, Target};

use crate::cli::{Cli, Command};
use crate::daemon_spawn::{self, CLIENT_VERSION};
use crate::exit::Failure;
use crate::output::{emit, emit_json, note};

/// What every command needs to know about the invocation.
pub struct Ctx {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The socket was chosen explicitly (`--socket` or `MDL_SOCKET`), so an autostarted
    /// daemon is told to use it.
    pub socket_explicit: bool,
    /// Print JSON on stdout.
    pub json: bool,
    /// How chatty to be on stderr.
    pub verbose: u8,
}

impl Ctx {
    /// The context for a parsed command line.
    pub fn new(cli: &Cli) -> Self {
        let explicit = cli.socket.as_deref().filter(|p| !p.as_os_str().is_empty());
        Ctx {
            socket: endpoint::resolve_socket_path(explicit),
            socket_explicit: explicit.is_some(),
            json: cli.json,
            verbose: cli.verbose,
        }
    }

    /// Print a diagnostic on stderr when `-v` was given at least `level` times.
    pub fn debug(&self, level: u8, text: impl std::fmt::Display) {
        if self.verbose >= level {
            note(format_args!("mdlctl: {text}"));
        }
    }

    /// Connect to the running daemon, without starting one.
    pub async fn connect_running(&self) -> Result<Client, ClientError> {
        self.debug(1, format_args!("connecting to {}", self.socket.display()));
        let client = Client::connect(&self.socket, CLIENT_VERSION).await?;
        self.debug(
            1,
            format_args!("connected to mdld {}", client.daemon_version()),
        );
        Ok(client)
    }

    /// Connect to the daemon, starting one when none answers (see [`daemon_spawn`]).
    pub async fn connect(&self) -> Result<Client> {
        match self.connect_running().await {
            Ok(client) => Ok(client),
            Err(e) if daemon_spawn::is_absent(&e) => {
                self.debug(1, format_args!("no daemon answers ({e}); starting one"));
                let started = daemon_spawn::start(&self.socket, self.socket_explicit).await?;
                // A note on stderr for people; scripts see nothing on stdout.
                if self.verbose > 0 || std::io::stderr().is_terminal() {
                    note(format_args!(
                        "started mdld (pid {}, {}); log: {}",
                        started.pid,
                        started.bin.display(),
                        started.log.display()
                    ));
                }
                Ok(started.client)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx::new(&cli);
    match cli.command {
        Command::Add(args) => add::run(&ctx, args).await,
        Command::Wait(args) => wait::run(&ctx, args).await,
        Command::Ls => ls::run(&ctx).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Pause(args) => pause::run(&ctx, args).await,
        Command::Resume(args) => resume::run(&ctx, args).await,
        Command::Cancel(args) => cancel::run(&ctx, args).await,
        Command::Prio(args) => prio::run(&ctx, args).await,
        Command::Rm(args) => rm::run(&ctx, args).await,
        Command::Watch(args) => watch::run(&ctx, args).await,
        Command::Limit(args) => limit::run(&ctx, args).await,
        Command::Concurrency(args) => concurrency::run(&ctx, args).await,
        Command::Verify(args) => verify::run(&ctx, args).await,
        Command::Ensure(args) => ensure::run(&ctx, args).await,
        Command::Daemon(command) => daemon::run(&ctx, command).await,
        Command::Completions(args) => completions::run(args),
        Command::Ui(args) => ui::run(&ctx, args).await,
        Command::Token(command) => token::run(&ctx, command).await,
        Command::Endpoint(command) => hub_endpoint::run(&ctx, command).await,
    }
}

/// A path from the command line made absolute against the current directory, as the UTF-8
/// string the protocol carries.
pub fn absolute_path(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(|e| {
        Failure::new(
            ErrorKind::InvalidRequest,
            format!("cannot resolve {}: {e}", path.display()),
        )
    })?;
    absolute.into_os_string().into_string().map_err(|raw| {
        Failure::new(
            ErrorKind::InvalidRequest,
            format!("{} is not valid UTF-8", Path::new(&raw).display()),
        )
        .into()
    })
}

/// What `pause` and `resume` print after the daemon did it: the job (or all jobs) with
/// --json, else `<verb> job N` / `<verb> all jobs`.
async fn report_target(ctx: &Ctx, client: &mut Client, target: Target, verb: &str) -> Result<()> {
    match (target, ctx.json) {
        (Target::Job(id), true) => emit_json(&client.status(id).await?),
        (Target::All, true) => emit_json(&client.list().await?),
        (Target::Job(id), false) => emit(format_args!("{verb} job {id}")),
        (Target::All, false) => emit(format_args!("{verb} all jobs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_path(Path::new("models")).unwrap(),
            cwd.join("models").to_str().unwrap()
        );
        assert_eq!(absolute_path(Path::new("/x/y")).unwrap(), "/x/y");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_usage_errors() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        let err = absolute_path(path).unwrap_err();
        assert_eq!(
            crate::exit::code_for_error(&err),
            mdl_protocol::ErrorKind::InvalidRequest.exit_code()
        );
    }
}
