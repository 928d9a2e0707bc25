//! The command line: a clap derive tree with one subcommand per file in `commands/`, plus the
//! value parsers that reject malformed arguments before anything is sent (clap then exits 2).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use mdl_protocol::{endpoint::SOCKET_ENV, JobId};

/// Queue, watch and control model downloads run by the mdld daemon.
///
/// Exit codes: 0 ok, 1 other failure (or a cancelled job), 2 usage, 3 auth, 4 not found,
/// 5 network or server failure, 6 rate limited, 7 checksum or size mismatch, 8 no space,
/// 9 daemon unreachable or incompatible.
#[derive(Debug, Parser)]
#[command(name = "mdlctl", version, about, max_term_width = 100)]
pub struct Cli {
    /// The daemon's socket [default: $XDG_RUNTIME_DIR/mdl/mdld.sock, or $TMPDIR/mdl-$UID/mdld.sock]
    #[arg(long, global = true, env = SOCKET_ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print JSON on stdout: one document, or one object per line for `watch`
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more on stderr (repeat for more)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process and moved once; boxing `Add` would only complicate every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a download (a URL, or a hub source such as hf://org/repo)
    Add(AddArgs),
    /// Wait until jobs finish; exit 0 when all completed, else with the first failure's code
    Wait(WaitArgs),
    /// List all jobs
    #[command(visible_alias = "list")]
    Ls,
    /// Show one job and its files
    Status(StatusArgs),
    /// Hold a job (or all jobs), keeping the bytes fetched so far
    Pause(TargetArgs),
    /// Let a held job (or all held jobs) run again
    Resume(TargetArgs),
    /// Stop a job for good and remove its partial files
    Cancel(CancelArgs),
    /// Change a job's priority (higher runs first; may be negative)
    Prio(PrioArgs),
    /// Forget finished jobs, optionally deleting their files
    Rm(RmArgs),
    /// Follow jobs live: progress bars on a terminal, plain lines otherwise, NDJSON with --json
    Watch(WatchArgs),
    /// Set or clear a bandwidth limit, global or for one job
    Limit(LimitArgs),
    /// Set how many jobs may run at once
    Concurrency(ConcurrencyArgs),
    /// Re-hash finished files and queue damaged ones again
    Verify(VerifyArgs),
    /// Queue what a manifest lists but is missing or damaged; report each model as ready or not
    Ensure(EnsureArgs),
    /// Start, stop or inspect the daemon
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Print a shell completion script to stdout
    Completions(CompletionsArgs),
    /// Open the web dashboard: prints its link (with a one-time sign-in token) on the first
    /// line of stdout, opens the browser, and serves until Ctrl-C
    Ui(UiArgs),
    /// Store, remove or list the access tokens mdld keeps per hub (hf, ms, civitai)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show or set the endpoint mdld uses per hub (hf, ms, civitai), e.g. the mirror
    /// https://hf-mirror.com for Hugging Face; used by every job queued afterwards
    #[command(subcommand)]
    Endpoint(EndpointCommand),
}

/// `mdlctl endpoint`.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Every hub's endpoints as jobs queued from now on use them, and where they come from
    Show,
    /// Use these endpoints for HUB, tried in order (the official one is tried last); kept
    /// across restarts until the config file changes that hub's `[sources]` key
    Set {
        /// hf, ms or civitai
        hub: String,
        /// Absolute http(s) URLs, e.g. https://hf-mirror.com
        #[arg(required = true, value_name = "URL")]
        urls: Vec<String>,
    },
    /// Go back to the config file's endpoints for HUB (or the official one)
    Reset {
        /// hf, ms or civitai
        hub: String,
    },
}

/// `mdlctl token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Store HUB's token, read from stdin (so it stays out of the shell history); used for
    /// that hub's jobs that give no --token of their own
    Set {
        /// hf, ms or civitai
        hub: String,
    },
    /// Remove HUB's stored token
    Clear {
        /// hf, ms or civitai
        hub: String,
    },
    /// Which hubs have a stored token (never the tokens)
    Ls,
}

