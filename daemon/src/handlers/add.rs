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
use crate::job::{self, CivitaiTarget, JobRecord, Source};
use crate::scheduler::Scheduler;
use crate::settings::{Settings, SourceSettings};
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
    let checked = check(&services.settings.get(), &services.sources(), request)?;
    if let Source::Civitai(CivitaiTarget::Search(pairs)) = &checked.parsed_source {
        let pairs = pairs.clone();
        return search::run(services, checked.request, pairs).await;
    }
    queue_checked(services, checked).await
}

/// How many sources of an `AddMany` one scheduler call queues: other requests can go between
/// the calls, and a call's sources are checked while the one before it is queued.
const ADD_MANY_CALL: usize = 1000;

/// How many of an `AddMany`'s scheduler calls may wait for the scheduler at once: enough for
/// the scheduler to take the next while one commits, few enough that memory holds a couple of
/// calls' sources, not every source of a large add.
const ADD_MANY_IN_FLIGHT: usize = 2;

/// Queue many sources: each checked like [`add`] (a search or a dry run is handled alone), a
/// slice at a time: the slice's destinations created once each, then queued in one scheduler
/// call, at most [`ADD_MANY_IN_FLIGHT`] calls waiting at once (the scheduler commits the calls
/// it takes together with one store flush). Replies `AddedMany`, one reply per source in
/// order.
///
/// Memory holds a few slices' sources at a time (when a 10k add held them all, the add's peak
/// was 63-64 MiB on the 100k-job store instead of 60-61), and the replies are put in order as
/// the calls answer.
pub async fn add_many(services: &Services, requests: Vec<AddRequest>) -> HandlerResult {
    let settings = services.settings.get();
    let sources = services.sources();
    let total = requests.len();
    // Replies known before the scheduler's turn (a refused source, a dry run, a search, a
    // destination that cannot be created), by the source's position.
    let mut early: std::collections::BTreeMap<usize, Response> = Default::default();
    let mut in_flight: std::collections::VecDeque<tokio::task::JoinHandle<CallAnswers>> =
        Default::default();
    let mut replies = Replies::new(total);
    let mut requests = requests.into_iter().enumerate().peekable();
    while requests.peek().is_some() {
        let mut call = Vec::with_capacity(ADD_MANY_CALL.min(total));
        for (i, request) in requests.by_ref() {
            match check(&settings, &sources, request) {
                Err(e) => {
                    early.insert(i, Response::Error(e));
                }
                Ok(checked)
                    if checked.request.dry_run
                        || matches!(
                            checked.parsed_source,
                            Source::Civitai(CivitaiTarget::Search(_))
                        ) =>
                {
                    let request = checked.request.clone();
                    let reply = add(services, request).await.unwrap_or_else(Response::Error);
                    early.insert(i, reply);
                }
                Ok(checked) => {
                    call.push((i, checked));
                    if call.len() == ADD_MANY_CALL {
                        break;
                    }
                }
            }
        }
        let call = create_destinations(call, &mut early).await?;
        if call.is_empty() {
            continue;
        }
        if in_flight.len() >= ADD_MANY_IN_FLIGHT {
            if let Some(oldest) = in_flight.pop_front() {
                replies.put(answers_of(oldest).await?, &mut early);
            }
        }
        in_flight.push_back(queue_call(services, call).await?);
    }
    for call in in_flight {
        replies.put(answers_of(call).await?, &mut early);
    }
    Ok(Response::AddedMany(replies.finish(early)))
}

/// The replies of an `AddMany` in the order of its sources, put together as the calls answer
/// (in order) with the replies known before them.
struct Replies {
    replies: Vec<Response>,
    total: usize,
}

impl Replies {
    fn new(total: usize) -> Self {
        Replies {
            replies: Vec::with_capacity(total),
            total,
        }
    }

    /// Fill the positions before `upto` from `early` (a source without any reply, which
    /// cannot happen, gets an error).
    fn fill_until(&mut self, upto: usize, early: &mut std::collections::BTreeMap<usize, Response>) {
        while self.replies.len() < upto.min(self.total) {
            let at = self.replies.len();
            let reply = early
                .remove(&at)
                .unwrap_or_else(|| Response::Error(invalid("no reply for this source")));
            self.replies.push(reply);
        }
    }

    /// One call's answers, by position, after every earlier position.
    fn put(
        &mut self,
        answers: Vec<(usize, Response)>,
        early: &mut std::collections::BTreeMap<usize, Response>,
    ) {
        for (at, reply) in answers {
            self.fill_until(at, early);
            if self.replies.len() == at {
                self.replies.push(reply);
            }
        }
    }

    /// Every reply, the last positions filled from `early`.
    fn finish(mut self, mut early: std::collections::BTreeMap<usize, Response>) -> Vec<Response> {
        self.fill_until(self.total, &mut early);
        self.replies
    }
}

/// A scheduler call's replies to its sources, by their positions in the `AddMany`.
type CallAnswers = Result<Vec<(usize, Response)>, ErrorReply>;

