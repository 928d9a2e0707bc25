//! `mdlctl ensure MANIFEST`: make sure every file a manifest lists is present and intact.
//!
//! The client hashes the files already on disk (same machine as the daemon), queues a download
//! for each file that is missing or fails its checksum, and reports each model as **ready**
//! (every file present and verified) or **not ready** (with the jobs queued for it). With
//! `--wait` it waits for those jobs and reports again; the exit code is then that of
//! `mdlctl wait`. With `--json` it prints one array: `[{"name", "dir", "ready", "files":
//! [{"path", "url", "status", "job"?, "error"?}]}]`, `status` being `present`, `queued`,
//! `completed` or `failed`.
//!
//! # Manifest format
//!
//! TOML (or JSON, when the file name ends in `.json`, with the same keys), parsed by
//! [`mdl_protocol::manifest`] (shared with the daemon's drop folder). Relative directories are
//! taken from the manifest's own directory.
//!
//! ```toml
//! # Optional: the directory every model's `dir` is relative to.
//! dir = "models"
//!
//! [[models]]
//! name = "sdxl-base"                        # shown in the report
//! dir = "checkpoints"                       # the save directory of this model's files
//! base_url = "https://example.com/sdxl/"    # optional: files give `path` relative to it
//!
//! [[models.files]]
//! path = "sd_xl_base_1.0.safetensors"       # base_url + path
//! checksum = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6ffb7b3a26a1a"
//! save_as = "sdxl.safetensors"              # optional; default: the URL's file name
//!
//! [[models.files]]
//! url = "https://other.example/vae/sdxl_vae.safetensors"   # a full URL instead of `path`
//! md5 = "d41d8cd98f00b204e9800998ecf8427e"
//! ```
//!
//! A checksum is given as `checksum` (64 hex digits: sha256, 32: md5, told apart by length),
//! or explicitly as `sha256` / `md5`. A file without a checksum counts as present when it
//! exists.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use md5::Md5;
use mdl_protocol::{AddOutcome, AddRequest, Client, ErrorKind, JobId, JobInfo, JobState, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{wait, Ctx};
use crate::cli::EnsureArgs;
use crate::exit::Failure;
use crate::output::{emit, emit_json};

pub use mdl_protocol::manifest::{Manifest, Planned};

fn bad(message: String) -> anyhow::Error {
    Failure::new(ErrorKind::InvalidRequest, message).into()
}

/// Parse a manifest's text and plan its files, with absolute directories (relative ones from
/// `base_dir`); the parser is the protocol crate's, shared with the daemon's drop folder.
pub fn parse_and_plan(text: &str, json: bool, base_dir: &Path) -> Result<(Manifest, Vec<Planned>)> {
    mdl_protocol::manifest::ManifestText::new(text, json)
        .plan(base_dir)
        .map_err(|e| bad(e.to_string()))
}

/// Whether the local file exists and matches its checksum.
pub fn is_intact(file: &Planned) -> bool {
    let path = file.path();
    if !path.is_file() {
        return false;
    }
    if file.sha256.is_none() && file.md5.is_none() {
        return true;
    }
    let Ok(mut f) = std::fs::File::open(&path) else {
        return false;
    };
    let mut sha = Sha256::new();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if file.sha256.is_some() {
                    sha.update(&buf[..n]);
                } else {
                    md5.update(&buf[..n]);
                }
            }
            Err(_) => return false,
        }
    }
    match (&file.sha256, &file.md5) {
        (Some(want), _) => *want == hex::encode(sha.finalize()),
        (None, Some(want)) => *want == hex::encode(md5.finalize()),
        (None, None) => true,
    }
}

/// One file in the report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The local path.
    pub path: String,
    /// Where it comes from.
    pub url: String,
    /// `present`, `queued`, `completed` or `failed`.
    pub status: String,
    /// The job fetching it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One model in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model's name.
    pub name: String,
    /// Every file present and verified.
    pub ready: bool,
    /// The files.
    pub files: Vec<FileReport>,
}

/// Run `ensure`: read and plan the manifest, hash what is on disk, queue what is missing or
/// damaged, optionally wait, then report per model.
pub async fn run(ctx: &Ctx, args: EnsureArgs) -> Result<()> {
    let (manifest, files) = load(&args.manifest)?;
    let intact = hash_local_files(&files).await?;
    let (mut reports, client) =
        queue_missing(ctx, &files, &intact, args.priority, args.offline).await?;
    let ids: Vec<JobId> = reports.iter().filter_map(|r| r.job).collect();
    let mut finished = Vec::new();
    if args.wait && !ids.is_empty() {
        drop(client);
        finished = wait::wait_for(ctx, &ids, None).await?;
        record_outcomes(&mut reports, &finished);
    }
    let models = by_model(&manifest, &files, reports);
    print_report(ctx, &models)?;
    if args.wait && !finished.is_empty() {
        wait::outcome(&finished)?;
    }
    Ok(())
}

/// Read, parse and plan the manifest (relative paths are taken from its directory).
fn load(path: &Path) -> Result<(Manifest, Vec<Planned>)> {
    let manifest_path =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        bad(format!(
            "cannot read the manifest {}: {e}",
            manifest_path.display()
        ))
    })?;
    let json = manifest_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let base = manifest_path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let (manifest, files) = parse_and_plan(&text, json, &base)?;
    Ok((manifest, files))
}