/// `mdlctl ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Print the link but do not open a browser
    #[arg(long)]
    pub no_open: bool,

    /// Listen on this address instead of 127.0.0.1 and [::1] (port 7386); port 0 picks one.
    /// Other than loopback addresses expose the dashboard to the network: think twice
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `mdlctl add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// What to download: http(s) URLs or hub sources (hf://, ms://, civitai://, ...); several
    /// queue one job each. `civitai://search?query=...&types=LORA&limit=N` queues the top N
    /// results of a Civitai search
    #[arg(
        required = true,
        value_name = "SOURCE",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub sources: Vec<String>,

    /// Destination directory (relative paths are taken from the current directory)
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,

    /// Expected sha256 of the file (64 hex digits)
    #[arg(long, value_name = "HEX", value_parser = parse_sha256)]
    pub sha256: Option<String>,

    /// Expected md5 of the file (32 hex digits)
    #[arg(long, value_name = "HEX", value_parser = parse_md5)]
    pub md5: Option<String>,

    /// Priority: higher runs first, equal priorities in the order added
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,

    /// Queue the job paused
    #[arg(long)]
    pub paused: bool,

    /// Revision, branch, tag or version of a hub source
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,

    /// Only files matching this glob (hub sources; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Skip files matching this glob (hub sources; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Access token for the source (default: a token stored with `mdlctl token set`, then the
    /// hub's usual environment variable). A token on the command line is visible to other
    /// users in `ps`: prefer --token-file
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// Read the access token from this file (`-` reads it from standard input)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Resolve the source and show what would be fetched; queue nothing
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,

    /// A source-specific option, e.g. format=SafeTensor (repeatable)
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,

    /// Save the (single) file under this name instead of the server's
    #[arg(long = "name", value_name = "FILE_NAME")]
    pub file_name: Option<String>,

    /// After queueing, wait until the job finishes (like `mdlctl wait`)
    #[arg(long)]
    pub wait: bool,

    /// Only from the local caches and completed downloads; never open a connection (also
    /// MDL_OFFLINE=1, HF_HUB_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,
}

/// `mdlctl wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The jobs to wait for
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<JobId>,
}

/// `mdlctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job
    pub id: JobId,
}

/// `mdlctl pause` and `mdlctl resume`: one job or all of them.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The job
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<JobId>,

    /// Every job
    #[arg(long)]
    pub all: bool,
}

impl TargetArgs {
    /// The protocol's target; clap guarantees exactly one of `id` and `--all`.
    pub fn target(&self) -> mdl_protocol::Target {
        match self.id {
            Some(id) if !self.all => mdl_protocol::Target::Job(id),
            _ => mdl_protocol::Target::All,
        }
    }
}

/// `mdlctl cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job
    pub id: JobId,
}

/// `mdlctl prio`.
#[derive(Debug, Args)]
pub struct PrioArgs {
    /// The job
    pub id: JobId,

    /// Its new priority (may be negative)
    #[arg(allow_negative_numbers = true)]
    pub priority: i32,
}

/// `mdlctl rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The jobs to forget
    #[arg(
        value_name = "ID",
        required_unless_present = "finished",
        conflicts_with = "finished"
    )]
    pub ids: Vec<JobId>,

    /// Forget every finished job (completed, failed or cancelled)
    #[arg(long)]
    pub finished: bool,

    /// Also delete the downloaded files of completed jobs
    #[arg(long)]
    pub delete_files: bool,
}

/// `mdlctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only these jobs; exit when they have all finished
    #[arg(value_name = "ID")]
    pub ids: Vec<JobId>,
}

/// `mdlctl limit`.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Bytes per second (20M, 500K, 1.5G decimal; 500Ki, 2Mi binary), or `off`
    #[arg(value_parser = parse_rate)]
    pub rate: Rate,

    /// Limit this job only (default: the global limit)
    #[arg(long, value_name = "ID")]
    pub job: Option<JobId>,
}

/// `mdlctl concurrency`.
#[derive(Debug, Args)]
pub struct ConcurrencyArgs {
    /// How many jobs may run at once (at least 1)
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,
}

/// `mdlctl ensure`.
#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// The manifest (TOML, or JSON by its `.json` extension); see `examples/manifest.toml`
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,

    /// Wait until the queued downloads finish, then report
    #[arg(long)]
    pub wait: bool,

    /// Priority of the queued downloads
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,

    /// Only from the local caches and completed downloads; never open a connection
    #[arg(long)]
    pub offline: bool,
}