/// Create the destinations of one call's sources (each once, off the scheduler's task); a
/// source whose destination cannot be created gets its error reply in `early`.
async fn create_destinations(
    mut call: Vec<(usize, CheckedAdd)>,
    early: &mut std::collections::BTreeMap<usize, Response>,
) -> Result<Vec<(usize, CheckedAdd)>, ErrorReply> {
    let dirs: std::collections::BTreeSet<PathBuf> =
        call.iter().map(|(_, c)| c.dest_dir.clone()).collect();
    let failed = tokio::task::spawn_blocking(move || {
        dirs.into_iter()
            .filter_map(|dir| {
                let error = std::fs::create_dir_all(&dir).err()?;
                let message = format!("cannot create the destination {}: {error}", dir.display());
                Some((dir, message))
            })
            .collect::<std::collections::HashMap<_, _>>()
    })
    .await
    .map_err(|e| invalid(format!("cannot create the destinations: {e}")))?;
    if !failed.is_empty() {
        call.retain(|(i, checked)| match failed.get(&checked.dest_dir) {
            Some(message) => {
                early.insert(*i, Response::Error(invalid(message.clone())));
                false
            }
            None => true,
        });
    }
    Ok(call)
}

/// Send one call's checked sources to the scheduler, once the copies they may take are
/// stamped; the task answers once the scheduler has queued (and committed) them.
async fn queue_call(
    services: &Services,
    call: Vec<(usize, CheckedAdd)>,
) -> Result<tokio::task::JoinHandle<CallAnswers>, ErrorReply> {
    let keys: Vec<_> = call.iter().map(|(_, c)| c.destination_key()).collect();
    let stamps = stamp_copies(services, keys).await?;
    let services = services.clone();
    Ok(tokio::spawn(async move {
        services
            .call(move |s| {
                Ok(call
                    .into_iter()
                    .map(|(i, checked)| {
                        let reply = add_checked(s, checked, &stamps);
                        (i, reply.unwrap_or_else(Response::Error))
                    })
                    .collect())
            })
            .await
    }))
}

/// What a call sent by [`queue_call`] answered.
async fn answers_of(call: tokio::task::JoinHandle<CallAnswers>) -> CallAnswers {
    call.await
        .map_err(|e| invalid(format!("cannot queue the sources: {e}")))?
}

/// Queue one source (not a search).
pub async fn queue_one(services: &Services, request: AddRequest) -> HandlerResult {
    let checked = check(&services.settings.get(), &services.sources(), request)?;
    queue_checked(services, checked).await
}

async fn queue_checked(services: &Services, checked: CheckedAdd) -> HandlerResult {
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
    let stamps = stamp_copies(services, vec![checked.destination_key()]).await?;
    services
        .call(move |s| add_checked(s, checked, &stamps))
        .await
}

/// The size and whole-second mtime of files on disk, taken off the scheduler's task (`None`:
/// not there).
pub type Stamps = std::collections::HashMap<PathBuf, Option<(u64, i64)>>;

/// A verified copy counts only while its file is unchanged on disk: find the completed copies
/// of these destinations on the scheduler's state, and stamp them on a blocking thread, so
/// that the scheduler compares without touching the disk.
async fn stamp_copies(
    services: &Services,
    keys: Vec<crate::store::DestinationKey>,
) -> Result<Stamps, ErrorReply> {
    let candidates = services
        .call(move |s| {
            let mut paths = Vec::new();
            for key in &keys {
                paths.extend(completed_paths(s, key)?);
            }
            Ok(paths)
        })
        .await?;
    if candidates.is_empty() {
        return Ok(Stamps::new());
    }
    tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .map(|path| {
                let stamp = file_stamp(&path);
                (path, stamp)
            })
            .collect()
    })
    .await
    .map_err(|e| invalid(format!("cannot check the destination: {e}")))
}

/// The final paths of the completed files of completed jobs for this destination: what
/// [`same_destination`] needs stamped. From the store only.
fn completed_paths(
    scheduler: &mut Scheduler,
    key: &crate::store::DestinationKey,
) -> Result<Vec<PathBuf>, ErrorReply> {
    let mut paths = Vec::new();
    for id in scheduler.jobs_for_destination(key)? {
        let Some(job) = scheduler.job(id)? else {
            continue;
        };
        if job.state != JobState::Completed {
            continue;
        }
        for file in scheduler.files(id)? {
            if let Some(rel) = file.rel_path.as_deref() {
                paths.push(job.dest_dir.join(rel));
            }
        }
    }
    Ok(paths)
}

/// An add whose arguments passed every check that needs no state.
pub struct CheckedAdd {
    request: AddRequest,
    source: String,
    parsed_source: Source,
    sha256: Option<String>,
    md5: Option<String>,
    dest_dir: PathBuf,
    file_name: Option<String>,
}

impl CheckedAdd {
    /// Which existing jobs count as the same download.
    fn destination_key(&self) -> crate::store::DestinationKey {
        (
            self.source.clone(),
            self.dest_dir.clone(),
            self.file_name.clone(),
        )
    }

