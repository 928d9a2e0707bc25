//! `mdlctl add SOURCE ...`: queue a download (or, with --dry-run, show its plan), and with
//! --wait follow it to the end like `mdlctl wait`.

use anyhow::{Context, Result};
use mdl_protocol::{
    AddOutcome, AddReply, AddRequest, ClientError, ErrorKind, Request, Response, Secret,
};

use super::{absolute_path, wait, Ctx};
use crate::cli::AddArgs;
use crate::exit::Failure;
use crate::output::{added_json, added_line, emit, emit_json, live::Live, plan_text};

/// Run `add`: one request per source. `--json` prints one object for one job, an array for
/// several (several sources, or a search that queued several jobs).
pub async fn run(ctx: &Ctx, args: AddArgs) -> Result<()> {
    let (dry_run, wait_after) = (args.dry_run, args.wait);
    let requests = build_requests(args, |name| std::env::var(name).ok())?;
    let mut client = ctx.connect().await?;

    if dry_run {
        let mut plans = Vec::new();
        for request in requests {
            ctx.debug(2, format_args!("add request: {request:?}"));
            plans.push(client.plan(request).await?);
        }
        return if ctx.json {
            match plans.as_slice() {
                [one] => emit_json(one),
                many => emit_json(many),
            }
        } else {
            let text: Vec<String> = plans.iter().map(plan_text).collect();
            emit(text.join("\n").trim_end())
        };
    }

    let mut replies: Vec<AddReply> = Vec::new();
    let single = requests.len() == 1;
    let responses = if single {
        let mut responses = Vec::new();
        for request in requests {
            ctx.debug(2, format_args!("add request: {request:?}"));
            responses.push(client.request(&Request::Add(request)).await?);
        }
        responses
    } else {
        add_many(ctx, &mut client, requests).await?
    };
    for response in responses {
        match response {
            Response::Added(reply) => replies.push(reply),
            // A search source: one job per result.
            Response::Jobs(jobs) => replies.extend(jobs.into_iter().map(|job| AddReply {
                outcome: AddOutcome::Created,
                job,
            })),
            Response::Error(e) => return Err(ClientError::Daemon(e).into()),
            other => {
                return Err(Failure::new(
                    ErrorKind::Other,
                    format!("unexpected reply to add: {other:?}"),
                )
                .into())
            }
        }
    }
    let one = single && replies.len() == 1;
    let print = |replies: &[AddReply]| -> Result<()> {
        if one {
            emit_json(&added_json(&replies[0]))
        } else {
            emit_json(&replies.iter().map(added_json).collect::<Vec<_>>())
        }
    };
    if !wait_after {
        if ctx.json {
            return print(&replies);
        }
        for reply in &replies {
            emit(added_line(reply))?;
        }
        return Ok(());
    }
    drop(client);

    if !ctx.json {
        for reply in &replies {
            emit(added_line(reply))?;
        }
    }
    let ids: Vec<_> = replies.iter().map(|r| r.job.id).collect();
    let mut live = (!ctx.json).then(|| Live::new(false));
    let jobs = wait::wait_for(ctx, &ids, live.as_mut()).await?;
    drop(live);
    if ctx.json {
        // The jobs as they ended, with the adds' outcomes.
        let done: Vec<AddReply> = replies
            .iter()
            .map(|r| AddReply {
                outcome: r.outcome,
                job: jobs
                    .iter()
                    .find(|j| j.id == r.job.id)
                    .cloned()
                    .unwrap_or_else(|| r.job.clone()),
            })
            .collect();
        print(&done)?;
        wait::outcome(&done.into_iter().map(|r| r.job).collect::<Vec<_>>())
    } else {
        wait::outcome(&jobs)
    }
}

/// Sources per `AddMany` request (well under the frame cap, even with a forwarded environment).
const ADD_MANY_LEN: usize = 10_000;