/// `mdlctl verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The jobs to check (default: every completed job)
    #[arg(value_name = "ID", conflicts_with = "paths")]
    pub ids: Vec<JobId>,

    /// Check the finished files under this path instead (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `mdlctl daemon ...`.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start mdld in the background unless it is running, and wait until it answers
    Start,
    /// Ask mdld to shut down and wait until it has stopped
    Stop,
    /// Show the running daemon's version, limits and counters (exit 9 if not running)
    Status,
}

/// `mdlctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// A bandwidth limit from the command line: bytes per second, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub Option<u64>);

/// Parse a rate: `off`, or a number with an optional unit: `K`, `M`, `G`, `T` (powers of 1000),
/// `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024), optionally followed by `B` and `/s`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    if ["off", "none", "unlimited"]
        .iter()
        .any(|word| text.eq_ignore_ascii_case(word))
    {
        return Ok(Rate(None));
    }
    let body = text.strip_suffix("/s").unwrap_or(text);
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let usage = || {
        format!("'{text}' is not a rate: use a number with an optional unit (500K, 20M, 1.5G, 2Mi) or 'off'")
    };
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(usage());
    }
    let value: f64 = number.parse().map_err(|_| usage())?;
    // A trailing capital B means bytes; a lowercase b (bits) is refused as a unit below.
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(usage()),
    };
    let bytes = (value * multiplier).round();
    if bytes < 1.0 {
        return Err(format!(
            "'{text}' is below 1 byte per second; use 'off' to remove the limit"
        ));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is too large"));
    }
    Ok(Rate(Some(bytes as u64)))
}