    /// The job record this add queues (before it has an id).
    fn record(&self) -> JobRecord {
        let layout = sources::layout(&self.parsed_source, self.request.dest.is_some());
        JobRecord {
            sha256: self.sha256.clone(),
            md5: self.md5.clone(),
            file_name: self.file_name.clone(),
            ..JobRecord::from_add(
                &self.request,
                self.parsed_source.clone(),
                layout,
                self.dest_dir.clone(),
            )
        }
    }
}

/// Validate an add: a known source (a URL on one of the hub endpoints in force, `sources`,
/// is that hub's), well-formed digests, an absolute destination, a usable file name.
pub fn check(
    settings: &Settings,
    sources: &SourceSettings,
    mut request: AddRequest,
) -> Result<CheckedAdd, ErrorReply> {
    let source = request.source.trim().to_string();
    if source.is_empty() {
        return Err(invalid("the source is empty"));
    }
    let parsed_source = sources::parse(&source, sources, &request.env).map_err(invalid)?;
    if matches!(parsed_source, Source::Civitai(_)) {
        sources::civitai::validate_options(&request.options).map_err(invalid)?;
    }
    // Another hub's token is never stored with this job.
    sources::keep_relevant_env(&parsed_source, &mut request.env);
    let sha256 = check_hex("sha256", &request.sha256, 64)?;
    let md5 = check_hex("md5", &request.md5, 32)?;
    let dest_dir =
        sources::destination(&parsed_source, &request, &settings.download_dir).map_err(invalid)?;
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
        parsed_source,
        sha256,
        md5,
        dest_dir,
        file_name,
    })
}

/// Describe what an add would fetch, queuing and writing nothing.
async fn dry_run(services: &Services, checked: CheckedAdd) -> HandlerResult {
    if !matches!(checked.parsed_source, Source::Url(_)) {
        let mut job = checked.record();
        // The stored hub token, as the job would get it when it starts.
        let probe = job.clone();
        if let Some(token) = services
            .call(move |s| Ok(s.stored_token_for(&probe)))
            .await?
        {
            job.token = Some(token);
        }
        return Ok(Response::Plan(sources::plan(&services.engine, &job).await?));
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
/// complete at once from a verified copy (whose files `stamps` show unchanged), or queue a new
/// job.
pub fn add_checked(
    scheduler: &mut Scheduler,
    checked: CheckedAdd,
    stamps: &Stamps,
) -> HandlerResult {
    if let Some(reply) = same_destination(scheduler, &checked, stamps)? {
        return Ok(reply);
    }
    let record = checked.record();
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
    checked: &CheckedAdd,
    stamps: &Stamps,
) -> Result<Option<Response>, ErrorReply> {
    let (source, dest_dir) = (&checked.source, &checked.dest_dir);
    let (sha256, md5) = (&checked.sha256, &checked.md5);
    let key = checked.destination_key();
    let mut same = Vec::new();
    for id in scheduler.jobs_for_destination(&key)? {
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
                                let stamp = stamps.get(&dest_dir.join(rel)).copied().flatten();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::scheduler;

    fn settings(dir: &std::path::Path) -> Settings {
        Settings::new(dir.join("s"), dir.join("d"))
    }

    fn request(source: &str, dest: &std::path::Path) -> AddRequest {
        AddRequest {
            source: source.into(),
            dest: Some(dest.display().to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn bad_adds_are_refused_before_any_state_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let refuse = |r: AddRequest| {
            check(&settings, &settings.engine.sources, r)
                .err()
                .unwrap()
                .message
        };
        assert!(refuse(request("", dir.path())).contains("empty"));
        assert!(refuse(request("ftp://x/y", dir.path())).contains("unsupported source"));
        let mut bad_hash = request("http://127.0.0.1/x", dir.path());
        bad_hash.sha256 = Some("abc".into());
        assert!(refuse(bad_hash).contains("64 hex digits"));
        let mut relative = request("http://127.0.0.1/x", dir.path());
        relative.dest = Some("rel/dir".into());
        assert!(refuse(relative).contains("absolute"));
        let mut civitai = request("civitai://1", dir.path());
        civitai.options = vec![("nope".into(), "1".into())];
        assert!(refuse(civitai).contains("unknown Civitai option"));
    }

    #[test]
    fn the_same_destination_joins_the_queued_job() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _events) = scheduler(dir.path());
        let settings = settings(dir.path());
        let add = |s: &mut Scheduler| {
            let checked = check(
                &settings,
                &settings.engine.sources,
                request("http://127.0.0.1/x.bin", dir.path()),
            )
            .unwrap();
            match add_checked(s, checked, &Stamps::new()).unwrap() {
                Response::Added(reply) => reply,
                other => panic!("{other:?}"),
            }
        };
        let first = add(&mut s);
        assert_eq!(first.outcome, AddOutcome::Created);
        let second = add(&mut s);
        assert_eq!(second.outcome, AddOutcome::Joined);
        assert_eq!(second.job.id, first.job.id);
        let record = s.job(first.job.id).unwrap().unwrap();
        assert_eq!(
            record.parsed_source,
            Source::Url("http://127.0.0.1/x.bin".into())
        );
    }
}
