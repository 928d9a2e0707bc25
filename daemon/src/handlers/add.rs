//! `add`: validate, detect the same destination already queued or done, and queue the job.

use std::path::PathBuf;

use mdl_protocol::{
    AddOutcome, AddReply, AddRequest, ErrorKind, ErrorReply, Event, FileState, JobState, PlanInfo,
    PlannedFile, Response,
};

use super::HandlerResult;
use crate::engine::names;
use crate::job::{self, JobRecord};
use crate::runner::file_stamp;
use crate::scheduler::Scheduler;
use crate::sources;

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::InvalidRequest, message)
}

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

/// Where an add goes: its absolute `--dest`, else the source's default (a hub's cache,
/// `<downloads>/civitai`, or the download directory).
pub fn destination(
    kind: sources::SourceKind,
    request: &AddRequest,
    settings: &crate::Settings,
) -> Result<PathBuf, ErrorReply> {
    Ok(match &request.dest {
        Some(dest) => {
            let path = PathBuf::from(dest);
            if !path.is_absolute() {
                return Err(invalid(format!(
                    "the destination {dest:?} must be an absolute path"
                )));
            }
            path
        }
        None if kind == sources::SourceKind::Civitai => settings.download_dir.join("civitai"),
        None => sources::default_destination(kind, &request.env, &settings.download_dir),
    })
}

/// Queue a download (or describe it, for a dry run).
pub async fn add(scheduler: &mut Scheduler, request: AddRequest) -> HandlerResult {
    let source = request.source.trim().to_string();
    if source.is_empty() {
        return Err(invalid("the source is empty"));
    }
    let kind = sources::classify_with(&source, &scheduler.settings.engine.sources, &request.env)
        .map_err(invalid)?;
    if kind == sources::SourceKind::Civitai {
        sources::civitai::validate_options(&request.options).map_err(invalid)?;
    }
    let sha256 = check_hex("sha256", &request.sha256, 64)?;
    let md5 = check_hex("md5", &request.md5, 32)?;
    let dest_dir = destination(kind, &request, &scheduler.settings)?;
    let file_name = match &request.file_name {
        Some(name) => Some(
            names::sanitize_file_name(name)
                .ok_or_else(|| invalid(format!("unusable file name {name:?}")))?,
        ),
        None => None,
    };
    if request.dry_run {
        let name = file_name
            .clone()
            .unwrap_or_else(|| names::choose_file_name(None, &source));
        return Ok(Response::Plan(PlanInfo {
            source: job::redact_url(&source),
            revision: None,
            files: vec![PlannedFile {
                path: name.clone(),
                dest: dest_dir.join(&name).display().to_string(),
                size: None,
                sha256: sha256.clone(),
                bytes_to_fetch: None,
            }],
        }));
    }
    std::fs::create_dir_all(&dest_dir).map_err(|e| {
        invalid(format!(
            "cannot create the destination {}: {e}",
            dest_dir.display()
        ))
    })?;

    if let Some(reply) = same_destination(scheduler, &source, &dest_dir, &file_name, &sha256, &md5)?
    {
        scheduler.store.flush().await?;
        return Ok(reply);
    }

    let id = scheduler.store.next_id()?;
    let record = JobRecord {
        id,
        source,
        dest_dir,
        priority: request.priority,
        seq: id,
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
    scheduler.store.put_job(&record)?;
    // Acknowledged means durable: the job survives kill -9 from here on.
    scheduler.store.flush().await?;
    let info = scheduler.job_info(&record);
    tracing::info!(job = id, source = %info.source, dest = %info.dest, "queued");
    let _ = scheduler.events.send(Event::Queued(info.clone()));
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
    for id in scheduler.store.jobs_for_destination(&key) {
        same.extend(scheduler.store.get_job(id)?);
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
                let files = scheduler.store.files(existing.id)?;
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
                let id = scheduler.store.next_id()?;
                let mut copy = existing.clone();
                copy.id = id;
                copy.seq = id;
                copy.created_ms = job::now_ms();
                copy.finished_ms = Some(copy.created_ms);
                for (i, f) in files.iter().enumerate() {
                    scheduler.store.put_file(id, i as u32, f)?;
                }
                scheduler.store.put_job(&copy)?;
                let info = scheduler.job_info(&copy);
                let _ = scheduler.events.send(Event::Completed(info.clone()));
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
