//! Sources: turn what the user asked for into a plan of files (URL, relative path, expected
//! size and hashes), and the credentials each file's requests carry.

pub mod civitai;
pub mod http_meta;

use mdl_protocol::{ErrorKind, Secret};
use reqwest::header::HeaderMap;

use crate::engine::{names, FetchError};
use crate::job::{FileRecord, JobRecord};
use crate::runner::RunnerContext;

/// The kinds of source mdl understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A plain `http://` or `https://` URL.
    Url,
    /// Civitai: `civitai://`, `https://civitai.com/models/...`, `urn:air:...:civitai:...`.
    Civitai,
}

/// Recognise a source string, or explain what is accepted.
pub fn classify(source: &str) -> Result<SourceKind, String> {
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
        "unsupported source {source:?}: expected an http:// or https:// URL"
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

/// Resolve a job's source into its files.
pub async fn resolve(ctx: &RunnerContext, job: &JobRecord) -> Result<Resolved, FetchError> {
    match classify(&job.source).map_err(|m| FetchError::failed(ErrorKind::InvalidRequest, m))? {
        SourceKind::Civitai => civitai::resolve(&ctx.engine, job).await,
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
pub async fn after_complete(_ctx: &RunnerContext, job: &JobRecord) -> Result<(), FetchError> {
    match classify(&job.source).map_err(|m| FetchError::failed(ErrorKind::InvalidRequest, m))? {
        SourceKind::Url | SourceKind::Civitai => Ok(()),
    }
}

/// Headers for requests to `url` on behalf of `job` (a `--token` becomes a Bearer token for
/// plain URLs). reqwest drops `Authorization` when a redirect leaves the host.
pub fn auth_headers(job: &JobRecord, url: &str) -> HeaderMap {
    if classify(&job.source) == Ok(SourceKind::Civitai) {
        return civitai::auth_headers(job, url);
    }
    let mut headers = HeaderMap::new();
    if let Some(token) = &job.token {
        if let Ok(mut value) =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    headers
}

/// A forwarded environment variable of the job, if set.
pub fn job_env<'a>(job: &'a JobRecord, name: &str) -> Option<&'a Secret> {
    job.env.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}