/// Check a hex digest of `digits` digits; returns it in lowercase.
fn parse_hex(text: &str, digits: usize, algorithm: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(bad) = text.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "a {algorithm} is {digits} hex digits; '{bad}' is not a hex digit"
        ));
    }
    if text.len() != digits {
        return Err(format!(
            "a {algorithm} is {digits} hex digits, got {}",
            text.len()
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// Check a sha256 given on the command line (64 hex digits).
pub fn parse_sha256(text: &str) -> Result<String, String> {
    parse_hex(text, 64, "sha256")
}

/// Check an md5 given on the command line (32 hex digits).
pub fn parse_md5(text: &str) -> Result<String, String> {
    parse_hex(text, 32, "md5")
}

/// Split `KEY=VALUE` at the first `=`; the key must not be empty.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mdlctl").chain(args.iter().copied()))
    }

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn add_with_every_common_flag() {
        let cli = parse(&[
            "--json",
            "add",
            "https://example.com/model.bin",
            "--sha256",
            &SHA.to_uppercase(),
            "--priority",
            "-3",
            "--paused",
            "--dest",
            "models",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Add(add) = cli.command else {
            panic!("not add: {:?}", cli.command)
        };
        assert_eq!(add.sources, ["https://example.com/model.bin"]);
        assert_eq!(add.sha256.as_deref(), Some(SHA));
        assert_eq!(add.priority, -3);
        assert!(add.paused);
        assert_eq!(add.dest, Some(PathBuf::from("models")));
    }

    #[test]
    fn add_hub_flags() {
        let cli = parse(&[
            "add",
            "hf://org/repo",
            "--revision",
            "main",
            "--include",
            "*.json",
            "--include",
            "*.safetensors",
            "--exclude",
            "*.bin",
            "--token",
            "t0k",
            "--option",
            "layout=comfyui",
            "--option",
            "format=Safe=Tensor",
            "--name",
            "x.bin",
            "--wait",
            "--json",
        ])
        .unwrap();
        let Command::Add(add) = cli.command else {
            panic!()
        };
        assert!(cli.json && add.wait);
        assert_eq!(add.include, ["*.json", "*.safetensors"]);
        assert_eq!(add.exclude, ["*.bin"]);
        assert_eq!(
            add.options,
            [
                ("layout".to_string(), "comfyui".to_string()),
                ("format".into(), "Safe=Tensor".into())
            ]
        );
        assert_eq!(add.file_name.as_deref(), Some("x.bin"));
        assert_eq!(add.token.as_deref(), Some("t0k"));
    }

    #[test]
    fn add_rejects_bad_input_as_usage_errors() {
        for args in [
            &["add", "u", "--sha256", "abc"][..],
            &["add", "u", "--sha256", &SHA.replace('9', "z")],
            &["add", "u", "--md5", SHA],
            &["add", ""],
            &["add"],
            &["add", "u", "--option", "=v"],
            &["add", "u", "--dry-run", "--wait"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        assert!(parse(&["add", "u", "--md5", &SHA[..32]]).is_ok());
    }

    #[test]
    fn prio_takes_negative_numbers() {
        let cli = parse(&["prio", "4", "-2"]).unwrap();
        let Command::Prio(prio) = cli.command else {
            panic!()
        };
        assert_eq!((prio.id, prio.priority), (4, -2));
    }

    #[test]
    fn pause_and_resume_targets() {
        let Command::Pause(t) = parse(&["pause", "--all"]).unwrap().command else {
            panic!()
        };
        assert_eq!(t.target(), mdl_protocol::Target::All);
        let Command::Resume(t) = parse(&["resume", "7"]).unwrap().command else {
            panic!()
        };
        assert_eq!(t.target(), mdl_protocol::Target::Job(7));
        assert!(parse(&["pause"]).is_err());
        assert!(parse(&["pause", "7", "--all"]).is_err());
    }

    #[test]
    fn rm_needs_ids_or_finished() {
        let Command::Rm(rm) = parse(&["rm", "1", "2", "--delete-files"]).unwrap().command else {
            panic!()
        };
        assert_eq!(rm.ids, [1, 2]);
        assert!(rm.delete_files && !rm.finished);
        assert!(parse(&["rm", "--finished"]).is_ok());
        assert_eq!(parse(&["rm"]).unwrap_err().exit_code(), 2);
        assert!(parse(&["rm", "1", "--finished"]).is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&["ls", "--json", "-vv", "--socket", "/tmp/x.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/x.sock")));
        assert!(matches!(parse(&["list"]).unwrap().command, Command::Ls));
    }

    #[test]
    fn other_subcommands_parse() {
        assert!(matches!(
            parse(&["wait", "1", "2"]).unwrap().command,
            Command::Wait(_)
        ));
        assert!(parse(&["wait"]).is_err());
        assert!(matches!(
            parse(&["watch"]).unwrap().command,
            Command::Watch(_)
        ));
        let Command::Limit(l) = parse(&["limit", "20M", "--job", "3"]).unwrap().command else {
            panic!()
        };
        assert_eq!((l.rate, l.job), (Rate(Some(20_000_000)), Some(3)));
        assert!(parse(&["limit", "fast"]).is_err());
        assert!(parse(&["concurrency", "0"]).is_err());
        assert!(parse(&["verify", "1", "--path", "/x"]).is_err());
        assert!(matches!(
            parse(&["daemon", "status"]).unwrap().command,
            Command::Daemon(DaemonCommand::Status)
        ));
        assert!(matches!(
            parse(&["completions", "zsh"]).unwrap().command,
            Command::Completions(_)
        ));
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20M"), Ok(Rate(Some(20_000_000))));
        assert_eq!(parse_rate("1.5G"), Ok(Rate(Some(1_500_000_000))));
        assert_eq!(parse_rate("500Ki"), Ok(Rate(Some(512_000))));
        assert_eq!(parse_rate("500K"), Ok(Rate(Some(500_000))));
        assert_eq!(parse_rate("2MiB/s"), Ok(Rate(Some(2 * 1024 * 1024))));
        assert_eq!(parse_rate("20 MB"), Ok(Rate(Some(20_000_000))));
        assert_eq!(parse_rate("1024"), Ok(Rate(Some(1024))));
        assert_eq!(parse_rate("off"), Ok(Rate(None)));
        assert_eq!(parse_rate("OFF"), Ok(Rate(None)));
        for bad in [
            "", "M", "fast", "20X", "20Mb", "1.2.3M", "-5M", "0", "0.1", "1e9", "nan", "inf",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hex_digests() {
        assert_eq!(parse_sha256(&SHA.to_uppercase()).as_deref(), Ok(SHA));
        assert!(parse_sha256(&SHA[..63])
            .unwrap_err()
            .contains("64 hex digits, got 63"));
        assert!(parse_sha256(&SHA.replace('a', "g"))
            .unwrap_err()
            .contains("'g'"));
        assert!(parse_md5("d41d8cd98f00b204e9800998ecf8427e").is_ok());
        assert!(parse_md5(SHA).is_err());
    }
}
