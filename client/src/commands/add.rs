//! `mdlctl add SOURCE ...`: queue a download (or, with --dry-run, show its plan), and with
//! --wait follow it to the end like `mdlctl wait`.

use anyhow::Result;
use mdl_protocol::{AddReply, AddRequest, Secret};

use super::{absolute_path, wait, Ctx};
use crate::cli::AddArgs;
use crate::output::{added_json, added_line, emit, emit_json, live::Live, plan_text};

/// The caller's environment variables forwarded to the daemon with every add, so that it
/// resolves tokens, endpoints and caches as if started in the caller's shell.
pub const FORWARDED_ENV: [&str; 14] = [
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HUGGING_FACE_HUB_TOKEN",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_CACHE",
    "CIVITAI_TOKEN",
    "CIVITAI_API_KEY",
    "CIVITAI_ENDPOINT",
    "XDG_CACHE_HOME",
    "HOME",
];

/// Run `add`.
pub async fn run(ctx: &Ctx, args: AddArgs) -> Result<()> {
    let (dry_run, wait_after) = (args.dry_run, args.wait);
    let request = build_request(args, |name| std::env::var(name).ok())?;
    ctx.debug(2, format_args!("add request: {request:?}"));
    let mut client = ctx.connect().await?;

    if dry_run {
        let plan = client.plan(request).await?;
        return if ctx.json {
            emit_json(&plan)
        } else {
            emit(plan_text(&plan).trim_end())
        };
    }

    let reply = client.add(request).await?;
    if !wait_after {
        return if ctx.json {
            emit_json(&added_json(&reply))
        } else {
            emit(added_line(&reply))
        };
    }
    drop(client);

    if !ctx.json {
        emit(added_line(&reply))?;
    }
    let mut live = (!ctx.json).then(|| Live::new(false));
    let jobs = wait::wait_for(ctx, &[reply.job.id], live.as_mut()).await?;
    drop(live);
    if ctx.json {
        // Still one object: the job as it ended, with the add's outcome.
        let job = jobs.into_iter().next().unwrap_or(reply.job);
        let done = AddReply {
            outcome: reply.outcome,
            job,
        };
        emit_json(&added_json(&done))?;
        wait::outcome(std::slice::from_ref(&done.job))
    } else {
        wait::outcome(&jobs)
    }
}

/// The protocol request for the command line, with `env` looking up forwarded variables.
fn build_request(args: AddArgs, env: impl Fn(&str) -> Option<String>) -> Result<AddRequest> {
    let dest = args.dest.as_deref().map(absolute_path).transpose()?;
    Ok(AddRequest {
        source: args.source,
        dest,
        sha256: args.sha256,
        md5: args.md5,
        priority: args.priority,
        paused: args.paused,
        revision: args.revision,
        include: args.include,
        exclude: args.exclude,
        token: args.token.map(Secret),
        env: FORWARDED_ENV
            .iter()
            .filter_map(|name| env(name).map(|value| (name.to_string(), Secret(value))))
            .collect(),
        dry_run: args.dry_run,
        options: args.options,
        file_name: args.file_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn add_args(args: &[&str]) -> AddArgs {
        let cli = Cli::try_parse_from(["mdlctl", "add"].iter().chain(args)).unwrap();
        let Command::Add(add) = cli.command else {
            panic!()
        };
        add
    }

    #[test]
    fn request_carries_every_flag() {
        let args = add_args(&[
            "hf://org/repo",
            "--dest",
            "out",
            "--priority",
            "-1",
            "--token",
            "tok",
            "--include",
            "*.json",
            "--option",
            "k=v",
            "--name",
            "f.bin",
            "--dry-run",
        ]);
        let env = |name: &str| match name {
            "HF_TOKEN" => Some("secret".to_string()),
            "HOME" => Some("/home/me".to_string()),
            "PATH" => Some("/bin".to_string()),
            _ => None,
        };
        let request = build_request(args, env).unwrap();
        assert_eq!(request.source, "hf://org/repo");
        let dest = request.dest.as_deref().unwrap();
        assert!(dest.starts_with('/') && dest.ends_with("/out"), "{dest}");
        assert_eq!(request.priority, -1);
        assert_eq!(request.token, Some(Secret("tok".into())));
        assert_eq!(request.include, ["*.json"]);
        assert_eq!(request.options, [("k".to_string(), "v".to_string())]);
        assert_eq!(request.file_name.as_deref(), Some("f.bin"));
        assert!(request.dry_run);
        assert_eq!(
            request.env,
            [
                ("HF_TOKEN".to_string(), Secret("secret".into())),
                ("HOME".into(), Secret("/home/me".into()))
            ]
        );
        // Secrets stay hidden in debug output.
        assert!(!format!("{request:?}").contains("secret"));
    }

    #[test]
    fn no_dest_means_the_daemons_default() {
        let request = build_request(add_args(&["https://x/y"]), |_| None).unwrap();
        assert_eq!(request.dest, None);
        assert!(request.env.is_empty());
        assert!(!request.dry_run && !request.paused);
    }
}
