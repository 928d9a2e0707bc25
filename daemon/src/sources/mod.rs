//! Sources: turn what the user asked for into a plan of files (URL, relative path, expected
//! size and hashes), and the credentials each file's requests carry.

pub mod civitai;
pub mod http_meta;
pub mod huggingface;
pub mod modelscope;

use mdl_protocol::{ErrorKind, Secret};
use reqwest::header::HeaderMap;

use crate::engine::{names, Engine, FetchError};
use crate::job::{FileRecord, JobRecord};
use crate::settings::SourceSettings;

/// The kinds of source mdl understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A plain `http://` or `https://` URL.
    Url,
    /// Civitai: `civitai://`, `https://civitai.com/models/...`, `urn:air:...:civitai:...`.
    Civitai,
    /// Hugging Face: `hf://`, `https://huggingface.co/...` (or a configured endpoint's host).
    HuggingFace,
    /// ModelScope: `ms://`, `https://www.modelscope.cn/models/...`.
    ModelScope,
}

/// The job option recording the kind chosen at add time (when it depends on configured
/// endpoints or the caller's environment, which the runner must not re-guess).
pub const KIND_OPTION: &str = "mdl.source";

impl SourceKind {
    fn option_value(self) -> &'static str {
        match self {
            SourceKind::Url => "url",
            SourceKind::Civitai => "civitai",
            SourceKind::HuggingFace => "huggingface",
            SourceKind::ModelScope => "modelscope",
        }
    }
}

/// Recognise a source string like [`classify`], also treating URLs on configured hub
/// endpoints (and `HF_ENDPOINT` / `MODELSCOPE_ENDPOINT` from `env`, then the daemon's
/// environment) as hub sources.
pub fn classify_with(
    source: &str,
    settings: &SourceSettings,
    env: &[(String, Secret)],
) -> Result<SourceKind, String> {
    if civitai::is_civitai(source) {
        return classify_basic(source);
    }
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.expose().to_string())
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.trim().is_empty())
    };
    let hf = http_meta::endpoint_list(
        lookup("HF_ENDPOINT"),
        &settings.hf_endpoints,
        crate::settings::HF_OFFICIAL_ENDPOINT,
    );
    if huggingface::matches(source, &hf) {
        huggingface::parse(source)?;
        return Ok(SourceKind::HuggingFace);
    }
    let ms = http_meta::endpoint_list(
        lookup("MODELSCOPE_ENDPOINT"),
        &settings.modelscope_endpoints,
        crate::settings::MODELSCOPE_OFFICIAL_ENDPOINT,
    );
    if modelscope::matches(source, &ms) {
        modelscope::parse(source)?;
        return Ok(SourceKind::ModelScope);
    }
    classify_basic(source)
}

/// The kind of a queued job: the one recorded at add time, else recognised from its source.
pub fn job_kind(job: &JobRecord) -> Result<SourceKind, String> {
    let recorded = job.options.iter().find(|(k, _)| k == KIND_OPTION);
    if let Some((_, v)) = recorded {
        for kind in [
            SourceKind::Url,
            SourceKind::Civitai,
            SourceKind::HuggingFace,
            SourceKind::ModelScope,
        ] {
            if kind.option_value() == v {
                return Ok(kind);
            }
        }
    }
    classify(&job.source)
}

/// Where a job goes when the add names no destination, and the options that record the
/// source's kind and layout: hub sources use their cache layout (`HF_HUB_CACHE`...,
/// `MODELSCOPE_CACHE`), everything else the daemon's download directory.
pub fn default_destination(
    kind: SourceKind,
    env: &[(String, Secret)],
    download_dir: &std::path::Path,
) -> std::path::PathBuf {
    match kind {
        SourceKind::HuggingFace => huggingface::default_dest(env),
        SourceKind::ModelScope => modelscope::default_dest(env),
        SourceKind::Url | SourceKind::Civitai => download_dir.to_path_buf(),
    }
}