/// Queue several sources with `AddMany` (one durable store write per request on the daemon's
/// side); the replies, one per source in order. A daemon from before `AddMany` cannot decode
/// it: then each source goes in its own `Add`, on a new connection.
pub(crate) async fn add_many(
    ctx: &Ctx,
    client: &mut mdl_protocol::Client,
    requests: Vec<AddRequest>,
) -> Result<Vec<Response>> {
    let mut responses = Vec::with_capacity(requests.len());
    let mut chunks = requests.chunks(ADD_MANY_LEN);
    while let Some(chunk) = chunks.next() {
        ctx.debug(2, format_args!("add_many request: {} sources", chunk.len()));
        match client.request(&Request::AddMany(chunk.to_vec())).await {
            Ok(Response::AddedMany(replies)) => responses.extend(replies),
            Ok(Response::Error(e))
                if e.kind == ErrorKind::InvalidRequest
                    && e.message.starts_with("cannot decode") =>
            {
                ctx.debug(
                    1,
                    format_args!("the daemon has no AddMany: one add per source"),
                );
                *client = ctx.connect().await?;
                for request in std::iter::once(chunk).chain(chunks).flatten() {
                    responses.push(client.request(&Request::Add(request.clone())).await?);
                }
                break;
            }
            Ok(other) => responses.push(other),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(responses)
}

/// One protocol request per source of the command line.
fn build_requests(args: AddArgs, env: impl Fn(&str) -> Option<String>) -> Result<Vec<AddRequest>> {
    let sources = args.sources.clone();
    let template = build_request(args, env)?;
    Ok(sources
        .into_iter()
        .map(|source| AddRequest {
            source,
            ..template.clone()
        })
        .collect())
}

/// The token of `--token`, or read from `--token-file` (`-` for standard input), trimmed.
fn token_of(token: Option<String>, file: Option<&std::path::Path>) -> Result<Option<Secret>> {
    let token = match (token, file) {
        (Some(token), _) => token,
        (None, None) => return Ok(None),
        (None, Some(path)) if path == std::path::Path::new("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the token from standard input")?;
            text
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Failure::new(ErrorKind::InvalidRequest, "the token is empty").into());
    }
    Ok(Some(Secret(token)))
}

/// The protocol request for the command line, with `env` looking up forwarded variables.
fn build_request(args: AddArgs, env: impl Fn(&str) -> Option<String>) -> Result<AddRequest> {
    let dest = args.dest.as_deref().map(absolute_path).transpose()?;
    let mut options = args.options;
    if args.offline {
        // The daemon's offline switch (`engine::proxy::OFFLINE_OPTION`).
        options.push(("offline".to_string(), "1".to_string()));
    }
    Ok(AddRequest {
        source: args.sources.first().cloned().unwrap_or_default(),
        dest,
        sha256: args.sha256,
        md5: args.md5,
        priority: args.priority,
        paused: args.paused,
        revision: args.revision,
        include: args.include,
        exclude: args.exclude,
        token: token_of(args.token, args.token_file.as_deref())?,
        env: mdl_protocol::forwarded_env_from(env),
        dry_run: args.dry_run,
        options,
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
    fn a_token_file_is_read_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "hf_fromfile\n").unwrap();
        let path = file.to_str().unwrap();
        let args = add_args(&["hf://org/repo", "--token-file", path]);
        let request = build_request(args, |_| None).unwrap();
        assert_eq!(request.token, Some(Secret("hf_fromfile".into())));
        std::fs::write(&file, " \n").unwrap();
        let args = add_args(&["hf://org/repo", "--token-file", path]);
        let err = build_request(args, |_| None).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let missing = dir.path().join("missing");
        let args = add_args(&["hf://org/repo", "--token-file", missing.to_str().unwrap()]);
        let err = build_request(args, |_| None).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading the token file"),
            "{err:#}"
        );
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
    fn several_sources_make_several_requests() {
        let requests = build_requests(
            add_args(&["civitai://1", "civitai://2@3", "--option", "layout=comfyui"]),
            |_| None,
        )
        .unwrap();
        let sources: Vec<&str> = requests.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["civitai://1", "civitai://2@3"]);
        assert!(requests
            .iter()
            .all(|r| r.options == [("layout".to_string(), "comfyui".to_string())]));
        assert!(Cli::try_parse_from(["mdlctl", "add"]).is_err());
    }

    #[test]
    fn no_dest_means_the_daemons_default() {
        let request = build_request(add_args(&["https://x/y"]), |_| None).unwrap();
        assert_eq!(request.dest, None);
        assert!(request.env.is_empty());
        assert!(!request.dry_run && !request.paused);
    }
}
