//! `add`: validate (no state needed), detect the same destination already queued or done, and
//! queue the job.

use std::path::PathBuf;

use mdl_protocol::{
    AddOutcome, AddReply, AddRequest, ErrorReply, Event, FileState, JobState, PlanInfo,
    PlannedFile, Response,
};

use super::{invalid, search, HandlerResult, Services};
use crate::engine::finalize::file_stamp;
use crate::engine::names;
use crate::job::{self, JobRecord};
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::sources;

/// Check a hex digest argument.
fn check_hex(name: &str, value: &Option<String>, len: usize) -> Result<Option<String>, ErrorReply> {
    match value {
        None => Ok(None),
        Some(v) if v.len() == len && v.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(Some(v.to_ascii_lowercase()))
        }
        Some(v) => Err(invalid(format!(
            "--{name} must be {len} hex digits, got {:?}",
            v
        ))),
    }
}

/// Queue a download (or describe it, for a dry run). A Civitai search queues one job per
/// result ([`super::search`]).
pub async fn add(services: &Services, request: AddRequest) -> HandlerResult {
    if let Some(pairs) = sources::civitai::search_pairs(&request.source) {
        return search::run(services, request, pairs).await;
    }
    queue_one(services, request).await
}

/// Queue one source (not a search).
pub async fn queue_one(services: &Services, request: AddRequest) -> HandlerResult {
    let checked = check(&services.settings, request)?;
    if checked.request.dry_run {
        return dry_run(services, checked).await;
    }
    // File-system work stays out of the scheduler's task.
    let dest_dir = checked.dest_dir.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&dest_dir))
        .await
        .map_err(|e| invalid(format!("cannot create the destination: {e}")))?
        .map_err(|e| {
            invalid(format!(
                "cannot create the destination {}: {e}",
                checked.dest_dir.display()
            ))
        })?;
    services.call(move |s| add_checked(s, checked)).await
}

/// An add whose arguments passed every check that needs no state.
pub struct CheckedAdd {
    request: AddRequest,
    source: String,
    kind: sources::SourceKind,
    sha256: Option<String>,
    md5: Option<String>,
    dest_dir: PathBuf,
    file_name: Option<String>,
}

/// Validate an add: a known source, well-formed digests, an absolute destination, a usable
/// file name.
pub fn check(settings: &Settings, request: AddRequest) -> Result<CheckedAdd, ErrorReply> {
    let source = request.source.trim().to_string();
    if source.is_empty() {
        return Err(invalid("the source is empty"));
    }
    let kind =
        sources::classify_with(&source, &settings.engine.sources, &request.env).map_err(invalid)?;
    if kind == sources::SourceKind::Civitai {
        sources::civitai::validate_options(&request.options).map_err(invalid)?;
    }
    let sha256 = check_hex("sha256", &request.sha256, 64)?;
    let md5 = check_hex("md5", &request.md5, 32)?;
    let dest_dir = sources::destination(kind, &request, settings).map_err(invalid)?;
    let file_name = match &request.file_name {
        Some(name) => Some(
            names::sanitize_file_name(name)
                .ok_or_else(|| invalid(format!("unusable file name {name:?}")))?,
        ),
        None => None,
    };
    Ok(CheckedAdd {
        request,
        source,
        kind,
        sha256,
        md5,
        dest_dir,
        file_name,
    })
}

/// Describe what an add would fetch, queuing and writing nothing.
async fn dry_run(services: &Services, checked: CheckedAdd) -> HandlerResult {
    if checked.kind != sources::SourceKind::Url {
        let plan = sources::plan(&services.engine, &services.settings, &checked.request).await?;
        return Ok(Response::Plan(plan));
    }
    let name = checked
        .file_name
        .clone()
        .unwrap_or_else(|| names::choose_file_name(None, &checked.source));
    Ok(Response::Plan(PlanInfo {
        source: job::redact_url(&checked.source),
        revision: None,
        files: vec![PlannedFile {
            path: name.clone(),
            dest: checked.dest_dir.join(&name).display().to_string(),
            size: None,
            sha256: checked.sha256.clone(),
            bytes_to_fetch: None,
        }],
    }))
}