/// Where an add goes: its absolute `--dest`, else the source's default (a hub's cache,
/// `<downloads>/civitai`, or the download directory).
pub fn destination(
    kind: SourceKind,
    request: &mdl_protocol::AddRequest,
    settings: &crate::Settings,
) -> Result<std::path::PathBuf, String> {
    Ok(match &request.dest {
        Some(dest) => {
            let path = std::path::PathBuf::from(dest);
            if !path.is_absolute() {
                return Err(format!("the destination {dest:?} must be an absolute path"));
            }
            path
        }
        None if kind == SourceKind::Civitai => settings.download_dir.join("civitai"),
        None => default_destination(kind, &request.env, &settings.download_dir),
    })
}

/// Options an add of `kind` records (its kind, and the cache layout when no `--dest` is given).
pub fn recorded_options(kind: SourceKind, dest_given: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match kind {
        SourceKind::HuggingFace | SourceKind::ModelScope => {
            out.push((KIND_OPTION.to_string(), kind.option_value().to_string()));
            if !dest_given {
                let (k, v) = if kind == SourceKind::HuggingFace {
                    huggingface::LAYOUT_OPTION
                } else {
                    modelscope::LAYOUT_OPTION
                };
                out.push((k.to_string(), v.to_string()));
            }
        }
        SourceKind::Url | SourceKind::Civitai => {}
    }
    out
}

/// Recognise a source string, or explain what is accepted.
pub fn classify(source: &str) -> Result<SourceKind, String> {
    classify_with(source, &SourceSettings::default(), &[])
}

fn classify_basic(source: &str) -> Result<SourceKind, String> {
    let lower = source.trim().to_ascii_lowercase();
    if civitai::is_civitai(source) {
        civitai::parse(source)?;
        return Ok(SourceKind::Civitai);
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        url::Url::parse(source.trim()).map_err(|e| format!("invalid URL {source:?}: {e}"))?;
        return Ok(SourceKind::Url);
    }
    Err(format!(
        "unsupported source {source:?}: expected an http(s):// URL, hf://ORG/NAME, ms://OWNER/NAME or civitai://..."
    ))
}

/// A source resolved into files.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The files, with URLs, relative paths (below the job's destination), sizes and hashes.
    pub files: Vec<FileRecord>,
    /// The resolved revision / commit / version, for display and layouts.
    pub revision: Option<String>,
}

/// Resolve a job's source into its files with `engine`'s HTTP client and settings (runners
/// and dry runs alike). Resolving writes nothing: a dry run leaves the disk as it was.
pub async fn resolve(engine: &Engine, job: &JobRecord) -> Result<Resolved, FetchError> {
    match job_kind(job).map_err(|m| FetchError::failed(ErrorKind::InvalidRequest, m))? {
        SourceKind::Civitai => civitai::resolve(engine, job).await,
        SourceKind::HuggingFace => huggingface::resolve(engine, job).await,
        SourceKind::ModelScope => modelscope::resolve(engine, job).await,
        SourceKind::Url => {
            let mut file = FileRecord::new(job.source.trim().to_string());
            file.sha256 = job.sha256.clone();
            file.md5 = job.md5.clone();
            file.rel_path = job.file_name.as_deref().and_then(names::sanitize_file_name);
            Ok(Resolved {
                files: vec![file],
                revision: None,
            })
        }
    }
}

/// Work after every file of a job is verified and in place (e.g. a cache's `refs/` entry).
pub async fn after_complete(_engine: &Engine, job: &JobRecord) -> Result<(), FetchError> {
    match job_kind(job).map_err(|m| FetchError::failed(ErrorKind::InvalidRequest, m))? {
        // Hugging Face writes `refs/<revision>` when it resolves (as `snapshot_download`
        // does), so nothing is left to do here.
        SourceKind::Url
        | SourceKind::Civitai
        | SourceKind::HuggingFace
        | SourceKind::ModelScope => Ok(()),
    }
}

/// Headers for requests to `url` on behalf of `job` (a `--token` becomes a Bearer token for
/// plain URLs). reqwest drops `Authorization` when a redirect leaves the host.
pub fn auth_headers(
    job: &JobRecord,
    url: &str,
    settings: &crate::settings::EngineSettings,
) -> HeaderMap {
    match job_kind(job) {
        Ok(SourceKind::Civitai) => return civitai::auth_headers(job, url, &settings.sources),
        // Every URL of a hub job is on a hub endpoint; the CDN is only reached by redirect.
        Ok(SourceKind::HuggingFace) => return huggingface::auth_headers(job),
        Ok(SourceKind::ModelScope) => return modelscope::auth_headers(job),
        _ => {}
    }
    let mut headers = HeaderMap::new();
    if let Some(token) = &job.token {
        insert_secret(
            &mut headers,
            reqwest::header::AUTHORIZATION,
            &format!("Bearer {}", token.expose()),
        );
    }
    headers
}

