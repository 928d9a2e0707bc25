//! Everything mdlctl prints: JSON documents and NDJSON events on stdout, tables and readable
//! views for people, live progress ([`live`]), and errors on stderr.
//!
//! JSON is the serde form of the protocol's types, unchanged, so scripts see the same field
//! names as the protocol crate documents. Writes to stdout return their I/O error so that a
//! closed pipe (`mdlctl ls | head`) ends mdlctl quietly instead of panicking.

pub mod live;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use mdl_protocol::{
    AddOutcome, AddReply, DaemonInfo, Event, FileChange, HealthInfo, JobId, JobInfo, JobState,
    PlanInfo, Progress,
};
use serde::Serialize;

use crate::exit;

/// Print one line (a newline is added) on stdout.
pub fn emit(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Print a value as one compact JSON document on one line of stdout.
pub fn emit_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    emit(serde_json::to_string(value).context("encoding JSON")?)
}

/// Print an error on stderr: `error: ...`, one `caused by: ...` per source (skipping a source
/// whose text its parent already quoted), and `hint: ...` when one is known.
pub fn print_error(err: &anyhow::Error) {
    let mut text = format!("error: {err}\n");
    let mut previous = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !previous.contains(&cause) {
            let _ = writeln!(text, "caused by: {cause}");
        }
        previous = cause;
    }
    if let Some(hint) = exit::hint_for(err) {
        let _ = writeln!(text, "hint: {hint}");
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Print a note for a person on stderr (never part of the JSON output).
pub fn note(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A byte count for people, in binary units: `512 B`, `1.5 KiB`, `2.60 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A speed for people: `12.3 MiB/s`.
pub fn format_rate(bytes_per_second: u64) -> String {
    format!("{}/s", format_bytes(bytes_per_second))
}

/// A duration for people: `45s`, `3m 12s`, `2h 05m`, `3d 4h`.
pub fn format_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A share of a total as a percentage with one decimal; `-` when the total is unknown.
pub fn format_percent(done: u64, total: Option<u64>) -> String {
    match total {
        Some(0) => "100.0%".into(),
        Some(total) => format!("{:.1}%", (done as f64 / total as f64 * 100.0).min(100.0)),
        None => "-".into(),
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")
}

/// The last component of a path, for compact display.
pub fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// `source -> dest`.
fn source_dest(job: &JobInfo) -> String {
    format!("{} -> {}", job.source, job.dest)
}

/// The JSON object printed by `add --json`: the job's fields in their declared order, then
/// `"outcome"`.
#[derive(Serialize)]
pub struct AddedJson<'a> {
    /// The job.
    #[serde(flatten)]
    pub job: &'a JobInfo,
    /// What the add did.
    pub outcome: AddOutcome,
}

/// The JSON object printed by `add --json` for a reply.
pub fn added_json(reply: &AddReply) -> AddedJson<'_> {
    AddedJson {
        job: &reply.job,
        outcome: reply.outcome,
    }
}

/// The line printed by `add` without --json.
pub fn added_line(reply: &AddReply) -> String {
    let job = &reply.job;
    match reply.outcome {
        AddOutcome::Created if job.state == JobState::Paused => {
            format!("queued job {} (paused): {}", job.id, source_dest(job))
        }
        AddOutcome::Created => format!("queued job {}: {}", job.id, source_dest(job)),
        AddOutcome::Joined => format!("joined job {}: {}", job.id, source_dest(job)),
        AddOutcome::AlreadyComplete => {
            format!("job {} already complete: {}", job.id, source_dest(job))
        }
    }
}

/// The aligned table printed by `ls`.
pub fn jobs_table(jobs: &[JobInfo]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let header = ["ID", "STATE", "PRIO", "PROGRESS", "SIZE", "SOURCE -> DEST"];
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|job| {
            [
                job.id.to_string(),
                job.state.as_str().to_string(),
                job.priority.to_string(),
                format_percent(job.bytes_done, job.bytes_total),
                job.bytes_total.map_or_else(|| "?".into(), format_bytes),
                source_dest(job),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: [&str; 6]| {
        // Numbers right-aligned, text left-aligned; the last column is not padded.
        let _ = writeln!(
            text,
            "{:>w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    text
}

/// The multi-line view printed by `status`.
pub fn job_detail(job: &JobInfo) -> String {
    let mut text = format!("job {}: {}\n", job.id, job.state.as_str());
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(text, "  {:<10} {value}", format!("{name}:"));
    };
    field("source", &job.source);
    field("dest", &job.dest);
    field("priority", &job.priority.to_string());
    let progress = match job.bytes_total {
        Some(total) => format!(
            "{} / {} ({})",
            format_bytes(job.bytes_done),
            format_bytes(total),
            format_percent(job.bytes_done, Some(total))
        ),
        None => format!("{} / ?", format_bytes(job.bytes_done)),
    };
    field("progress", &progress);
    if let Some(revision) = &job.revision {
        field("revision", revision);
    }
    field("created", &format_time_ms(job.created_ms));
    if let Some(finished) = job.finished_ms {
        field("finished", &format_time_ms(finished));
    }
    if let Some(error) = &job.error {
        field(
            "error",
            &format!("{} ({})", error.message, error.kind.as_str()),
        );
    }
    let _ = writeln!(text, "  files ({}):", job.files.len());
    for file in &job.files {
        let size = match file.size {
            Some(size) if file.bytes_done < size => {
                format!("{} / {}", format_bytes(file.bytes_done), format_bytes(size))
            }
            Some(size) => format_bytes(size),
            None => format!("{} / ?", format_bytes(file.bytes_done)),
        };
        let _ = writeln!(
            text,
            "    {:<11} {:>21}  {}",
            file.state.as_str(),
            size,
            file.path
        );
        let mut details = Vec::new();
        if let Some(sha) = &file.sha256 {
            details.push(format!("sha256 {sha}"));
        }
        if let Some(endpoint) = &file.endpoint {
            details.push(format!("from {endpoint}"));
        }
        if let Some(note) = &file.note {
            details.push(format!("note: {note}"));
        }
        for detail in details {
            let _ = writeln!(text, "    {:<11} {:>21}  {detail}", "", "");
        }
    }
    text
}

/// The view printed by `daemon status`.
pub fn daemon_info_text(info: &DaemonInfo) -> String {
    let limit = info
        .bandwidth_limit
        .map_or_else(|| "none".into(), format_rate);
    format!(
        "mdld {} (protocol {}), pid {}, up {}\n  socket:      {}\n  data dir:    {}\n  jobs:        \
         {} running, {} queued\n  concurrency: {}\n  bandwidth:   {}\n",
        info.version,
        info.protocol,
        info.pid,
        format_duration(info.uptime_ms / 1000),
        info.socket,
        info.data_dir,
        info.running,
        info.queued,
        info.max_concurrent,
        limit
    )
}

/// The lines `daemon status` adds about what the daemon watches on disk.
pub fn health_text(h: &HealthInfo) -> String {
    let mut text = format!(
        "  files:       {} intact, {} missing, {} modified{}\n  watching:    {}{}, repair {}\n",
        h.files_intact,
        h.files_missing,
        h.files_modified,
        if h.startup_check_done {
            ""
        } else {
            " (start-up check running)"
        },
        h.watch_mode,
        if h.watch_mode.contains("poll") {
            format!(" (every {} s)", h.poll_interval_ms.div_ceil(1000))
        } else {
            String::new()
        },
        h.repair
    );
    match (&h.watch_dir, &h.watch_dir_error) {
        (Some(dir), None) => {
            let _ = writeln!(
                text,
                "  drop folder: {dir} ({} queued, {} invalid)",
                h.dropped_queued, h.dropped_invalid
            );
        }
        (Some(dir), Some(e)) => {
            let _ = writeln!(text, "  drop folder: {dir} (not watched: {e})");
        }
        (None, _) => text.push_str("  drop folder: none\n"),
    }
    if let Some(file) = &h.config_file {
        let _ = writeln!(text, "  config:      {file}");
    }
    if let Some(e) = &h.config_error {
        let _ = writeln!(
            text,
            "  config error: {e} (the previous settings stay in force)"
        );
    }
    text
}

/// The view printed by `add --dry-run`.
pub fn plan_text(plan: &PlanInfo) -> String {
    let mut text = format!("plan for {}", plan.source);
    if let Some(revision) = &plan.revision {
        let _ = write!(text, " (revision {revision})");
    }
    text.push_str(":\n");
    let size = |s: Option<u64>| s.map_or_else(|| "?".into(), format_bytes);
    for file in &plan.files {
        let _ = writeln!(
            text,
            "  {:>10}  {:>10} to fetch  {} -> {}",
            size(file.size),
            size(file.bytes_to_fetch),
            file.path,
            file.dest
        );
    }
    let total: Option<u64> = plan.files.iter().map(|f| f.size).sum();
    let fetch: Option<u64> = plan.files.iter().map(|f| f.bytes_to_fetch).sum();
    let _ = writeln!(
        text,
        "{} file(s), {} in total, {} to fetch",
        plan.files.len(),
        size(total),
        size(fetch)
    );
    text
}

/// The one-line summary of a job that has just reached `job.state`.
pub fn job_line(job: &JobInfo) -> String {
    let id = job.id;
    match job.state {
        JobState::Completed => format!(
            "job {id} completed: {} in {} file(s) -> {}",
            format_bytes(job.bytes_total.unwrap_or(job.bytes_done)),
            job.files.len(),
            job.dest
        ),
        JobState::Failed => match &job.error {
            Some(error) => format!(
                "job {id} failed ({}): {}",
                error.kind.as_str(),
                error.message
            ),
            None => format!("job {id} failed"),
        },
        JobState::Paused => match &job.error {
            Some(error) => format!("job {id} paused: {}", error.message),
            None => format!("job {id} paused"),
        },
        JobState::Cancelled => format!("job {id} cancelled"),
        JobState::Running => format!("job {id} running: {}", job.source),
        JobState::Verifying => format!("job {id} verifying"),
        JobState::Queued => format!("job {id} queued: {}", source_dest(job)),
    }
}

/// A plain progress line: `job 3: 45.2% 1.17 GiB / 2.60 GiB, 12.0 MiB/s, eta 2m 03s (model.bin)`.
pub fn progress_line(p: &Progress) -> String {
    let mut text = format!(
        "job {}: {} {} / {}",
        p.job,
        format_percent(p.job_bytes_done, p.job_bytes_total),
        format_bytes(p.job_bytes_done),
        p.job_bytes_total.map_or_else(|| "?".into(), format_bytes)
    );
    if p.bytes_per_second > 0 {
        let _ = write!(text, ", {}", format_rate(p.bytes_per_second));
    }
    if let Some(eta) = p.eta_seconds {
        let _ = write!(text, ", eta {}", format_duration(eta));
    }
    let _ = write!(text, " ({})", file_name(&p.file));
    text
}

/// The plain line for an event, or `None` for events people need not see
/// (snapshots, heartbeats, the end marker).
pub fn event_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Snapshot(_) | Event::SnapshotPart(_) | Event::Heartbeat { .. } | Event::End => {
            return None
        }
        Event::Queued(job) => format!("job {} queued: {}", job.id, source_dest(job)),
        Event::Started(job) => format!("job {} started: {}", job.id, job.source),
        Event::Progress(p) => progress_line(p),
        Event::Verifying { job, file } => format!("job {job} verifying {}", file_name(file)),
        Event::Resumed(job) => format!("job {} resumed", job.id),
        Event::Completed(job) | Event::Failed(job) | Event::Paused(job) | Event::Cancelled(job) => {
            job_line(job)
        }
        Event::Removed(id) => format!("job {id} removed"),
        Event::Updated(job) => format!(
            "job {} updated: {}, priority {}, {} file(s)",
            job.id,
            job.state.as_str(),
            job.priority,
            job.files.len()
        ),
        Event::Lagged { missed } => format!("missed {missed} event(s); catching up"),
        Event::FileChanged(c) => format!(
            "job {} file {}: {}{}",
            c.job,
            c.path,
            c.state.as_str(),
            c.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
    })
}

/// One NDJSON line: `"event"` first, then the event's own fields.
#[derive(Serialize)]
struct EventLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    body: EventBody<'a>,
}

/// The fields of an event's NDJSON line (each variant serializes as a map).
#[derive(Serialize)]
#[serde(untagged)]
enum EventBody<'a> {
    Jobs { jobs: &'a [JobInfo] },
    Job { job: &'a JobInfo },
    Progress(&'a Progress),
    Verifying { job: JobId, file: &'a str },
    Removed { job: JobId },
    Heartbeat { unix_ms: u64 },
    Lagged { missed: u64 },
    FileChanged(&'a FileChange),
    Empty {},
}

/// The NDJSON line (without the newline) for an event: `{"event":"<name>",...}`. Job events
/// carry the job object under `"job"`; progress events carry the [`Progress`] fields at the top
/// level; `verifying` and `removed` carry the job's id under `"job"`.
pub fn event_json(event: &Event) -> Result<String> {
    let (event, body) = match event {
        // The client joins snapshot parts into one snapshot before they reach here.
        Event::Snapshot(jobs) | Event::SnapshotPart(jobs) => ("snapshot", EventBody::Jobs { jobs }),
        Event::Queued(job) => ("queued", EventBody::Job { job }),
        Event::Started(job) => ("started", EventBody::Job { job }),
        Event::Progress(progress) => ("progress", EventBody::Progress(progress)),
        Event::Verifying { job, file } => ("verifying", EventBody::Verifying { job: *job, file }),
        Event::Completed(job) => ("completed", EventBody::Job { job }),
        Event::Failed(job) => ("failed", EventBody::Job { job }),
        Event::Paused(job) => ("paused", EventBody::Job { job }),
        Event::Resumed(job) => ("resumed", EventBody::Job { job }),
        Event::Cancelled(job) => ("cancelled", EventBody::Job { job }),
        Event::Removed(id) => ("removed", EventBody::Removed { job: *id }),
        Event::Updated(job) => ("updated", EventBody::Job { job }),
        Event::Heartbeat { unix_ms } => ("heartbeat", EventBody::Heartbeat { unix_ms: *unix_ms }),
        Event::Lagged { missed } => ("lagged", EventBody::Lagged { missed: *missed }),
        Event::End => ("end", EventBody::Empty {}),
        Event::FileChanged(change) => ("file_changed", EventBody::FileChanged(change)),
    };
    serde_json::to_string(&EventLine { event, body }).context("encoding JSON")
}

/// The job an event is about, if it is about one.
pub fn event_job_id(event: &Event) -> Option<JobId> {
    match event {
        Event::Queued(job)
        | Event::Started(job)
        | Event::Completed(job)
        | Event::Failed(job)
        | Event::Paused(job)
        | Event::Resumed(job)
        | Event::Cancelled(job)
        | Event::Updated(job) => Some(job.id),
        Event::Progress(p) => Some(p.job),
        Event::Verifying { job, .. } | Event::Removed(job) => Some(*job),
        Event::FileChanged(change) => Some(change.job),
        Event::Snapshot(_)
        | Event::SnapshotPart(_)
        | Event::Heartbeat { .. }
        | Event::Lagged { .. }
        | Event::End => None,
    }
}

/// The job info an event carries, if it carries a whole job.
pub fn event_job(event: &Event) -> Option<&JobInfo> {
    match event {
        Event::Queued(job)
        | Event::Started(job)
        | Event::Completed(job)
        | Event::Failed(job)
        | Event::Paused(job)
        | Event::Resumed(job)
        | Event::Cancelled(job)
        | Event::Updated(job) => Some(job),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mdl_protocol::{ErrorInfo, ErrorKind, FileInfo, FileState};
    use serde_json::{json, Value};

    /// A job for tests.
    pub(crate) fn job(id: u64, state: JobState) -> JobInfo {
        JobInfo {
            id,
            source: format!("https://example.com/{id}.bin"),
            state,
            priority: 0,
            dest: "/models".into(),
            bytes_done: 512,
            bytes_total: Some(2048),
            error: None,
            files: vec![FileInfo {
                path: format!("/models/{id}.bin"),
                size: Some(2048),
                bytes_done: 512,
                state: FileState::Downloading,
                sha256: None,
                endpoint: Some("https://example.com".into()),
                note: None,
            }],
            created_ms: 1_700_000_000_000,
            finished_ms: None,
            revision: None,
        }
    }

    fn progress() -> Progress {
        Progress {
            job: 3,
            file: "/models/a.bin".into(),
            file_bytes_done: 10,
            file_bytes_total: Some(100),
            job_bytes_done: 10,
            job_bytes_total: Some(100),
            bytes_per_second: 5,
            eta_seconds: Some(18),
        }
    }

    /// The NDJSON line for an event, checked to be one line, parsed back.
    fn ndjson(event: Event) -> Value {
        let line = event_json(&event).unwrap();
        assert!(line.starts_with("{\"event\":"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn ndjson_shapes() {
        let p = ndjson(Event::Progress(progress()));
        assert_eq!(p["event"], "progress");
        assert_eq!(p["job"], 3);
        assert_eq!(p["file"], "/models/a.bin");
        assert_eq!(p["file_bytes_done"], 10);
        assert_eq!(p["file_bytes_total"], 100);
        assert_eq!(p["job_bytes_done"], 10);
        assert_eq!(p["job_bytes_total"], 100);
        assert_eq!(p["bytes_per_second"], 5);
        assert_eq!(p["eta_seconds"], 18);

        let done = ndjson(Event::Completed(job(4, JobState::Completed)));
        assert_eq!(done["event"], "completed");
        assert_eq!(done["job"]["id"], 4);
        assert_eq!(done["job"]["state"], "completed");
        assert_eq!(done["job"]["error"], Value::Null);
        assert_eq!(done["job"]["files"][0]["state"], "downloading");
        for (event, name) in [
            (Event::Queued(job(1, JobState::Queued)), "queued"),
            (Event::Started(job(1, JobState::Running)), "started"),
            (Event::Failed(job(1, JobState::Failed)), "failed"),
            (Event::Paused(job(1, JobState::Paused)), "paused"),
            (Event::Resumed(job(1, JobState::Queued)), "resumed"),
            (Event::Cancelled(job(1, JobState::Cancelled)), "cancelled"),
            (Event::Updated(job(1, JobState::Queued)), "updated"),
        ] {
            let value = ndjson(event);
            assert_eq!(value["event"], name);
            assert_eq!(value["job"]["id"], 1, "{name}");
        }

        let snap = ndjson(Event::Snapshot(vec![job(1, JobState::Queued)]));
        assert_eq!(snap["event"], "snapshot");
        assert_eq!(snap["jobs"][0]["id"], 1);

        assert_eq!(
            ndjson(Event::Heartbeat { unix_ms: 7 }),
            json!({"event": "heartbeat", "unix_ms": 7})
        );
        assert_eq!(
            ndjson(Event::Verifying {
                job: 2,
                file: "/f".into()
            }),
            json!({"event": "verifying", "job": 2, "file": "/f"})
        );
        assert_eq!(
            ndjson(Event::Removed(5)),
            json!({"event": "removed", "job": 5})
        );
        assert_eq!(
            ndjson(Event::Lagged { missed: 9 }),
            json!({"event": "lagged", "missed": 9})
        );
        assert_eq!(ndjson(Event::End), json!({"event": "end"}));
    }

    #[test]
    fn add_json_has_outcome() {
        let reply = AddReply {
            outcome: AddOutcome::AlreadyComplete,
            job: job(8, JobState::Completed),
        };
        let line = serde_json::to_string(&added_json(&reply)).unwrap();
        assert!(
            line.starts_with("{\"id\":8,"),
            "job fields keep their order: {line}"
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["outcome"], "already_complete");
        assert_eq!(value["id"], 8);
        assert_eq!(
            added_line(&reply),
            "job 8 already complete: https://example.com/8.bin -> /models"
        );
        let reply = AddReply {
            outcome: AddOutcome::Created,
            job: job(3, JobState::Queued),
        };
        assert_eq!(
            added_line(&reply),
            "queued job 3: https://example.com/3.bin -> /models"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(192), "3m 12s");
        assert_eq!(format_duration(7500), "2h 05m");
        assert_eq!(format_duration(90_000), "1d 1h");
        assert_eq!(format_percent(1, Some(4)), "25.0%");
        assert_eq!(format_percent(1, None), "-");
        assert_eq!(format_time_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time_ms(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn table_is_aligned() {
        let mut failed = job(12, JobState::Failed);
        failed.bytes_total = None;
        failed.priority = -5;
        let table = jobs_table(&[job(3, JobState::Running), failed]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  STATE"), "{table}");
        // The SOURCE column starts at the same offset on every line.
        let column = lines[0].find("SOURCE").unwrap();
        assert_eq!(lines[1].find("https://").unwrap(), column, "{table}");
        assert_eq!(lines[2].find("https://").unwrap(), column, "{table}");
        assert!(
            lines[1].contains("25.0%") && lines[1].contains("2.00 KiB"),
            "{table}"
        );
        assert!(lines[2].contains("-5") && lines[2].contains('?'), "{table}");
        assert_eq!(jobs_table(&[]), "no jobs\n");
    }

    #[test]
    fn detail_and_lines_mention_errors() {
        let mut failed = job(5, JobState::Failed);
        failed.error = Some(ErrorInfo {
            kind: ErrorKind::Integrity,
            message: "sha256 mismatch".into(),
        });
        let detail = job_detail(&failed);
        assert!(detail.starts_with("job 5: failed\n"), "{detail}");
        assert!(detail.contains("sha256 mismatch (integrity)"), "{detail}");
        assert!(detail.contains("/models/5.bin"), "{detail}");
        assert_eq!(
            job_line(&failed),
            "job 5 failed (integrity): sha256 mismatch"
        );
        assert_eq!(
            event_line(&Event::Progress(progress())).unwrap(),
            "job 3: 10.0% 10 B / 100 B, 5 B/s, eta 18s (a.bin)"
        );
        assert_eq!(event_line(&Event::Heartbeat { unix_ms: 1 }), None);
    }
}