/// Which planned files are on disk and intact (hashed in a blocking thread: files may be
/// large).
async fn hash_local_files(files: &[Planned]) -> Result<Vec<bool>> {
    let checked = files.to_vec();
    tokio::task::spawn_blocking(move || checked.iter().map(is_intact).collect())
        .await
        .context("hashing local files")
}

/// Queue every file that is not intact (connecting to the daemon only if one is needed), all
/// in one `AddMany` (one durable store write on the daemon's side, not one per file); one
/// report per file, in plan order, and the connection if one was made.
async fn queue_missing(
    ctx: &Ctx,
    files: &[Planned],
    intact: &[bool],
    priority: i32,
    offline: bool,
) -> Result<(Vec<FileReport>, Option<Client>)> {
    let env = mdl_protocol::forwarded_env();
    let mut reports: Vec<FileReport> = files
        .iter()
        .map(|file| FileReport {
            path: file.path().display().to_string(),
            url: file.url.clone(),
            status: "present".into(),
            job: None,
            error: None,
        })
        .collect();
    let mut missing = Vec::new();
    let mut requests = Vec::new();
    for (index, (file, ok)) in files.iter().zip(intact).enumerate() {
        if *ok {
            continue;
        }
        let dir = file
            .dir
            .to_str()
            .ok_or_else(|| bad(format!("{} is not valid UTF-8", file.dir.display())))?;
        missing.push(index);
        requests.push(AddRequest {
            source: file.url.clone(),
            dest: Some(dir.to_string()),
            sha256: file.sha256.clone(),
            md5: file.md5.clone(),
            priority,
            env: env.clone(),
            file_name: Some(file.name.clone()),
            // The daemon's offline switch (`mdlctl add --offline` sends the same).
            options: if offline {
                vec![("offline".to_string(), "1".to_string())]
            } else {
                Vec::new()
            },
            ..Default::default()
        });
    }
    if requests.is_empty() {
        return Ok((reports, None));
    }
    let mut client = ctx.connect().await?;
    let replies = super::add::add_many(ctx, &mut client, requests).await?;
    let mut recheck = Vec::new();
    for (index, reply) in missing.into_iter().zip(replies) {
        let reply = match reply {
            Response::Added(reply) => reply,
            Response::Error(e) => return Err(mdl_protocol::ClientError::Daemon(e).into()),
            other => bail!("unexpected reply to an add: {other:?}"),
        };
        // The daemon found an earlier download "intact" by its size and time stamp, but the
        // file fails its checksum here: have the daemon re-hash it and fetch again.
        if reply.outcome == AddOutcome::AlreadyComplete {
            recheck.push(reply.job.id);
        }
        reports[index].status = "queued".into();
        reports[index].job = Some(reply.job.id);
    }
    if !recheck.is_empty() {
        client.verify(recheck, Vec::new()).await?;
    }
    Ok((reports, Some(client)))
}

/// Mark each queued file `completed` or `failed` (with the reason) from the finished jobs.
fn record_outcomes(reports: &mut [FileReport], finished: &[JobInfo]) {
    for report in reports {
        let Some(job) = report
            .job
            .and_then(|id| finished.iter().find(|j| j.id == id))
        else {
            continue;
        };
        if job.state == JobState::Completed {
            report.status = "completed".into();
        } else {
            report.status = "failed".into();
            report.error = Some(
                job.error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_else(|| job.state.as_str().to_string()),
            );
        }
    }
}

/// Group the file reports by model, in manifest order; a model is ready when every file is
/// present or completed.
fn by_model(manifest: &Manifest, files: &[Planned], reports: Vec<FileReport>) -> Vec<ModelReport> {
    let mut by_model: BTreeMap<usize, Vec<FileReport>> = BTreeMap::new();
    for (file, report) in files.iter().zip(reports) {
        by_model.entry(file.model).or_default().push(report);
    }
    by_model
        .into_iter()
        .map(|(m, files)| ModelReport {
            name: manifest.models[m].name.clone(),
            ready: files
                .iter()
                .all(|f| f.status == "present" || f.status == "completed"),
            files,
        })
        .collect()
}

/// The report: JSON, or one line per model (`ready` / `not ready` with its jobs or failures).
fn print_report(ctx: &Ctx, models: &[ModelReport]) -> Result<()> {
    if ctx.json {
        return emit_json(&models);
    }
    for model in models {
        if model.ready {
            emit(format_args!("ready      {}", model.name))?;
            continue;
        }
        let jobs: Vec<String> = model
            .files
            .iter()
            .filter_map(|f| f.job.map(|j| j.to_string()))
            .collect();
        let failed: Vec<String> = model
            .files
            .iter()
            .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.path)))
            .collect();
        if failed.is_empty() {
            emit(format_args!(
                "not ready  {} (queued: job {})",
                model.name,
                jobs.join(", job ")
            ))?;
        } else {
            emit(format_args!(
                "not ready  {} (failed: {})",
                model.name,
                failed.join("; ")
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_manifests_are_usage_errors() {
        for text in [
            "[[models]]\nname = \"a\"\n[[models.files]]\npath = \"x\"\n",
            "[[models]]\nname = \"a\"\ncolour = 1\n",
        ] {
            let err = parse_and_plan(text, false, Path::new("/")).unwrap_err();
            assert_eq!(
                crate::exit::code_for_error(&err),
                mdl_protocol::ErrorKind::InvalidRequest.exit_code(),
                "{err}"
            );
        }
    }
}