/// Insert a header that carries a secret, marked sensitive so it is never logged. A value that
/// is not a valid header (e.g. a token with a newline) is left out.
pub fn insert_secret(headers: &mut HeaderMap, name: reqwest::header::HeaderName, value: &str) {
    if let Ok(mut value) = reqwest::header::HeaderValue::from_str(value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// A variable from the job's forwarded environment, else the daemon's own; empty means unset.
pub fn env_value(env: &[(String, Secret)], key: &str) -> Option<String> {
    env.iter()
        .find(|(n, _)| n == key)
        .map(|(_, v)| v.expose().to_string())
        .or_else(|| std::env::var(key).ok())
        .filter(|v| !v.trim().is_empty())
}

/// Whether the job carries the option `key=value` (as recorded at add time).
pub fn has_option(job: &JobRecord, (key, value): (&str, &str)) -> bool {
    job.options.iter().any(|(k, v)| k == key && v == value)
}

/// A forwarded environment variable of the job, if set.
pub fn job_env<'a>(job: &'a JobRecord, name: &str) -> Option<&'a Secret> {
    job.env.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Describe what an add of a hub source would fetch (`--dry-run`): resolve it (network) and
/// list each file's repository path, destination, size, hash and the bytes still to fetch
/// (0 for a verified copy already in place). Queues nothing and writes nothing.
pub async fn plan(
    engine: &Engine,
    settings: &crate::Settings,
    request: &mdl_protocol::AddRequest,
) -> Result<mdl_protocol::PlanInfo, mdl_protocol::ErrorReply> {
    use mdl_protocol::{ErrorReply, PlanInfo, PlannedFile};
    let invalid = |m: String| ErrorReply::new(ErrorKind::InvalidRequest, m);
    let source = request.source.trim().to_string();
    let kind = classify_with(&source, &settings.engine.sources, &request.env).map_err(invalid)?;
    if kind == SourceKind::Civitai {
        civitai::validate_options(&request.options).map_err(invalid)?;
    }
    let dest_dir = destination(kind, request, settings).map_err(invalid)?;
    let mut options = request.options.clone();
    options.extend(recorded_options(kind, request.dest.is_some()));
    let job = JobRecord {
        id: 0,
        source: source.clone(),
        dest_dir: dest_dir.clone(),
        priority: request.priority,
        seq: 0,
        state: mdl_protocol::JobState::Queued,
        error: None,
        created_ms: 0,
        finished_ms: None,
        sha256: request.sha256.clone(),
        md5: request.md5.clone(),
        file_name: request.file_name.clone(),
        revision: request.revision.clone(),
        include: request.include.clone(),
        exclude: request.exclude.clone(),
        options,
        token: request.token.clone(),
        env: request.env.clone(),
        resolved: false,
        file_count: 0,
        bandwidth_limit: None,
    };
    let resolved = resolve(engine, &job)
        .await
        .map_err(|e| ErrorReply::new(e.kind(), e.to_string()))?;
    let files = resolved
        .files
        .iter()
        .flat_map(|f| {
            let shown: Vec<String> = if f.links.is_empty() {
                f.rel_path.iter().cloned().collect()
            } else {
                f.links.clone()
            };
            let done = f.state == mdl_protocol::FileState::Completed;
            let dest_dir = &dest_dir;
            shown.into_iter().map(move |rel| PlannedFile {
                path: f
                    .source_path
                    .clone()
                    .filter(|_| f.links.len() <= 1)
                    .unwrap_or_else(|| rel.clone()),
                dest: dest_dir.join(&rel).display().to_string(),
                size: f.size,
                sha256: f.sha256.clone().or_else(|| f.verified_sha256.clone()),
                bytes_to_fetch: if done { Some(0) } else { f.size },
            })
        })
        .collect();
    Ok(PlanInfo {
        source: crate::job::redact_url(&source),
        revision: resolved.revision,
        files,
    })
}