/// Queue a checked add on the scheduler's state: join a job for the same destination, or
/// complete at once from a verified copy, or queue a new job.
pub fn add_checked(scheduler: &mut Scheduler, checked: CheckedAdd) -> HandlerResult {
    let CheckedAdd {
        request,
        source,
        kind,
        sha256,
        md5,
        dest_dir,
        file_name,
    } = checked;
    if let Some(reply) = same_destination(scheduler, &source, &dest_dir, &file_name, &sha256, &md5)?
    {
        return Ok(reply);
    }
    let record = JobRecord {
        id: 0,
        source,
        dest_dir,
        priority: request.priority,
        seq: 0,
        state: if request.paused {
            JobState::Paused
        } else {
            JobState::Queued
        },
        error: None,
        created_ms: job::now_ms(),
        finished_ms: None,
        sha256,
        md5,
        file_name,
        revision: request.revision,
        include: request.include,
        exclude: request.exclude,
        options: {
            let mut options = request.options;
            options.extend(sources::recorded_options(kind, request.dest.is_some()));
            options
        },
        token: request.token,
        env: request.env,
        resolved: false,
        file_count: 0,
        bandwidth_limit: None,
    };
    // Acknowledged means durable: the reply goes out after the commit.
    let info = scheduler.queue(record, &[], Event::Queued)?;
    tracing::info!(job = info.id, source = %info.source, dest = %info.dest, "queued");
    Ok(Response::Added(AddReply {
        outcome: AddOutcome::Created,
        job: info,
    }))
}

/// An add for a destination that an existing job already covers: join a live job, or complete
/// at once when a verified copy is still in place.
fn same_destination(
    scheduler: &mut Scheduler,
    source: &str,
    dest_dir: &std::path::Path,
    file_name: &Option<String>,
    sha256: &Option<String>,
    md5: &Option<String>,
) -> Result<Option<Response>, ErrorReply> {
    let key = (
        source.to_string(),
        dest_dir.to_path_buf(),
        file_name.clone(),
    );
    let mut same = Vec::new();
    for id in scheduler.jobs_for_destination(&key) {
        same.extend(scheduler.job(id)?);
    }
    for existing in same.iter().rev() {
        match existing.state {
            JobState::Queued | JobState::Running | JobState::Verifying | JobState::Paused => {
                if (sha256.is_some() && &existing.sha256 != sha256)
                    || (md5.is_some() && &existing.md5 != md5)
                {
                    return Err(invalid(format!(
                        "job {} already downloads {source} to {} with a different checksum; cancel it first",
                        existing.id,
                        dest_dir.display()
                    )));
                }
                let info = scheduler.job_info(existing);
                return Ok(Some(Response::Added(AddReply {
                    outcome: AddOutcome::Joined,
                    job: info,
                })));
            }
            JobState::Completed => {
                let files = scheduler.files(existing.id)?;
                let intact = !files.is_empty()
                    && files.iter().all(|f| {
                        f.state == FileState::Completed
                            && f.rel_path.as_ref().is_some_and(|rel| {
                                let stamp = file_stamp(&dest_dir.join(rel));
                                stamp.is_some() && stamp == f.verified_stamp
                            })
                    });
                let hash_matches = sha256.as_ref().is_none_or(|want| {
                    files.len() == 1 && files[0].verified_sha256.as_ref() == Some(want)
                });
                if !(intact && hash_matches && md5.is_none()) {
                    continue;
                }
                let mut copy = existing.clone();
                copy.created_ms = job::now_ms();
                copy.finished_ms = Some(copy.created_ms);
                let info = scheduler.queue(copy, &files, Event::Completed)?;
                return Ok(Some(Response::Added(AddReply {
                    outcome: AddOutcome::AlreadyComplete,
                    job: info,
                })));
            }
            _ => continue,
        }
    }
    Ok(None)
}
